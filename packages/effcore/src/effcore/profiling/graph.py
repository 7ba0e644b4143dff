"""Per-node costs of an FX graph without running it: FLOPs, output and parameter bytes on fake tensors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import fx
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from effcore.errors import ConfigError

__all__ = ["NodeProfile", "node_tensors", "profile_graph"]


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeProfile:
    """What one node of a graph costs, from one shape-only (fake tensor) run.

    ``flops`` are FlopCounterMode's forward FLOPs (matmuls, convolutions, attention); ``param_bytes``
    the parameters and buffers the node reads that no earlier node read (a tied weight counts once,
    at its first use); ``output_bytes`` the tensors it returns; ``saved_bytes`` what autograd keeps
    from it for backward (storages no earlier node saved, parameters excluded; inside a module call,
    everything the module saves; on fake tensors attention takes SDPA's math path, so a flash kernel
    at run time keeps less); ``differentiable`` whether any output needs a gradient (masks, positions and
    rotary tables do not).
    """

    name: str
    op: str
    target: str
    flops: int
    param_bytes: int
    output_bytes: int
    saved_bytes: int
    differentiable: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    return (t for t in tree_leaves(value) if isinstance(t, torch.Tensor))


def _bytes(value: Any) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(value))


def node_tensors(gm: fx.GraphModule, node: fx.Node) -> list[torch.Tensor]:
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
    def __init__(self, gm: fx.GraphModule, weights: set[StorageWeakRef]) -> None:
        super().__init__(gm)
        self.rows: list[NodeProfile] = []
        self._seen: set[int] = set()
        self._weights = weights  # storages of the fake parameters and buffers: never activations
        self._kept: dict[StorageWeakRef, torch.Tensor] = {}  # storages already saved by an earlier node

    def run_node(self, n: fx.Node) -> Any:
        saved: dict[StorageWeakRef, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            key = StorageWeakRef(t.untyped_storage())
            if key not in self._weights and key not in self._kept:
                saved[key] = t.untyped_storage().nbytes()
                self._kept[key] = t  # held, so the storage is not freed and reused by a later tensor
            return t

        with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, _same):
            out = super().run_node(n)
        fresh = [t for t in node_tensors(self.module, n) if id(t) not in self._seen]
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
                saved_bytes=sum(saved.values()),
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

    with mode:
        # fake every weight once up front (the mode memoises it), so saved weights are recognised
        weights = {
            StorageWeakRef(mode.from_tensor(t).untyped_storage()) for t in [*gm.parameters(), *gm.buffers()]
        }
        counter = _Counter(gm, weights)
        counter.run(*(fake(a) for a in args))
    return counter.rows


def _same(t: torch.Tensor) -> torch.Tensor:
    return t
