"""Analytic forward/backward FLOP and byte counts for linear, attention, MLP and decoder-layer blocks."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from effcore.errors import ConfigError
from effcore.profiling.records import PerfRecord

__all__ = [
    "AttentionImpl",
    "OpCost",
    "attention_cost",
    "decoder_layer_cost",
    "linear_cost",
    "mlp_cost",
]

AttentionImpl = Literal["flash", "materialized"]

# Conventions (every count is exact integer arithmetic on the stated shapes):
# - A matmul [m, k] @ [k, n] is 2*m*k*n FLOPs, torch.utils.flop_counter.FlopCounterMode's convention:
#   `*_matmul_flops` agree with it exactly (tests check this).
# - `*_other_flops` are the elementwise and reduction work FlopCounterMode does not count, at fixed
#   per-element costs: softmax 5 (max, subtract, exp, sum, divide) + 1 for the score scale,
#   SiLU/GELU 4, RMSNorm 4, RoPE 3 (two multiplies, one add), bias/residual add 1; backward is
#   counted as twice the forward.
# - Bytes are the minimum memory traffic: every operand read once and every result written once per
#   kernel at `dtype_bytes` per element, elementwise ops unfused, attention as its `impl` says.
# - `input_grad=False` drops the gradient w.r.t. a block's input (a first layer fed by data).

_SOFTMAX_FLOPS = 5
_SCALE_FLOPS = 1
_ACT_FLOPS = 4
_RMSNORM_FLOPS = 4
_ROPE_FLOPS = 3
_LSE_BYTES = 4  # flash kernels keep the per-row log-sum-exp in fp32


@dataclass(frozen=True, kw_only=True, slots=True)
class OpCost:
    """Forward and backward FLOPs (matmul and other) and bytes of one block; costs add up."""

    fwd_matmul_flops: int
    bwd_matmul_flops: int
    fwd_bytes: int
    bwd_bytes: int
    fwd_other_flops: int = 0
    bwd_other_flops: int = 0
    note: str = ""

    @property
    def fwd_flops(self) -> int:
        return self.fwd_matmul_flops + self.fwd_other_flops

    @property
    def bwd_flops(self) -> int:
        return self.bwd_matmul_flops + self.bwd_other_flops

    def __add__(self, other: OpCost) -> OpCost:
        if not isinstance(other, OpCost):
            return NotImplemented
        notes = [n for n in (self.note, other.note) if n]
        return OpCost(
            fwd_matmul_flops=self.fwd_matmul_flops + other.fwd_matmul_flops,
            bwd_matmul_flops=self.bwd_matmul_flops + other.bwd_matmul_flops,
            fwd_bytes=self.fwd_bytes + other.fwd_bytes,
            bwd_bytes=self.bwd_bytes + other.bwd_bytes,
            fwd_other_flops=self.fwd_other_flops + other.fwd_other_flops,
            bwd_other_flops=self.bwd_other_flops + other.bwd_other_flops,
            note="; ".join(dict.fromkeys(notes)),
        )

    def forward(self, time_ns: int = 0) -> PerfRecord:
        """The forward pass as a record (``time_ns=0``: analytic, untimed)."""
        return PerfRecord(time_ns=time_ns, flops=self.fwd_flops, bytes=self.fwd_bytes)

    def backward(self, time_ns: int = 0) -> PerfRecord:
        return PerfRecord(time_ns=time_ns, flops=self.bwd_flops, bytes=self.bwd_bytes)

    def to_dict(self) -> dict[str, int | str]:
        return {
            "fwd_matmul_flops": self.fwd_matmul_flops,
            "fwd_other_flops": self.fwd_other_flops,
            "bwd_matmul_flops": self.bwd_matmul_flops,
            "bwd_other_flops": self.bwd_other_flops,
            "fwd_bytes": self.fwd_bytes,
            "bwd_bytes": self.bwd_bytes,
            "note": self.note,
        }


_ZERO = OpCost(fwd_matmul_flops=0, bwd_matmul_flops=0, fwd_bytes=0, bwd_bytes=0)


def _positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive int, got {value!r}")


def _elementwise(n: int, *, flops: int, reads: int, writes: int, b: int) -> OpCost:
    # n elements, `reads` inputs and `writes` outputs of n elements each; backward reads the output
    # gradient and the saved inputs and writes one gradient per input.
    return OpCost(
        fwd_matmul_flops=0,
        bwd_matmul_flops=0,
        fwd_other_flops=flops * n,
        bwd_other_flops=2 * flops * n,
        fwd_bytes=(reads + writes) * n * b,
        bwd_bytes=(writes + 2 * reads) * n * b,
    )


def _grad_merge(consumers: int, n: int, b: int) -> OpCost:
    # A tensor read by `consumers` ops gets that many gradients, summed in backward.
    return replace(_ZERO, bwd_other_flops=(consumers - 1) * n, bwd_bytes=(consumers - 1) * 3 * n * b)


def linear_cost(
    *,
    tokens: int,
    in_features: int,
    out_features: int,
    bias: bool = False,
    dtype_bytes: int = 2,
    input_grad: bool = True,
) -> OpCost:
    """``y = x @ W.T (+ b)`` on ``tokens`` rows; backward computes dW (and dx when ``input_grad``)."""
    _positive(tokens=tokens, in_features=in_features, out_features=out_features, dtype_bytes=dtype_bytes)
    t, i, o, b = tokens, in_features, out_features, dtype_bytes
    mm = 2 * t * i * o
    bias_n = o if bias else 0
    grad_w_bytes = (t * o + t * i + i * o) * b
    grad_x_bytes = (t * o + i * o + t * i) * b if input_grad else 0
    return OpCost(
        fwd_matmul_flops=mm,
        bwd_matmul_flops=mm * (2 if input_grad else 1),
        fwd_other_flops=t * o if bias else 0,
        bwd_other_flops=t * o if bias else 0,
        fwd_bytes=(t * i + i * o + t * o + bias_n) * b,
        bwd_bytes=grad_w_bytes + grad_x_bytes + ((t * o + o) * b if bias else 0),
    )


def _causal_pairs(q_len: int, kv_len: int) -> int:
    # Queries are the last q_len positions of kv_len keys (decode and chunked prefill included):
    # query i sees keys 0 .. i + (kv_len - q_len).
    offset = kv_len - q_len
    return sum(min(kv_len, i + offset + 1) for i in range(q_len))


def attention_cost(
    *,
    batch: int,
    seq_len: int,
    num_heads: int,
    head_dim: int,
    num_kv_heads: int | None = None,
    kv_len: int | None = None,
    causal: bool = True,
    impl: AttentionImpl = "flash",
    skip_masked: bool = False,
    dtype_bytes: int = 2,
) -> OpCost:
    """The attention core: ``softmax(scale * Q K^T [+ mask]) V`` with GQA (projections not included).

    ``impl="flash"``: a fused kernel; scores never reach memory, backward recomputes ``Q K^T``
    (5 matmuls). ``impl="materialized"``: eager attention writes scores and probabilities to
    memory and backward reuses them (4 matmuls). ``skip_masked=True`` counts only the unmasked
    causal scores (a flash kernel skipping masked tiles, exact up to tile granularity); the default
    counts the full ``seq_len x kv_len`` square, as eager attention computes and FlopCounterMode counts.
    """
    kv_heads = num_heads if num_kv_heads is None else num_kv_heads
    keys = seq_len if kv_len is None else kv_len
    _positive(
        batch=batch,
        seq_len=seq_len,
        num_heads=num_heads,
        head_dim=head_dim,
        num_kv_heads=kv_heads,
        kv_len=keys,
        dtype_bytes=dtype_bytes,
    )
    if num_heads % kv_heads:
        raise ConfigError(f"num_heads={num_heads} is not a multiple of num_kv_heads={kv_heads}")
    if keys < seq_len:
        raise ConfigError(f"kv_len={keys} is shorter than seq_len={seq_len}")
    if impl not in ("flash", "materialized"):
        raise ConfigError(f"unknown attention impl {impl!r}", hint="use 'flash' or 'materialized'")
    pairs = _causal_pairs(seq_len, keys) if causal and skip_masked else seq_len * keys
    scores = batch * num_heads * pairs
    q = o = batch * num_heads * seq_len * head_dim
    k = v = batch * kv_heads * keys * head_dim
    lse = batch * num_heads * seq_len
    b = dtype_bytes
    fwd_mm = 2 * 2 * scores * head_dim
    other = (_SOFTMAX_FLOPS + _SCALE_FLOPS) * scores
    if impl == "flash":
        bwd_mm = 5 * 2 * scores * head_dim
        fwd_bytes = (q + k + v + o) * b + lse * _LSE_BYTES
        bwd_bytes = (q + k + v + o + o + q + k + v) * b + lse * _LSE_BYTES
    else:
        bwd_mm = 4 * 2 * scores * head_dim
        # scores written, read by softmax, probabilities written, read by P @ V
        fwd_bytes = (q + k + v + o) * b + 4 * scores * b
        # dV and dP reread P and dO; softmax backward reads P and dP, writes dS; dQ and dK read dS
        bwd_bytes = (2 * q + 2 * k + 2 * v + 2 * o) * b + 7 * scores * b
    causal_note = (
        ("causal, masked scores skipped" if skip_masked else "causal, full square counted")
        if causal
        else "bidirectional"
    )
    return OpCost(
        fwd_matmul_flops=fwd_mm,
        bwd_matmul_flops=bwd_mm,
        fwd_other_flops=other,
        bwd_other_flops=2 * other,
        fwd_bytes=fwd_bytes,
        bwd_bytes=bwd_bytes,
        note=f"attention: {impl} ({causal_note})",
    )


def mlp_cost(
    *,
    tokens: int,
    hidden: int,
    intermediate: int,
    gated: bool = True,
    bias: bool = False,
    dtype_bytes: int = 2,
    input_grad: bool = True,
) -> OpCost:
    """A transformer MLP: gated ``down(act(gate(x)) * up(x))`` (SwiGLU) or plain ``down(act(up(x)))``."""
    _positive(tokens=tokens, hidden=hidden, intermediate=intermediate, dtype_bytes=dtype_bytes)
    proj = dict(tokens=tokens, bias=bias, dtype_bytes=dtype_bytes)
    up = linear_cost(in_features=hidden, out_features=intermediate, input_grad=input_grad, **proj)
    down = linear_cost(in_features=intermediate, out_features=hidden, **proj)
    n = tokens * intermediate
    act = _elementwise(n, flops=_ACT_FLOPS, reads=1, writes=1, b=dtype_bytes)
    if not gated:
        return replace(up + act + down, note="mlp: plain")
    mul = _elementwise(n, flops=1, reads=2, writes=1, b=dtype_bytes)
    merge = _grad_merge(2, tokens * hidden, dtype_bytes) if input_grad else _ZERO
    return replace(up + up + act + mul + down + merge, note="mlp: gated (SwiGLU)")


def decoder_layer_cost(
    *,
    batch: int,
    seq_len: int,
    hidden: int,
    num_heads: int,
    intermediate: int,
    num_kv_heads: int | None = None,
    head_dim: int | None = None,
    gated: bool = True,
    qkv_bias: bool = False,
    causal: bool = True,
    attn_impl: AttentionImpl = "flash",
    skip_masked: bool = False,
    dtype_bytes: int = 2,
    input_grad: bool = True,
) -> OpCost:
    """A pre-norm decoder layer (Llama/Qwen/Mistral): RMSNorm, QKV, RoPE, attention, O, residual, RMSNorm, MLP, residual."""
    kv_heads = num_heads if num_kv_heads is None else num_kv_heads
    if head_dim is None:
        _positive(hidden=hidden, num_heads=num_heads)
        if hidden % num_heads:
            raise ConfigError(
                f"hidden={hidden} is not a multiple of num_heads={num_heads}", hint="pass head_dim"
            )
        head_dim = hidden // num_heads
    _positive(batch=batch, seq_len=seq_len, hidden=hidden, head_dim=head_dim, num_kv_heads=kv_heads)
    t, b = batch * seq_len, dtype_bytes
    q_out, kv_out = num_heads * head_dim, kv_heads * head_dim
    proj = dict(tokens=t, in_features=hidden, bias=qkv_bias, dtype_bytes=b, input_grad=input_grad)
    norm = _elementwise(t * hidden, flops=_RMSNORM_FLOPS, reads=1, writes=1, b=b)
    # The residual add's backward is the sum of the two gradients reaching its branch point.
    residual = replace(
        _grad_merge(2, t * hidden, b), fwd_other_flops=t * hidden, fwd_bytes=3 * t * hidden * b
    )
    attn = (
        norm
        + linear_cost(out_features=q_out, **proj)
        + linear_cost(out_features=kv_out, **proj)
        + linear_cost(out_features=kv_out, **proj)
        + (_grad_merge(3, t * hidden, b) if input_grad else _ZERO)
        + _elementwise(t * (q_out + kv_out), flops=_ROPE_FLOPS, reads=1, writes=1, b=b)
        + attention_cost(
            batch=batch,
            seq_len=seq_len,
            num_heads=num_heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            causal=causal,
            impl=attn_impl,
            skip_masked=skip_masked,
            dtype_bytes=b,
        )
        + linear_cost(tokens=t, in_features=q_out, out_features=hidden, dtype_bytes=b)
        + residual
    )
    mlp = (
        norm
        + mlp_cost(tokens=t, hidden=hidden, intermediate=intermediate, gated=gated, dtype_bytes=b)
        + residual
    )
    total = attn + mlp
    return replace(total, note=f"decoder layer: {total.note}")
