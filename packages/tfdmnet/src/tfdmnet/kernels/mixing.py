"""Per-frequency complex channel mixing ``Y[n,o,f] = sum_c X[n,c,f] * conj(W[o,c,f])``: Triton and torch.

This is the whole arithmetic of an Element-wise Multiplication Layer once its input and filters are
spectra: a batched complex GEMM with one ``(N x C) @ (C x O)`` product per frequency ``f``.

- :func:`freq_mix_reference` is the definition (an ``einsum``), the oracle of every test.
- :func:`freq_mix_torch` is the fastest torch formulation on CPU: contiguous frequency-major operands
  and one complex ``bmm`` (``../shared/TOOLCHAIN.md``: strided or einsum forms are 2-4x slower there).
- :func:`freq_mix_triton` runs ``_freq_mix_fwd_kernel`` forward and backward (:class:`FreqMixFunction`)
  on frequency-major copies of the operands (the torch path's layout). The kernel reads complex
  tensors through ``torch.view_as_real`` strides (real at +0, imaginary at +1, any strides), so nothing
  is split into real and imaginary planes.

Gradients follow PyTorch's complex convention (the conjugate Wirtinger derivative): with ``G = dL/dY``,
``dX[n,c,f] = sum_o G[n,o,f] W[o,c,f]`` and ``dW[o,c,f] = sum_n conj(G[n,o,f]) X[n,c,f]``. Both are the
same batched complex GEMM with other strides and conjugation flags, so one kernel serves all three.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from effcore.errors import ConfigError

try:  # Triton is a Linux-only dependency; the torch paths work everywhere.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None
    tl = None

__all__ = [
    "Backend",
    "FreqMixFunction",
    "freq_mix",
    "freq_mix_backward",
    "freq_mix_forward",
    "freq_mix_reference",
    "freq_mix_torch",
    "freq_mix_torch_fm",
    "freq_mix_triton",
    "resolve_backend",
    "triton_available",
]

Backend = Literal["auto", "triton", "torch", "reference"]
BACKENDS: tuple[str, ...] = get_args(Backend)


def triton_available() -> bool:
    return triton is not None


def _check_operands(x: torch.Tensor, w: torch.Tensor) -> None:
    if not (x.is_complex() and w.is_complex()):
        raise ConfigError(f"freq_mix needs complex spectra, got {x.dtype} and {w.dtype}")
    if x.ndim != 4 or w.ndim != 4:
        raise ConfigError(
            f"freq_mix expects X (N, C, H, W') and W (O, C, H, W'), got {tuple(x.shape)} and {tuple(w.shape)}"
        )
    if x.shape[1] != w.shape[1] or x.shape[2:] != w.shape[2:]:
        raise ConfigError(
            f"freq_mix: X {tuple(x.shape)} and W {tuple(w.shape)} disagree on channels or frequencies",
            hint="X is (N, C, H, W') and W is (O, C, H, W') with the same C, H and W'",
        )


def freq_mix_reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The definition: ``einsum('nchw,ochw->nohw', X, conj(W))``."""
    _check_operands(x, w)
    return torch.einsum("nchw,ochw->nohw", x, w.conj())


