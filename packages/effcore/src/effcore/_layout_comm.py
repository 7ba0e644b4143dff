"""The collectives DTensor's ``redistribute`` issues between two layouts, and the bytes they move.

Byte convention: bytes each rank *sends*, ring algorithms, with ``N`` the bytes of the local tensor
each rank feeds to the collective and ``p`` the ranks in its group (divisions round down):

- ``all_gather`` (``S(d) -> R``): ``(p - 1) * N``, ``N`` being one shard;
- ``reduce_scatter`` (``P -> S(d)``): ``(p - 1) * N / p``;
- ``all_reduce`` (``P -> R``): ``2 * (p - 1) * N / p`` (a reduce-scatter then an all-gather);
- ``all_to_all`` (``S(a) -> S(b)``): ``(p - 1) * N / p`` (each rank keeps its own ``1/p``);
- ``local`` (``R -> S(d)`` chunk, ``S(d) -> P(sum)`` zero-fill): ``0``.

The plan mirrors ``torch.distributed.tensor._redistribute`` as of torch 2.15 (the distributed tests
check it against the installed torch): the greedy planner DTensor uses for default shard orders
(one step on a 1-D mesh; on an N-D mesh whose source is sharded over more than one rank, a pass
from the last mesh dim to the first that replicates misaligned nested shards, then a pass from the
first to the last for what is left, which is only local chunks), the merge of consecutive
same-kind collectives onto a flattened mesh (only where one was made with
``mesh[names]._flatten()``), and the skip of mesh dims of size 1. On CPU meshes (gloo) DTensor has
no all-to-all: ``S(a) -> S(b)`` is an ``all_gather`` of the local shard then a local chunk, and is
planned that way for ``device_type="cpu"``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch.distributed.tensor import Partial, Placement, Replicate, Shard
from torch.utils._python_dispatch import TorchDispatchMode

from effcore.errors import LayoutError

if TYPE_CHECKING:
    from effcore.layout import TensorLayout

__all__ = [
    "Collective",
    "CollectiveCall",
    "CommRecorder",
    "CommStep",
    "collective_bytes",
    "comm_bytes",
    "redistribute_plan",
]

Collective = Literal["all_gather", "reduce_scatter", "all_reduce", "all_to_all", "local"]

# Kinds DTensor may merge onto a flattened mesh (it never merges all-to-alls).
_MERGEABLE = frozenset({"all_gather", "all_reduce", "reduce_scatter"})


def collective_bytes(collective: Collective, input_bytes: int, group_size: int) -> int:
    """Bytes one rank sends in ``collective`` over ``group_size`` ranks fed ``input_bytes`` each."""
    p = group_size
    if collective == "local" or p <= 1:
        return 0
    if collective == "all_gather":
        return (p - 1) * input_bytes
    if collective == "all_reduce":
        return 2 * (p - 1) * input_bytes // p
    return (p - 1) * input_bytes // p


@dataclass(frozen=True, kw_only=True, slots=True)
class CommStep:
    """One step of a redistribution: a collective (or local op) over one or more mesh dims.

    ``mesh_dims`` has several names when DTensor runs the step on a flattened mesh;
    ``input_bytes`` is the local tensor each rank feeds in, ``bytes_per_rank`` what it sends.
    """

    collective: Collective
    mesh_dims: tuple[str, ...]
    src: Placement
    dst: Placement
    group_size: int
    input_bytes: int
    bytes_per_rank: int

    @property
    def mesh_dim(self) -> str:
        """The mesh dim name, ``"_"``-joined for a flattened mesh (its default name in DeviceMesh)."""
        return "_".join(self.mesh_dims)


@dataclass(frozen=True, slots=True)
class _Transform:
    mesh_dims: tuple[int, ...]
    src: Placement
    dst: Placement
    logical_shape: tuple[int, ...]


def redistribute_plan(
    src: TensorLayout,
    dst: TensorLayout,
    *,
    device_type: str = "cuda",
    flattened: Collection[Sequence[str]] = (),
) -> list[CommStep]:
    """The steps ``DTensor.redistribute`` runs to turn ``src`` into ``dst``, in order.

    Args:
        device_type: the mesh's device type; ``"cpu"`` plans gloo's all-gather for all-to-alls.
        flattened: groups of mesh dim names, in mesh order, flattened on the mesh beforehand
            (``mesh["dp", "tp"]._flatten()``): DTensor merges collectives over exactly such a group.

    Raises:
        LayoutError: the layouts describe different tensors or meshes, or DTensor cannot make the
            transition (it only creates ``Partial`` from ``Shard`` with ``Partial("sum")``).
    """
    _check_pair(src, dst)
    return list(_plan(src, dst, device_type, _flattened_groups(src, flattened)))


def comm_bytes(
    src: TensorLayout,
    dst: TensorLayout,
    *,
    device_type: str = "cuda",
    flattened: Collection[Sequence[str]] = (),
) -> int:
    """Bytes each rank sends to redistribute ``src`` to ``dst`` (sum over the plan's steps)."""
    plan = redistribute_plan(src, dst, device_type=device_type, flattened=flattened)
    return sum(step.bytes_per_rank for step in plan)


def _check_pair(src: TensorLayout, dst: TensorLayout) -> None:
    for name in ("dims", "shape", "mesh_shape", "mesh_dim_names", "dtype"):
        if getattr(src, name) != getattr(dst, name):
            raise LayoutError(
                f"src and dst differ in {name}: {getattr(src, name)} vs {getattr(dst, name)}",
                hint="redistribute only changes placements; keep the tensor and the mesh",
            )
    for name, before, after in zip(src.mesh_dim_names, src.placements, dst.placements, strict=True):
        creatable = isinstance(before, Shard) and after == Partial("sum")
        if after.is_partial() and before != after and not creatable:
            raise LayoutError(
                f"mesh dim '{name}': DTensor cannot redistribute {before} to {after}",
                hint="only Shard -> Partial('sum') creates a partial; keep the partial or reduce it",
            )


def _flattened_groups(
    layout: TensorLayout, flattened: Collection[Sequence[str]]
) -> frozenset[tuple[int, ...]]:
    groups = set()
    for names in flattened:
        unknown = [n for n in names if n not in layout.mesh_dim_names]
        if unknown:
            raise LayoutError(
                f"unknown mesh dims {unknown} in flattened; mesh dims are {layout.mesh_dim_names}"
            )
        dims = tuple(layout.mesh_dim_names.index(n) for n in names)
        if len(dims) < 2 or list(dims) != sorted(set(dims)):
            raise LayoutError(
                f"flattened group {tuple(names)} is not 2+ distinct mesh dims in mesh order",
                hint=f"list names in the order of {layout.mesh_dim_names}",
            )
        groups.add(dims)
    return frozenset(groups)


@functools.lru_cache(maxsize=4096)
def _plan(
    src: TensorLayout, dst: TensorLayout, device_type: str, flattened: frozenset[tuple[int, ...]]
) -> tuple[CommStep, ...]:
    transforms = _merge_flattened(_greedy_transforms(src, dst), src, flattened)
    current = list(src.placements)
    steps = []
    for t in transforms:
        group_size = math.prod(src.mesh_shape[i] for i in t.mesh_dims)
        input_bytes = _local_bytes(src, current)
        for i in t.mesh_dims:
            current[i] = t.dst
        if group_size == 1:  # DTensor skips mesh dims of size 1 before any collective
            continue
        collective = _collective(t.src, t.dst, device_type)
        steps.append(
            CommStep(
                collective=collective,
                mesh_dims=tuple(src.mesh_dim_names[i] for i in t.mesh_dims),
                src=t.src,
                dst=t.dst,
                group_size=group_size,
                input_bytes=input_bytes,
                bytes_per_rank=collective_bytes(collective, input_bytes, group_size),
            )
        )
    return tuple(steps)


def _local_bytes(layout: TensorLayout, placements: Sequence[Placement]) -> int:
    numel = 1
    for dim, size in enumerate(layout.shape):
        numel *= size // math.prod(
            m for m, p in zip(layout.mesh_shape, placements, strict=True) if p.is_shard(dim)
        )
    return numel * layout.dtype.itemsize


