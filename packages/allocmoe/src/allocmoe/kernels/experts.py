"""Grouped SwiGLU expert computation for routed tokens, with dropped slots (id -1) costing nothing.

Weights use the HF transformers 5 MoE layout: ``gate_up_proj[E, 2I, H]`` (rows ``:I`` gate, ``I:`` up)
and ``down_proj[E, H, I]``; expert ``e`` maps ``x`` to ``down_proj[e] @ (silu(gate) * up)``.
:func:`fused_experts` runs a vLLM-style fused MoE in Triton on CUDA and a compacted ``grouped_mm``
formulation in torch on CPU; :func:`experts_reference` is the exact loop both are tested against.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

__all__ = [
    "ExpertsBackend",
    "align_by_expert",
    "experts_down_forward",
    "experts_gate_up_forward",
    "experts_reference",
    "fused_experts",
    "unique_experts",
]

ExpertsBackend = Literal["auto", "triton", "torch"]

_BACKENDS = ("auto", "triton", "torch")
# grouped_mm kernels per device type (CPU: torch >= 2.9; CUDA: bf16 on SM80+); other dtypes loop over experts.
_GROUPED_MM_DTYPES = {
    "cpu": (torch.float32, torch.bfloat16, torch.float16),
    "cuda": (torch.bfloat16,),
}


def _check_experts_args(
    x: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    ids: torch.Tensor,
    weights: torch.Tensor,
) -> None:
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D [T, H], got shape {tuple(x.shape)}")
    T, H = x.shape
    if gate_up_proj.dim() != 3 or gate_up_proj.shape[2] != H or gate_up_proj.shape[1] % 2:
        raise ValueError(f"gate_up_proj must be [E, 2I, H={H}], got {tuple(gate_up_proj.shape)}")
    E, inter = gate_up_proj.shape[0], gate_up_proj.shape[1] // 2
    if tuple(down_proj.shape) != (E, H, inter):
        raise ValueError(f"down_proj must be [E, H, I]=({E}, {H}, {inter}), got {tuple(down_proj.shape)}")
    if ids.dim() != 2 or ids.shape[0] != T or ids.is_floating_point() or ids.dtype == torch.bool:
        raise ValueError(f"ids must be an integer tensor [T={T}, K], got {ids.dtype} {tuple(ids.shape)}")
    if tuple(weights.shape) != tuple(ids.shape):
        raise ValueError(f"weights must have the shape of ids {tuple(ids.shape)}, got {tuple(weights.shape)}")


def experts_reference(
    x: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    ids: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """``out[t] = sum_k weights[t, k] * expert_{ids[t, k]}(x[t])`` by a loop over experts, in fp32.

    Slots with ``ids < 0`` or ``ids >= E`` are skipped. Returns ``[T, H]`` in ``x.dtype``.
    """
    _check_experts_args(x, gate_up_proj, down_proj, ids, weights)
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for e in range(gate_up_proj.shape[0]):
        tok, slot = torch.nonzero(ids == e, as_tuple=True)
        if tok.numel() == 0:
            continue
        gate, up = F.linear(x[tok].float(), gate_up_proj[e].float()).chunk(2, dim=-1)
        y = F.linear(F.silu(gate) * up, down_proj[e].float())
        out.index_add_(0, tok, y * weights[tok, slot].float()[:, None])
    return out.to(x.dtype)


def unique_experts(ids: torch.Tensor, num_experts: int) -> int:
    """Number of distinct valid experts (``0 <= id < num_experts``) in ``ids``."""
    flat = ids.reshape(-1)
    flat = flat[(flat >= 0) & (flat < num_experts)]
    return int(torch.bincount(flat, minlength=num_experts).count_nonzero())


def _sort_valid_pairs(ids: torch.Tensor, num_experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Valid flat pair indices grouped by expert (stable), their experts, and per-expert counts."""
    flat = ids.reshape(-1)
    valid = (flat >= 0) & (flat < num_experts)
    # One stable sort puts invalid pairs (key E) at the tail; the sum is the single host sync.
    key = torch.where(valid, flat, num_experts)
    experts, pairs = torch.sort(key, stable=True)
    n_valid = int(valid.sum())
    experts, pairs = experts[:n_valid], pairs[:n_valid]
    return pairs, experts, torch.bincount(experts, minlength=num_experts)


