"""The zigzag ring's block schedule: every causal (query, key) pair exactly once, equal work per rank."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from effcore.errors import ConfigError
from paradyse.attention import ring_blocks, ring_score_elements, ring_segments
from paradyse.config import ModelConfig, PlanError, check_sequence


def _pairs(p: int, local_len: int, layout: str, chunk: int) -> list[tuple[int, int]]:
    # the (query position, key position) pairs the schedule scores unmasked, over every rank and step
    from paradyse.attention import _block_chunks

    out = []
    for rank in range(p):
        qpos = [s + i for s, n in ring_segments(rank, p, local_len, layout) for i in range(n)]
        for t in range(p):
            owner = (rank - t) % p
            kpos = [s + i for s, n in ring_segments(owner, p, local_len, layout) for i in range(n)]
            for blk in ring_blocks(rank, owner, p, local_len, causal=True, layout=layout):
                for i0, i1, kend, row0 in _block_chunks(blk, chunk):
                    for i in range(i0, i1):
                        for j in range(blk.k0, kend):
                            if not (blk.masked and j - blk.k0 > row0 + i - i0):
                                out.append((qpos[i], kpos[j]))
    return out


@given(p=st.integers(1, 6), half=st.integers(1, 5), chunk=st.integers(1, 12),
       layout=st.sampled_from(["contiguous", "zigzag"]))  # fmt: skip
def test_the_ring_schedule_scores_every_causal_pair_exactly_once(p, half, chunk, layout):
    local_len = 2 * half
    pairs = _pairs(p, local_len, layout, chunk)
    n = p * local_len
    assert sorted(pairs) == [(q, k) for q in range(n) for k in range(q + 1)]


@pytest.mark.parametrize("p", [2, 3, 4, 8])
@pytest.mark.parametrize(("local_len", "chunk"), [(64, 1024), (64, 7), (130, 16)])
def test_zigzag_ranks_do_equal_attention_work_and_the_plain_ring_does_not(p, local_len, chunk):
    zig = [ring_score_elements(r, p, local_len, causal=True, layout="zigzag", chunk=chunk) for r in range(p)]
    plain = [
        ring_score_elements(r, p, local_len, causal=True, layout="contiguous", chunk=chunk) for r in range(p)
    ]
    assert len(set(zig)) == 1, f"zigzag work per rank {zig}"
    # the plain ring's last rank scores every earlier block: about 2 - 1/p times the average
    assert plain == sorted(plain) and plain[-1] / (sum(plain) / p) > 1.5 - 1 / p
    assert max(zig) < plain[-1]


def test_zigzag_needs_a_causal_model_and_an_even_shard():
    with pytest.raises(ConfigError, match="zigzag' balances causal attention"):
        ModelConfig(hidden=32, heads=4, layers=1, causal=False, ring_layout="zigzag")
    with pytest.raises(ConfigError, match="ring_layout='spiral' is not one of contiguous, zigzag"):
        ModelConfig(hidden=32, heads=4, layers=1, ring_layout="spiral")
    cfg = ModelConfig(hidden=32, heads=4, layers=1, ring_layout="zigzag")
    with pytest.raises(PlanError, match="not divisible by 8: a zigzag ring's shards hold two chunks"):
        check_sequence(36, 4, cfg)
    check_sequence(40, 4, cfg)


def test_the_simulator_counts_the_zigzag_ring_balanced_and_its_moves():
    from paradyse.simulate import layer_work

    plain = ModelConfig(hidden=4096, heads=32, layers=1)
    zig = ModelConfig(hidden=4096, heads=32, layers=1, ring_layout="zigzag")
    s, p = 65536, 8
    a, b = layer_work(plain, "ring", s, p), layer_work(zig, "ring", s, p)
    assert b.flops < a.flops and b.bytes > a.bytes and b.collectives == a.collectives + 8
    # the projections and the MLP are the same work; only attention loses the 2 - 1/p imbalance
    attn = 3 * 2 * s * s * 4096 / p
    assert a.flops - b.flops == pytest.approx(attn * (1 - 1 / p), rel=1e-9)
    assert layer_work(zig, "ulysses", s, p) == layer_work(plain, "ulysses", s, p)
