"""Budgeted routing as two Triton kernels (per-token top-K_orig, pooled extra-slot selection) and a dispatcher.

The semantics, including the deterministic tie-breaking, are those of
:func:`allocmoe.kernels.routing_ref.route_reference`; :func:`route` runs the Triton kernels on CUDA
tensors and that torch reference on CPU (under ``TRITON_INTERPRET=1`` the kernels also run on CPU,
slowly: that is how they are tested).
"""

from __future__ import annotations

from typing import Literal

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from allocmoe.kernels.routing_ref import ScoreFn, route_reference

__all__ = ["MAX_EXPERTS_TRITON", "RouteBackend", "route", "route_triton"]

RouteBackend = Literal["auto", "triton", "torch"]

MAX_EXPERTS_TRITON = 512
"""Largest expert count the top-k kernel holds in one row block (padded to the next power of two)."""

_SCORES = ("softmax", "sigmoid")
_BACKENDS = ("auto", "triton", "torch")
_ROW_ELEMS = 4096  # logits per program of the top-k kernel: 8 rows at E=512, 16 rows (the cap) at E<=256
_MAX_ROWS = 16
_POOL_BLOCK = 1024  # pool elements per chunk of the selection kernel's passes


@triton.jit
def _route_topk_fwd_kernel(
    logits_ptr,  # [T, E] any float dtype; upcast to fp32 on load
    bias_ptr,  # [E] choice bias (read only when HAS_BIAS)
    cand_ptr,  # [T, E] or broadcast [E] (row stride 0) uint8 candidate mask (read only when HAS_CAND)
    valid_ptr,  # [T] uint8 valid-token flags (read only when HAS_VALID)
    topv_ptr,  # [T, K_ORIG] fp32 out: gate scores of the ranked experts (without the bias)
    topi_ptr,  # [T, K_ORIG] int64 out: ranked expert ids
    keep_ptr,  # [T, K_ORIG] uint8 out: ranks kept unconditionally (the pool kernel adds its picks)
    ids_ptr,  # [T, K_ORIG] int64 out: topi where kept, -1 elsewhere
    T,
    E,
    stride_lt,
    stride_le,
    stride_be,
    stride_ct,
    stride_ce,
    stride_v,
    K_ORIG: tl.constexpr,  # ranks per token
    K_KEEP: tl.constexpr,  # ranks kept without selection: k_orig for plain top-k, k_base otherwise
    SIGMOID: tl.constexpr,  # score = sigmoid(logits) instead of softmax(logits)
    HAS_BIAS: tl.constexpr,
    HAS_CAND: tl.constexpr,
    HAS_VALID: tl.constexpr,
    BLOCK_T: tl.constexpr,  # tokens per program
    BLOCK_E: tl.constexpr,  # next power of two >= E
):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, BLOCK_E)
    row_ok = rows < T
    col_ok = cols < E
    rows64 = rows.to(tl.int64)
    both = row_ok[:, None] & col_ok[None, :]
    # Rows past T load zeros (not -inf) so their softmax stays finite; they are never stored.
    x = tl.load(logits_ptr + rows64[:, None] * stride_lt + cols[None, :] * stride_le, mask=both, other=0.0)
    x = tl.where(col_ok[None, :], x.to(tl.float32), float("-inf"))
    if SIGMOID:
        s = tl.sigmoid(x)
    else:
        e = tl.exp(x - tl.max(x, axis=1)[:, None])
        s = e / tl.sum(e, axis=1)[:, None]
    choice = s
    if HAS_BIAS:
        b = tl.load(bias_ptr + cols * stride_be, mask=col_ok, other=0.0).to(tl.float32)
        choice = choice + b[None, :]
    if HAS_CAND:
        c = tl.load(cand_ptr + rows64[:, None] * stride_ct + cols[None, :] * stride_ce, mask=both, other=0)
        choice = tl.where(c != 0, choice, float("-inf"))
    valid = (tl.load(valid_ptr + rows64 * stride_v, mask=row_ok, other=0) != 0) if HAS_VALID else row_ok
    # `avail` and not the value marks taken experts: masked candidates are -inf and may still be ranked
    # (lowest index first) when fewer than K_ORIG remain, exactly as the reference's stable sort does.
    avail = both
    for j in tl.static_range(K_ORIG):
        cur = tl.where(avail, choice, float("-inf"))
        best = tl.max(cur, axis=1)
        is_best = avail & (cur == best[:, None])
        idx = tl.min(tl.where(is_best, cols[None, :], BLOCK_E), axis=1)  # lowest index among ties
        hit = cols[None, :] == idx[:, None]
        val = tl.sum(tl.where(hit, s, 0.0), axis=1)
        avail = avail & ~hit
        out = rows64 * K_ORIG + j
        keep = valid & (j < K_KEEP)
        tl.store(topv_ptr + out, val, mask=row_ok)
        tl.store(topi_ptr + out, idx.to(tl.int64), mask=row_ok)
        tl.store(keep_ptr + out, keep.to(tl.uint8), mask=row_ok)
        tl.store(ids_ptr + out, tl.where(keep, idx.to(tl.int64), -1), mask=row_ok)


