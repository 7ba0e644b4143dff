"""Hypothesis strategies (and seeded samplers) for effml property tests."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from hypothesis import note
from hypothesis import strategies as st
from torch.distributed.tensor import Partial, Placement, Replicate, Shard

from effcore.layout import TensorLayout

__all__ = [  # noqa: RUF022 -- grouped by topic, sorted within groups
    # shapes, dtypes and seeded tensors (kernel and reference tests)
    "dtypes",
    "seeded_tensor",
    "shapes",
    "tensors",
    # device meshes and tensor layouts (effcore.layout)
    "indivisible_layouts",
    "layout_pairs",
    "layouts_with_tensors",
    "mesh_shapes",
    "placements",
    "sample_layout_pairs",
    "tensor_layouts",
]

T = TypeVar("T")
Pick = Callable[[Sequence[T]], T]
"""Chooses one option: ``draw(st.sampled_from(...))`` under hypothesis, ``rng.choice`` when seeded."""

_DIM_NAMES = ("batch", "seq", "heads", "hidden")
_MESH_NAMES = {1: ("tp",), 2: ("dp", "tp"), 3: ("pp", "dp", "tp"), 4: ("pp", "dp", "cp", "tp")}


def seeded_tensor(shape: Sequence[int], *, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    """A standard-normal tensor from a ``torch.Generator`` seeded with ``seed`` (same on every rank)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float32).to(dtype)


# Sizes that break kernels: 1, primes, just-off powers of two (CONVENTIONS.md "adversarial shapes").
_ADVERSARIAL_SIZES = (1, 2, 3, 5, 7, 13, 16, 17, 31, 33, 64, 127)


def shapes(
    *, min_ndim: int = 1, max_ndim: int = 3, min_size: int = 1, max_size: int = 33, adversarial: bool = True
) -> st.SearchStrategy[tuple[int, ...]]:
    """Tensor shapes; with ``adversarial`` the sizes favour 1, primes and off-by-one powers of two."""
    sizes = st.integers(min_size, max_size)
    if adversarial:
        picks = [n for n in _ADVERSARIAL_SIZES if min_size <= n <= max_size]
        sizes = st.one_of(st.sampled_from(picks), sizes) if picks else sizes
    return st.lists(sizes, min_size=min_ndim, max_size=max_ndim).map(tuple)


def dtypes(
    *, choices: Sequence[torch.dtype] = (torch.float32, torch.bfloat16, torch.float16)
) -> st.SearchStrategy[torch.dtype]:
    """Floating dtypes to test a kernel in (pair with ``effcore.testing.tolerances.tolerance``)."""
    return st.sampled_from(list(choices))


def tensors(
    *,
    shape: st.SearchStrategy[tuple[int, ...]] | None = None,
    dtype: st.SearchStrategy[torch.dtype] | None = None,
    non_contiguous: bool = True,
) -> st.SearchStrategy[torch.Tensor]:
    """Seeded standard-normal tensors; some are non-contiguous views (a transposed or strided slice).

    The draw (shape, dtype, seed, view) is recorded with ``note()`` so a failure is reproducible.
    """

    @st.composite
    def build(draw: st.DrawFn) -> torch.Tensor:
        shp = draw(shape if shape is not None else shapes())
        dt = draw(dtype if dtype is not None else dtypes(choices=(torch.float32,)))
        seed = draw(st.integers(0, 2**31 - 1))
        view = (
            draw(st.sampled_from(["contiguous", "transposed", "strided"])) if non_contiguous else "contiguous"
        )
        note(f"tensor shape={shp} dtype={dt} seed={seed} view={view}")
        if view == "transposed" and len(shp) >= 2:
            return seeded_tensor((*shp[:-2], shp[-1], shp[-2]), dtype=dt, seed=seed).transpose(-1, -2)
        if view == "strided":
            return seeded_tensor((*shp[:-1], 2 * shp[-1]), dtype=dt, seed=seed)[..., ::2]
        return seeded_tensor(shp, dtype=dt, seed=seed)

    return build()


def _mesh_shape_options(*, min_ranks: int, max_ranks: int, max_ndim: int) -> list[tuple[int, ...]]:
    options = [
        shape
        for ndim in range(1, max_ndim + 1)
        for shape in itertools.product(range(1, max_ranks + 1), repeat=ndim)
        if min_ranks <= math.prod(shape) <= max_ranks
    ]
    return sorted(options, key=lambda s: (len(s), math.prod(s), s))  # shrink towards small 1-D meshes


def _mesh_names(ndim: int) -> tuple[str, ...]:
    return _MESH_NAMES.get(ndim, tuple(f"m{i}" for i in range(ndim)))


def _dim_names(ndim: int) -> tuple[str, ...]:
    return _DIM_NAMES[:ndim] if ndim <= len(_DIM_NAMES) else tuple(f"d{i}" for i in range(ndim))


