"""Sequence layout of the segmented video DiT: pure functions of a few integers (ttt-mlp.md section 2).

Terms
    S segments        3-second pieces of the video, each with its own text of T tokens.
    first, later      latent frames of the first segment and of every later one (paper: 13 and 12).
    TTT segment i     segment i's own frames: [0, first) for i = 0, then `later` frames each, no overlap.
    attention window  the frames attention segment i sees: [i * later, i * later + first), i.e. its own
                      frames plus the last (first - later) frames of the previous segment (paper: 1).
    N                 tokens per latent frame (latent h/p * w/p; 1350 at 480 x 720).
    stream order      how the model keeps tokens: [text_0 .. text_{S-1} ; frame 0 .. frame F-1].
    interleaved order the TTT sequence: [text_0, video_0, text_1, video_1, ...] (video_i = TTT segment i).

Reverse order (for the backward TTT pass): video tokens reversed token by token, text blocks reversed in
segment order with the tokens inside each block kept in order, laid out again in the same interleaved
layout. As a permutation of interleaved positions it is P = g^-1 . R . g (g: interleave, R: the stream
reversal), which makes it its own inverse. (This is also what the paper's code does: after reversal the
first interleaved video block is the LAST `first` frames.)

Index tensors follow gather semantics: `y = x[:, idx]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SECONDS_PER_SEGMENT = 3
PAPER_FIRST_FRAMES = 13
PAPER_LATER_FRAMES = 12


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


def _segments(first: int, later: int) -> tuple[int, int]:
    _positive("first", first)
    _positive("later", later)
    if later > first:
        raise ValueError(
            f"later ({later}) must be <= first ({first}): windows of `first` frames must cover every frame"
        )
    return first, later


def tokens_per_frame(latent_height: int, latent_width: int, patch_size: int) -> int:
    """Tokens of one latent frame: (h / p) * (w / p). 60 x 90 latents with patch 2 -> 1350."""
    _positive("patch_size", patch_size)
    for name, value in (("latent_height", latent_height), ("latent_width", latent_width)):
        _positive(name, value)
        if value % patch_size:
            raise ValueError(f"{name}: expected a multiple of patch_size {patch_size}, got {value}")
    return (latent_height // patch_size) * (latent_width // patch_size)


def segments_for_seconds(seconds: int, seconds_per_segment: int = SECONDS_PER_SEGMENT) -> int:
    """Number of segments of a video of `seconds` seconds (63 s -> 21)."""
    _positive("seconds", seconds)
    _positive("seconds_per_segment", seconds_per_segment)
    if seconds % seconds_per_segment:
        raise ValueError(f"seconds: expected a multiple of {seconds_per_segment}, got {seconds}")
    return seconds // seconds_per_segment


def latent_frames(num_segments: int, first: int = PAPER_FIRST_FRAMES, later: int = PAPER_LATER_FRAMES) -> int:
    """Latent frames of S segments: first + later * (S - 1) (paper: 13, 37, 73, 121, 253 for 3..63 s)."""
    _positive("num_segments", num_segments)
    first, later = _segments(first, later)
    return first + later * (num_segments - 1)


def num_segments_for_frames(
    num_frames: int, first: int = PAPER_FIRST_FRAMES, later: int = PAPER_LATER_FRAMES
) -> int:
    """Inverse of latent_frames; raises when num_frames is not first + later * k."""
    _positive("num_frames", num_frames)
    first, later = _segments(first, later)
    if num_frames < first or (num_frames - first) % later:
        raise ValueError(
            f"num_frames: expected {first} + {later} * k latent frames (whole segments), got {num_frames}"
        )
    return 1 + (num_frames - first) // later


def ttt_segments(
    num_segments: int, first: int = PAPER_FIRST_FRAMES, later: int = PAPER_LATER_FRAMES
) -> list[tuple[int, int]]:
    """Frame range [start, stop) of each segment's own frames (no overlap)."""
    frames = latent_frames(num_segments, first, later)
    starts = [0] + [first + later * (i - 1) for i in range(1, num_segments)]
    stops = starts[1:] + [frames]
    return list(zip(starts, stops))


