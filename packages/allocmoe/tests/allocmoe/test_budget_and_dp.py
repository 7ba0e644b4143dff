"""Budgets validate against the model; the Alloc-L DP equals brute force and is monotone in B."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from allocmoe.alloc_l import SensitivityProfile, allocate_brute_force, dp_allocate
from allocmoe.budget import ActivationBudget, ThresholdPolicy, parse_budget
from effcore.errors import ConfigError


@st.composite
def tables(draw, max_layers: int = 4, max_k: int = 4):
    L = draw(st.integers(1, max_layers))
    K = draw(st.integers(1, max_k))
    vals = st.floats(0.0, 100.0, allow_nan=False, allow_infinity=False)
    S = [[draw(vals) for _ in range(K)] for _ in range(L)]
    total = draw(st.integers(L, L * K))
    return S, total


@given(tables())
def test_dp_equals_brute_force(case):
    S, total = case
    ks, obj = dp_allocate(S, total)
    _, best = allocate_brute_force(S, total)
    assert sum(ks) <= total and all(1 <= k <= len(S[0]) for k in ks)
    assert obj == pytest.approx(best, rel=1e-9, abs=1e-9)
    assert obj == pytest.approx(sum(S[i][k - 1] for i, k in enumerate(ks)), rel=1e-12, abs=1e-12)


@st.composite
def floored_tables(draw, max_layers: int = 4, max_k: int = 4):
    S, _ = draw(tables(max_layers, max_k))
    L, K = len(S), len(S[0])
    k_min = draw(st.integers(1, K))
    return S, draw(st.integers(L * k_min, L * K)), k_min


@given(floored_tables())
def test_dp_with_a_floor_gives_every_layer_at_least_k_base_and_equals_brute_force(case):
    S, total, k_min = case
    ks, obj = dp_allocate(S, total, k_min=k_min)
    _, best = allocate_brute_force(S, total, k_min=k_min)
    assert all(k_min <= k <= len(S[0]) for k in ks), f"a layer below the floor {k_min}: {ks}"
    assert sum(ks) <= total
    assert obj == pytest.approx(best, rel=1e-9, abs=1e-9)


@given(floored_tables())
def test_exact_budget_dp_spends_exactly_b_above_the_floor_and_equals_brute_force(case):
    S, total, k_min = case
    ks, obj = dp_allocate(S, total, k_min=k_min, exact=True)
    _, best = allocate_brute_force(S, total, k_min=k_min, exact=True)
    assert sum(ks) == total, f"spent {sum(ks)} of B={total}: {ks}"
    assert all(k_min <= k <= len(S[0]) for k in ks), f"a layer below the floor {k_min}: {ks}"
    assert obj == pytest.approx(best, rel=1e-9, abs=1e-9)


@given(floored_tables(), st.booleans())
def test_profile_allocation_never_gives_a_layer_fewer_than_k_base(case, exact):
    S, total, k_base = case
    prof = SensitivityProfile("m", "c", len(S), len(S[0]), [[1.0 + v for v in row] for row in S])
    b = prof.allocate(total, k_base=k_base, exact=exact)
    assert min(b.k_layers) >= k_base, f"K_base={k_base} but K_l={b.k_layers}"
    assert b.total == total if exact else b.total <= total


def test_at_most_b_spends_less_where_fewer_experts_score_better_and_exact_spends_b():
    # a noisy table: top-2 scores better than top-3 and top-4 in both layers
    prof = SensitivityProfile("m", "c", 2, 4, [[5.0, 1.0, 9.0, 9.0], [5.0, 1.0, 9.0, 9.0]])
    assert prof.allocate(6, k_base=None).k_layers == (2, 2)
    assert prof.allocate(6, k_base=None, exact=True).total == 6


def test_the_full_budget_is_every_layer_at_k_orig_never_a_dp_choice():
    prof = SensitivityProfile("m", "c", 2, 4, [[5.0, 1.0, 9.0, 9.0], [5.0, 1.0, 9.0, 9.0]])
    assert dp_allocate(prof.S, 8)[0] == [2, 2]  # what <= B would spend at B = full
    b = prof.allocate(8, k_base=1)
    assert b == ActivationBudget.full_budget(2, 4) and b.is_full and b.k_base is None


def test_profile_allocates_with_k_base_above_one():
    # Without the floor the DP cuts the insensitive layer 0 to 1 < K_base = 2, an invalid budget.
    prof = SensitivityProfile("m", "c", 2, 4, [[10.0, 10.0, 10.0, 10.0], [100.0, 50.0, 20.0, 10.0]])
    assert dp_allocate(prof.S, 5)[0] == [1, 4]
    b = prof.allocate(5, k_base=2)
    assert b.k_layers == (2, 3) and b.k_base == 2


@given(tables())
def test_dp_objective_is_monotone_in_budget(case):
    S, _ = case
    L, K = len(S), len(S[0])
    objs = [dp_allocate(S, b)[1] for b in range(L, L * K + 1)]
    assert all(a >= b - 1e-9 for a, b in itertools.pairwise(objs))


def test_dp_prefers_sensitive_layers():
    # layer 0 loses a lot when cut, layer 1 nothing: the DP cuts layer 1 first
    S = [[50.0, 20.0, 10.0], [10.0, 10.0, 10.0]]
    assert dp_allocate(S, 4)[0] == [3, 1]


def test_dp_rejects_incomplete_or_bad_tables():
    with pytest.raises(ConfigError, match="missing"):
        dp_allocate([[1.0, None]], 2)
    with pytest.raises(ConfigError, match="ragged"):
        dp_allocate([[1.0, 2.0], [1.0]], 2)
    with pytest.raises(ConfigError, match=r"outside 2\.\.4"):
        dp_allocate([[1.0, 2.0], [1.0, 2.0]], 5)
    with pytest.raises(ConfigError, match=r"outside 4\.\.4"):
        dp_allocate([[1.0, 2.0], [1.0, 2.0]], 3, k_min=2)
    with pytest.raises(ConfigError, match=r"floor must be in 1\.\.2"):
        dp_allocate([[1.0, 2.0], [1.0, 2.0]], 4, k_min=3)


def test_budget_validation_names_the_allowed_values():
    with pytest.raises(ConfigError, match=r"outside 1\.\.4"):
        ActivationBudget((0, 2), 4)
    with pytest.raises(ConfigError, match=r"k_base=3 is outside 0\.\.2"):
        ActivationBudget((2, 3), 4, k_base=3)
    with pytest.raises(ConfigError, match="scope"):
        ActivationBudget((2, 3), 4, scope="batch")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        ThresholdPolicy("top_p", 1.5, 4)


@pytest.mark.parametrize(
    ("text", "expected"), [("full", 120), ("1/2", 60), ("0.5", 60), ("2/3", 80), ("5/6", 100), ("40", 40)]
)
def test_parse_budget(text, expected):
    assert parse_budget(text, 30, 4) == expected


@pytest.mark.parametrize("text", ["29", "121", "0", "abc", "3/2"])
def test_parse_budget_rejects_out_of_range(text):
    with pytest.raises(ConfigError, match=r"(30\.\.120|cannot read)"):
        parse_budget(text, 30, 4)


def test_budget_below_floor_is_an_error():
    with pytest.raises(ConfigError, match=r"L\*max\(1,k_base\)=60"):
        parse_budget("40", 30, 4, k_base=2)


@given(st.integers(1, 8), st.integers(1, 6), st.data())
def test_spread_is_uniform_and_exact(L, K, data):
    total = data.draw(st.integers(L, L * K))
    b = ActivationBudget.spread(L, K, total, k_base=None)
    assert b.total == total and max(b.k_layers) - min(b.k_layers) <= 1


def test_budget_round_trips_through_dict():
    b = ActivationBudget((1, 2, 3), 4, k_base=None, scope="sequence", renorm="full")
    assert ActivationBudget.from_dict(b.to_dict()) == b


def test_public_api_resolves_to_the_objects_not_to_submodules():
    import importlib
    import pkgutil
    import types

    import allocmoe

    for mod in pkgutil.walk_packages(allocmoe.__path__, "allocmoe."):
        importlib.import_module(mod.name)  # a submodule named like an export would shadow it
    for name in allocmoe.__all__:
        if name != "__version__":
            assert not isinstance(getattr(allocmoe, name), types.ModuleType), name