def freq_mix_torch(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The same product as one contiguous complex ``bmm`` over the ``H*W'`` frequencies (autograd-able)."""
    _check_operands(x, w)
    o, c, h, wf = w.shape
    wt = w.conj().reshape(o, c, h * wf).permute(2, 1, 0).contiguous()  # (F, C, O)
    return freq_mix_torch_fm(x, wt)


def freq_mix_torch_fm(x: torch.Tensor, w_conj_fm: torch.Tensor) -> torch.Tensor:
    """:func:`freq_mix_torch` with the filters already as ``conj(W)`` in frequency-major ``(F, C, O)``."""
    n, c, h, wf = x.shape
    f = h * wf
    if w_conj_fm.shape[:2] != (f, c):
        raise ConfigError(
            f"freq_mix: frequency-major filters {tuple(w_conj_fm.shape)} do not fit X {tuple(x.shape)}",
            hint="the filters are (H*W', C, O) for X (N, C, H, W')",
        )
    xf = x.reshape(n, c, f).permute(2, 0, 1).contiguous()  # (F, N, C)
    y = torch.bmm(xf, w_conj_fm)  # (F, N, O)
    return y.permute(1, 2, 0).reshape(n, w_conj_fm.shape[2], h, wf)


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _blocks(m: int, n: int, k: int) -> tuple[int, int, int]:
    # No autotune: the interpreter would run every config, and these shapes (channels 16-512,
    # batch 1-256) are well served by one rule. 16 is tl.dot's smallest tile on GPUs; 64x64 fp32
    # accumulators (two of them, real and imaginary) stay within a warp group's registers.
    bm = min(64, max(16, _next_pow2(m)))
    bn = min(64, max(16, _next_pow2(n)))
    bk = min(32, max(16, _next_pow2(k)))
    return bm, bn, bk


if triton is not None:

    @triton.jit
    def _freq_mix_fwd_kernel(
        a_ptr,  # real view of complex A: element (f, m, k) real part at f*s_af + m*s_am + k*s_ak, imag at +1
        b_ptr,  # real view of complex B: element (f, k, n) as above
        c_ptr,  # real view of the complex output C: element (f, m, n)
        M,  # rows of A and C (batch N forward; N or O backward)
        N,  # columns of B and C
        K,  # the contracted dim (input channels forward)
        s_af,  # strides in real elements (twice the complex strides)
        s_am,
        s_ak,
        s_bf,
        s_bk,
        s_bn,
        s_cf,
        s_cm,
        s_cn,
        CONJ_A: tl.constexpr,  # use conj(A): dW's first operand is conj(dY)
        CONJ_B: tl.constexpr,  # use conj(B): the forward multiplies by conj(W)
        IS_FP64: tl.constexpr,  # complex128 operands (gradcheck): accumulate in fp64
        PRECISION: tl.constexpr,  # "ieee" (exact fp32) or "tf32" (tensor cores, ~1e-3 relative error)
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        # One program computes a BLOCK_M x BLOCK_N tile of C for one frequency f: a complex GEMM as
        # four real dots, (ar + i ai)(br + i bi) = (ar br - ai bi) + i (ar bi + ai br).
        pid_f = tl.program_id(0)
        pid_m = tl.program_id(1)
        pid_n = tl.program_id(2)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        a_base = a_ptr + pid_f * s_af
        b_base = b_ptr + pid_f * s_bf
        # fp32 accumulation for complex64 (the only dtype FFTs produce here; spectra are never bf16).
        if IS_FP64:
            acc_re = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
            acc_im = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
        else:
            acc_re = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            acc_im = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + offs_k
            a_off = offs_m[:, None] * s_am + ks[None, :] * s_ak
            a_mask = (offs_m[:, None] < M) & (ks[None, :] < K)
            b_off = ks[:, None] * s_bk + offs_n[None, :] * s_bn
            b_mask = (ks[:, None] < K) & (offs_n[None, :] < N)
            ar = tl.load(a_base + a_off, mask=a_mask, other=0.0)
            ai = tl.load(a_base + a_off + 1, mask=a_mask, other=0.0)
            br = tl.load(b_base + b_off, mask=b_mask, other=0.0)
            bi = tl.load(b_base + b_off + 1, mask=b_mask, other=0.0)
            if CONJ_A:
                ai = -ai
            if CONJ_B:
                bi = -bi
            acc_re += tl.dot(ar, br, input_precision=PRECISION) - tl.dot(ai, bi, input_precision=PRECISION)
            acc_im += tl.dot(ar, bi, input_precision=PRECISION) + tl.dot(ai, br, input_precision=PRECISION)
        c_off = pid_f * s_cf + offs_m[:, None] * s_cm + offs_n[None, :] * s_cn
        c_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        tl.store(c_ptr + c_off, acc_re, mask=c_mask)
        tl.store(c_ptr + c_off + 1, acc_im, mask=c_mask)


def _real_strides(t: torch.Tensor) -> tuple[int, ...]:
    # Strides of the real view: every complex stride doubles; the trailing (re, im) stride is 1.
    return tuple(s * 2 for s in t.stride())


def _cgemm(
    a: torch.Tensor,  # complex (F, M, K) view, any strides
    b: torch.Tensor,  # complex (F, K, N) view, any strides
    *,
    conj_a: bool,
    conj_b: bool,
    allow_tf32: bool,
) -> torch.Tensor:
    """``C[f] = op(A[f]) @ op(B[f])`` into a new contiguous complex ``(F, M, N)`` tensor."""
    if triton is None:
        raise ConfigError("the triton backend needs the triton package", hint="use backend='torch'")
    fdim, m, k = a.shape
    n = b.shape[2]
    c = torch.empty((fdim, m, n), dtype=a.dtype, device=a.device)
    if c.numel() == 0:
        return c
    if k == 0:
        return c.zero_()
    ar, br, cr = torch.view_as_real(a), torch.view_as_real(b), torch.view_as_real(c)
    bm, bn, bk = _blocks(m, n, k)
    grid = (fdim, triton.cdiv(m, bm), triton.cdiv(n, bn))
    sa, sb, sc = _real_strides(a), _real_strides(b), _real_strides(c)
    _freq_mix_fwd_kernel[grid](
        ar, br, cr, m, n, k, *sa, *sb, *sc,
        CONJ_A=conj_a, CONJ_B=conj_b, IS_FP64=a.dtype == torch.complex128,
        PRECISION="tf32" if allow_tf32 else "ieee", BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
    )  # fmt: skip
    return c


def _freq_major(x: torch.Tensor) -> torch.Tensor:
    # (N, C, H, W') -> contiguous (F, N, C): a batched GEMM wants its tiles' inner dims contiguous for
    # coalesced loads; in the FFT layout the contiguous dim is the frequency, which no tile spans.
    # One copy of O(N*C*F) against the GEMM's O(N*C*O*F) work, the same layout the torch path uses.
    n, c, h, wf = x.shape
    return x.reshape(n, c, h * wf).permute(2, 0, 1).contiguous()


def freq_mix_forward(xs: torch.Tensor, ws: torch.Tensor, *, allow_tf32: bool = False) -> torch.Tensor:
    """Triton forward on frequency-major operands: ``Y[f] = X[f] @ conj(W[f])^T``.

    ``xs`` is (F, N, C) and ``ws`` is (F, O, C) (see ``_freq_major``); returns (F, N, O).
    """
    return _cgemm(xs, ws.transpose(1, 2), conj_a=False, conj_b=True, allow_tf32=allow_tf32)


def freq_mix_backward(
    g: torch.Tensor, xs: torch.Tensor, ws: torch.Tensor, *, allow_tf32: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton backward on frequency-major operands: ``(dX, dW)`` as (F, N, C) and (F, O, C).

    ``dX[f] = G[f] @ W[f]`` and ``dW[f] = conj(G[f])^T @ X[f]`` for the output gradient ``g`` (F, N, O).
    """
    dx = _cgemm(g, ws, conj_a=False, conj_b=False, allow_tf32=allow_tf32)
    dw = _cgemm(g.transpose(1, 2), xs, conj_a=True, conj_b=False, allow_tf32=allow_tf32)
    return dx, dw


def _from_freq_major(t: torch.Tensor, h: int, wf: int) -> torch.Tensor:
    # contiguous (F, A, B) -> contiguous (A, B, H, W')
    return t.permute(1, 2, 0).reshape(t.shape[1], t.shape[2], h, wf)


class FreqMixFunction(torch.autograd.Function):
    """Autograd for the Triton path: X (N, C, H, W'), W (O, C, H, W') -> Y (N, O, H, W').

    Saves the frequency-major copies (not the inputs), so backward reads them without another copy.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, allow_tf32: bool = False) -> torch.Tensor:
        h, wf = x.shape[-2:]
        xs, ws = _freq_major(x), _freq_major(w)
        ctx.save_for_backward(xs, ws)
        ctx.allow_tf32, ctx.hw = allow_tf32, (h, wf)
        return _from_freq_major(freq_mix_forward(xs, ws, allow_tf32=allow_tf32), h, wf)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        xs, ws = ctx.saved_tensors
        dx, dw = freq_mix_backward(_freq_major(grad), xs, ws, allow_tf32=ctx.allow_tf32)
        return (
            _from_freq_major(dx, *ctx.hw) if ctx.needs_input_grad[0] else None,
            _from_freq_major(dw, *ctx.hw) if ctx.needs_input_grad[1] else None,
            None,
        )


def freq_mix_triton(x: torch.Tensor, w: torch.Tensor, *, allow_tf32: bool = False) -> torch.Tensor:
    """The Triton path (CUDA, or CPU tensors under ``TRITON_INTERPRET=1``), differentiable."""
    _check_operands(x, w)
    if x.dtype != w.dtype:
        raise ConfigError(f"freq_mix: X is {x.dtype} but W is {w.dtype}; cast one of them")
    return FreqMixFunction.apply(x, w, allow_tf32)


def resolve_backend(backend: Backend, device: torch.device) -> str:
    """``auto`` is Triton on CUDA when it is installed, the complex-bmm torch path otherwise."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton is not None else "torch"
    return backend


def freq_mix(x: torch.Tensor, w: torch.Tensor, *, backend: Backend = "auto") -> torch.Tensor:
    """``Y[n,o,f] = sum_c X[n,c,f] conj(W[o,c,f])`` on the chosen backend (see :func:`resolve_backend`)."""
    which = resolve_backend(backend, x.device)
    if which == "triton":
        return freq_mix_triton(x, w)
    if which == "torch":
        return freq_mix_torch(x, w)
    return freq_mix_reference(x, w)