@triton.jit
def _pool_keys(topv_ptr, valid_ptr, pool_t0, f, N, stride_v, K_ORIG, K_BASE, KP, HAS_VALID: tl.constexpr):
    """Order-preserving keys (int64 in [0, 2^32)) of pool elements ``f``, their [T, K_ORIG] offsets and masks."""
    in_pool = f < N
    t = pool_t0 + (f // KP).to(tl.int64)
    out = t * K_ORIG + K_BASE + f % KP
    ok = (in_pool & (tl.load(valid_ptr + t * stride_v, mask=in_pool, other=0) != 0)) if HAS_VALID else in_pool
    v = tl.load(topv_ptr + out, mask=ok, other=float("-inf"))  # invalid tokens: -inf, never selected
    bits = v.to(tl.int32, bitcast=True)
    bits = tl.where(v == 0.0, 0, bits)  # -0.0 == 0.0 as in the reference's sort
    # IEEE floats order as sign-magnitude integers: flip the magnitude bits of negatives, then shift
    # to unsigned so the threshold search runs on non-negative int64 values.
    key = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(tl.int64) + 2147483648
    return key, out, in_pool, v > float("-inf")


@triton.jit
def _route_pool_fwd_kernel(
    topv_ptr,  # [T, K_ORIG] fp32 from the top-k kernel
    topi_ptr,  # [T, K_ORIG] int64 from the top-k kernel
    valid_ptr,  # [T] uint8 (read only when HAS_VALID)
    keep_ptr,  # [T, K_ORIG] uint8 in/out: set to 1 at the selected pool elements
    ids_ptr,  # [T, K_ORIG] int64 in/out: set to topi at the selected pool elements
    tokens,  # tokens per pool (runtime: no recompilation per sequence length)
    n_sel,  # elements to select per pool, min(n_extra, pool size), >= 1
    stride_v,
    K_ORIG: tl.constexpr,
    K_BASE: tl.constexpr,  # pool = ranks K_BASE..K_ORIG-1 of every token of the pool
    HAS_VALID: tl.constexpr,
    SINGLE: tl.constexpr,  # the pool fits in one BLOCK: load its keys once instead of once per pass
    BLOCK: tl.constexpr,  # pool elements per chunk
):
    KP: tl.constexpr = K_ORIG - K_BASE
    N = tokens * KP
    pool_t0 = tl.program_id(0).to(tl.int64) * tokens
    offs = tl.arange(0, BLOCK)
    if SINGLE:
        key0, out0, in_pool0, finite0 = _pool_keys(
            topv_ptr, valid_ptr, pool_t0, offs, N, stride_v, K_ORIG, K_BASE, KP, HAS_VALID
        )
    # Largest threshold tau with count(key >= tau) >= n_sel, built bit by bit from the top: tau is then
    # exactly the n_sel-th largest key (32 counting passes over the pool).
    tau = tl.zeros((), dtype=tl.int64)
    for b in range(32):
        cand = tau | (tl.full((), 1, tl.int64) << (31 - b))
        if SINGLE:
            cnt = tl.sum(((key0 >= cand) & in_pool0).to(tl.int32), axis=0)
        else:
            cnt = tl.zeros((), dtype=tl.int32)
            for start in range(0, N, BLOCK):
                key, _, in_pool, _ = _pool_keys(
                    topv_ptr, valid_ptr, pool_t0, start + offs, N, stride_v, K_ORIG, K_BASE, KP, HAS_VALID
                )
                cnt += tl.sum(((key >= cand) & in_pool).to(tl.int32), axis=0)
        tau = tl.where(cnt >= n_sel, cand, tau)
    # Everything above tau is kept; elements equal to tau fill the remaining slots in flat-position
    # order (a running prefix count), which is the reference's stable-sort order.
    if SINGLE:
        n_gt = tl.sum(((key0 > tau) & in_pool0).to(tl.int32), axis=0)
    else:
        n_gt = tl.zeros((), dtype=tl.int32)  # a tensor from the start: n_sel may arrive as constexpr 1
        for start in range(0, N, BLOCK):
            key, _, in_pool, _ = _pool_keys(
                topv_ptr, valid_ptr, pool_t0, start + offs, N, stride_v, K_ORIG, K_BASE, KP, HAS_VALID
            )
            n_gt += tl.sum(((key > tau) & in_pool).to(tl.int32), axis=0)
    need = n_sel - n_gt
    seen = tl.zeros((), dtype=tl.int32)
    for start in range(0, N, BLOCK):
        if SINGLE:
            key, out, in_pool, finite = key0, out0, in_pool0, finite0
        else:
            key, out, in_pool, finite = _pool_keys(
                topv_ptr, valid_ptr, pool_t0, start + offs, N, stride_v, K_ORIG, K_BASE, KP, HAS_VALID
            )
        tie = ((key == tau) & in_pool).to(tl.int32)
        sel = ((key > tau) & in_pool) | ((tie != 0) & (seen + tl.cumsum(tie, axis=0) <= need))
        sel = sel & finite  # padding tokens never take a slot, even when n_sel > valid candidates
        idx = tl.load(topi_ptr + out, mask=sel, other=-1)
        tl.store(keep_ptr + out, tl.full((BLOCK,), 1, tl.uint8), mask=sel)
        tl.store(ids_ptr + out, idx, mask=sel)
        seen += tl.sum(tie, axis=0)


def _check_route_args(
    logits: torch.Tensor,
    *,
    k_orig: int,
    k_base: int,
    n_extra: int | None,
    score: str,
    choice_bias: torch.Tensor | None,
    candidate_mask: torch.Tensor | None,
    num_pools: int,
    valid_tokens: torch.Tensor | None,
) -> None:
    if logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(
            f"logits must be a 2-D float tensor [T, E], got {logits.dim()}-D {logits.dtype} {tuple(logits.shape)}"
        )
    T, E = logits.shape
    if E < 1:
        raise ValueError("logits must have at least one expert column (E >= 1)")
    if not 1 <= k_orig <= E:
        raise ValueError(f"k_orig must be in [1, E={E}], got {k_orig}")
    if not 0 <= k_base <= k_orig:
        raise ValueError(f"k_base must be in [0, k_orig={k_orig}], got {k_base}")
    if n_extra is not None and n_extra < 0:
        raise ValueError(f"n_extra must be None (plain top-k) or >= 0, got {n_extra}")
    if score not in _SCORES:
        raise ValueError(f"score must be one of {_SCORES}, got {score!r}")
    if num_pools < 1 or T % num_pools:
        raise ValueError(f"num_pools must be >= 1 and divide T={T}, got {num_pools}")
    if choice_bias is not None and tuple(choice_bias.shape) != (E,):
        raise ValueError(f"choice_bias must have shape [E]=({E},), got {tuple(choice_bias.shape)}")
    if candidate_mask is not None and (
        candidate_mask.dtype != torch.bool or tuple(candidate_mask.shape) not in ((T, E), (E,))
    ):
        raise ValueError(
            f"candidate_mask must be a bool tensor of shape [T, E]=({T}, {E}) or [E]=({E},), "
            f"got {candidate_mask.dtype} {tuple(candidate_mask.shape)}"
        )
    if valid_tokens is not None and (valid_tokens.dtype != torch.bool or tuple(valid_tokens.shape) != (T,)):
        raise ValueError(
            f"valid_tokens must be a bool tensor of shape [T]=({T},), "
            f"got {valid_tokens.dtype} {tuple(valid_tokens.shape)}"
        )


def _check_triton_device(t: torch.Tensor) -> None:
    # Kernels decorated while TRITON_INTERPRET=1 was set run on CPU tensors; compiled ones need a GPU.
    if not t.is_cuda and not isinstance(_route_topk_fwd_kernel, InterpretedFunction):
        raise ValueError(
            f"the Triton routing kernels need CUDA tensors, got {t.device}: use backend='torch' "
            "(or set TRITON_INTERPRET=1 before importing triton to run them in the interpreter)"
        )


def route_triton(
    logits: torch.Tensor,
    *,
    k_orig: int,
    k_base: int,
    n_extra: int | None = None,
    score: ScoreFn = "softmax",
    choice_bias: torch.Tensor | None = None,
    candidate_mask: torch.Tensor | None = None,
    num_pools: int = 1,
    valid_tokens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`~allocmoe.kernels.routing_ref.route_reference` in two Triton kernels (same results, same ties).

    Kernel 1 (one program per ``BLOCK_T`` tokens) scores, ranks and writes the floor; kernel 2 (one
    program per pool) selects the pool's ``n_extra`` largest scores exactly. Returns
    ``(scores[T, k_orig] float32, ids[T, k_orig] int64 with -1 where dropped, keep[T, k_orig] bool)``.
    """
    _check_route_args(
        logits,
        k_orig=k_orig,
        k_base=k_base,
        n_extra=n_extra,
        score=score,
        choice_bias=choice_bias,
        candidate_mask=candidate_mask,
        num_pools=num_pools,
        valid_tokens=valid_tokens,
    )
    _check_triton_device(logits)
    T, E = logits.shape
    if E > MAX_EXPERTS_TRITON:
        raise ValueError(
            f"route_triton supports E <= {MAX_EXPERTS_TRITON} experts, got {E}; use backend='torch'"
        )
    dev = logits.device
    topv = torch.empty(T, k_orig, dtype=torch.float32, device=dev)
    topi = torch.empty(T, k_orig, dtype=torch.int64, device=dev)
    keep = torch.empty(T, k_orig, dtype=torch.uint8, device=dev)
    ids = torch.empty(T, k_orig, dtype=torch.int64, device=dev)
    if T == 0:
        return topv, ids, keep.view(torch.bool)
    pooled = n_extra is not None and n_extra > 0 and k_orig > k_base
    k_keep = k_orig if n_extra is None else k_base

    cand = None
    if candidate_mask is not None:
        cand = candidate_mask.view(torch.uint8)
        if cand.dim() == 1:
            cand = cand[None, :].expand(T, E)  # row stride 0: one mask for every token
    valid = None if valid_tokens is None else valid_tokens.view(torch.uint8)
    block_e = triton.next_power_of_2(E)
    block_t = max(1, min(_MAX_ROWS, _ROW_ELEMS // block_e, triton.next_power_of_2(T)))
    _route_topk_fwd_kernel[(triton.cdiv(T, block_t),)](
        logits,
        choice_bias if choice_bias is not None else logits,
        cand if cand is not None else logits,
        valid if valid is not None else logits,
        topv,
        topi,
        keep,
        ids,
        T,
        E,
        logits.stride(0),
        logits.stride(1),
        choice_bias.stride(0) if choice_bias is not None else 0,
        cand.stride(0) if cand is not None else 0,
        cand.stride(1) if cand is not None else 0,
        valid.stride(0) if valid is not None else 0,
        K_ORIG=k_orig,
        K_KEEP=k_keep,
        SIGMOID=score == "sigmoid",
        HAS_BIAS=choice_bias is not None,
        HAS_CAND=cand is not None,
        HAS_VALID=valid is not None,
        BLOCK_T=block_t,
        BLOCK_E=block_e,
        num_warps=4 if block_t * block_e <= 2048 else 8,  # ~8 live [BLOCK_T, BLOCK_E] tiles per program
    )
    if pooled:
        tokens = T // num_pools
        size = tokens * (k_orig - k_base)
        block = min(_POOL_BLOCK, triton.next_power_of_2(size))
        _route_pool_fwd_kernel[(num_pools,)](
            topv,
            topi,
            valid if valid is not None else topv,
            keep,
            ids,
            tokens,
            min(n_extra, size),
            valid.stride(0) if valid is not None else 0,
            K_ORIG=k_orig,
            K_BASE=k_base,
            HAS_VALID=valid is not None,
            SINGLE=size <= block,
            BLOCK=block,
        )
    return topv, ids, keep.view(torch.bool)


def route(
    logits: torch.Tensor,
    *,
    k_orig: int,
    k_base: int,
    n_extra: int | None = None,
    score: ScoreFn = "softmax",
    choice_bias: torch.Tensor | None = None,
    candidate_mask: torch.Tensor | None = None,
    num_pools: int = 1,
    valid_tokens: torch.Tensor | None = None,
    backend: RouteBackend = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Budgeted routing of ``logits[T, E]``; see :func:`~allocmoe.kernels.routing_ref.route_reference`.

    ``backend="auto"`` runs the Triton kernels on CUDA tensors (with ``E <= MAX_EXPERTS_TRITON``) and
    the torch reference otherwise; ``"triton"`` and ``"torch"`` force one.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    args = dict(
        k_orig=k_orig,
        k_base=k_base,
        n_extra=n_extra,
        score=score,
        choice_bias=choice_bias,
        candidate_mask=candidate_mask,
        num_pools=num_pools,
        valid_tokens=valid_tokens,
    )
    if backend == "auto":
        backend = "triton" if logits.is_cuda and logits.shape[-1] <= MAX_EXPERTS_TRITON else "torch"
    if backend == "triton":
        return route_triton(logits, **args)
    _check_route_args(logits, **args)
    return route_reference(logits, **args)
