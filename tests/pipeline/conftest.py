"""Fixtures for the pipeline tests: a tiny random pipeline (real tiny VideoDiT, VAE, text encoder)."""

from __future__ import annotations

import pytest
import torch

from ttt_engine.pipeline.params import GenerationParams
from ttt_engine.pipeline.video_pipeline import VideoPipeline
from ttt_engine.storyboard import Storyboard

TEXTS = [
    "Tom the cat tiptoes into the kitchen at night. He looks around. The fridge hums.",
    "Jerry the mouse peeks out of his hole. He sees Tom. He grins and grabs a piece of cheese.",
    "Tom leaps at Jerry but slips on the wet floor. Plates fall. Jerry runs away laughing.",
]


def storyboard_of(n: int, transition_at: tuple[int, ...] = ()) -> Storyboard:
    return Storyboard.from_list(
        [
            {
                "text": TEXTS[i % len(TEXTS)] + f" Segment {i}.",
                "neg_text": "blurry, low quality" if i % 2 else "",
                "requires_scene_transition": i in transition_at,
            }
            for i in range(n)
        ]
    )


@pytest.fixture(scope="session")
def tiny_pipe() -> VideoPipeline:
    return VideoPipeline.tiny_random(seed=0)


@pytest.fixture()
def fast_params() -> GenerationParams:
    """3 steps at the tiny model's native size, preview off."""
    return GenerationParams(steps=3, seed=1, preview_every=0)


class CallCounter:
    """Counts calls of a module's forward (wraps it; restore with .undo())."""

    def __init__(self, module: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = module.forward

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, "forward", counted)


T5_WORDS = (
    "a the cat mouse tom jerry kitchen runs jumps night cheese floor blurry low quality segment".split()
)


def write_tiny_t5(folder, d_model: int) -> None:
    """A tiny random T5 encoder (folder/text_encoder) and a word-piece tokenizer (folder/tokenizer),
    built in memory with transformers and saved with save_pretrained (no downloads)."""
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + w, -float(i)) for i, w in enumerate(T5_WORDS)]
    pieces += [(c, -50.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789.,"]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0)
    config = T5Config(vocab_size=len(pieces), d_model=d_model, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = T5EncoderModel(config)
    model.save_pretrained(str(folder / "text_encoder"))
    tokenizer.save_pretrained(str(folder / "tokenizer"))
