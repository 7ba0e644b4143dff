"""Triton routing and expert kernels against their torch references (interpreter on CPU, small grids)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st

from allocmoe.kernels import experts as experts_mod
from allocmoe.kernels import routing as routing_mod
from allocmoe.kernels.experts import align_by_expert, experts_reference, fused_experts, unique_experts
from allocmoe.kernels.routing import route, route_triton
from allocmoe.kernels.routing_ref import route_reference
from effcore.testing.tolerances import assert_close

# --------------------------------------------------------------------------------------------- routing


@dataclass(kw_only=True)
class RouteCase:
    """One routing problem; ``ties`` draws logits from 3 values so that many scores are equal.

    Tied logits are ``0, -30, -60``: each row's softmax denominator is then the count of its largest
    logits (the rest is below half an ulp), whatever the summation order, so scores that tie across
    tokens tie bitwise in torch and in Triton alike, and the pool's tie-breaking is what is tested.
    """

    T: int
    E: int
    k_orig: int
    k_base: int
    n_extra: int | None
    score: str = "softmax"
    bias: bool = False
    mask: bool = False
    pools: int = 1
    valid: bool = False
    ties: bool = False
    seed: int = 0
    logits: torch.Tensor = field(init=False, repr=False)
    kwargs: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        if self.ties:
            self.logits = -30.0 * torch.randint(0, 3, (self.T, self.E), generator=gen).float()
        else:
            self.logits = torch.randn(self.T, self.E, generator=gen)
        self.kwargs = dict(k_orig=self.k_orig, k_base=self.k_base, n_extra=self.n_extra, score=self.score)
        self.kwargs["num_pools"] = self.pools
        if self.bias:  # two values: bias ties stay ties, as in the logits
            self.kwargs["choice_bias"] = torch.randint(0, 2, (self.E,), generator=gen).float() * 0.25
        if self.mask:  # ~half the experts masked: some tokens have fewer than k_orig candidates
            self.kwargs["candidate_mask"] = torch.rand(self.T, self.E, generator=gen) < 0.5
        if self.valid:
            self.kwargs["valid_tokens"] = torch.rand(self.T, generator=gen) < 0.7


def check_route(case: RouteCase) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ref_v, ref_ids, ref_keep = route_reference(case.logits, **case.kwargs)
    tri_v, tri_ids, tri_keep = route_triton(case.logits, **case.kwargs)
    assert tri_v.dtype == torch.float32 and tri_ids.dtype == torch.int64 and tri_keep.dtype == torch.bool
    assert_close(tri_v, ref_v, label=f"scores of {case}", dtype=torch.float32)
    assert torch.equal(tri_ids, ref_ids), f"{case}: ids differ:\n{tri_ids}\nvs reference\n{ref_ids}"
    assert torch.equal(tri_keep, ref_keep), f"{case}: keep differs:\n{tri_keep}\nvs reference\n{ref_keep}"
    return tri_v, tri_ids, tri_keep


@st.composite
def route_cases(draw: st.DrawFn) -> RouteCase:
    pools = draw(st.sampled_from([1, 2]))
    T = pools * draw(st.one_of(st.sampled_from([1, 3, 7, 13]), st.integers(1, 16)))
    E = draw(st.sampled_from([1, 2, 5, 8, 16, 33, 64]))
    k_orig = draw(st.integers(1, min(E, 8)))
    k_base = draw(st.integers(0, k_orig))
    pool_size = (T // pools) * (k_orig - k_base)
    n_extra = draw(st.one_of(st.none(), st.just(0), st.integers(1, pool_size + 3)))
    case = RouteCase(
        T=T,
        E=E,
        k_orig=k_orig,
        k_base=k_base,
        n_extra=n_extra,
        score=draw(st.sampled_from(["softmax", "sigmoid"])),
        bias=draw(st.booleans()),
        mask=draw(st.booleans()),
        pools=pools,
        valid=draw(st.booleans()),
        ties=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )
    note(repr(case))
    return case


@settings(max_examples=25)
@given(case=route_cases())
def test_route_triton_equals_reference(case: RouteCase) -> None:
    check_route(case)


@pytest.mark.parametrize(
    "case",
    [
        RouteCase(T=1, E=8, k_orig=1, k_base=0, n_extra=1),
        RouteCase(T=3, E=8, k_orig=1, k_base=1, n_extra=2, score="sigmoid"),
        RouteCase(T=7, E=16, k_orig=4, k_base=0, n_extra=0, ties=True),
        RouteCase(T=7, E=16, k_orig=4, k_base=4, n_extra=5, valid=True),
        RouteCase(T=13, E=16, k_orig=4, k_base=1, n_extra=39, ties=True, valid=True),  # n_extra == pool size
        RouteCase(T=13, E=16, k_orig=4, k_base=1, n_extra=500, valid=True),  # n_extra > pool size
        RouteCase(T=14, E=33, k_orig=6, k_base=2, n_extra=9, pools=2, ties=True, bias=True, mask=True),
        RouteCase(T=6, E=512, k_orig=8, k_base=2, n_extra=7, pools=3, score="sigmoid", bias=True, valid=True),
        RouteCase(T=5, E=8, k_orig=8, k_base=2, n_extra=None, mask=True, ties=True),
    ],
    ids=lambda c: f"T{c.T}-E{c.E}-k{c.k_orig}/{c.k_base}-n{c.n_extra}-p{c.pools}",
)
def test_route_triton_equals_reference_edge_cases(case: RouteCase) -> None:
    check_route(case)


def test_route_ties_break_by_lower_expert_then_lower_pool_position() -> None:
    # All logits equal: every token ranks experts 0, 1, 2; the pool (ranks 1..2 of 4 tokens, flat
    # token-major) keeps its first 3 positions: token 0 ranks 1, 2 and token 1 rank 1.
    logits = torch.zeros(4, 6)
    expected_ids = torch.tensor([[0, 1, 2], [0, 1, -1], [0, -1, -1], [0, -1, -1]])
    for fn in (route_reference, route_triton):
        scores, ids, keep = fn(logits, k_orig=3, k_base=1, n_extra=3)
        assert torch.equal(ids, expected_ids), f"{fn.__name__}: ids {ids}"
        assert torch.equal(keep, expected_ids >= 0), f"{fn.__name__}: keep {keep}"
        assert torch.allclose(scores, torch.full((4, 3), 1 / 6)), f"{fn.__name__}: scores {scores}"


def test_route_masked_candidates_are_ranked_last_by_index() -> None:
    # Only expert 3 is a candidate: it ranks first, then the masked experts 0, 1 by index.
    logits = torch.tensor([[5.0, 4.0, 3.0, 2.0]])
    mask = torch.tensor([[False, False, False, True]])
    for fn in (route_reference, route_triton):
        for m in (mask, mask[0]):  # per-token [T, E] and one [E] mask for every token
            _, ids, _ = fn(logits, k_orig=3, k_base=3, candidate_mask=m)
            assert ids.tolist() == [[3, 0, 1]], f"{fn.__name__} with a {tuple(m.shape)} mask: ids {ids}"


def test_route_invalid_tokens_keep_nothing_and_take_no_slot() -> None:
    logits = torch.randn(6, 8)
    valid = torch.tensor([True, False, True, False, False, True])
    _, ids, keep = route_triton(logits, k_orig=4, k_base=1, n_extra=100, valid_tokens=valid)
    assert not keep[~valid].any(), "an invalid token kept a slot"
    assert (ids[~valid] == -1).all()
    assert keep[valid].all(), "n_extra above the pool size must keep every valid slot"


def test_route_pool_selection_over_several_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # 8-element chunks make the 7 * 3 = 21 pool elements span 3 chunks; the ties cross chunk borders.
    monkeypatch.setattr(routing_mod, "_POOL_BLOCK", 8)
    _, _, keep = check_route(
        RouteCase(T=7, E=8, k_orig=4, k_base=1, n_extra=11, ties=True, valid=True, seed=3)
    )
    assert 0 < int(keep[:, 1:].sum()) <= 11


def test_route_accepts_low_precision_and_noncontiguous_logits() -> None:
    base = torch.randn(16, 7)
    for logits in (base.to(torch.bfloat16), base.to(torch.float16), base.t().contiguous().t()[::2]):
        kw = dict(k_orig=3, k_base=1, n_extra=5)
        ref = route_reference(logits, **kw)
        tri = route_triton(logits, **kw)
        assert_close(tri[0], ref[0], label=f"scores {logits.dtype}", dtype=torch.float32)
        assert torch.equal(tri[1], ref[1]), f"ids differ for {logits.dtype}, strides {logits.stride()}"


def test_route_on_cpu_auto_uses_the_torch_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("auto must not run the Triton kernels on CPU tensors")

    monkeypatch.setattr(routing_mod, "route_triton", fail)
    case = RouteCase(T=8, E=16, k_orig=4, k_base=1, n_extra=6, pools=2, valid=True)
    got = route(case.logits, **case.kwargs)
    ref = route_reference(case.logits, **case.kwargs)
    for a, b in zip(got, ref, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("logits", "kwargs", "message"),
    [
        (torch.randn(4, 8), dict(k_orig=2, k_base=3), r"k_base must be in \[0, k_orig=2\]"),
        (torch.randn(4, 8), dict(k_orig=9, k_base=1), r"k_orig must be in \[1, E=8\]"),
        (torch.randn(5, 8), dict(k_orig=2, k_base=1, num_pools=2), "num_pools must be >= 1 and divide T=5"),
        (torch.randn(2, 4, 8), dict(k_orig=2, k_base=1), "logits must be a 2-D float tensor"),
        (torch.randn(4, 8), dict(k_orig=2, k_base=1, score="relu"), "score must be one of"),
        (torch.randn(4, 8), dict(k_orig=2, k_base=1, n_extra=-1), "n_extra must be None"),
        (torch.randn(4, 8), dict(k_orig=2, k_base=1, choice_bias=torch.zeros(7)), r"choice_bias must have"),
        (
            torch.randn(4, 8),
            dict(k_orig=2, k_base=1, valid_tokens=torch.ones(4)),
            "valid_tokens must be a bool",
        ),
        (torch.randn(4, 8), dict(k_orig=2, k_base=1, backend="cuda"), "backend must be one of"),
    ],
)
def test_route_rejects_bad_arguments(logits: torch.Tensor, kwargs: dict, message: str) -> None:
    for backend in ("torch", "triton"):
        with pytest.raises(ValueError, match=message):
            route(logits, **{"backend": backend, **kwargs})


def test_route_triton_without_gpu_or_interpreter_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    # A compiled (not interpreted) kernel cannot take CPU tensors: the error must say what to do.
    monkeypatch.setattr(routing_mod, "_route_topk_fwd_kernel", object())
    with pytest.raises(ValueError, match="use backend='torch'"):
        route_triton(torch.randn(4, 8), k_orig=2, k_base=1)


# --------------------------------------------------------------------------------------------- experts


def make_experts(
    T: int,
    E: int,
    K: int,
    H: int,
    inter: int,
    *,
    p_invalid: float,
    seed: int,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, ...]:
    """x, gate_up_proj, down_proj, ids (invalid slots: -1 or E), weights; scaled so outputs are O(1)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=gen)
    gate_up = torch.randn(E, 2 * inter, H, generator=gen) / H**0.5
    down = torch.randn(E, H, inter, generator=gen) / inter**0.5
    ids = torch.randint(0, E, (T, K), generator=gen)
    drop = torch.rand(T, K, generator=gen) < p_invalid
    ids = torch.where(drop, torch.where(torch.rand(T, K, generator=gen) < 0.5, -1, E), ids)
    weights = torch.rand(T, K, generator=gen)
    return x.to(dtype), gate_up.to(dtype), down.to(dtype), ids, weights.to(dtype)


