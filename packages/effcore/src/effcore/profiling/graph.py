"""Per-node costs of an FX graph without running it: FLOPs, output and parameter bytes on fake tensors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import fx
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from effcore.errors import ConfigError

__all__ = ["NodeProfile", "profile_graph"]


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeProfile:
    """What one node of a graph costs, from one shape-only (fake tensor) run.

    ``flops`` are FlopCounterMode's forward FLOPs (matmuls, convolutions, attention); ``param_bytes``
    the parameters and buffers the node reads that no earlier node read (a tied weight counts once,
    at its first use); ``output_bytes`` the tensors it returns; ``differentiable`` whether any output
    needs a gradient (masks, positions and rotary tables do not).
    """

    name: str
    op: str
    target: str
    flops: int
    param_bytes: int
    output_bytes: int
    differentiable: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    return (t for t in tree_leaves(value) if isinstance(t, torch.Tensor))


def _bytes(value: Any) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(value))


def _owned(gm: fx.GraphModule, node: fx.Node) -> list[torch.Tensor]:
    """The parameters and buffers a node reads directly (a module's, or a get_attr tensor)."""
    if node.op == "call_module":
        mod = gm.get_submodule(str(node.target))
        return [*mod.parameters(), *mod.buffers()]
    if node.op == "get_attr":
        value = gm
        for part in str(node.target).split("."):
            value = getattr(value, part)
        return [value] if isinstance(value, torch.Tensor) else []
    return []


class _Counter(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.rows: list[NodeProfile] = []
        self._seen: set[int] = set()

    def run_node(self, n: fx.Node) -> Any:
        with FlopCounterMode(display=False) as counter:
            out = super().run_node(n)
        fresh = [t for t in _owned(self.module, n) if id(t) not in self._seen]
        self._seen.update(id(t) for t in fresh)
        self.rows.append(
            NodeProfile(
                name=n.name,
                op=n.op,
                target=str(n.target)
                if n.op in ("call_module", "get_attr")
                else getattr(n.target, "__name__", str(n.target)),
                flops=int(counter.get_total_flops()),
                param_bytes=sum(t.numel() * t.element_size() for t in fresh),
                output_bytes=0 if n.op == "get_attr" else _bytes(out),
                differentiable=any(t.requires_grad for t in _tensors(out)) and n.op != "get_attr",
            )
        )
        return out


def profile_graph(gm: fx.GraphModule, *args: Any) -> list[NodeProfile]:
    """One :class:`NodeProfile` per node of ``gm`` (placeholders and output included), in graph order.

    Nothing is computed: the graph runs once on fake tensors of the arguments' shapes, so a module
    on the meta device (too big for this machine) is profiled as cheaply as a small one. Arguments
    may be real, meta or fake tensors.
    """
    if not isinstance(gm, fx.GraphModule):
        raise ConfigError(f"profile_graph needs a torch.fx.GraphModule, got {type(gm).__name__}")
    mode = FakeTensorMode(allow_non_fake_inputs=True)

    def fake(x: Any) -> Any:
        return mode.from_tensor(x) if isinstance(x, torch.Tensor) else x

    counter = _Counter(gm)
    with mode:
        counter.run(*(fake(a) for a in args))
    return counter.rows