def _pick_placements(
    pick: Pick[Any], *, mesh_ndim: int, ndim: int, reduce_ops: Sequence[str]
) -> tuple[Placement, ...]:
    options: list[Placement] = [Replicate(), *(Shard(d) for d in range(ndim))]
    if reduce_ops:
        options.append(Partial(pick(reduce_ops)))
    return tuple(pick(options) for _ in range(mesh_ndim))


def _pick_dst_placements(pick: Pick[Any], src: Sequence[Placement], *, ndim: int) -> tuple[Placement, ...]:
    """Targets DTensor accepts: a partial stays as is or comes from a shard as ``Partial("sum")``."""
    linear = all(p.reduce_op in ("sum", "avg") for p in src if isinstance(p, Partial))
    dst = []
    for placement in src:
        options: list[Placement] = [Replicate(), *(Shard(d) for d in range(ndim))]
        if placement.is_partial():
            options.append(placement)
        elif placement.is_shard() and linear:
            options.append(Partial("sum"))
        dst.append(pick(options))
    return tuple(dst)


def _pick_layouts(
    pick: Pick[Any],
    *,
    mesh_shape: tuple[int, ...],
    min_ndim: int,
    max_ndim: int,
    max_multiple: int,
    dtypes: Sequence[torch.dtype],
    reduce_ops: Sequence[str],
    pair: bool,
) -> list[TensorLayout]:
    ndim = pick(range(min_ndim, max_ndim + 1))
    src = _pick_placements(pick, mesh_ndim=len(mesh_shape), ndim=ndim, reduce_ops=reduce_ops)
    all_placements = [src, _pick_dst_placements(pick, src, ndim=ndim)] if pair else [src]
    shape = []
    for dim in range(ndim):
        factor = math.lcm(
            *(
                math.prod(m for m, p in zip(mesh_shape, placements, strict=True) if p.is_shard(dim))
                for placements in all_placements
            )
        )
        shape.append(factor * pick(range(1, max_multiple + 1)))
    dtype = pick(dtypes)
    return [
        TensorLayout(
            dims=_dim_names(ndim),
            shape=tuple(shape),
            mesh_shape=mesh_shape,
            mesh_dim_names=_mesh_names(len(mesh_shape)),
            placements=placements,
            dtype=dtype,
        )
        for placements in all_placements
    ]


def mesh_shapes(
    *, min_ranks: int = 1, max_ranks: int = 8, max_ndim: int = 2
) -> st.SearchStrategy[tuple[int, ...]]:
    """Mesh shapes of 1 to ``max_ndim`` dims whose rank count lies in ``[min_ranks, max_ranks]``."""
    return st.sampled_from(_mesh_shape_options(min_ranks=min_ranks, max_ranks=max_ranks, max_ndim=max_ndim))