@st.composite
def expert_problems(draw: st.DrawFn) -> dict:
    problem = dict(
        T=draw(st.one_of(st.sampled_from([1, 3, 7, 13]), st.integers(1, 16))),
        E=draw(st.integers(1, 6)),
        K=draw(st.integers(1, 4)),
        H=draw(st.sampled_from([16, 24, 33])),  # 33: unaligned rows, grouped_mm falls back to the loop
        inter=draw(st.sampled_from([8, 16, 20])),
        p_invalid=draw(st.sampled_from([0.0, 0.3, 0.5, 1.0])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )
    note(f"problem {problem}")
    return problem


def check_experts(problem: dict, backend: str, *, noncontiguous: bool = False) -> None:
    x, gate_up, down, ids, weights = make_experts(**problem)
    if noncontiguous:  # every other column of a twice-as-wide buffer
        wide = torch.zeros(x.shape[0], 2 * x.shape[1], dtype=x.dtype)
        wide[:, ::2] = x
        x = wide[:, ::2]
    ref = experts_reference(x, gate_up, down, ids, weights)
    out = fused_experts(x, gate_up, down, ids, weights, backend=backend)
    assert out.shape == ref.shape and out.dtype == x.dtype
    assert_close(out, ref, label=f"{backend} fused_experts vs reference")


@settings(max_examples=25)
@given(problem=expert_problems(), noncontiguous=st.booleans())
def test_fused_experts_torch_equals_reference(problem: dict, noncontiguous: bool) -> None:
    check_experts(problem, "torch", noncontiguous=noncontiguous)


@settings(max_examples=20)
@given(problem=expert_problems(), noncontiguous=st.booleans())
def test_fused_experts_triton_equals_reference(problem: dict, noncontiguous: bool) -> None:
    check_experts(problem, "triton", noncontiguous=noncontiguous)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize(
    "problem",
    [
        dict(T=1, E=4, K=2, H=16, inter=16, p_invalid=0.0, seed=1),  # single token
        dict(T=9, E=3, K=1, H=24, inter=8, p_invalid=0.3, seed=2),  # K = 1
        dict(T=5, E=4, K=3, H=32, inter=16, p_invalid=0.5, seed=3),
    ],
    ids=["single-token", "k1", "half-invalid"],
)
def test_fused_experts_edge_cases_equal_reference(problem: dict, backend: str) -> None:
    check_experts(problem, backend, noncontiguous=True)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fused_experts_all_invalid_gives_zeros(backend: str) -> None:
    x, gate_up, down, ids, weights = make_experts(6, 4, 3, 16, 16, p_invalid=1.0, seed=4)
    assert ((ids < 0) | (ids >= 4)).all()
    out = fused_experts(x, gate_up, down, ids, weights, backend=backend)
    assert torch.equal(out, torch.zeros_like(x))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fused_experts_bf16_close_to_fp32_reference(backend: str) -> None:
    x, gate_up, down, ids, weights = make_experts(
        12, 4, 2, 32, 16, p_invalid=0.3, seed=5, dtype=torch.bfloat16
    )
    ref = experts_reference(x, gate_up, down, ids, weights)
    out = fused_experts(x, gate_up, down, ids, weights, backend=backend)
    assert out.dtype == torch.bfloat16
    # The torch path rounds the GEMM outputs to bf16 (as transformers does): a few bf16 ulps.
    assert_close(out, ref, label=f"{backend} bf16", scale=2.0)


def test_fused_experts_torch_loop_fallback_for_float64() -> None:
    x, gate_up, down, ids, weights = make_experts(7, 3, 2, 16, 8, p_invalid=0.3, seed=6, dtype=torch.float64)
    out = fused_experts(x, gate_up, down, ids, weights, backend="torch")
    exact = torch.zeros_like(x)
    for t in range(7):
        for k in range(2):
            e = int(ids[t, k])
            if 0 <= e < 3:
                gate, up = (gate_up[e] @ x[t]).chunk(2)
                exact[t] += weights[t, k] * (down[e] @ (torch.nn.functional.silu(gate) * up))
    assert out.dtype == torch.float64
    assert_close(out, exact, label="float64 loop fallback", dtype=torch.float32)


@settings(max_examples=25)
@given(problem=expert_problems(), bf16=st.booleans())
def test_expert_loop_path_equals_the_grouped_path(problem: dict, bf16: bool) -> None:
    dtype = torch.bfloat16 if bf16 else torch.float32
    x, gate_up, down, ids, weights = make_experts(**problem, dtype=dtype)
    grouped = experts_mod._fused_experts_torch(x, gate_up, down, ids, weights, loop=False)
    loop = experts_mod._fused_experts_torch(x, gate_up, down, ids, weights, loop=True)
    # the same pairs in the same order, rounded at the same points: only the GEMM kernels differ
    assert_close(loop, grouped, label=f"loop vs grouped ({dtype})", scale=2.0 if bf16 else 1.0)


def test_fused_experts_on_cpu_auto_uses_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("auto must not run the Triton kernels on CPU tensors")

    monkeypatch.setattr(experts_mod, "_fused_experts_triton", fail)
    x, gate_up, down, ids, weights = make_experts(4, 3, 2, 16, 8, p_invalid=0.3, seed=7)
    assert_close(
        fused_experts(x, gate_up, down, ids, weights),
        experts_reference(x, gate_up, down, ids, weights),
        label="auto on CPU",
    )


def test_fused_experts_triton_without_gpu_or_interpreter_names_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(experts_mod, "_experts_gate_up_fwd_kernel", object())
    x, gate_up, down, ids, weights = make_experts(4, 3, 2, 16, 8, p_invalid=0.0, seed=9)
    with pytest.raises(ValueError, match="use backend='torch'"):
        fused_experts(x, gate_up, down, ids, weights, backend="triton")


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        (dict(x=(4, 16, 1)), "x must be 2-D"),
        (dict(gate_up=(3, 16, 15)), r"gate_up_proj must be \[E, 2I, H=16\]"),
        (dict(down=(3, 16, 9)), r"down_proj must be \[E, H, I\]=\(3, 16, 8\)"),
        (dict(weights=(4, 3)), "weights must have the shape of ids"),
    ],
)
def test_fused_experts_rejects_bad_shapes(shapes: dict, message: str) -> None:
    x, gate_up, down, ids, weights = make_experts(4, 3, 2, 16, 8, p_invalid=0.0, seed=8)
    args = dict(x=x, gate_up=gate_up, down=down, weights=weights)
    for name, shape in shapes.items():
        args[name] = torch.zeros(shape)
    with pytest.raises(ValueError, match=message):
        fused_experts(args["x"], args["gate_up"], args["down"], ids, args["weights"])
    with pytest.raises(ValueError, match="backend must be one of"):
        fused_experts(x, gate_up, down, ids, weights, backend="cuda")


