"""Tensor parallelism derived from the captured graph, applied with DTensor's ``parallelize_module``.

Inside each leaf (a block's attention or MLP) the traced program shows every matrix multiply and
the parameter it reads. A multiply whose input comes from no other multiply of the leaf is split
column-wise (q/k/v, gate/up, GPT-2's ``c_attn``/``c_fc``); the one that reads their outputs
(o/down, ``c_proj``) row-wise, its partial sums all-reduced: Megatron's layout, found rather than
listed per model. A column-wise output split into k equal chunks right after the multiply (GPT-2's
fused q/k/v) is permuted so that each rank's shard holds its own slice of every chunk, and the
leaf's integer attributes equal to the chunk size (``split_size``) become the local size. HF's
``Conv1D`` (GPT-2's transposed linear) is handled as well as ``nn.Linear``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from torch import fx, nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import Replicate, Shard, distribute_module, distribute_tensor
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

from effcore.errors import ConfigError
from merak.capture import PREFIX, CapturedModel

__all__ = ["LinearPlan", "apply_tensor_parallel", "derive_tp_plan", "fused_order"]

_MATMULS = {
    torch.ops.aten.linear.default: (1, "linear"),
    torch.ops.aten.addmm.default: (2, "conv1d"),
    torch.ops.aten.mm.default: (1, "conv1d"),
    torch.ops.aten.matmul.default: (1, "conv1d"),
}
_SPLITS = {torch.ops.aten.split.Tensor, torch.ops.aten.split_with_sizes.default, torch.ops.aten.chunk.default}
_VIEWS = {torch.ops.aten.view.default, torch.ops.aten.reshape.default, torch.ops.aten._unsafe_view.default}


@dataclass(frozen=True, slots=True)
class LinearPlan:
    """How one matrix module is split: ``style``, its ``kind`` (``nn.Linear`` or HF ``Conv1D``) and,
    for a fused column-wise output, the number of equal ``chunks`` it is split into."""

    module: str
    style: Literal["colwise", "rowwise"]
    kind: Literal["linear", "conv1d"]
    chunks: int = 1


def _ancestors(node: fx.Node, within: set[fx.Node]) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        for arg in stack.pop().all_input_nodes:
            if arg in within and arg not in seen:
                seen.add(arg)
                stack.append(arg)
    return seen


def _chunks_after(node: fx.Node) -> int:
    """k when ``node``'s output (possibly reshaped) is split into k equal pieces on its last dim."""
    frontier = [node]
    while frontier:
        current = frontier.pop()
        for user in current.users:
            if user.target in _VIEWS:
                frontier.append(user)
            elif user.target in _SPLITS:
                getitems = [u for u in user.users if u.target.__name__ == "getitem"]
                return max(2, len(getitems))
    return 1


def derive_tp_plan(captured: CapturedModel) -> tuple[dict[str, list[LinearPlan]], dict[str, str]]:
    """Per leaf, the split of each of its matrices; and for each leaf left unsplit, why."""
    program = captured.program
    params = {n: fqn[len(PREFIX) :] for n, fqn in program.graph_signature.inputs_to_parameters.items()}
    module_of: dict[fx.Node, tuple[str, str]] = {}
    for node in program.graph.nodes:
        if node.op == "call_function" and node.target in _MATMULS:
            pos, kind = _MATMULS[node.target]
            weight = node.args[pos] if len(node.args) > pos else None
            if isinstance(weight, fx.Node) and weight.name in params:
                module_of[node] = (params[weight.name].rsplit(".", 1)[0], kind)
    plans: dict[str, list[LinearPlan]] = {}
    skipped: dict[str, str] = {}
    block_leaves = [leaf for leaf in captured.leaves if leaf.startswith(captured.blocks + ".")]
    for leaf in block_leaves:
        mine = [n for n, (mod, _) in module_of.items() if mod.startswith(leaf + ".")]
        inside = {n for n in program.graph.nodes if _stack_has(n, PREFIX + leaf)}
        deps = {n: _ancestors(n, inside) & set(mine) for n in mine}
        cols = [n for n in mine if not deps[n]]
        rows = [n for n in mine if deps[n]]
        if not cols or len(rows) != 1 or set(deps[rows[0]]) != set(cols):
            skipped[leaf] = f"{len(cols)} input-side and {len(rows)} output-side matrices (need k >= 1 and 1)"
            continue
        plans[leaf] = [
            *(LinearPlan(module_of[n][0], "colwise", module_of[n][1], _chunks_after(n)) for n in cols),
            LinearPlan(module_of[rows[0]][0], "rowwise", module_of[rows[0]][1]),
        ]
    return plans, skipped


