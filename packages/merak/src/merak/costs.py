"""Per-shard costs for the partitioner: measured on this machine, or predicted from FLOPs on a device spec.

``measure`` times every leaf module forward and backward with ``effcore.profiling.profile_modules``
on one micro-batch and spreads the rest of the step (glue: in-block norms, residual adds, masks)
over the shards by their glue nodes. ``predict`` needs no weights (a model on the meta device): a
shard's forward is its FLOPs at the device's dense peak, backward twice that (the usual 2x),
its activations what autograd saves in a shape-only run (attention on SDPA's math path, so an
upper bound where a flash kernel runs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from effcore.device import DeviceSpec
from effcore.profiling import profile_modules
from merak.capture import CapturedModel
from merak.partition import ShardCost
from merak.shard import Shard, program_order

__all__ = ["crossing_bytes", "measure_costs", "predict_costs"]


def crossing_bytes(captured: CapturedModel, shards: Sequence[Shard]) -> list[int]:
    """Bytes of the values that leave each shard for a later one (0 after the last shard)."""
    home = {name: s.index for s in shards for name in s.nodes}
    size = {row.name: row.output_bytes for row in captured.nodes}
    last_reader: dict[str, int] = {}
    for node in program_order(captured.graph):
        for arg in node.all_input_nodes:
            if arg.name in home:
                last_reader[arg.name] = max(last_reader.get(arg.name, -1), home[node.name])
    out = [0] * len(shards)
    for name, first in home.items():
        for k in range(first, last_reader.get(name, first)):
            out[k] += size[name]
    return out


def _glue_counts(captured: CapturedModel, shards: Sequence[Shard]) -> list[int]:
    nodes = {n.name: n for n in captured.graph.graph.nodes}
    return [
        sum(
            1
            for name in s.nodes
            if nodes[name].op == "call_function" and captured.leaf_of(nodes[name]) is None
        )
        for s in shards
    ]


def predict_costs(captured: CapturedModel, shards: Sequence[Shard], spec: DeviceSpec) -> list[ShardCost]:
    """Shard costs from FLOPs at ``spec``'s peak for the model's dtype (no weights needed)."""
    dtype = next(captured.model.parameters()).dtype
    peak = spec.flops(dtype)
    rows = {row.name: row for row in captured.nodes}
    sends = crossing_bytes(captured, shards)
    costs = []
    for shard, send in zip(shards, sends, strict=True):
        fwd = sum(rows[n].flops for n in shard.nodes) / peak
        costs.append(
            ShardCost(
                forward_s=fwd,
                backward_s=2 * fwd,
                param_bytes=shard.param_bytes,
                activation_bytes=sum(rows[n].saved_bytes for n in shard.nodes),
                send_bytes=send,
            )
        )
    return costs


def measure_costs(
    captured: CapturedModel, shards: Sequence[Shard], *, warmup: int = 2, repeats: int = 5, seed: int = 0
) -> list[ShardCost]:
    """Shard costs measured on the model's device: leaf times and saved activations per micro-batch."""
    model = captured.model
    device = next(model.parameters()).device
    if device.type == "meta":
        raise ValueError("a model on the meta device cannot be timed; use predict_costs")
    vocab = getattr(model.config, "vocab_size", 2)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, captured.input_shape, generator=gen).to(device)
    leaves = list(captured.leaves)
    rows = profile_modules(
        model,
        {"input_ids": ids, "use_cache": False},
        modules=leaves,
        warmup=warmup,
        repeats=repeats,
        loss_fn=lambda out: out.logits.float().square().mean(),
    )
    by_leaf = {r.name: r for r in rows[:-1]}
    other = rows[-1]
    glue = _glue_counts(captured, shards)
    total_glue = max(1, sum(glue))
    sends = crossing_bytes(captured, shards)
    costs = []
    for shard, g, send in zip(shards, glue, sends, strict=True):
        share = g / total_glue
        mine = [by_leaf[leaf] for leaf in shard.leaves]
        costs.append(
            ShardCost(
                forward_s=(sum(r.forward_ns for r in mine) + share * other.forward_ns) * 1e-9,
                backward_s=(sum(r.backward_ns or 0 for r in mine) + share * (other.backward_ns or 0)) * 1e-9,
                param_bytes=shard.param_bytes,
                activation_bytes=int(sum(r.activation_bytes for r in mine) + share * other.activation_bytes),
                send_bytes=send,
            )
        )
    return costs
