"""Merak's graph sharding: walk the proxy graph in order, cut where one value is live, merge across skips.

The walk is the authors' ``farthest_deps_mapping`` (itself from fairscale's ``auto_shard``): nodes
join the current shard until its parameters exceed ``total / shard_count`` (embeddings excluded
from the total and never closing a shard), then the shard closes. A node that reads a value from
an older shard, other than the previous shard's output, is a skip connection: every shard from
that value's shard on is merged, so no cut is ever crossed by a skip. Values that do not need a
gradient and have several users (masks, positions) are *tracked*: they are forwarded to later
shards instead of forcing a merge (the authors track nodes with more than 5 users; we also track
every non-differentiable value with two or more, which a small model needs).

Beyond the authors: nodes that depend on neither an input nor a trainable parameter (a causal mask,
a rotary table, at a fixed shape) are *floating*: each stage that needs them recomputes them, so
they never cross a cut.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torch import fx, nn

from effcore.errors import ConfigError
from effcore.profiling.graph import node_tensors
from merak.capture import CapturedModel

__all__ = ["Shard", "floating_nodes", "program_order", "shard_graph"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Shard:
    """A run of consecutive nodes that no skip connection enters; ``param_bytes`` counts every weight
    (and buffer) its nodes read, a weight shared with another shard (tied embeddings) in both."""

    index: int
    nodes: tuple[str, ...]
    param_bytes: int
    flops: int
    leaves: tuple[str, ...]


def _inputs(node: fx.Node) -> Iterator[fx.Node]:
    yield from node.all_input_nodes


def _is_parameter(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op != "get_attr":
        return False
    value = gm
    for part in str(node.target).split("."):
        value = getattr(value, part, None)
    return isinstance(value, nn.Parameter)


def floating_nodes(gm: fx.GraphModule) -> set[fx.Node]:
    """Nodes computed from constants and buffers only (no input, no parameter, no module call)."""
    floating: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output", "call_module") or _is_parameter(gm, node):
            continue
        if all(arg in floating for arg in _inputs(node)):
            floating.add(node)
    return floating


def program_order(gm: fx.GraphModule) -> list[fx.Node]:
    """The non-floating nodes in an order a program would run them: ``torch.export`` hoists every
    parameter read to the top; here each sits just before its first user, so a shard holds the
    parameters its own nodes use."""
    floating = floating_nodes(gm)
    order: list[fx.Node] = []
    placed: set[fx.Node] = set()
    pending_params = [n for n in gm.graph.nodes if _is_parameter(gm, n)]
    for node in gm.graph.nodes:
        if node in floating or node in placed or _is_parameter(gm, node) or node.op == "output":
            continue
        for arg in _inputs(node):
            if arg in pending_params and arg not in placed:
                order.append(arg)
                placed.add(arg)
        order.append(node)
        placed.add(node)
    return order


def _tracked(node: fx.Node, differentiable: dict[str, bool], track_users: int) -> bool:
    users = len(node.users)
    return users > track_users or (users >= 2 and not differentiable.get(node.name, True))


def shard_graph(
    captured: CapturedModel,
    shard_count: int | None = None,
    *,
    track_users: int = 5,
    close_at: str = "clean",
) -> list[Shard]:
    """Merak's shards of the captured graph (default ``shard_count``: twice the number of blocks).

    ``close_at="farthest"`` closes a full shard at once, as the authors do, and lets the skip rule
    merge it back when a residual crosses the cut (blocks then end up whole). ``"clean"`` (default)
    waits for the first node after which no other untracked value is live, so a cut falls where only
    the residual stream crosses: between blocks and between a block's attention and MLP halves.
    """
    if close_at not in ("clean", "farthest"):
        raise ConfigError(f"close_at must be 'clean' or 'farthest', got {close_at!r}")
    gm = captured.graph
    blocks = len(captured.model.get_submodule(captured.blocks))
    count = shard_count if shard_count is not None else 2 * blocks
    if count < 1:
        raise ConfigError(f"shard_count must be >= 1, got {count}")
    profile = {row.name: row for row in captured.nodes}
    differentiable = {row.name: row.differentiable for row in captured.nodes}
    embeddings = {
        node.name
        for node in gm.graph.nodes
        if node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), nn.Embedding)
    }
    order = program_order(gm)
    total = sum(profile[n.name].param_bytes for n in order)
    target = (total - sum(profile[n].param_bytes for n in embeddings)) / count

    shard_of: dict[str, int] = {}
    shard_params: dict[int, int] = {}
    closed_output: dict[int, str] = {}  # shard -> the node whose value leaves it
    remaining = {n.name: len(n.users) for n in order}
    live: set[str] = set()  # assigned, untracked values that a later node still reads
    current = 0
    previous: str | None = None
    for node in order:
        lowest = current
        for arg in _inputs(node):
            if arg.name not in shard_of:
                continue  # floating: recomputed where needed
            remaining[arg.name] -= 1
            if remaining[arg.name] == 0:
                live.discard(arg.name)
            if arg.name == previous or _tracked(arg, differentiable, track_users):
                continue  # the value just computed, or one forwarded to later shards
            home = shard_of[arg.name]
            # a shard's output may feed the next shard; any other value only its own shard
            lowest = min(lowest, home + 1 if closed_output.get(home) == arg.name else home)
        if lowest < current:  # a skip: merge every shard from `lowest` on
            for name, s in shard_of.items():
                if s > lowest:
                    shard_of[name] = lowest
            for s in [s for s in closed_output if s >= lowest]:
                del closed_output[s]
            shard_params = {s: p for s, p in shard_params.items() if s < lowest}
            shard_params[lowest] = sum(profile[n].param_bytes for n, s in shard_of.items() if s == lowest)
            current = lowest
        shard_of[node.name] = current
        shard_params[current] = shard_params.get(current, 0) + profile[node.name].param_bytes
        if remaining[node.name] and not _tracked(node, differentiable, track_users):
            live.add(node.name)
        previous = node.name
        full = shard_params[current] > target and node.name not in embeddings
        if full and (close_at == "farthest" or live <= {node.name}):
            closed_output[current] = node.name
            current += 1
    return _collect(captured, order, shard_of)


def _collect(captured: CapturedModel, order: list[fx.Node], shard_of: dict[str, int]) -> list[Shard]:
    profile = {row.name: row for row in captured.nodes}

    def weight_bytes(nodes: list[fx.Node]) -> int:
        # each shard holds every weight it reads: a tied embedding counts in both shards that use it
        held = {id(t): t for n in nodes for t in node_tensors(captured.graph, n)}
        return sum(t.numel() * t.element_size() for t in held.values())

    groups: dict[int, list[fx.Node]] = {}
    for node in order:
        groups.setdefault(shard_of[node.name], []).append(node)
    shards = []
    for index, key in enumerate(sorted(groups)):
        nodes = groups[key]
        shards.append(
            Shard(
                index=index,
                nodes=tuple(n.name for n in nodes),
                param_bytes=weight_bytes(nodes),
                flops=sum(profile[n.name].flops for n in nodes),
                leaves=tuple(leaf for n in nodes if (leaf := captured.leaf_of(n)) is not None),
            )
        )
    return shards
