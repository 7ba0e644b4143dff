"""Merak's sub-pipelined tensor parallelism: two halves of a micro-batch run node by node in lockstep.

A tensor-parallel leaf (attention, MLP) ends in an all-reduce of its row-wise product, issued
asynchronously (DTensor's ``async_op``). Running the stage's graph on the two halves of the
micro-batch in lockstep, half A's all-reduce is in flight while half B's leaf computes, and B's
while A goes on: the overlap of the authors' ``PipedTPFunction`` at every tensor-parallel layer, at
any model the graph captures (theirs is GPT-2 only). Each half keeps its own environment of values,
so one half's residual can never stand in for the other's (the authors' layernorm bug); a test
checks the result equals the plain run. The graph must be captured at half the micro-batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

from effcore.errors import ConfigError

__all__ = ["SubPipelined"]


class SubPipelined(nn.Module):
    """Run ``graph`` (captured for ``batch // 2``) on both halves of a ``batch``-row micro-batch."""

    def __init__(self, graph: fx.GraphModule, batch: int) -> None:
        super().__init__()
        if batch % 2:
            raise ConfigError(
                f"sub-pipelined tensor parallelism splits the micro-batch in two; {batch} is odd"
            )
        self.graph_module = graph
        self.batch = batch

    def _halves(self, value: Any) -> tuple[Any, Any]:
        if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == self.batch:
            a, b = value.chunk(2)
            return a, b
        return value, value

    def forward(self, *inputs: Any) -> Any:
        halves = [self._halves(x) for x in inputs]
        runs = [fx.Interpreter(self.graph_module) for _ in range(2)]
        for k, run in enumerate(runs):
            run.args_iter = iter([h[k] for h in halves])
        results: list[Any] = [None, None]
        for node in self.graph_module.graph.nodes:
            for k, run in enumerate(runs):  # lockstep: A's collective flies while B computes
                value = run.run_node(node)
                if node.op == "output":
                    results[k] = value
                else:
                    run.env[node] = value
        return _join(results[0], results[1])


def _join(a: Any, b: Any) -> Any:
    if isinstance(a, tuple):
        return tuple(_join(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor) and a.dim():
        return torch.cat([a, b])
    return a
