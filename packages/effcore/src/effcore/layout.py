"""Named-dimension tensor layouts over a device mesh, in ``torch.distributed.tensor`` placements."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch.distributed.tensor import Partial, Placement, Replicate, Shard

from effcore._layout_comm import (
    Collective,
    CollectiveCall,
    CommRecorder,
    CommStep,
    collective_bytes,
    comm_bytes,
    redistribute_plan,
)
from effcore.errors import LayoutError

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor import DTensor

__all__ = [
    "Collective",
    "CollectiveCall",
    "CommRecorder",
    "CommStep",
    "MeshCoord",
    "TensorLayout",
    "collective_bytes",
    "comm_bytes",
    "from_dtensor",
    "layout_of",
    "redistribute_plan",
    "shard",
    "to_dtensor",
    "unshard",
]

MeshCoord = tuple[int, ...]
"""A rank's coordinate on the mesh, one index per mesh dim (``(dp_index, tp_index)``)."""

# Reductions a Partial may carry: the ones DTensor can both reduce and that round-trip in ``shard``.
_REDUCE_OPS = ("sum", "avg", "max", "min")


def _placement_str(placement: Placement, dims: Sequence[str]) -> str:
    if isinstance(placement, Shard):
        return f"S({dims[placement.dim]})"
    return "R" if isinstance(placement, Replicate) else f"P({placement.reduce_op})"


