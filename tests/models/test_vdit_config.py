"""VideoDiTConfig presets and validation (no 5B model is built: the config is data)."""

from __future__ import annotations

import pytest

from ttt_engine.models import VideoDiTConfig, cogvideox_5b, tiny


def test_cogvideox_5b_preset() -> None:
    c = cogvideox_5b()
    assert (c.num_layers, c.dim, c.num_heads, c.head_dim) == (42, 3072, 48, 64)
    assert (c.text_dim, c.max_text_len, c.time_embed_dim) == (4096, 226, 512)
    assert (c.in_channels, c.out_channels, c.patch_size) == (16, 16, 2)
    assert (c.sample_height, c.sample_width) == (60, 90)
    assert (c.first_segment_frames, c.segment_frames) == (13, 12)
    assert c.use_rotary and c.ttt_inner == "mlp" and c.ttt_gate_init == 0.1
    assert [c.latent_frames(s) for s in (1, 3, 6, 10, 21)] == [13, 37, 73, 121, 253]
    assert c.num_segments(253) == 21
    assert c.tokens_per_frame(60, 90) == 1350
    ttt = c.ttt_config()
    assert (ttt.num_heads, ttt.head_dim, ttt.hidden, ttt.mini_batch_size, ttt.lr) == (48, 64, 256, 64, 0.1)
    assert c == VideoDiTConfig.cogvideox_5b()


def test_tiny_preset_and_overrides() -> None:
    c = tiny(ttt_inner="linear")
    assert c == VideoDiTConfig.tiny(ttt_inner="linear")
    assert c.dim == c.num_heads * c.head_dim and c.num_layers <= 4
    assert c.ttt_config().inner == "linear"
    assert tiny(ttt_inner="none").ttt_config() is None


def test_dict_round_trip() -> None:
    c = tiny(ttt_gate_init=0.0, ttt_base_lr=0.5)
    assert VideoDiTConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match=r"unknown keys \['bogus'\]"):
        VideoDiTConfig.from_dict({**c.to_dict(), "bogus": 1})


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"dim": 96}, "dim must equal num_heads \\* head_dim"),
        ({"ttt_inner": "rnn"}, "ttt_inner.*'rnn'"),
        ({"dim": 48, "head_dim": 24}, "multiple of 16, got 24"),
        ({"segment_frames": 4}, "segment_frames must be <= first_segment_frames"),
        ({"num_layers": 0}, "num_layers.*0"),
        ({"ttt_backend": "tpu"}, "ttt_backend.*'tpu'"),
        ({"rope_theta": -1.0}, "rope_theta"),
    ],
    ids=lambda v: str(v),
)
def test_invalid_configs_name_the_field(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny(**changes)


def test_latent_frames_inverse_rejects_partial_segments() -> None:
    c = tiny()  # 3 then 2 frames
    assert [c.latent_frames(s) for s in (1, 2, 3)] == [3, 5, 7]
    with pytest.raises(ValueError, match="got 6"):
        c.num_segments(6)
