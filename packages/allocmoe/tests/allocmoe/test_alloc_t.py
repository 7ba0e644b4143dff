"""Alloc-T's invariants on the canonical routing (the Triton kernel is checked against it separately)."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from allocmoe.kernels.routing_ref import route_reference


@st.composite
def cases(draw):
    T = draw(st.integers(1, 24))
    E = draw(st.integers(1, 12))
    k_orig = draw(st.integers(1, E))
    k_l = draw(st.integers(1, k_orig))
    k_base = draw(st.integers(0, k_l))
    score = draw(st.sampled_from(["softmax", "sigmoid"]))
    seed = draw(st.integers(0, 2**16))
    return T, E, k_orig, k_l, k_base, score, seed


@given(cases())
def test_alloc_t_invariants(case):
    T, E, k_orig, k_l, k_base, score, seed = case
    logits = torch.randn(T, E, generator=torch.Generator().manual_seed(seed))
    n_extra = (k_l - k_base) * T
    topv, ids, keep = route_reference(logits, k_orig=k_orig, k_base=k_base, n_extra=n_extra, score=score)
    # the layer never spends more than K_l x T, and spends exactly that (enough candidates exist)
    assert int(keep.sum()) == k_l * T
    # every token keeps at least its floor
    assert bool((keep.sum(-1) >= k_base).all())
    # kept experts are within the token's own top-K_orig
    s = logits.softmax(-1) if score == "softmax" else logits.sigmoid()
    top = s.topk(k_orig, dim=-1).indices
    for t in range(T):
        kept = set(ids[t][keep[t]].tolist())
        assert kept <= set(top[t].tolist())
    # the pooled slots are the best candidates: no dropped candidate beats a kept pooled one
    pool_keep, pool_v = keep[:, k_base:], topv[:, k_base:]
    if pool_keep.any() and (~pool_keep).any():
        assert float(pool_v[pool_keep].min()) >= float(pool_v[~pool_keep].max())


@given(cases())
def test_k_base_equal_k_l_is_exactly_top_k(case):
    T, E, k_orig, k_l, _, score, seed = case
    logits = torch.randn(T, E, generator=torch.Generator().manual_seed(seed))
    _, ids, keep = route_reference(logits, k_orig=k_orig, k_base=k_l, n_extra=0, score=score)
    s = logits.softmax(-1) if score == "softmax" else logits.sigmoid()
    expected = s.topk(k_l, dim=-1).indices.sort(-1).values
    assert torch.equal(ids[:, :k_l].sort(-1).values, expected)
    assert bool((ids[:, k_l:] == -1).all()) and int(keep.sum()) == k_l * T


def test_confident_tokens_give_slots_to_uncertain_ones():
    # token 0 is confident (one expert dominates), token 1 is flat: with K_l = 2, K_base = 1 the
    # pooled slots go to the flat token
    logits = torch.tensor([[8.0, 0.0, 0.0, 0.0], [1.0, 0.99, 0.98, 0.97]])
    _, _ids, keep = route_reference(logits, k_orig=4, k_base=1, n_extra=2)
    assert keep.sum(-1).tolist() == [1, 3]


def test_sequence_pools_are_independent_of_other_sequences():
    g = torch.Generator().manual_seed(1)
    a, b, c = (torch.randn(5, 8, generator=g) for _ in range(3))
    _, ids_ab, _ = route_reference(torch.cat([a, b]), k_orig=4, k_base=1, n_extra=5, num_pools=2)
    _, ids_ac, _ = route_reference(torch.cat([a, c]), k_orig=4, k_base=1, n_extra=5, num_pools=2)
    assert torch.equal(ids_ab[:5], ids_ac[:5])


def test_padding_takes_no_slot():
    logits = torch.randn(6, 8, generator=torch.Generator().manual_seed(2))
    valid = torch.tensor([True, True, True, False, False, True])
    _, ids, keep = route_reference(logits, k_orig=4, k_base=1, n_extra=100, valid_tokens=valid)
    assert not keep[~valid].any() and bool((ids[~valid] == -1).all())
    assert int(keep.sum()) == 4 * 4  # every valid candidate, nothing more