def _collective(src: Placement, dst: Placement, device_type: str) -> Collective:
    if src.is_partial():
        return "all_reduce" if dst.is_replicate() else "reduce_scatter"
    if src.is_shard() and dst.is_replicate():
        return "all_gather"
    if src.is_shard() and dst.is_shard():
        return "all_gather" if device_type == "cpu" else "all_to_all"
    return "local"


def _comm_key(src: Placement, dst: Placement) -> str | None:
    """DTensor's grouping key (``_TransformInfo._comm_type_key``), independent of the device."""
    if src.is_partial():
        return "all_reduce" if dst.is_replicate() else "reduce_scatter" if dst.is_shard() else None
    if src.is_shard():
        return "all_gather" if dst.is_replicate() else "all_to_all" if dst.is_shard() else None
    return None


def _greedy_transforms(src: TensorLayout, dst: TensorLayout) -> list[_Transform]:
    """``DTensorRedistributePlanner.generate_greedy_transform_infos`` for even layouts."""
    mesh = src.mesh_shape
    if len(mesh) == 1:
        if src.placements[0] == dst.placements[0]:
            return []
        return [_Transform((0,), src.placements[0], dst.placements[0], src.shape)]
    # The tensor each mesh dim sees: sharded by the source placements of the mesh dims before it.
    logical = [src.shape]
    for i, placement in enumerate(src.placements[:-1]):
        shape = list(logical[i])
        if isinstance(placement, Shard):
            shape[placement.dim] //= mesh[i]
        logical.append(tuple(shape))
    current, target = list(src.placements), list(dst.placements)
    transforms = []
    if math.prod(m for m, p in zip(mesh, current, strict=True) if p.is_shard()) > 1:
        for i in reversed(range(len(mesh))):
            goal = target[i]
            if isinstance(goal, Shard):
                before = [j for j in range(i) if current[j].is_shard(goal.dim)]
                if before != [j for j in range(i) if target[j].is_shard(goal.dim)]:
                    goal = Replicate()  # nested sharding misaligned: replicate first, re-shard below
            if current[i] != goal:
                transforms.append(_Transform((i,), current[i], goal, logical[i]))
                current[i] = goal
    for i in range(len(mesh)):
        if current[i] != target[i]:
            transforms.append(_Transform((i,), current[i], target[i], logical[i]))
            current[i] = target[i]
    return transforms