def attention_windows(
    num_segments: int, first: int = PAPER_FIRST_FRAMES, later: int = PAPER_LATER_FRAMES
) -> list[tuple[int, int]]:
    """Frame range [start, stop) each attention segment sees: [i * later, i * later + first)."""
    latent_frames(num_segments, first, later)  # validates
    return [(i * later, i * later + first) for i in range(num_segments)]


def frame_overlap_counts(
    num_segments: int, first: int = PAPER_FIRST_FRAMES, later: int = PAPER_LATER_FRAMES
) -> list[int]:
    """How many attention windows see each latent frame (their outputs are averaged)."""
    counts = [0] * latent_frames(num_segments, first, later)
    for start, stop in attention_windows(num_segments, first, later):
        for f in range(start, stop):
            counts[f] += 1
    return counts


def frame_window_positions(
    num_segments: int, first: int = PAPER_FIRST_FRAMES, later: int = PAPER_LATER_FRAMES
) -> list[int]:
    """Each frame's temporal position inside the attention window of its own TTT segment (0 .. first-1).

    Used for absolute (sin-cos) frame positions, which need one position per frame: an overlap frame takes
    its position from the window of the segment it belongs to (the earlier one).
    """
    out: list[int] = []
    for i, (start, stop) in enumerate(ttt_segments(num_segments, first, later)):
        window_start = i * later
        out.extend(f - window_start for f in range(start, stop))
    return out


def video_token_count(
    num_segments: int, tokens_per_frame: int, first: int = PAPER_FIRST_FRAMES, later: int = PAPER_LATER_FRAMES
) -> int:
    """Video tokens of the whole video (63 s at 480 x 720: 253 * 1350 = 341,550)."""
    _positive("tokens_per_frame", tokens_per_frame)
    return latent_frames(num_segments, first, later) * tokens_per_frame


def sequence_length(
    num_segments: int,
    text_len: int,
    tokens_per_frame: int,
    first: int = PAPER_FIRST_FRAMES,
    later: int = PAPER_LATER_FRAMES,
) -> int:
    """Length of the global (TTT) sequence: S text blocks of text_len plus every video token."""
    if isinstance(text_len, bool) or not isinstance(text_len, int) or text_len < 0:
        raise ValueError(f"text_len: expected an int >= 0, got {text_len!r}")
    return num_segments * text_len + video_token_count(num_segments, tokens_per_frame, first, later)


def interleave_offsets(
    num_segments: int,
    text_len: int,
    tokens_per_frame: int,
    first: int = PAPER_FIRST_FRAMES,
    later: int = PAPER_LATER_FRAMES,
) -> list[tuple[int, int, int]]:
    """(text_start, video_start, video_stop) of each segment in the interleaved sequence."""
    sequence_length(num_segments, text_len, tokens_per_frame, first, later)  # validates
    out, pos = [], 0
    for start, stop in ttt_segments(num_segments, first, later):
        video_start = pos + text_len
        video_stop = video_start + (stop - start) * tokens_per_frame
        out.append((pos, video_start, video_stop))
        pos = video_stop
    return out


def interleave_index(
    num_segments: int,
    text_len: int,
    tokens_per_frame: int,
    first: int = PAPER_FIRST_FRAMES,
    later: int = PAPER_LATER_FRAMES,
) -> torch.Tensor:
    """[L] long: the stream position of every interleaved position (interleaved = stream[:, idx])."""
    text_total = num_segments * text_len
    sequence_length(num_segments, text_len, tokens_per_frame, first, later)  # validates
    pieces = []
    for i, (start, stop) in enumerate(ttt_segments(num_segments, first, later)):
        pieces.append(torch.arange(i * text_len, (i + 1) * text_len))
        pieces.append(
            torch.arange(text_total + start * tokens_per_frame, text_total + stop * tokens_per_frame)
        )
    return torch.cat(pieces)


def stream_reverse_index(
    num_segments: int,
    text_len: int,
    tokens_per_frame: int,
    first: int = PAPER_FIRST_FRAMES,
    later: int = PAPER_LATER_FRAMES,
) -> torch.Tensor:
    """[L] long: reversal in stream order (text blocks in reverse segment order, video token by token)."""
    video = video_token_count(num_segments, tokens_per_frame, first, later)
    text = torch.arange(num_segments * text_len).view(num_segments, text_len).flip(0).reshape(-1)
    return torch.cat([text, num_segments * text_len + torch.arange(video).flip(0)])