def placements(
    *, mesh_ndim: int, ndim: int, reduce_ops: Sequence[str] = ("sum",)
) -> st.SearchStrategy[tuple[Placement, ...]]:
    """One placement per mesh dim: ``Replicate()``, ``Shard(d)`` or ``Partial(op)`` (none if no ops)."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[Placement, ...]:
        return _pick_placements(
            lambda seq: draw(st.sampled_from(seq)), mesh_ndim=mesh_ndim, ndim=ndim, reduce_ops=reduce_ops
        )

    return build()


def _layouts_strategy(
    *,
    pair: bool,
    mesh_shape: tuple[int, ...] | None,
    min_ranks: int,
    max_ranks: int,
    max_mesh_ndim: int,
    min_ndim: int,
    max_ndim: int,
    max_multiple: int,
    dtypes: Sequence[torch.dtype],
    reduce_ops: Sequence[str],
) -> st.SearchStrategy[list[TensorLayout]]:
    shapes = (
        st.just(mesh_shape)
        if mesh_shape is not None
        else mesh_shapes(min_ranks=min_ranks, max_ranks=max_ranks, max_ndim=max_mesh_ndim)
    )

    @st.composite
    def build(draw: st.DrawFn) -> list[TensorLayout]:
        layouts = _pick_layouts(
            lambda seq: draw(st.sampled_from(seq)),
            mesh_shape=draw(shapes),
            min_ndim=min_ndim,
            max_ndim=max_ndim,
            max_multiple=max_multiple,
            dtypes=dtypes,
            reduce_ops=reduce_ops,
            pair=pair,
        )
        note(" -> ".join(str(layout) for layout in layouts))
        return layouts

    return build()


def tensor_layouts(
    *,
    mesh_shape: tuple[int, ...] | None = None,
    min_ranks: int = 1,
    max_ranks: int = 8,
    max_mesh_ndim: int = 2,
    min_ndim: int = 1,
    max_ndim: int = 3,
    max_multiple: int = 3,
    dtypes: Sequence[torch.dtype] = (torch.float32,),
    reduce_ops: Sequence[str] = ("sum",),
) -> st.SearchStrategy[TensorLayout]:
    """Valid layouts: a mesh (``mesh_shape`` or drawn), placements, and a shape that divides evenly.

    Each tensor dim is ``k * (ranks sharding it)`` with ``1 <= k <= max_multiple``.
    """
    return _layouts_strategy(
        pair=False,
        mesh_shape=mesh_shape,
        min_ranks=min_ranks,
        max_ranks=max_ranks,
        max_mesh_ndim=max_mesh_ndim,
        min_ndim=min_ndim,
        max_ndim=max_ndim,
        max_multiple=max_multiple,
        dtypes=dtypes,
        reduce_ops=reduce_ops,
    ).map(lambda layouts: layouts[0])


def layout_pairs(
    *,
    mesh_shape: tuple[int, ...] | None = None,
    min_ranks: int = 1,
    max_ranks: int = 8,
    max_mesh_ndim: int = 2,
    min_ndim: int = 1,
    max_ndim: int = 3,
    max_multiple: int = 3,
    dtypes: Sequence[torch.dtype] = (torch.float32,),
    reduce_ops: Sequence[str] = ("sum",),
) -> st.SearchStrategy[tuple[TensorLayout, TensorLayout]]:
    """``(src, dst)`` layouts of one tensor on one mesh that ``DTensor.redistribute`` can connect."""
    return _layouts_strategy(
        pair=True,
        mesh_shape=mesh_shape,
        min_ranks=min_ranks,
        max_ranks=max_ranks,
        max_mesh_ndim=max_mesh_ndim,
        min_ndim=min_ndim,
        max_ndim=max_ndim,
        max_multiple=max_multiple,
        dtypes=dtypes,
        reduce_ops=reduce_ops,
    ).map(lambda layouts: (layouts[0], layouts[1]))


def layouts_with_tensors(
    *, layouts: st.SearchStrategy[TensorLayout] | None = None
) -> st.SearchStrategy[tuple[TensorLayout, torch.Tensor]]:
    """A layout and a seeded full tensor of its shape and dtype."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[TensorLayout, torch.Tensor]:
        layout = draw(layouts if layouts is not None else tensor_layouts())
        seed = draw(st.integers(0, 2**31 - 1))
        note(f"tensor: seeded_tensor({layout.shape}, dtype={layout.dtype}, seed={seed})")
        return layout, seeded_tensor(layout.shape, dtype=layout.dtype, seed=seed)

    return build()


def indivisible_layouts(
    *, min_ranks: int = 2, max_ranks: int = 8, max_mesh_ndim: int = 2, max_ndim: int = 3
) -> st.SearchStrategy[tuple[dict[str, Any], str]]:
    """``(TensorLayout kwargs, dim name)`` where that sharded dim does not divide by its ranks."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
        mesh_shape = draw(
            mesh_shapes(min_ranks=max(2, min_ranks), max_ranks=max_ranks, max_ndim=max_mesh_ndim)
        )
        ndim = draw(st.integers(1, max_ndim))
        placed = list(draw(placements(mesh_ndim=len(mesh_shape), ndim=ndim)))
        mesh_dim = draw(st.sampled_from([i for i, m in enumerate(mesh_shape) if m > 1]))
        bad = draw(st.integers(0, ndim - 1))
        placed[mesh_dim] = Shard(bad)
        shape = []
        for dim in range(ndim):
            factor = math.prod(m for m, p in zip(mesh_shape, placed, strict=True) if p.is_shard(dim))
            size = factor * draw(st.integers(1, 3))
            shape.append(size + draw(st.integers(1, factor - 1)) if dim == bad else size)
        kwargs = {
            "dims": _dim_names(ndim),
            "shape": tuple(shape),
            "mesh_shape": mesh_shape,
            "mesh_dim_names": _mesh_names(len(mesh_shape)),
            "placements": tuple(placed),
        }
        note(f"indivisible layout kwargs: {kwargs}")
        return kwargs, _dim_names(ndim)[bad]

    return build()


def sample_layout_pairs(
    *,
    seed: int,
    count: int,
    mesh_shape: tuple[int, ...],
    min_ndim: int = 1,
    max_ndim: int = 3,
    max_multiple: int = 3,
    dtypes: Sequence[torch.dtype] = (torch.float32,),
    reduce_ops: Sequence[str] = ("sum",),
) -> list[tuple[TensorLayout, TensorLayout]]:
    """``count`` pairs as :func:`layout_pairs` draws them, from ``random.Random(seed)``.

    For code that cannot run hypothesis (ranks of a distributed test, benchmarks): every process
    given the same arguments gets the same pairs.
    """
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        src, dst = _pick_layouts(
            rng.choice,
            mesh_shape=mesh_shape,
            min_ndim=min_ndim,
            max_ndim=max_ndim,
            max_multiple=max_multiple,
            dtypes=dtypes,
            reduce_ops=reduce_ops,
            pair=True,
        )
        pairs.append((src, dst))
    return pairs