def _merge_flattened(
    transforms: list[_Transform], layout: TensorLayout, flattened: frozenset[tuple[int, ...]]
) -> list[_Transform]:
    """``_optimize_transform_infos``: consecutive mergeable collectives become one on a flattened mesh."""
    if len(transforms) < 2 or not flattened:
        return transforms
    merged: list[_Transform] = []
    i = 0
    while i < len(transforms):
        first = transforms[i]
        if _comm_key(first.src, first.dst) not in _MERGEABLE:
            merged.append(first)
            i += 1
            continue
        j = i + 1
        while (
            j < len(transforms)
            and _comm_key(transforms[j].src, transforms[j].dst) in _MERGEABLE
            and _placements_mergeable(transforms[j], first)
        ):
            j += 1
        group = transforms[i:j]
        flat = _try_flatten(group, layout, flattened)
        merged.extend([flat] if flat is not None else group)
        i = j
    return merged


def _placements_mergeable(a: _Transform, b: _Transform) -> bool:
    if (a.src, a.dst) == (b.src, b.dst):
        return True
    return (
        a.dst == b.dst
        and a.src.is_partial()
        and b.src.is_partial()
        and {a.src.reduce_op, b.src.reduce_op} <= {"sum", "avg"}  # type: ignore[attr-defined]
    )