@dataclass(frozen=True, kw_only=True, slots=True)
class TensorLayout:
    """A tensor of named dims laid out on a named device mesh by one DTensor placement per mesh dim.

    ``Shard(i)`` splits tensor dim ``i`` evenly over that mesh dim (several mesh dims sharding the
    same tensor dim split it left to right, as DTensor's default shard order does); ``Replicate()``
    keeps a full copy; ``Partial(op)`` holds full-size summands pending the reduction ``op``.
    Uneven sharding is rejected: every sharded dim must divide by the ranks that shard it.
    Build one by names with :meth:`build`.
    """

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    mesh_shape: tuple[int, ...]
    mesh_dim_names: tuple[str, ...]
    placements: tuple[Placement, ...]
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        for name in ("dims", "shape", "mesh_shape", "mesh_dim_names", "placements"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.dims) != len(self.shape):
            raise LayoutError(
                f"dims {self.dims} name {len(self.dims)} dims but shape {self.shape} has {len(self.shape)}",
                hint="give one name per tensor dim",
            )
        if len(set(self.dims)) != len(self.dims) or len(set(self.mesh_dim_names)) != len(self.mesh_dim_names):
            raise LayoutError(
                f"duplicate names in dims {self.dims} or mesh_dim_names {self.mesh_dim_names}",
                hint="name every tensor dim and mesh dim once",
            )
        if any(size < 0 for size in self.shape):
            raise LayoutError(f"shape {self.shape} has a negative size", hint="use sizes >= 0")
        if len(self.mesh_shape) != len(self.mesh_dim_names) or any(m < 1 for m in self.mesh_shape):
            raise LayoutError(
                f"mesh_shape {self.mesh_shape} does not fit mesh_dim_names {self.mesh_dim_names}",
                hint="give one size >= 1 per mesh dim name",
            )
        if len(self.placements) != len(self.mesh_shape):
            raise LayoutError(
                f"{len(self.placements)} placements {self.placements} for {len(self.mesh_shape)} mesh dims "
                f"{self.mesh_dim_names}",
                hint="give exactly one placement per mesh dim",
            )
        self._check_placements()
        for dim, name in enumerate(self.dims):
            ranks = self.shards_of(name)
            if self.shape[dim] % ranks:
                over = " x ".join(
                    f"{self.mesh_dim_names[i]}={self.mesh_shape[i]}" for i in self._sharding(dim)
                )
                raise LayoutError(
                    f"dim '{name}' of size {self.shape[dim]} is sharded over {over} = {ranks} ranks "
                    f"but {self.shape[dim]} is not divisible by {ranks}",
                    hint=f"make '{name}' a multiple of {ranks} or shard it over fewer ranks",
                )

    def _check_placements(self) -> None:
        normalized: list[Placement] = []
        reduce_ops: set[str] = set()
        for name, placement in zip(self.mesh_dim_names, self.placements, strict=True):
            if type(placement) is Shard:
                dim = placement.dim + len(self.dims) if placement.dim < 0 else placement.dim
                if not 0 <= dim < len(self.dims):
                    raise LayoutError(
                        f"mesh dim '{name}' shards unknown tensor dim {placement.dim}; dims are {self.dims}",
                        hint=f"use Shard(i) with 0 <= i < {len(self.dims)}",
                    )
                placement = Shard(dim)
            elif type(placement) is Partial:
                if placement.reduce_op not in _REDUCE_OPS:
                    raise LayoutError(
                        f"mesh dim '{name}' has Partial({placement.reduce_op!r})",
                        hint=f"use one of {_REDUCE_OPS}",
                    )
                reduce_ops.add(placement.reduce_op)
            elif type(placement) is not Replicate:
                raise LayoutError(
                    f"mesh dim '{name}' has unsupported placement {placement!r}",
                    hint="use Shard(i), Replicate() or Partial(op)",
                )
            normalized.append(placement)
        if len(reduce_ops) > 1 and reduce_ops != {"sum", "avg"}:
            raise LayoutError(
                f"placements {self.placements} mix Partial reductions {sorted(reduce_ops)}",
                hint="DTensor allows one reduction per tensor (sum and avg may mix)",
            )
        object.__setattr__(self, "placements", tuple(normalized))

    @classmethod
    def build(
        cls,
        *,
        dims: Sequence[str],
        shape: Sequence[int],
        mesh: Mapping[str, int],
        shard: Mapping[str, str] | None = None,
        partial: Iterable[str] | Mapping[str, str] = (),
        dtype: torch.dtype = torch.float32,
    ) -> TensorLayout:
        """A layout by names: ``shard`` maps mesh dim -> tensor dim, ``partial`` lists mesh dims.

        ``partial`` is a collection of mesh dim names (``Partial("sum")``) or a mapping from mesh dim
        name to reduce op; other mesh dims replicate. Example::

            TensorLayout.build(dims=("batch", "seq", "hidden"), shape=(4, 128, 64),
                               mesh={"dp": 2, "tp": 4}, shard={"dp": "batch", "tp": "seq"})
        """
        dims = tuple(dims)
        mesh_names = tuple(mesh)
        shard = dict(shard or {})
        partial_ops = dict(partial) if isinstance(partial, Mapping) else dict.fromkeys(partial, "sum")
        for mesh_name in (*shard, *partial_ops):
            if mesh_name not in mesh:
                raise LayoutError(f"unknown mesh dim '{mesh_name}'; mesh dims are {mesh_names}")
        for mesh_name, dim in shard.items():
            if dim not in dims:
                raise LayoutError(
                    f"unknown tensor dim '{dim}' in shard={{'{mesh_name}': '{dim}'}}; dims are {dims}"
                )
            if mesh_name in partial_ops:
                raise LayoutError(f"mesh dim '{mesh_name}' is both sharded and partial", hint="pick one")
        placements = tuple(
            Shard(dims.index(shard[m]))
            if m in shard
            else Partial(partial_ops[m])
            if m in partial_ops
            else Replicate()
            for m in mesh_names
        )
        return cls(
            dims=dims,
            shape=tuple(shape),
            mesh_shape=tuple(mesh.values()),
            mesh_dim_names=mesh_names,
            placements=placements,
            dtype=dtype,
        )

    def relayout(
        self, *, shard: Mapping[str, str] | None = None, partial: Iterable[str] | Mapping[str, str] = ()
    ) -> TensorLayout:
        """The same tensor and mesh with other placements, by names as in :meth:`build`."""
        return TensorLayout.build(
            dims=self.dims, shape=self.shape, mesh=self.mesh, shard=shard, partial=partial, dtype=self.dtype
        )

    @property
    def mesh(self) -> dict[str, int]:
        """Mesh dim name -> size."""
        return dict(zip(self.mesh_dim_names, self.mesh_shape, strict=True))

    @property
    def num_ranks(self) -> int:
        return math.prod(self.mesh_shape)

    def _sharding(self, dim: int) -> list[int]:
        return [i for i, p in enumerate(self.placements) if isinstance(p, Shard) and p.dim == dim]

    def shards_of(self, dim: str) -> int:
        """How many pieces tensor dim ``dim`` is cut into (product of the mesh dims sharding it)."""
        if dim not in self.dims:
            raise LayoutError(f"unknown tensor dim '{dim}'; dims are {self.dims}")
        return math.prod(self.mesh_shape[i] for i in self._sharding(self.dims.index(dim)))

    def replication_factor(self) -> int:
        """How many ranks hold each element (product of the Replicate and Partial mesh dims)."""
        return math.prod(m for m, p in zip(self.mesh_shape, self.placements, strict=True) if not p.is_shard())

    def local_shape(self) -> tuple[int, ...]:
        """Shape of the tensor each rank holds (the same on every rank: sharding is even)."""
        return tuple(size // self.shards_of(dim) for dim, size in zip(self.dims, self.shape, strict=True))

    def bytes_per_rank(self) -> int:
        """Bytes of the local tensor on each rank."""
        return math.prod(self.local_shape()) * self.dtype.itemsize

    def global_bytes(self) -> int:
        """Bytes of the whole logical tensor."""
        return math.prod(self.shape) * self.dtype.itemsize

    def __str__(self) -> str:
        mesh = ", ".join(f"{n}={m}" for n, m in self.mesh.items())
        placements = ", ".join(_placement_str(p, self.dims) for p in self.placements)
        shape = ", ".join(f"{d}={s}" for d, s in zip(self.dims, self.shape, strict=True))
        return f"[{shape}] {self.dtype} on ({mesh}) as ({placements})"


def _mesh_coords(layout: TensorLayout) -> list[MeshCoord]:
    return list(itertools.product(*(range(m) for m in layout.mesh_shape)))


def shard(tensor: torch.Tensor, layout: TensorLayout) -> dict[MeshCoord, torch.Tensor]:
    """Every rank's local tensor for ``layout``, computed in this process (no process group).

    Shards match ``distribute_tensor``. A ``Partial("sum")`` mesh dim puts the whole value at
    coordinate 0 and zeros elsewhere (the sum is exact); ``avg``/``max``/``min`` copy it to every
    coordinate. :func:`to_dtensor` follows the same convention.
    """
    _check_tensor(tensor, layout)
    shards: dict[MeshCoord, torch.Tensor] = {}
    for coord in _mesh_coords(layout):
        local = tensor
        for index, size, placement in zip(coord, layout.mesh_shape, layout.placements, strict=True):
            if isinstance(placement, Shard):
                local = torch.tensor_split(local, size, dim=placement.dim)[index]
            elif isinstance(placement, Partial) and placement.reduce_op == "sum" and index:
                local = torch.zeros_like(local)
        shards[coord] = local.clone()
    return shards


def unshard(shards: Mapping[MeshCoord, torch.Tensor], layout: TensorLayout) -> torch.Tensor:
    """The logical tensor from every rank's local tensor: concatenate shards, reduce partials.

    Replicas are taken from coordinate 0 of their mesh dim. Mesh dims are undone innermost first,
    the inverse of DTensor's left-to-right sharding.
    """
    expected = set(_mesh_coords(layout))
    if set(shards) != expected:
        raise LayoutError(
            f"got shards for {len(shards)} mesh coordinates, layout needs {len(expected)}",
            hint=f"pass one local tensor per coordinate of the {layout.mesh_shape} mesh",
        )
    local_shape = layout.local_shape()
    for coord, local in shards.items():
        if tuple(local.shape) != local_shape:
            raise LayoutError(
                f"shard at {coord} has shape {tuple(local.shape)}, layout expects {local_shape}",
                hint="pass the local tensors of this layout",
            )
    pieces: dict[MeshCoord, torch.Tensor] = dict(shards)
    for mesh_dim in reversed(range(len(layout.mesh_shape))):
        placement = layout.placements[mesh_dim]
        merged: dict[MeshCoord, torch.Tensor] = {}
        for outer in {coord[:mesh_dim] for coord in pieces}:
            group = [pieces[(*outer, i)] for i in range(layout.mesh_shape[mesh_dim])]
            merged[outer] = _combine(group, placement)
        pieces = merged
    return pieces[()]


def _combine(group: list[torch.Tensor], placement: Placement) -> torch.Tensor:
    if isinstance(placement, Shard):
        return torch.cat(group, dim=placement.dim)
    if isinstance(placement, Replicate) or len(group) == 1:
        return group[0]
    stacked = torch.stack(group)
    op = placement.reduce_op
    if op == "sum":
        return stacked.sum(0)
    if op == "avg":
        return stacked.mean(0)
    return stacked.amax(0) if op == "max" else stacked.amin(0)


def _check_tensor(tensor: torch.Tensor, layout: TensorLayout) -> None:
    if tuple(tensor.shape) != layout.shape or tensor.dtype != layout.dtype:
        raise LayoutError(
            f"tensor {tuple(tensor.shape)} {tensor.dtype} does not match layout {layout.shape} {layout.dtype}",
            hint="pass the full (global) tensor the layout describes",
        )


def _check_mesh(mesh: DeviceMesh, layout: TensorLayout) -> None:
    names = mesh.mesh_dim_names
    if tuple(mesh.shape) != layout.mesh_shape or (
        names is not None and tuple(names) != layout.mesh_dim_names
    ):
        raise LayoutError(
            f"mesh {tuple(mesh.shape)} {names} does not match layout mesh {layout.mesh}",
            hint="build the layout on the same mesh shape and mesh_dim_names",
        )


def to_dtensor(
    tensor: torch.Tensor, mesh: DeviceMesh, layout: TensorLayout, *, src_data_rank: int | None = 0
) -> DTensor:
    """Distribute a full tensor (the copy on ``src_data_rank`` is the truth) as a DTensor with ``layout``.

    Shard and Replicate mesh dims go through ``distribute_tensor`` (``src_data_rank=None``: every
    rank keeps its own copy, no communication); Partial mesh dims follow :func:`shard`'s
    convention instead of DTensor's ``tensor / n`` split, so the reduction is exact. The local
    tensor on the rank at mesh coordinate ``c`` equals ``shard(tensor, layout)[c]``.
    """
    from torch.distributed.tensor import DTensor, distribute_tensor

    _check_tensor(tensor, layout)
    _check_mesh(mesh, layout)
    no_partial = [Replicate() if p.is_partial() else p for p in layout.placements]
    local = distribute_tensor(tensor, mesh, no_partial, src_data_rank=src_data_rank).to_local()
    coord = mesh.get_coordinate() or ()
    for index, placement in zip(coord, layout.placements, strict=True):
        if isinstance(placement, Partial) and placement.reduce_op == "sum" and index:
            local = torch.zeros_like(local)
    return DTensor.from_local(
        local, mesh, layout.placements, run_check=False, shape=tensor.shape, stride=tensor.stride()
    )


def layout_of(dt: DTensor, dims: Sequence[str] | None = None) -> TensorLayout:
    """The layout of a DTensor; ``dims`` names its dims (default ``d0, d1, ...``).

    Mesh dims without names are called ``m0, m1, ...``. Raises :class:`LayoutError` for what a
    layout cannot describe: uneven shards, ``_StridedShard`` and other private placements.
    """
    names = dt.device_mesh.mesh_dim_names or tuple(f"m{i}" for i in range(dt.device_mesh.ndim))
    return TensorLayout(
        dims=tuple(dims) if dims is not None else tuple(f"d{i}" for i in range(dt.ndim)),
        shape=tuple(dt.shape),
        mesh_shape=tuple(dt.device_mesh.shape),
        mesh_dim_names=tuple(names),
        placements=tuple(dt.placements),
        dtype=dt.dtype,
    )


def from_dtensor(dt: DTensor, dims: Sequence[str] | None = None) -> tuple[TensorLayout, torch.Tensor]:
    """The layout of a DTensor and this rank's local tensor."""
    return layout_of(dt, dims), dt.to_local()
