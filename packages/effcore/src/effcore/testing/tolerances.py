"""Tolerance tables for comparing kernels and parallel paths against their exact references."""

from __future__ import annotations

import torch

__all__ = ["TOLERANCES", "assert_close", "tolerance"]

# (atol, rtol) per dtype for one op of moderate depth. bf16 allows a few ulps because Triton's
# fp32->bf16 stores can round differently from torch's (TOOLCHAIN.md); fp64 is for gradcheck-grade checks.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-8),
    torch.float32: (1e-5, 1.3e-5),
    torch.bfloat16: (2e-2, 1.6e-2),
    torch.float16: (1e-3, 1e-3),
}


def tolerance(dtype: torch.dtype, *, scale: float = 1.0) -> tuple[float, float]:
    """``(atol, rtol)`` for ``dtype``, widened by ``scale`` for long reductions (e.g. sqrt(K))."""
    atol, rtol = TOLERANCES.get(dtype, TOLERANCES[torch.float32])
    return atol * scale, rtol * scale


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    label: str,
    dtype: torch.dtype | None = None,
    scale: float = 1.0,
) -> None:
    """``torch.testing.assert_close`` with the table's tolerance and a label naming what differs."""
    atol, rtol = tolerance(dtype or expected.dtype, scale=scale)
    torch.testing.assert_close(
        actual, expected, atol=atol, rtol=rtol, check_dtype=False, msg=lambda m: f"{label}: {m}"
    )