def _try_flatten(
    group: list[_Transform], layout: TensorLayout, flattened: frozenset[tuple[int, ...]]
) -> _Transform | None:
    if len(group) < 2:
        return None
    kind = _comm_key(group[0].src, group[0].dst)
    dims = tuple(t.mesh_dims[0] for t in group)
    ascending = tuple(sorted(dims))
    if (kind == "reduce_scatter" and dims != ascending) or (kind == "all_gather" and dims != ascending[::-1]):
        return None
    if ascending not in flattened:
        return None
    src, dst = group[0].src, group[0].dst
    outermost = group[0]
    if kind in ("all_gather", "reduce_scatter"):
        affected = (src if kind == "all_gather" else dst).dim  # type: ignore[attr-defined]
        outermost = max(group, key=lambda t: t.logical_shape[affected])
        if kind == "reduce_scatter" and outermost.logical_shape[affected] % math.prod(
            layout.mesh_shape[d] for d in dims
        ):
            return None
    if src.is_partial():
        avg_ranks = math.prod(layout.mesh_shape[t.mesh_dims[0]] for t in group if t.src.reduce_op == "avg")  # type: ignore[attr-defined]
        if avg_ranks > 1:
            src = Partial("sum")  # DTensor sums over the flattened group, then divides locally
    return _Transform(ascending, src, dst, outermost.logical_shape)


@dataclass(frozen=True, kw_only=True, slots=True)
class CollectiveCall:
    """One collective seen by :class:`CommRecorder` on this rank."""

    op: str
    collective: Collective
    group_size: int
    input_bytes: int
    bytes_per_rank: int


class CommRecorder(TorchDispatchMode):
    """Records the functional collectives this rank dispatches (DTensor's), with their sizes.

    Recognised: ``_c10d_functional.{all_gather_into_tensor, reduce_scatter_tensor, all_reduce,
    all_to_all_single}`` and ``_dtensor.shard_dim_alltoall``; bytes follow the module's convention::

        with CommRecorder() as rec:
            y = x.redistribute(mesh, placements)
        rec.total_bytes  # == comm_bytes(src, dst, device_type=mesh.device_type)
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[CollectiveCall] = []

    @property
    def total_bytes(self) -> int:
        return sum(call.bytes_per_rank for call in self.calls)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        from torch.distributed.tensor import DTensor

        if any(issubclass(t, DTensor) for t in types):
            return NotImplemented  # let DTensor desugar into local ops, which come back through here
        out = func(*args, **(kwargs or {}))
        call = _collective_call(func, args)
        if call is not None:
            self.calls.append(call)
        return out


def _group_size(group_name: str) -> int:
    from torch.distributed import distributed_c10d

    return distributed_c10d._get_group_size_by_name(group_name)


def _collective_call(func: Any, args: Sequence[Any]) -> CollectiveCall | None:
    schema_name = getattr(getattr(func, "_schema", None), "name", "")
    collective: Collective
    if schema_name in (
        "_c10d_functional::all_gather_into_tensor",
        "_c10d_functional::all_gather_into_tensor_out",
    ):
        collective, group_size = "all_gather", int(args[1])
    elif schema_name == "_c10d_functional::reduce_scatter_tensor":
        collective, group_size = "reduce_scatter", int(args[2])
    elif schema_name in ("_c10d_functional::all_reduce", "_c10d_functional::all_reduce_"):
        collective, group_size = "all_reduce", _group_size(args[2])
    elif schema_name in ("_c10d_functional::all_to_all_single", "_dtensor::shard_dim_alltoall"):
        collective, group_size = "all_to_all", _group_size(args[3])
    else:
        return None
    tensor: torch.Tensor = args[0]
    input_bytes = tensor.numel() * tensor.element_size()
    return CollectiveCall(
        op=schema_name,
        collective=collective,
        group_size=group_size,
        input_bytes=input_bytes,
        bytes_per_rank=collective_bytes(collective, input_bytes, group_size),
    )
