"""Frames between two native frames: motion-compensated (optical flow), blended, or held.

Flow is OpenCV's DIS optical flow (no hand-written flow), computed in both directions between the two
native frames at the generation size. A pixel y of the frame at time t (0 < t < 1) is looked up on
each side: in frame A at the point x with x + t * F_ab(x) = y, in frame B at the point x with
x + (1 - t) * F_ba(x) = y, each found by a few fixed-point steps (cv2.remap samples the flow). A side
whose steps do not converge does not see y. A side whose source point fails the forward-backward
consistency check (F_ab(x) + F_ba(x + F_ab(x)) should cancel) is about to be covered or was just
uncovered: it is used only where the other side has nothing. The two sides are mixed with weights
1 - t and t. Pixels that neither side sees are blended. When more than `FlowConfig.max_unreliable` of
the frame has no consistent source on either side (a cut the plan did not know about, a flash, motion
faster than flow follows), the whole frame is blended and reported as a fallback; a moving object's
occlusion edges stay well under that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RETIME_METHODS = ("flow", "blend", "hold")


@dataclass(frozen=True)
class FlowConfig:
    """Flow settings.

    preset: DIS preset name (ultrafast, fast, medium). finest_scale: the pyramid level DIS stops at; 0
    refines at full resolution (the presets stop at 1 or 2, fine for large frames, but a generation is
    small and every pixel of it counts: 0 takes the test disc's worst centroid error from 0.40 to 0.30 px).
    iterations: fixed-point steps to find a source point. converge_px: a source point is found when it
    lands within this of y. consistency_px: forward-backward flows cancel within this (plus
    consistency_rel x the motion). max_unreliable: fraction of pixels without a consistent source on
    either side above which the whole frame falls back to blend.
    """

    preset: str = "medium"
    finest_scale: int = 0
    iterations: int = 6
    converge_px: float = 0.25
    consistency_px: float = 0.75
    consistency_rel: float = 0.1
    max_unreliable: float = 0.1


DEFAULT_FLOW = FlowConfig()
_OCCLUDED_WEIGHT = 1e-3
"""Relative weight of a side whose source point is occluded on the other frame (used only when alone)."""


@dataclass(frozen=True)
class FlowPair:
    """Dense flows between frames A and B at the generation size, (H, W, 2) float32 (dx, dy) each."""

    forward: np.ndarray  # A -> B
    backward: np.ndarray  # B -> A


def guide(image: np.ndarray) -> np.ndarray:
    """A flow input: (H, W) uint8 of the mean of the colour channels, values clipped to 0..1.

    Give it display-referred frames (the model's own output is): flow follows perceived edges."""
    rgb = np.asarray(image, dtype=np.float32)[..., :3]
    return np.round(np.clip(rgb.mean(axis=-1), 0.0, 1.0) * 255.0).astype(np.uint8)


def compute_flows(guide_a: np.ndarray, guide_b: np.ndarray, config: FlowConfig = DEFAULT_FLOW) -> FlowPair:
    """DIS flow A -> B and B -> A of two (H, W) uint8 guides (see `guide`)."""
    import cv2

    presets = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }
    if config.preset not in presets:
        raise ValueError(f"flow preset must be one of {', '.join(presets)}; got {config.preset!r}")
    if guide_a.shape != guide_b.shape or guide_a.ndim != 2 or guide_a.dtype != np.uint8:
        raise ValueError(
            f"flow guides must be two (H, W) uint8 images of one size, got {guide_a.shape} {guide_a.dtype} "
            f"and {guide_b.shape} {guide_b.dtype}"
        )
    dis = cv2.DISOpticalFlow_create(presets[config.preset])
    dis.setFinestScale(config.finest_scale)
    forward = dis.calc(guide_a, guide_b, None)
    backward = dis.calc(guide_b, guide_a, None)
    return FlowPair(forward.astype(np.float32), backward.astype(np.float32))


def _remap(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    import cv2

    out = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out[:, :, None] if out.ndim == 2 else out


def _find_source(
    flow: np.ndarray, other: np.ndarray, t: float, config: FlowConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For every y, the point x with x + t * flow(x) = y: (map_x, map_y, converged, consistent)."""
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x, map_y = grid_x.copy(), grid_y.copy()
    for _ in range(config.iterations):
        f = _remap(flow, map_x, map_y)
        map_x, map_y = grid_x - t * f[:, :, 0], grid_y - t * f[:, :, 1]
    f = _remap(flow, map_x, map_y)
    residual = np.hypot(map_x + t * f[:, :, 0] - grid_x, map_y + t * f[:, :, 1] - grid_y)
    converged = residual <= config.converge_px
    converged &= (map_x >= -0.5) & (map_x <= w - 0.5) & (map_y >= -0.5) & (map_y <= h - 0.5)
    # forward-backward: the flow at x and the other direction's flow where x lands should cancel
    back = _remap(other, map_x + f[:, :, 0], map_y + f[:, :, 1])
    mismatch = np.hypot(f[:, :, 0] + back[:, :, 0], f[:, :, 1] + back[:, :, 1])
    consistent = mismatch <= config.consistency_px + config.consistency_rel * np.hypot(f[:, :, 0], f[:, :, 1])
    return map_x, map_y, converged, consistent


def blend(a: np.ndarray, b: np.ndarray, weight: float) -> np.ndarray:
    """(1 - weight) * a + weight * b as float32 (a frame blend: moving things ghost)."""
    return ((1.0 - weight) * np.asarray(a, np.float32) + weight * np.asarray(b, np.float32)).astype(
        np.float32
    )


def flow_interpolate(
    a: np.ndarray, b: np.ndarray, weight: float, flows: FlowPair, config: FlowConfig = DEFAULT_FLOW
) -> tuple[np.ndarray, bool]:
    """The frame at time `weight` between a and b (H, W, C float32 at the flows' size), motion
    compensated with `flows`; (frame, used_fallback)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    if a.shape != b.shape or a.shape[:2] != flows.forward.shape[:2]:
        raise ValueError(
            f"flow interpolation needs two frames of the flow's size {flows.forward.shape[:2]}, got {a.shape} "
            f"and {b.shape}"
        )
    t = float(weight)
    ax, ay, a_found, a_clear = _find_source(flows.forward, flows.backward, t, config)
    bx, by, b_found, b_clear = _find_source(flows.backward, flows.forward, 1.0 - t, config)
    wa = (1.0 - t) * a_found * np.where(a_clear, 1.0, _OCCLUDED_WEIGHT)
    wb = t * b_found * np.where(b_clear, 1.0, _OCCLUDED_WEIGHT)
    unseen = (wa + wb) <= 0.0
    unreliable = ~((a_found & a_clear) | (b_found & b_clear))  # no side with a consistent source point
    if unreliable.mean() > config.max_unreliable:
        return blend(a, b, t), True
    total = np.where(unseen, 1.0, wa + wb)
    wa = np.where(unseen, 1.0 - t, wa / total).astype(np.float32)[:, :, None]
    wb = np.where(unseen, t, wb / total).astype(np.float32)[:, :, None]
    warped_a = np.where(unseen[:, :, None], a, _remap(a, ax, ay))
    warped_b = np.where(unseen[:, :, None], b, _remap(b, bx, by))
    return (wa * warped_a + wb * warped_b).astype(np.float32), False


def interpolate(a: np.ndarray, b: np.ndarray, weight: float, method: str) -> tuple[np.ndarray, bool]:
    """The frame at time `weight` (0..1) between frames a and b (H, W, C float32): (frame, used_fallback).

    flow: motion compensated (flows computed here from a and b, see `guide`); blend: a cross-fade;
    hold: the nearer frame (b from half way). used_fallback is True when flow gave up for a blend.
    """
    if method not in RETIME_METHODS:
        raise ValueError(f"retime method must be one of {', '.join(RETIME_METHODS)}; got {method!r}")
    if not 0.0 <= float(weight) <= 1.0:
        raise ValueError(f"interpolation weight must be in 0..1, got {weight!r}")
    if np.shape(a) != np.shape(b):
        raise ValueError(f"interpolation needs two frames of one shape, got {np.shape(a)} and {np.shape(b)}")
    if weight == 0.0 or weight == 1.0 or method == "hold":
        return np.array(b if weight >= 0.5 else a, dtype=np.float32, copy=True), False
    if method == "blend":
        return blend(a, b, weight), False
    return flow_interpolate(a, b, weight, compute_flows(guide(a), guide(b)))


__all__ = [
    "DEFAULT_FLOW",
    "RETIME_METHODS",
    "FlowConfig",
    "FlowPair",
    "blend",
    "compute_flows",
    "flow_interpolate",
    "guide",
    "interpolate",
]
