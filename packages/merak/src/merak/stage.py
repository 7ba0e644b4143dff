"""Cut the proxy graph into pipeline stage modules: each runs its nodes and forwards what later stages need.

Stage ``s`` is an ``fx.GraphModule`` built from the captured graph's root, so its ``call_module``
nodes call the user's own modules and its parameters are the user's parameter objects (a rank keeps
the stages it runs and can drop the rest). Its inputs are every value made before it that it or a
later stage reads, in program order; its outputs are those that later stages read (the last stage
returns the model's output). Floating nodes (masks and rotary tables at a fixed shape) are copied
into every stage that reads them instead of being sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx

from effcore.errors import ConfigError
from merak.capture import CapturedModel
from merak.shard import floating_nodes, program_order

__all__ = ["StageGraph", "split_stages"]


@dataclass(kw_only=True)
class StageGraph:
    """One pipeline stage: its module, the values it receives and sends, the leaves it calls."""

    index: int
    module: fx.GraphModule
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    leaves: tuple[str, ...]


def _closure(node: fx.Node, floating: set[fx.Node], into: dict[fx.Node, None]) -> None:
    for arg in node.all_input_nodes:
        if arg in floating and arg not in into:
            _closure(arg, floating, into)
            into[arg] = None


def split_stages(captured: CapturedModel, stage_of_node: dict[str, int]) -> list[StageGraph]:
    """Build every stage's module from a node -> stage map over the non-floating nodes.

    Stages must be contiguous in program order (a node's stage is never below its inputs' stages);
    raises ConfigError otherwise.
    """
    gm = captured.graph
    floating = floating_nodes(gm)
    order = program_order(gm)
    missing = [n.name for n in order if n.name not in stage_of_node]
    if missing:
        raise ConfigError(f"{len(missing)} nodes have no stage (first: {missing[0]})")
    stage = {n: stage_of_node[n.name] for n in order}
    stages = 1 + max(stage.values())
    output_node = next(n for n in gm.graph.nodes if n.op == "output")
    for node in order:
        for arg in node.all_input_nodes:
            if arg in stage and stage[arg] > stage[node]:
                raise ConfigError(
                    f"node {node.name} (stage {stage[node]}) reads {arg.name} from stage {stage[arg]}"
                )
    last_use: dict[fx.Node, int] = {}
    for node in order:
        for arg in node.all_input_nodes:
            if arg in stage:
                last_use[arg] = max(last_use.get(arg, 0), stage[node])
    for arg in output_node.all_input_nodes:
        if arg in stage:
            last_use[arg] = stages - 1

    def crossing(boundary: int) -> list[fx.Node]:
        # made before `boundary`, read at or after it
        return [n for n in order if stage[n] < boundary <= last_use.get(n, -1)]

    return [
        _build(
            captured,
            s,
            received=[n for n in order if n.op == "placeholder"] if s == 0 else crossing(s),
            own=[n for n in order if stage[n] == s and n.op != "placeholder"],
            sent=None if s == stages - 1 else crossing(s + 1),
            floating=floating,
            output_node=output_node,
        )
        for s in range(stages)
    ]


def _build(
    captured: CapturedModel,
    index: int,
    *,
    received: list[fx.Node],
    own: list[fx.Node],
    sent: list[fx.Node] | None,
    floating: set[fx.Node],
    output_node: fx.Node,
) -> StageGraph:
    """One stage's module: placeholders for ``received``, copies of ``own`` and the floating nodes
    they need, and an output of ``sent`` (None: the model's own output, for the last stage)."""
    gm = captured.graph
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in received:
        env[node] = graph.placeholder(node.name)
        env[node].meta = dict(node.meta)
    needed: dict[fx.Node, None] = {}
    for node in [*own, *([output_node] if sent is None else [])]:
        _closure(node, floating, needed)
    for node in [n for n in gm.graph.nodes if n in needed or n in own]:  # graph order is topological
        env[node] = graph.node_copy(node, env.__getitem__)
    if sent is None:
        graph.node_copy(output_node, env.__getitem__)
    else:
        graph.output(tuple(env[n] for n in sent) if len(sent) != 1 else env[sent[0]])
    return StageGraph(
        index=index,
        module=fx.GraphModule(gm, graph, class_name=f"Stage{index}"),
        inputs=tuple(n.name for n in received),
        outputs=tuple(n.name for n in (sent or [])),
        leaves=tuple(leaf for n in own if (leaf := captured.leaf_of(n)) is not None),
    )


def run_stages(stages: Sequence[StageGraph], *inputs: torch.Tensor) -> torch.Tensor:
    """Run the stages one after another in this process (the pipeline's sequential reference)."""
    values: tuple = inputs
    for st in stages:
        out = st.module(*values)
        values = out if isinstance(out, tuple) else (out,)
    return values[0] if len(values) == 1 else values