def _stack_has(node: fx.Node, fqn: str) -> bool:
    stack = node.meta.get("nn_module_stack") or {}
    return any(path == fqn or path.startswith(fqn + ".") for path, _ in stack.values())


def fused_order(features: int, chunks: int, tp: int) -> torch.Tensor:
    """The permutation of a fused output dim that puts rank r's slice of every chunk together."""
    size = features // chunks // tp
    idx = torch.arange(features).view(chunks, tp, size)
    return idx.transpose(0, 1).reshape(-1)


def _distribute(style: ColwiseParallel | RowwiseParallel, module: nn.Module, mesh: DeviceMesh) -> nn.Module:
    """torch's own ``_apply`` of the two styles, for any module kind (theirs: ``nn.Linear`` only)."""
    return distribute_module(
        module,
        mesh,
        style._partition_linear_fn,
        partial(style._prepare_input_fn, style.input_layouts, style.desired_input_layouts),
        partial(style._prepare_output_fn, style.output_layouts, style.use_local_output),
    )


class _Colwise(ColwiseParallel):
    """Column-wise for ``nn.Linear`` and ``Conv1D``, with fused outputs permuted per rank."""

    def __init__(self, kind: str, chunks: int) -> None:
        super().__init__()
        self.kind, self.chunks = kind, chunks

    def _partition_linear_fn(self, name, module, device_mesh):  # type: ignore[override]
        out_dim = 0 if self.kind == "linear" else 1  # Conv1D keeps its weight as [in, out]
        for pname, param in list(module.named_parameters(recurse=False)):
            dim = 0 if pname == "bias" else out_dim
            data = param.data
            if self.chunks > 1:
                data = data.index_select(dim, fused_order(data.shape[dim], self.chunks, device_mesh.size()))
            sharded = distribute_tensor(data, device_mesh, [Shard(dim)])
            module.register_parameter(pname, nn.Parameter(sharded, requires_grad=param.requires_grad))

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        return _distribute(self, module, device_mesh)


class _Rowwise(RowwiseParallel):
    """Row-wise for ``nn.Linear`` and ``Conv1D``: weight split on its input dim, bias replicated."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.desired_input_layouts = (Shard(-1),)  # the input arrives split on its last dim

    def _partition_linear_fn(self, name, module, device_mesh):  # type: ignore[override]
        in_dim = 1 if self.kind == "linear" else 0
        for pname, param in list(module.named_parameters(recurse=False)):
            placement = [Replicate()] if pname == "bias" else [Shard(in_dim)]
            sharded = distribute_tensor(param.data, device_mesh, placement)
            module.register_parameter(pname, nn.Parameter(sharded, requires_grad=param.requires_grad))

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        return _distribute(self, module, device_mesh)


def _check_divisible(model: nn.Module, tp: int) -> None:
    config = getattr(model, "config", None)
    for field in ("num_attention_heads", "num_key_value_heads", "n_head"):
        value = getattr(config, field, None)
        if isinstance(value, int) and value % tp:
            raise ConfigError(
                f"tensor parallelism of {tp} does not divide {field}={value}", hint="choose tp dividing it"
            )


def apply_tensor_parallel(
    captured: CapturedModel, mesh: DeviceMesh, leaves: list[str] | None = None
) -> dict[str, list[LinearPlan]]:
    """Split the matrices of ``leaves`` (default: every block leaf) over ``mesh`` (1-D, the tp dim).

    Returns the plans applied. The parameters become DTensors; inputs and outputs of the leaves stay
    plain (replicated) tensors, so the glue between leaves runs unchanged.
    """
    tp = mesh.size()
    plans, _ = derive_tp_plan(captured)
    if tp == 1:
        return {}
    _check_divisible(captured.model, tp)
    chosen = {leaf: plan for leaf, plan in plans.items() if leaves is None or leaf in leaves}
    for leaf, plan in chosen.items():
        module = captured.model.get_submodule(leaf)
        styles = {}
        for lp in plan:
            rel = lp.module[len(leaf) + 1 :]
            styles[rel] = _Colwise(lp.kind, lp.chunks) if lp.style == "colwise" else _Rowwise(lp.kind)
            if lp.chunks > 1:
                features = _features(captured.model.get_submodule(lp.module), lp.kind)
                chunk = features // lp.chunks
                for attr, value in list(vars(module).items()):
                    if isinstance(value, int) and not isinstance(value, bool) and value == chunk:
                        setattr(module, attr, chunk // tp)
        parallelize_module(module, mesh, styles)
    return chosen


def _features(module: nn.Module, kind: str) -> int:
    weight = module.weight
    return weight.shape[0] if kind == "linear" else weight.shape[1]