@settings(max_examples=50)
@given(
    T=st.integers(1, 20),
    K=st.integers(1, 4),
    E=st.integers(1, 8),
    block_m=st.sampled_from([1, 4, 16]),
    p_invalid=st.sampled_from([0.0, 0.4, 1.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_align_by_expert_groups_each_valid_pair_once(
    T: int, K: int, E: int, block_m: int, p_invalid: float, seed: int
) -> None:
    _, _, _, ids, _ = make_experts(T, E, K, 16, 8, p_invalid=p_invalid, seed=seed)
    sorted_ids, block_experts, n_valid = align_by_expert(ids, E, block_m)
    flat = ids.reshape(-1)
    valid = (flat >= 0) & (flat < E)
    assert sorted_ids.dtype == torch.int32 and block_experts.dtype == torch.int32
    assert n_valid == int(valid.sum())
    assert sorted_ids.numel() == block_experts.numel() * block_m, "P_pad is a whole number of blocks"
    real = sorted_ids[sorted_ids != T * K].long()
    assert torch.equal(real.sort().values, valid.nonzero()[:, 0]), "every valid pair exactly once"
    row_expert = block_experts.repeat_interleave(block_m).long()
    is_real = sorted_ids != T * K
    assert torch.equal(flat[sorted_ids[is_real].long()], row_expert[is_real]), "pair in its expert's block"
    assert (block_experts[1:] >= block_experts[:-1]).all(), "segments in expert order"
    counts = torch.bincount(flat[valid], minlength=E)
    blocks = torch.bincount(block_experts.long(), minlength=E)
    assert torch.equal(blocks, (counts + block_m - 1) // block_m), (
        "each segment padded to a multiple of block_m"
    )
    for e in range(E):  # within a segment: real pairs first, in increasing (stable) order
        seg = sorted_ids[row_expert == e]
        pairs = seg[seg != T * K]
        assert torch.equal(seg[: pairs.numel()], pairs) and (pairs[1:] > pairs[:-1]).all()


def test_unique_experts_counts_distinct_valid_ids() -> None:
    ids = torch.tensor([[0, 3, -1], [3, 5, 0], [2, 2, 4]])
    assert unique_experts(ids, 5) == 4  # 0, 2, 3, 4; 5 and -1 are invalid
    assert unique_experts(ids, 3) == 2  # 0, 2
    assert unique_experts(torch.full((2, 2), -1), 4) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_gate_up_kernel_stores_the_down_operand_in_the_dtype_the_down_dot_reads_exactly(
    dtype: torch.dtype,
) -> None:
    # The down GEMM runs tf32 dots for 16-bit weights; tf32 would round an fp32 intermediate, so the
    # gate_up kernel must store silu(gate) * up in the 16-bit dtype (rounded once, like the torch path).
    x, gate_up, down, ids, _ = make_experts(7, 4, 2, 32, 16, p_invalid=0.3, seed=6, dtype=dtype)
    sorted_ids, block_experts, _ = align_by_expert(ids, 4, 16)
    out_dtype = experts_mod._intermediate_dtype(down)
    h = experts_mod.experts_gate_up_forward(
        x, gate_up, sorted_ids, block_experts, top_k=2, block_m=16, out_dtype=out_dtype
    )
    assert h.dtype == dtype, "the down GEMM's A operand is not in the weights' dtype"
    assert experts_mod._dot_precision(h.dtype, down.dtype) == ("ieee" if dtype == torch.float32 else "tf32")
    rows = sorted_ids < ids.numel()
    pair = sorted_ids[rows].long()
    expert = block_experts.repeat_interleave(16)[rows].long()
    gate, up = torch.einsum("ph,pih->pi", x[pair // 2].float(), gate_up[expert].float()).chunk(2, dim=-1)
    want = (torch.nn.functional.silu(gate) * up).to(dtype)
    assert_close(h[rows], want, label=f"h {dtype}", scale=2.0)


def test_dot_precision_uses_tf32_only_for_16_bit_operands() -> None:
    assert experts_mod._dot_precision(torch.bfloat16, torch.float16) == "tf32"
    for pair in ((torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32), (torch.float32,) * 2):
        assert experts_mod._dot_precision(*pair) == "ieee", pair


# --------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("score", ["softmax", "sigmoid"])
def test_route_triton_equals_reference_on_cuda(score: str) -> None:
    for case in (
        RouteCase(T=4096, E=128, k_orig=8, k_base=2, n_extra=4096 * 3, score=score, bias=True, valid=True),
        RouteCase(T=2048, E=64, k_orig=6, k_base=1, n_extra=700, pools=8, score=score, ties=True, mask=True),
        RouteCase(T=37, E=512, k_orig=8, k_base=0, n_extra=None, score=score),
    ):
        ref = route_reference(case.logits, **case.kwargs)
        kwargs = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in case.kwargs.items()}
        tri = route(case.logits.cuda(), **kwargs)  # auto: Triton on CUDA
        assert_close(tri[0].cpu(), ref[0], label="scores", dtype=torch.float32)
        assert torch.equal(tri[1].cpu(), ref[1]) and torch.equal(tri[2].cpu(), ref[2]), repr(case)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_experts_triton_equals_reference_on_cuda(dtype: torch.dtype) -> None:
    for T, E, K, H, inter in ((1, 8, 2, 256, 128), (4, 64, 8, 512, 256), (1000, 16, 4, 576, 128)):
        x, gate_up, down, ids, weights = make_experts(T, E, K, H, inter, p_invalid=0.3, seed=T, dtype=dtype)
        x, gate_up, down, ids, weights = (a.cuda() for a in (x, gate_up, down, ids, weights))
        ref = experts_reference(x, gate_up, down, ids, weights)
        for backend in ("auto", "torch"):
            out = fused_experts(x, gate_up, down, ids, weights, backend=backend)
            assert_close(out, ref, label=f"{backend} cuda {dtype} T={T}", scale=2.0)
