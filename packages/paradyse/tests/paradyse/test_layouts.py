"""Each strategy's layouts against what its code really builds, and against the model's real shards.

The model runs one block per strategy on a ``p``-rank ``fake`` process group (one process: the
collectives return tensors of the right shape, filled with nothing), with the functions it calls
wrapped to record the shape and dtype of what they are given and return. Every layout of
``paradyse.layouts`` must equal a recorded tensor's per-rank shape and dtype, and every layout must be
checked, so a layout that drifts from the code, or a tensor the code builds differently, fails here.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import pytest
import torch
import torch.distributed as dist

from effcore.layout import shard
from paradyse import attention, comm, model
from paradyse.config import STRATEGIES, ModelConfig
from paradyse.layouts import shared_layouts, strategy_layouts
from paradyse.model import ParallelBlock
from paradyse.weights import full_weights, shard_weights, weight_names

CFG = ModelConfig(hidden=64, heads=8, kv_heads=4, layers=1, ffn=128, attn_chunk=4)
WEIGHTS = [w for w in weight_names(CFG) if w.startswith("w")]
ZERO3 = {f"{w}_gathered": [f"gather.{w}"] for w in WEIGHTS} | {
    "q": ["qkv_zero3.0"], "kv": ["qkv_zero3.1", "qkv_zero3.2"], "mlp_up": ["zero3.w1"],
}  # fmt: skip
# layout name -> the recorded tensors it must describe (all of their occurrences)
RECORDED = {
    "megatron": {
        "x_gathered": ["gather.x"], "q": ["local_attention.0"], "kv": ["local_attention.1", "local_attention.2"],
        "attn_out_partial": ["reduce_scatter.first"], "mlp_out_partial": ["reduce_scatter.second"],
        "mlp_up": ["column.w1"],
    },
    "ulysses": ZERO3 | {"q_all_to_all": ["local_attention.0"], "kv_all_to_all": ["local_attention.1", "local_attention.2"]},
    "ring": ZERO3 | {"kv_ring_block": ["exchange"]},
    "metp": {f"{w}_shard_broadcast": [f"broadcast.{w}"] for w in WEIGHTS} | {
        "q_shard": ["ring_attention.0"], "kv_shard": ["ring_attention.1", "ring_attention.2"],
        "kv_ring_block": ["exchange"], "attn_out_shard_partial": ["metp_attn_shard"],
    },
}  # fmt: skip


@pytest.fixture(params=[2, 4])
def fake_group(request):
    from torch.testing._internal.distributed.fake_pg import FakeStore

    p = request.param
    dist.init_process_group("fake", rank=p - 1, world_size=p, store=FakeStore())
    yield p
    dist.destroy_process_group()


def _record(monkeypatch, blk: ParallelBlock) -> dict[str, list[tuple[tuple[int, ...], torch.dtype]]]:
    seen: dict[str, list] = defaultdict(list)
    names = {id(prm): name for name, prm in blk.named_parameters()}

    def note(tag: str, t: torch.Tensor) -> None:
        seen[tag].append((tuple(t.shape), t.dtype))

    def spy(module, fn: str, on_call) -> None:
        real = getattr(module, fn)

        def wrapper(*args, **kwargs):
            out = real(*args, **kwargs)
            on_call(args, out)
            return out

        monkeypatch.setattr(module, fn, wrapper)

    def gathered(args, out):
        note(f"gather.{names.get(id(args[0]), 'x')}", out)

    def column(args, out):
        note("column." + "+".join(names[id(w)] for w in args[1]), out[0])

    def reduce_scatter(args, out):
        note(
            "reduce_scatter.first" if "reduce_scatter.first" not in seen else "reduce_scatter.second", args[0]
        )

    spy(comm, "gather_along", gathered)
    spy(model, "sp_column_linear", column)
    spy(model, "zero3_linear", lambda args, out: note(f"zero3.{names[id(args[1])]}", out))
    spy(model, "broadcast_from", lambda args, out: note(f"broadcast.{names[id(args[0])]}", out))
    spy(model, "reduce_scatter_seq", reduce_scatter)
    spy(model, "_qkv_zero3", lambda args, out: [note(f"qkv_zero3.{i}", t) for i, t in enumerate(out)])
    spy(
        model,
        "local_attention",
        lambda args, out: [note(f"local_attention.{i}", t) for i, t in enumerate(args)],
    )
    spy(
        model,
        "ring_attention",
        lambda args, out: [note(f"ring_attention.{i}", t) for i, t in enumerate(args)],
    )
    spy(model, "_metp_attn_shard", lambda args, out: note("metp_attn_shard", out))
    spy(attention, "_start_exchange", lambda args, out: [note("exchange", t) for t in args[0]])
    return seen


@pytest.mark.parametrize("cfg", [CFG, dataclasses.replace(CFG, dtype="bfloat16")], ids=["fp32", "bf16"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_layout_is_what_the_strategy_really_builds(fake_group, monkeypatch, cfg, strategy):
    p, seq_len, batch = fake_group, 32, 2
    blk = ParallelBlock(cfg, 0)
    layouts = strategy_layouts(cfg, strategy, seq_len, p, batch=batch)
    seen = _record(monkeypatch, blk)
    x = torch.randn(batch, seq_len // p, cfg.hidden).to(cfg.torch_dtype)
    y = blk(x, strategy)
    expected = RECORDED[strategy] | {"x": None} | dict.fromkeys(weight_names(CFG))
    assert sorted(layouts) == sorted(expected), "every layout is checked against the code, and only those"
    for name, layout in layouts.items():
        want = (layout.local_shape(), layout.dtype)
        if name == "x":  # the layer boundary: what comes in and what goes out
            got = [(tuple(x.shape), x.dtype), (tuple(y.shape), y.dtype)]
        elif name in weight_names(CFG):  # the parameters every strategy reads
            got = [(tuple(getattr(blk, name).shape), getattr(blk, name).dtype)]
        else:
            got = [rec for tag in expected[name] for rec in seen[tag]]
        assert got, f"{strategy}: nothing recorded for {name} ({expected[name]})"
        assert all(g == want for g in got), f"{strategy} {name}: layout {want}, built {sorted(set(got))}"


def test_the_partial_and_replicated_layouts_say_so():
    # a partial sum is full-size on every rank; a gathered weight is a full copy
    lays = strategy_layouts(CFG, "megatron", 32, 4)
    assert lays["attn_out_partial"].placements[0].is_partial() and lays["attn_out_partial"].local_shape() == (
        1,
        32,
        64,
    )
    zero3 = strategy_layouts(CFG, "ulysses", 32, 4)
    assert zero3["wq_gathered"].replication_factor() == 4 and zero3["wq"].replication_factor() == 1


@pytest.mark.parametrize("p", [2, 4])
def test_the_weight_layouts_are_the_models_real_shards(p):
    full = full_weights(CFG, 0)
    layouts = shared_layouts(CFG, 32, p)
    for rank in range(p):
        real = shard_weights(full, rank, p)
        for name, w in full.items():
            assert torch.equal(shard(w, layouts[name])[(rank,)], real[name]), f"{name} on rank {rank}"
