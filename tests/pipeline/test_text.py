from __future__ import annotations

import json

import pytest
import torch

from ttt_engine.pipeline.params import ComponentMissingError, PipelineError
from ttt_engine.pipeline.text import (
    EOS_ID,
    SCENE_END_TOKEN,
    SCENE_START_TOKEN,
    HashTextConfig,
    HashTextEncoder,
    T5TextEncoder,
    TextEncoder,
    load_text_encoder,
    segment_prompts,
    word_ids,
)
from ttt_engine.storyboard import Storyboard

from .conftest import write_tiny_t5


def small_encoder(seed: int = 0) -> HashTextEncoder:
    torch.manual_seed(seed)
    return HashTextEncoder(
        HashTextConfig(vocab_size=512, dim=32, max_length=10, num_layers=1, num_heads=2)
    ).eval()


def test_hashed_vocabulary_is_stable_and_word_level() -> None:
    ids = word_ids("Tom chases Jerry. tom!", vocab_size=512, max_length=16)
    # words are lower-cased: both "Tom"s get one id; punctuation is its own token; ends with end-of-text
    assert ids[0] == ids[4] and ids[-1] == EOS_ID and len(ids) == 7
    assert all(2 <= i < 512 for i in ids[:-1])
    # fixed values: blake2b does not change between processes (Python's hash() would)
    assert word_ids("cat", 8192, 4) == word_ids("cat", 8192, 4)
    assert word_ids("<start_scene> cat", 8192, 8)[0] != word_ids("start_scene cat", 8192, 8)[0]


def test_encode_shapes_masks_and_truncation() -> None:
    enc = small_encoder()
    assert isinstance(enc, TextEncoder)
    texts = ["a cat", "", " ".join(["word"] * 50)]
    with torch.no_grad():
        emb, mask = enc.encode(texts)
    assert emb.shape == (3, 10, 32) and mask.shape == (3, 10) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [3, 1, 10]  # words + end-of-text; empty text still has one token
    assert torch.isfinite(emb).all()
    assert (emb[0, 3:] == 0).all()  # padding positions carry nothing
    # the text changes the embedding; the same text gives the same embedding
    with torch.no_grad():
        again, _ = enc.encode(["a cat", "a dog"])
    torch.testing.assert_close(again[0], emb[0])
    assert not torch.allclose(again[1], emb[0])


def test_save_load_round_trip(tmp_path) -> None:
    enc = small_encoder(seed=3)
    enc.save(tmp_path / "te")
    loaded = load_text_encoder(tmp_path / "te", None, max_length=10)
    assert isinstance(loaded, HashTextEncoder)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(["a cat runs"])[0], enc.encode(["a cat runs"])[0])
    with pytest.raises(PipelineError, match="max_text_len=12"):
        load_text_encoder(tmp_path / "te", None, max_length=12)


def test_bad_encoder_folders(tmp_path) -> None:
    with pytest.raises(ComponentMissingError, match="config.json not found"):
        load_text_encoder(tmp_path, None, 10)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(PipelineError, match="model_type='bert'"):
        load_text_encoder(tmp_path, None, 10)
    small_encoder().save(tmp_path / "te")
    (tmp_path / "te" / "model.safetensors").unlink()
    with pytest.raises(ComponentMissingError, match="model.safetensors"):
        HashTextEncoder.load(tmp_path / "te")
    with pytest.raises(PipelineError, match="non-empty list"):
        small_encoder().encode([])
    with pytest.raises(PipelineError, match=r"texts\[1\] must be a str"):
        small_encoder().encode(["ok", 3])


def test_t5_encoder_from_local_folders(tmp_path) -> None:
    write_tiny_t5(tmp_path, d_model=32)
    enc = load_text_encoder(tmp_path / "text_encoder", tmp_path / "tokenizer", max_length=12)
    assert isinstance(enc, T5TextEncoder) and enc.dim == 32 and enc.max_length == 12
    emb, mask = enc.encode(["the cat runs", SCENE_START_TOKEN + "a mouse" + SCENE_END_TOKEN])
    assert emb.shape == (2, 12, 32)
    assert mask.all()  # CogVideoX-compatible: padded text is attended to, as it was trained
    # the scene markers are single special tokens, as in the paper's code
    ids = enc.tokenizer([SCENE_START_TOKEN])["input_ids"][0]
    assert len(ids) == 2 and ids[0] >= 3
    masked = T5TextEncoder(enc.model, enc.tokenizer, max_length=12, mask_padding=True)
    _, mask2 = masked.encode(["the cat runs"])
    assert 0 < int(mask2.sum()) < 12
    with pytest.raises(ComponentMissingError, match="tokenizer"):
        load_text_encoder(tmp_path / "text_encoder", None, max_length=12)


def test_segment_prompts_add_the_papers_scene_markers() -> None:
    sb = Storyboard.from_list(
        [
            {"text": "A.", "requires_scene_transition": True, "neg_text": "n0"},
            {"text": "B."},
            {"text": "C.", "requires_scene_transition": True, "neg_text": "n2"},
        ]
    )
    texts, negs = segment_prompts(list(sb.segments))
    assert texts == ["A.", "B." + SCENE_END_TOKEN, SCENE_START_TOKEN + "C."]
    assert negs == ["n0", "", "n2"]
