"""Analytic memory per rank: model states, activations saved per layer and strategy, transient peaks.

Counts follow what this package's strategies actually keep for backward (the tests compare them with
``effcore.memory.track_activations`` exactly): per layer, with ``u = b * (s/p) * h`` elements,

| strategy | saved for backward (fp32, ``ffn = 4h``, MHA) |
|---|---|
| megatron | norms 4u, the local inputs of the two gathers 2u, full-sequence q/k/v/out of ``H/p`` heads 4u, the output-projection input u, MLP 8u: ~19u |
| ulysses | norms 4u, projection inputs 2u, attention on ``H/p`` heads 4u, output-projection input u, MLP 8u: ~19u |
| ring | norms 4u, inputs 2u, ring q, k, v, out (fp32) ~3u-4u, output-projection input u, MLP 8u: ~18u-19u |
| metp | norms 4u, the two checkpointed inputs 2u: ~6u |

plus small terms (RoPE tables, log-sum-exp rows, RMS statistics). A swiglu MLP saves four ffn-sized
tensors where GELU saves two (the MLP term doubles; METP's is unchanged). The transient peak is the largest
extra a layer allocates while it runs (forward or backward): gathered sequences for ``megatron``,
gathered weights and their full gradients for the ZeRO-3 strategies, one recomputed shard for
``metp``. Totals: states + sum over layers of the saved bytes + the largest transient of the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from paradyse.config import ModelConfig, check_plan

__all__ = [
    "MemoryEstimate",
    "activation_bytes",
    "estimate_memory",
    "lm_bytes",
    "state_bytes",
    "transient_bytes",
]

_FP32 = 4


def _shapes(cfg: ModelConfig, seq_len: int, p: int, batch: int):
    sl = seq_len // p
    return batch, sl, seq_len, cfg.hidden, cfg.ffn, cfg.head_dim, cfg.heads, cfg.kv_heads


def activation_bytes(cfg: ModelConfig, strategy: str, seq_len: int, p: int, *, batch: int = 1) -> int:
    """Bytes one layer saves for backward on one rank (exact for this implementation)."""
    b, sl, s, h, f, d, hq, hk = _shapes(cfg, seq_len, p, batch)
    # ffn-sized tensors the MLP saves: gelu's input and output; swiglu's gate (silu's input), silu's
    # output and the up projection (the product's operands), and the product (W2's input)
    ffn_saved = 4 if cfg.mlp == "swiglu" else 2
    e = cfg.dtype_bytes
    acc = max(e, _FP32)  # ring attention keeps its operands in fp32
    norms = 4 * b * sl * h * e + 2 * b * sl * e  # x and x*rsqrt twice, and the rsqrt rows
    inputs = 2 * b * sl * h * e
    if strategy == "megatron":
        attn = 5 * b * s * (h // p) * e + b * s * (hq // p) * _FP32 + s * d * e
        mlp = ffn_saved * b * s * (f // p) * e
        return norms + inputs + attn + mlp
    if strategy == "ulysses":
        attn = 4 * b * s * (h // p) * e + b * sl * h * e + b * s * (hq // p) * _FP32 + sl * d * e
        return norms + inputs + attn + ffn_saved * b * sl * f * e
    if strategy == "ring":
        kv = 2 * b * sl * hk * d * acc
        attn = 2 * b * sl * h * acc + kv + b * hq * sl * acc + b * sl * h * e + sl * d * e
        return norms + inputs + attn + ffn_saved * b * sl * f * e
    if strategy == "metp":
        return norms + inputs
    raise ValueError(f"unknown strategy {strategy!r}")


def transient_bytes(cfg: ModelConfig, strategy: str, seq_len: int, p: int, *, batch: int = 1) -> int:
    """The largest extra a layer allocates while it runs (beyond what stays saved), on one rank."""
    b, sl, s, h, f, d, hq, hk = _shapes(cfg, seq_len, p, batch)
    e = cfg.dtype_bytes
    ffn_grads = 5 if cfg.mlp == "swiglu" else 3  # the MLP's ffn-sized gradients alive at once in backward
    if strategy == "megatron":
        # backward: the re-gathered input, its full-sequence gradient, the MLP's up-projection grads
        return (2 * b * s * h + ffn_grads * b * s * (f // p)) * e
    if strategy in ("ulysses", "ring"):
        # the largest gathered weight and its full gradient before the reduce-scatter, plus the
        # MLP's up-projection gradients on the local sequence
        acc = max(e, _FP32) if strategy == "ring" else e
        # ring backward holds five score-sized blocks at once (scores, probabilities, dP, dS, a
        # product), each chunk x s/p
        rows = min(sl, cfg.attn_chunk)
        attn_tmp = 5 * b * hq * rows * sl * acc if strategy == "ring" else 0
        return (2 * f * h + ffn_grads * b * sl * f) * e + attn_tmp
    if strategy == "metp":
        # one shard recomputed: its broadcast weights, projections and ring operands
        wshard = (2 * h * (h // p) + 2 * h * (hk * d // p)) * e
        rows = min(sl, cfg.attn_chunk)
        acts = 6 * b * sl * (h // p) * max(e, _FP32) + 5 * b * (hq // p) * rows * sl * max(e, _FP32)
        return wshard + acts + 2 * b * sl * h * e
    raise ValueError(f"unknown strategy {strategy!r}")


def state_bytes(cfg: ModelConfig, p: int, *, optimizer_states: int = 2) -> int:
    """Parameters, gradients and ``optimizer_states`` fp32 tensors per parameter (Adam: 2), on one rank."""
    per_layer = (cfg.params_per_layer - 2 * cfg.hidden) // p + 2 * cfg.hidden
    n = per_layer * cfg.layers
    return n * cfg.dtype_bytes * 2 + n * _FP32 * optimizer_states


def lm_bytes(cfg: ModelConfig, seq_len: int, p: int, *, batch: int = 1, vocab: int = 256,
             optimizer_states: int = 2) -> int:  # fmt: skip
    """What the language model around the stack adds on one rank (``paradyse.train.ParadyseLM``).

    The replicated embedding (tied head) and final norm with gradients and optimizer state, the
    embedding output, the final norm's saved tensors, and the fp32 logits with the softmax cross
    entropy's saved log-probabilities and their gradient.
    """
    b, sl, h, e = batch, seq_len // p, cfg.hidden, cfg.dtype_bytes
    params = vocab * h + h
    states = params * (2 * e + optimizer_states * _FP32)
    acts = 3 * b * sl * h * e + 3 * b * sl * vocab * _FP32
    return states + acts


@dataclass(frozen=True, kw_only=True, slots=True)
class MemoryEstimate:
    """Bytes per rank of one training step under a plan."""

    states: int
    activations: int
    transient: int

    @property
    def total(self) -> int:
        return self.states + self.activations + self.transient


def estimate_memory(
    cfg: ModelConfig, plan: Sequence[str] | str, seq_len: int, p: int, *, batch: int = 1,
    optimizer_states: int = 2,
) -> MemoryEstimate:  # fmt: skip
    """States + saved activations of every layer + the plan's largest transient."""
    names = check_plan(plan, cfg.layers)
    acts = sum(activation_bytes(cfg, n, seq_len, p, batch=batch) for n in names)
    peak = max(transient_bytes(cfg, n, seq_len, p, batch=batch) for n in set(names))
    return MemoryEstimate(states=state_bytes(cfg, p, optimizer_states=optimizer_states), activations=acts,
                          transient=peak)  # fmt: skip
