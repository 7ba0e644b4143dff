"""Expert-load preservation metrics against hand-worked cases, and as `eval` reports them."""

from __future__ import annotations

import math

import pytest

from allocmoe.load import js_divergence, load_preservation, spearman


def test_spearman_of_same_and_reversed_rankings():
    assert spearman([10, 20, 30, 40], [1, 2, 3, 4]) == pytest.approx(1.0)
    assert spearman([10, 20, 30, 40], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([5, 1, 9], [50, 10, 90]) == pytest.approx(1.0)  # ranks, not values


def test_spearman_gives_ties_their_average_rank():
    # ranks [1, 2.5, 2.5, 4] against [1, 2, 3, 4]: centred [-1.5, 0, 0, 1.5] . [-1.5, -.5, .5, 1.5] = 4.5,
    # norms sqrt(4.5) and sqrt(5): rho = 4.5 / sqrt(22.5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(22.5), rel=1e-12)


def test_spearman_of_a_constant_load_is_undefined():
    assert math.isnan(spearman([3, 3, 3], [1, 2, 3]))


def test_js_divergence_hand_worked():
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)  # disjoint: 1 bit
    assert js_divergence([2, 4], [1, 2]) == pytest.approx(0.0, abs=1e-15)  # same shares
    # p = [.5, .5], q = [1, 0], m = [.75, .25]: KL(p||m) = .5 log2(2/3) + .5, KL(q||m) = log2(4/3)
    expected = ((0.5 * math.log2(2 / 3) + 0.5) + math.log2(4 / 3)) / 2
    assert js_divergence([1, 1], [2, 0]) == pytest.approx(expected, rel=1e-12)
    assert js_divergence([1, 1], [2, 0]) == pytest.approx(js_divergence([2, 0], [1, 1]), rel=1e-12)


def test_js_divergence_rejects_empty_or_negative_loads():
    with pytest.raises(ValueError, match="positive sum"):
        js_divergence([0, 0], [1, 1])
    with pytest.raises(ValueError, match="equal lengths"):
        js_divergence([1, 1], [1, 1, 1])


def test_load_preservation_means_skip_undefined_layers():
    lp = load_preservation([[1, 2, 3], [3, 3, 3]], [[3, 2, 1], [1, 2, 3]])
    assert lp.spearman[0] == pytest.approx(-1.0) and math.isnan(lp.spearman[1])
    assert lp.spearman_mean == pytest.approx(-1.0)
    assert lp.js_mean == pytest.approx(
        (js_divergence([1, 2, 3], [3, 2, 1]) + js_divergence([3] * 3, [1, 2, 3])) / 2
    )