def align_by_expert(
    ids: torch.Tensor, num_experts: int, block_m: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """vLLM ``moe_align_block_size`` (with ``ignore_invalid_experts=True``) in torch.

    Returns ``(sorted_pair_ids int32 [P_pad], block_expert_ids int32 [P_pad // block_m], num_valid_pairs)``:
    flat pair indices ``t * K + k`` grouped by expert in increasing order (stable within an expert), each
    expert's segment padded to a multiple of ``block_m`` with the pad value ``T * K``; invalid pairs
    (``id < 0`` or ``id >= num_experts``) are left out entirely and unused experts get no block.
    """
    if block_m < 1:
        raise ValueError(f"block_m must be >= 1, got {block_m}")
    pairs, experts, counts = _sort_valid_pairs(ids, num_experts)
    dev = ids.device
    padded = (counts + block_m - 1) // block_m * block_m
    seg_end = padded.cumsum(0)
    seg_start = seg_end - padded
    n_pad = int(seg_end[-1]) if num_experts else 0
    # Rank of each pair within its expert: its sorted position minus the expert's first sorted position.
    first = counts.cumsum(0) - counts
    rank = torch.arange(pairs.numel(), device=dev) - first[experts]
    sorted_pair_ids = torch.full((n_pad,), ids.numel(), dtype=torch.int32, device=dev)
    sorted_pair_ids[seg_start[experts] + rank] = pairs.to(torch.int32)
    block_expert_ids = torch.repeat_interleave(
        torch.arange(num_experts, dtype=torch.int32, device=dev), padded // block_m
    )
    return sorted_pair_ids, block_expert_ids, pairs.numel()


def _grouped_mm_ok(a: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether a grouped_mm kernel takes these operands: its dtypes, and 16-byte aligned pointers and strides."""
    if a.dtype not in _GROUPED_MM_DTYPES.get(a.device.type, ()) or w.dtype != a.dtype:
        return False
    size = a.element_size()
    strides = [s * size for s in (*a.stride(), *w.stride()) if s != 1]
    return all(s % 16 == 0 for s in strides) and a.data_ptr() % 16 == 0 and w.data_ptr() % 16 == 0


def _grouped_mm(
    a: torch.Tensor, w: torch.Tensor, offs: torch.Tensor, counts: torch.Tensor, *, loop: bool = False
) -> torch.Tensor:
    """``a[rows of group e] @ w[e]`` for consecutive row groups ending at ``offs`` (int32, ``counts`` rows each).

    One ``grouped_mm`` call, or (``loop``, or a dtype without a grouped kernel) one ``mm`` per present
    expert. ``loop`` is not chosen automatically: ``bench_kernels.py`` (both paths timed alone, 1 to
    8,192 tokens on the built model's expert shape) found neither path consistently faster on CPU.
    """
    if not loop and _grouped_mm_ok(a, w):
        if hasattr(F, "grouped_mm"):
            return F.grouped_mm(a, w, offs=offs)
        if hasattr(torch, "_grouped_mm"):
            return torch._grouped_mm(a, w, offs=offs)
    out = torch.empty(a.shape[0], w.shape[2], dtype=a.dtype, device=a.device)
    ends = offs.tolist()
    for e in counts.nonzero()[:, 0].tolist():  # present experts only
        start = ends[e - 1] if e else 0
        torch.mm(a[start : ends[e]], w[e], out=out[start : ends[e]])
    return out


def _fused_experts_torch(
    x: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    ids: torch.Tensor,
    weights: torch.Tensor,
    *,
    loop: bool = False,
) -> torch.Tensor:
    """The torch path; ``loop=True`` forces one matmul per present expert (see :func:`_grouped_mm`)."""
    K = ids.shape[1]
    E = gate_up_proj.shape[0]
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    pairs, _, counts = _sort_valid_pairs(ids, E)
    if pairs.numel() == 0:
        return out.to(x.dtype)
    offs = counts.cumsum(0, dtype=torch.int32)
    tok = pairs // K
    a = x[tok]
    # Inputs are cast to the weights' dtype (as transformers does), never the weights to the input's.
    w1 = gate_up_proj.transpose(1, 2)  # [E, H, 2I] view: grouped_mm takes [in, out] operands
    w2 = down_proj.transpose(1, 2)  # [E, I, H]
    gate, up = _grouped_mm(a.to(w1.dtype), w1, offs, counts, loop=loop).chunk(2, dim=-1)
    h = (F.silu(gate.float()) * up.float()).to(w2.dtype)
    y = _grouped_mm(h, w2, offs, counts, loop=loop)
    y = y.float() * weights.reshape(-1)[pairs].float()[:, None]
    return out.index_add_(0, tok, y).to(x.dtype)


@triton.jit
def _experts_gate_up_fwd_kernel(
    x_ptr,  # [T, H] tokens, any strides; upcast to fp32 on load
    w_ptr,  # [E, 2I, H] gate_up_proj: rows :I gate, I: up
    h_ptr,  # [P_pad, I] out: silu(gate) * up per sorted pair row, in the down GEMM's operand dtype
    #         (fp32, or down_proj's 16-bit dtype; pad rows left unwritten)
    sorted_ptr,  # [P_pad] int32 flat pair ids grouped by expert, pad value = num_pairs
    block_expert_ptr,  # [P_pad // BLOCK_M] int32 expert of each row block
    num_pairs,  # T * K
    H,
    inter,  # I: intermediate size
    stride_xt,
    stride_xh,
    stride_we,
    stride_wn,
    stride_wh,
    stride_hp,
    stride_hi,
    TOP_K: tl.constexpr,  # slots per token: token = pair // TOP_K
    BLOCK_M: tl.constexpr,  # pair rows per program; equals align_by_expert's block_m
    BLOCK_N: tl.constexpr,  # intermediate columns per program (gate and up each)
    BLOCK_K: tl.constexpr,  # hidden (reduction) chunk
    DOT_PRECISION: tl.constexpr,  # "ieee" when x or the weights are fp32; "tf32" only when both are
    #                               16-bit (bf16/fp16 values upcast to fp32 are exact in tf32)
):
    pid_m = tl.program_id(0)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(sorted_ptr + rows).to(tl.int64)
    row_ok = pair < num_pairs
    tok = pair // TOP_K
    expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < inter
    w_gate = w_ptr + expert * stride_we + cols[None, :] * stride_wn
    w_up = w_gate + inter * stride_wn
    acc_gate = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < H
        a = tl.load(
            x_ptr + tok[:, None] * stride_xt + ks[None, :] * stride_xh,
            mask=row_ok[:, None] & k_ok[None, :],
            other=0.0,
        ).to(tl.float32)
        w_mask = k_ok[:, None] & col_ok[None, :]
        wg = tl.load(w_gate + ks[:, None] * stride_wh, mask=w_mask, other=0.0).to(tl.float32)
        wu = tl.load(w_up + ks[:, None] * stride_wh, mask=w_mask, other=0.0).to(tl.float32)
        acc_gate = tl.dot(a, wg, acc_gate, input_precision=DOT_PRECISION)
        acc_up = tl.dot(a, wu, acc_up, input_precision=DOT_PRECISION)
    h = acc_gate * tl.sigmoid(acc_gate) * acc_up
    tl.store(
        h_ptr + rows.to(tl.int64)[:, None] * stride_hp + cols[None, :] * stride_hi,
        h.to(h_ptr.dtype.element_ty),  # rounded once here, as the torch path and vLLM round it
        mask=row_ok[:, None] & col_ok[None, :],
    )


@triton.jit
def _experts_down_fwd_kernel(
    h_ptr,  # [P_pad, I] from the gate_up kernel: fp32, or down_proj's 16-bit dtype
    w_ptr,  # [E, H, I] down_proj
    rw_ptr,  # [T, K] routing weights, any strides
    out_ptr,  # [T * K, H] fp32 out, zero-initialised: row = flat pair id (invalid pairs stay zero)
    sorted_ptr,  # [P_pad] int32 flat pair ids grouped by expert, pad value = num_pairs
    block_expert_ptr,  # [P_pad // BLOCK_M] int32 expert of each row block
    num_pairs,
    H,
    inter,
    stride_hp,
    stride_hi,
    stride_we,
    stride_wh,
    stride_wi,
    stride_rt,
    stride_rk,
    stride_op,
    stride_oh,
    TOP_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,  # hidden (output) columns per program
    BLOCK_K: tl.constexpr,  # intermediate (reduction) chunk
    DOT_PRECISION: tl.constexpr,  # "ieee" when h or down_proj is fp32; "tf32" only when both are 16-bit
):
    pid_m = tl.program_id(0)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(sorted_ptr + rows).to(tl.int64)
    row_ok = pair < num_pairs
    expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < H
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, inter, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < inter
        a = tl.load(
            h_ptr + rows.to(tl.int64)[:, None] * stride_hp + ks[None, :] * stride_hi,
            mask=row_ok[:, None] & k_ok[None, :],
            other=0.0,
        ).to(tl.float32)
        w = tl.load(
            w_ptr + expert * stride_we + cols[None, :] * stride_wh + ks[:, None] * stride_wi,
            mask=k_ok[:, None] & col_ok[None, :],
            other=0.0,
        ).to(tl.float32)
        acc = tl.dot(a, w, acc, input_precision=DOT_PRECISION)
    rw = tl.load(rw_ptr + (pair // TOP_K) * stride_rt + (pair % TOP_K) * stride_rk, mask=row_ok, other=0.0)
    acc = acc * rw.to(tl.float32)[:, None]
    tl.store(
        out_ptr + pair[:, None] * stride_op + cols[None, :] * stride_oh,
        acc,
        mask=row_ok[:, None] & col_ok[None, :],
    )


def _gemm_blocks(num_pairs: int, num_experts: int, n: int, k: int, interpret: bool) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K) for one grouped GEMM (tl.dot needs every block dim >= 16)."""
    if interpret:
        # The interpreter pays per program, not per element: few, wide programs; small M limits padding.
        return 16, max(16, min(128, triton.next_power_of_2(n))), max(16, min(128, triton.next_power_of_2(k)))
    # vLLM's default fused-MoE configs: small M-blocks for decode-sized batches (few pairs per expert).
    if num_pairs <= num_experts:
        return 16, 32, 64
    return 64, 64, 32


def _dot_precision(*dtypes: torch.dtype) -> str:
    """``tl.dot`` input precision: tf32 rounds fp32 operands to 10 mantissa bits, so it is used only when
    every operand is 16-bit (bf16 and fp16 values are exact in tf32); ieee otherwise."""
    return "ieee" if any(d not in (torch.bfloat16, torch.float16) for d in dtypes) else "tf32"


def _intermediate_dtype(down_proj: torch.Tensor) -> torch.dtype:
    """The dtype of ``silu(gate) * up``, the down GEMM's A operand: down_proj's own when it is 16-bit (the
    torch path and vLLM round it there too, and tf32 then reads it exactly), fp32 otherwise."""
    return down_proj.dtype if down_proj.dtype in (torch.bfloat16, torch.float16) else torch.float32


def _check_triton_device(x: torch.Tensor) -> None:
    # Kernels decorated while TRITON_INTERPRET=1 was set run on CPU tensors; compiled ones need a GPU.
    if not x.is_cuda and not isinstance(_experts_gate_up_fwd_kernel, InterpretedFunction):
        raise ValueError(
            f"the Triton expert kernels need CUDA tensors, got {x.device}: use backend='torch' "
            "(or set TRITON_INTERPRET=1 before importing triton to run them in the interpreter)"
        )


def experts_gate_up_forward(
    x: torch.Tensor,
    gate_up_proj: torch.Tensor,
    sorted_ids: torch.Tensor,
    block_experts: torch.Tensor,
    *,
    top_k: int,
    block_m: int,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """``h[P_pad, I] = silu(x W_gate) * (x W_up)`` per sorted pair row (see :func:`align_by_expert`), stored
    in ``out_dtype``; pad rows are left unwritten."""
    _check_triton_device(x)
    H, inter = x.shape[1], gate_up_proj.shape[1] // 2
    _, bn, bk = _gemm_blocks(x.shape[0] * top_k, gate_up_proj.shape[0], inter, H, not x.is_cuda)
    h = torch.empty(sorted_ids.numel(), inter, dtype=out_dtype, device=x.device)
    if block_experts.numel() == 0:
        return h
    _experts_gate_up_fwd_kernel[(block_experts.numel(), triton.cdiv(inter, bn))](
        x,
        gate_up_proj,
        h,
        sorted_ids,
        block_experts,
        x.shape[0] * top_k,
        H,
        inter,
        *x.stride(),
        *gate_up_proj.stride(),
        *h.stride(),
        TOP_K=top_k,
        BLOCK_M=block_m,
        BLOCK_N=bn,
        BLOCK_K=bk,
        DOT_PRECISION=_dot_precision(x.dtype, gate_up_proj.dtype),
    )
    return h


def experts_down_forward(
    h: torch.Tensor,
    down_proj: torch.Tensor,
    weights: torch.Tensor,
    sorted_ids: torch.Tensor,
    block_experts: torch.Tensor,
    *,
    block_m: int,
) -> torch.Tensor:
    """``out[T * K, H]`` (fp32): row ``t * K + k`` is ``weights[t, k] * down_proj[e] @ h[row of the pair]``
    for every valid pair, zero for invalid ones."""
    _check_triton_device(h)
    T, K = weights.shape
    H, inter = down_proj.shape[1], down_proj.shape[2]
    _, bn, bk = _gemm_blocks(T * K, down_proj.shape[0], H, inter, not h.is_cuda)
    out = torch.zeros(T * K, H, dtype=torch.float32, device=h.device)
    if block_experts.numel() == 0:
        return out
    _experts_down_fwd_kernel[(block_experts.numel(), triton.cdiv(H, bn))](
        h,
        down_proj,
        weights,
        out,
        sorted_ids,
        block_experts,
        T * K,
        H,
        inter,
        *h.stride(),
        *down_proj.stride(),
        *weights.stride(),
        *out.stride(),
        TOP_K=K,
        BLOCK_M=block_m,
        BLOCK_N=bn,
        BLOCK_K=bk,
        DOT_PRECISION=_dot_precision(h.dtype, down_proj.dtype),
    )
    return out


def _fused_experts_triton(
    x: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    ids: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    _check_triton_device(x)
    T, K = ids.shape
    if T * K == 0:
        return torch.zeros_like(x)
    E, inter = gate_up_proj.shape[0], gate_up_proj.shape[1] // 2
    block_m, _, _ = _gemm_blocks(T * K, E, inter, x.shape[1], not x.is_cuda)
    sorted_ids, block_experts, _ = align_by_expert(ids, E, block_m)
    h = experts_gate_up_forward(
        x, gate_up_proj, sorted_ids, block_experts, top_k=K, block_m=block_m,
        out_dtype=_intermediate_dtype(down_proj),
    )  # fmt: skip
    out = experts_down_forward(h, down_proj, weights, sorted_ids, block_experts, block_m=block_m)
    return out.view(T, K, -1).sum(1).to(x.dtype)


def fused_experts(
    x: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    ids: torch.Tensor,
    weights: torch.Tensor,
    *,
    backend: ExpertsBackend = "auto",
) -> torch.Tensor:
    """Routed SwiGLU experts: ``x[T, H]``, ``ids[T, K]`` (invalid: ``< 0`` or ``>= E``), ``weights[T, K]``.

    ``backend="torch"`` compacts the valid pairs, groups them by expert and runs two ``grouped_mm``
    calls (one matmul per present expert for dtypes without a grouped kernel); ``"triton"`` runs the
    vLLM-style fused kernels (gate_up + SiLU*up, then down * routing weight); ``"auto"`` picks Triton
    on CUDA tensors and torch otherwise. Accumulates in fp32; returns ``[T, H]`` in ``x.dtype``.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    _check_experts_args(x, gate_up_proj, down_proj, ids, weights)
    if backend == "auto":
        backend = "triton" if x.is_cuda else "torch"
    if backend == "triton":
        return _fused_experts_triton(x, gate_up_proj, down_proj, ids, weights)
    return _fused_experts_torch(x, gate_up_proj, down_proj, ids, weights)