def invert_permutation(perm: torch.Tensor) -> torch.Tensor:
    """The inverse of a permutation given as a 1-D index tensor (inv[perm] = arange)."""
    if perm.dim() != 1:
        raise ValueError(f"perm: expected a 1-D index tensor, got shape {tuple(perm.shape)}")
    n = perm.numel()
    if not torch.equal(torch.sort(perm).values, torch.arange(n, device=perm.device, dtype=perm.dtype)):
        raise ValueError("perm: not a permutation (repeated or out-of-range entries)")
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n, device=perm.device, dtype=perm.dtype)
    return inv


def reverse_index(
    num_segments: int,
    text_len: int,
    tokens_per_frame: int,
    first: int = PAPER_FIRST_FRAMES,
    later: int = PAPER_LATER_FRAMES,
) -> torch.Tensor:
    """[L] long: the reverse order as a permutation of interleaved positions (an involution).

    reversed = interleaved[:, idx]; applying it twice gives back the interleaved sequence.
    """
    g = interleave_index(num_segments, text_len, tokens_per_frame, first, later)
    r = stream_reverse_index(num_segments, text_len, tokens_per_frame, first, later)
    return invert_permutation(g)[r[g]]


def attention_index(
    num_segments: int,
    text_len: int,
    tokens_per_frame: int,
    first: int = PAPER_FIRST_FRAMES,
    later: int = PAPER_LATER_FRAMES,
) -> torch.Tensor:
    """[S, text_len + first * N] long: stream positions of the tokens of each attention window.

    Window i = [text_i ; frames i*later .. i*later + first - 1].
    """
    text_total = num_segments * text_len
    sequence_length(num_segments, text_len, tokens_per_frame, first, later)  # validates
    rows = []
    for i, (start, stop) in enumerate(attention_windows(num_segments, first, later)):
        text = torch.arange(i * text_len, (i + 1) * text_len)
        video = torch.arange(text_total + start * tokens_per_frame, text_total + stop * tokens_per_frame)
        rows.append(torch.cat([text, video]))
    return torch.stack(rows)


@dataclass(frozen=True)
class SegmentLayout:
    """The layout of one forward pass: S segments with text_len tokens each, N tokens per latent frame."""

    num_segments: int
    text_len: int
    tokens_per_frame: int
    first: int = PAPER_FIRST_FRAMES
    later: int = PAPER_LATER_FRAMES

    def __post_init__(self) -> None:
        sequence_length(self.num_segments, self.text_len, self.tokens_per_frame, self.first, self.later)

    @property
    def num_frames(self) -> int:
        return latent_frames(self.num_segments, self.first, self.later)

    @property
    def text_tokens(self) -> int:
        return self.num_segments * self.text_len

    @property
    def video_tokens(self) -> int:
        return self.num_frames * self.tokens_per_frame

    @property
    def length(self) -> int:
        return self.text_tokens + self.video_tokens

    @property
    def window_length(self) -> int:
        """Tokens of one attention window: text_len + first * N."""
        return self.text_len + self.first * self.tokens_per_frame

    def _args(self) -> tuple[int, int, int, int, int]:
        return self.num_segments, self.text_len, self.tokens_per_frame, self.first, self.later

    def interleave_index(self) -> torch.Tensor:
        return interleave_index(*self._args())

    def reverse_index(self) -> torch.Tensor:
        return reverse_index(*self._args())

    def attention_index(self) -> torch.Tensor:
        return attention_index(*self._args())

    def stream_overlap_counts(self) -> torch.Tensor:
        """[L] float: windows that see each stream token (1 for text, 1 or 2 for video in the paper)."""
        frames = torch.tensor(
            frame_overlap_counts(self.num_segments, self.first, self.later), dtype=torch.float32
        )
        video = frames.repeat_interleave(self.tokens_per_frame)
        return torch.cat([torch.ones(self.text_tokens), video])
