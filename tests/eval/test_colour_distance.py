"""colour_distance: a sliced Wasserstein distance between Lab colour distributions."""

from __future__ import annotations

import numpy as np

from ttt_engine.eval.metrics import colour_distance, srgb_to_lab


def test_lab_of_known_colours() -> None:
    np.testing.assert_allclose(srgb_to_lab(np.array([1.0, 1.0, 1.0])), [100, 0, 0], atol=0.01)
    np.testing.assert_allclose(srgb_to_lab(np.array([0.0, 0.0, 0.0])), [0, 0, 0], atol=0.01)
    np.testing.assert_allclose(srgb_to_lab(np.array([1.0, 0.0, 0.0])), [53.24, 80.09, 67.20], atol=0.05)


def test_same_palette_in_any_arrangement_is_zero_and_shifts_grow() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((2, 16, 16, 3))
    shuffled = rng.permutation(img.reshape(-1, 3)).reshape(img.shape)
    assert colour_distance(img, shuffled) < 1e-9
    small = colour_distance(img, np.clip(img + 0.05, 0, 1))
    large = colour_distance(img, np.clip(img + 0.2, 0, 1))
    assert 0 < small < large
    grey = np.full((4, 4, 3), 0.5)
    # L of mid grey differs from white's by 46.6; the projection of the L difference averages to a fraction
    assert 10 < colour_distance(grey, np.ones((4, 4, 3))) < 46.6
