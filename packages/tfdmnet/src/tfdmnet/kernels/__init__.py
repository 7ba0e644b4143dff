"""tfdmnet's kernels: the per-frequency complex channel mixing of an EML (Triton beside torch references)."""

from tfdmnet.kernels.mixing import (
    Backend,
    FreqMixFunction,
    freq_mix,
    freq_mix_backward,
    freq_mix_forward,
    freq_mix_reference,
    freq_mix_torch,
    freq_mix_triton,
    resolve_backend,
    triton_available,
)

__all__ = [  # noqa: RUF022 -- grouped by role
    # dispatch
    "Backend",
    "freq_mix",
    "resolve_backend",
    "triton_available",
    # torch references
    "freq_mix_reference",
    "freq_mix_torch",
    # Triton path
    "FreqMixFunction",
    "freq_mix_backward",
    "freq_mix_forward",
    "freq_mix_triton",
]
