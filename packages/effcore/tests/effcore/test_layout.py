"""effcore.layout in one process: layout validation, shard/unshard simulation, redistribution plans."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from torch.distributed.tensor import Partial, Replicate, Shard

from effcore.errors import LayoutError
from effcore.layout import (
    TensorLayout,
    collective_bytes,
    comm_bytes,
    redistribute_plan,
    shard,
    unshard,
)
from effcore.testing.strategies import (
    indivisible_layouts,
    layout_pairs,
    layouts_with_tensors,
    tensor_layouts,
)

DTYPES = (torch.float32, torch.bfloat16, torch.float64)
EXACT_REDUCE_OPS = ("sum", "max", "min")  # avg divides by the rank count: exact only within rounding


def _layout_1d(*placements: object, shape: tuple[int, ...] = (8, 12), ranks: int = 4) -> TensorLayout:
    return TensorLayout(
        dims=("seq", "hidden")[: len(shape)],
        shape=shape,
        mesh_shape=(ranks,),
        mesh_dim_names=("tp",),
        placements=placements,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------- properties (hypothesis)


@given(layouts_with_tensors(layouts=tensor_layouts(dtypes=DTYPES, reduce_ops=EXACT_REDUCE_OPS)))
def test_shard_unshard_roundtrip_is_identity(case: tuple[TensorLayout, torch.Tensor]) -> None:
    layout, x = case
    assert torch.equal(unshard(shard(x, layout), layout), x), f"roundtrip changed the tensor for {layout}"


@given(layouts_with_tensors(layouts=tensor_layouts(reduce_ops=("avg",))))
def test_shard_unshard_roundtrip_with_avg_partial_is_identity_within_rounding(
    case: tuple[TensorLayout, torch.Tensor],
) -> None:
    layout, x = case
    torch.testing.assert_close(unshard(shard(x, layout), layout), x, atol=1e-6, rtol=1e-6)


@given(layouts_with_tensors(layouts=tensor_layouts(dtypes=DTYPES, reduce_ops=EXACT_REDUCE_OPS)))
def test_every_shard_has_the_local_shape_and_bytes_per_rank(case: tuple[TensorLayout, torch.Tensor]) -> None:
    layout, x = case
    shards = shard(x, layout)
    assert len(shards) == layout.num_ranks, "one local tensor per rank"
    for coord, local in shards.items():
        assert tuple(local.shape) == layout.local_shape(), f"shape of shard {coord} for {layout}"
        assert local.numel() * local.element_size() == layout.bytes_per_rank(), f"bytes of shard {coord}"


@given(tensor_layouts(dtypes=DTYPES, reduce_ops=EXACT_REDUCE_OPS))
def test_bytes_per_rank_times_ranks_is_global_bytes_times_replication_factor(layout: TensorLayout) -> None:
    assert (
        layout.bytes_per_rank() * layout.num_ranks == layout.global_bytes() * layout.replication_factor()
    ), (
        f"{layout}: {layout.bytes_per_rank()} B x {layout.num_ranks} ranks != "
        f"{layout.global_bytes()} B x replication {layout.replication_factor()}"
    )


@given(tensor_layouts(dtypes=DTYPES, reduce_ops=("sum", "avg", "max")))
def test_comm_bytes_from_a_layout_to_itself_is_zero(layout: TensorLayout) -> None:
    for device_type in ("cuda", "cpu"):
        assert redistribute_plan(layout, layout, device_type=device_type) == [], f"no steps for {layout}"
        assert comm_bytes(layout, layout, device_type=device_type) == 0


@given(indivisible_layouts())
def test_indivisible_layout_raises_layout_error_naming_the_dim(case: tuple[dict[str, object], str]) -> None:
    kwargs, dim = case
    with pytest.raises(LayoutError, match=f"dim '{dim}' of size") as info:
        TensorLayout(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value), "one-line message"
    assert "not divisible" in str(info.value) and "multiple of" in str(info.value), "names sizes and fix"


@given(layout_pairs(dtypes=DTYPES, reduce_ops=("sum", "avg", "max")))
def test_comm_bytes_is_the_sum_of_plan_steps_by_the_byte_convention(
    pair: tuple[TensorLayout, TensorLayout],
) -> None:
    src, dst = pair
    plan = redistribute_plan(src, dst)
    for step in plan:
        assert step.group_size > 1, "DTensor skips mesh dims of size 1"
        assert step.bytes_per_rank == collective_bytes(step.collective, step.input_bytes, step.group_size)
        assert (step.bytes_per_rank == 0) == (step.collective == "local"), f"{step}"
    assert comm_bytes(src, dst) == sum(step.bytes_per_rank for step in plan)


@given(layout_pairs(reduce_ops=("sum", "max")))
def test_cpu_plan_swaps_each_all_to_all_for_an_all_gather_of_the_same_shard(
    pair: tuple[TensorLayout, TensorLayout],
) -> None:
    src, dst = pair
    cuda, cpu = redistribute_plan(src, dst), redistribute_plan(src, dst, device_type="cpu")
    assert len(cuda) == len(cpu)
    for on_cuda, on_cpu in zip(cuda, cpu, strict=True):
        if on_cuda.collective == "all_to_all":
            assert on_cpu.collective == "all_gather"
            assert on_cpu.bytes_per_rank == on_cuda.bytes_per_rank * on_cuda.group_size
        else:
            assert on_cpu == on_cuda


# ---------------------------------------------------------------- examples


@pytest.mark.parametrize(
    ("src", "dst", "collective", "input_bytes", "sent"),
    [
        # 8x12 fp32 = 384 B; each Shard(0)/Shard(1) local is 96 B on 4 ranks
        (Shard(0), Replicate(), "all_gather", 96, 3 * 96),
        (Partial(), Replicate(), "all_reduce", 384, 2 * 3 * 384 // 4),
        (Partial(), Shard(1), "reduce_scatter", 384, 3 * 384 // 4),
        (Shard(0), Shard(1), "all_to_all", 96, 3 * 96 // 4),
        (Replicate(), Shard(0), "local", 384, 0),
        (Shard(1), Partial(), "local", 96, 0),
    ],
)
def test_1d_plan_is_one_step_with_the_documented_collective_and_bytes(
    src: object, dst: object, collective: str, input_bytes: int, sent: int
) -> None:
    (step,) = redistribute_plan(_layout_1d(src), _layout_1d(dst))
    assert (step.collective, step.mesh_dim, step.group_size) == (collective, "tp", 4)
    assert (step.input_bytes, step.bytes_per_rank) == (input_bytes, sent)


@pytest.mark.parametrize(
    ("collective", "n", "p", "expected"),
    [
        ("all_gather", 100, 4, 300),
        ("reduce_scatter", 100, 4, 75),
        ("all_reduce", 100, 4, 150),
        ("all_to_all", 100, 4, 75),
        ("local", 100, 4, 0),
        ("all_reduce", 100, 1, 0),
    ],
)
def test_collective_bytes_follow_the_ring_convention(collective: str, n: int, p: int, expected: int) -> None:
    assert collective_bytes(collective, n, p) == expected  # type: ignore[arg-type]


def test_2d_swap_of_nested_shards_replicates_inner_then_all_to_alls_outer() -> None:
    dims, shape, mesh = ("seq", "hidden"), (8, 8), {"dp": 2, "tp": 2}
    src = TensorLayout.build(dims=dims, shape=shape, mesh=mesh, shard={"dp": "seq", "tp": "hidden"})
    dst = src.relayout(shard={"dp": "hidden", "tp": "seq"})
    steps = [(s.collective, s.mesh_dim, str(s.src), str(s.dst)) for s in redistribute_plan(src, dst)]
    assert steps == [
        ("all_gather", "tp", "S(1)", "R"),
        ("all_to_all", "dp", "S(0)", "S(1)"),
        ("local", "tp", "R", "S(0)"),
    ]


def test_flattened_mesh_merges_consecutive_all_reduces_into_one() -> None:
    src = TensorLayout.build(dims=("hidden",), shape=(16,), mesh={"dp": 2, "tp": 2}, partial=("dp", "tp"))
    dst = src.relayout()
    separate = redistribute_plan(src, dst)
    merged = redistribute_plan(src, dst, flattened=[("dp", "tp")])
    assert [(s.collective, s.mesh_dim, s.group_size) for s in separate] == [
        ("all_reduce", "dp", 2),
        ("all_reduce", "tp", 2),
    ]
    assert [(s.collective, s.mesh_dim, s.group_size) for s in merged] == [("all_reduce", "dp_tp", 4)]
    assert comm_bytes(src, dst) == 2 * 64 and comm_bytes(src, dst, flattened=[("dp", "tp")]) == 96


def test_mesh_dim_of_size_one_needs_no_collective() -> None:
    src = TensorLayout.build(dims=("seq",), shape=(8,), mesh={"dp": 1, "tp": 4}, shard={"dp": "seq"})
    assert redistribute_plan(src, src.relayout()) == []


@pytest.mark.parametrize(
    ("src_placement", "dst_placement"),
    [(Replicate(), Partial()), (Partial("max"), Partial()), (Shard(0), Partial("avg"))],
)
def test_partial_targets_dtensor_refuses_raise_layout_error(
    src_placement: object, dst_placement: object
) -> None:
    with pytest.raises(LayoutError, match="mesh dim 'tp': DTensor cannot redistribute"):
        redistribute_plan(_layout_1d(src_placement), _layout_1d(dst_placement))


def test_redistribute_plan_rejects_layouts_of_different_tensors() -> None:
    with pytest.raises(LayoutError, match="differ in shape"):
        redistribute_plan(_layout_1d(Shard(0)), _layout_1d(Shard(0), shape=(8, 16)))


def test_build_places_by_mesh_and_tensor_dim_names() -> None:
    layout = TensorLayout.build(
        dims=("batch", "seq", "hidden"),
        shape=(4, 16, 8),
        mesh={"pp": 2, "dp": 2, "tp": 2},
        shard={"dp": "batch", "tp": "seq"},
        partial={"pp": "max"},
        dtype=torch.bfloat16,
    )
    assert layout.placements == (Partial("max"), Shard(0), Shard(1))
    assert layout.mesh == {"pp": 2, "dp": 2, "tp": 2}
    assert layout.local_shape() == (2, 8, 8) and layout.bytes_per_rank() == 2 * 8 * 8 * 2
    assert layout.replication_factor() == 2 and layout.global_bytes() == 4 * 16 * 8 * 2
    assert str(layout) == (
        "[batch=4, seq=16, hidden=8] torch.bfloat16 on (pp=2, dp=2, tp=2) as (P(max), S(batch), S(seq))"
    )


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"shard": {"tp": "sequence"}}, "unknown tensor dim 'sequence'"),
        ({"shard": {"cp": "seq"}}, "unknown mesh dim 'cp'"),
        ({"partial": ("ep",)}, "unknown mesh dim 'ep'"),
        ({"shard": {"tp": "seq"}, "partial": ("tp",)}, "mesh dim 'tp' is both sharded and partial"),
        ({"shard": {"tp": "seq"}, "shape": (4, 6)}, "dim 'seq' of size 6 is sharded over tp=4"),
    ],
)
def test_build_rejects_impossible_layouts_naming_the_culprit(kwargs: dict[str, object], named: str) -> None:
    args: dict[str, object] = {"dims": ("batch", "seq"), "shape": (4, 8), "mesh": {"tp": 4}} | kwargs
    with pytest.raises(LayoutError, match=named):
        TensorLayout.build(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("placements", "named"),
    [
        ((Shard(0), Shard(1)), "2 placements"),
        ((Shard(2),), "mesh dim 'tp' shards unknown tensor dim 2"),
        ((Partial("product"),), "Partial\\('product'\\)"),
    ],
)
def test_layout_rejects_bad_placements(placements: tuple[object, ...], named: str) -> None:
    with pytest.raises(LayoutError, match=named):
        _layout_1d(*placements)


def test_layout_rejects_mixed_partial_reductions() -> None:
    with pytest.raises(LayoutError, match="mix Partial reductions"):
        TensorLayout.build(
            dims=("seq",), shape=(4,), mesh={"dp": 2, "tp": 2}, partial={"dp": "sum", "tp": "max"}
        )


def test_negative_shard_dim_is_normalized() -> None:
    assert _layout_1d(Shard(-1)).placements == (Shard(1),)


def test_nested_shards_split_left_to_right_like_dtensor() -> None:
    layout = TensorLayout.build(
        dims=("seq",), shape=(8,), mesh={"dp": 2, "tp": 2}, shard={"dp": "seq", "tp": "seq"}
    )
    shards = shard(torch.arange(8.0), layout)
    assert {coord: local.tolist() for coord, local in shards.items()} == {
        (0, 0): [0.0, 1.0],
        (0, 1): [2.0, 3.0],
        (1, 0): [4.0, 5.0],
        (1, 1): [6.0, 7.0],
    }


def test_sum_partial_holds_the_value_at_coordinate_zero_and_zeros_elsewhere() -> None:
    layout = _layout_1d(Partial(), shape=(3,), ranks=3)
    shards = shard(torch.ones(3), layout)
    assert [shards[(i,)].tolist() for i in range(3)] == [[1.0] * 3, [0.0] * 3, [0.0] * 3]


def test_unshard_rejects_missing_or_misshaped_shards() -> None:
    layout = _layout_1d(Shard(0))
    shards = shard(torch.zeros(8, 12), layout)
    with pytest.raises(LayoutError, match="got shards for 3 mesh coordinates"):
        unshard({c: t for c, t in shards.items() if c != (3,)}, layout)
    with pytest.raises(LayoutError, match=r"shard at \(0,\) has shape \(1, 12\)"):
        unshard(shards | {(0,): torch.zeros(1, 12)}, layout)


def test_shard_rejects_a_tensor_of_another_shape() -> None:
    with pytest.raises(LayoutError, match="does not match layout"):
        shard(torch.zeros(4, 12), _layout_1d(Shard(0)))
