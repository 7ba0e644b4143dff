"""Model shapes, the strategy names and the divisibility rules every strategy needs, checked up front."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch

from effcore.errors import ConfigError

__all__ = [
    "MLP_KINDS",
    "MODELS",
    "RING_LAYOUTS",
    "STRATEGIES",
    "ModelConfig",
    "PlanError",
    "Strategy",
    "check_plan",
    "check_sequence",
    "get_model",
]

Strategy = Literal["megatron", "ulysses", "ring", "metp"]
STRATEGIES: tuple[str, ...] = ("megatron", "ulysses", "ring", "metp")
"""The strategy library: Megatron TP+SP, Ulysses (all-to-all) + ZeRO-3, ring attention + ZeRO-3, METP."""

RING_LAYOUTS: tuple[str, ...] = ("contiguous", "zigzag")
"""How ring attention lays the sequence over ranks: contiguous shards (rank order is sequence order)
or zigzag (``2p`` chunks, rank ``r`` holding chunks ``r`` and ``2p-1-r``: equal causal work)."""

MLP_KINDS: tuple[str, ...] = ("gelu", "swiglu")
"""The block's MLP: ``gelu`` (two matrices) or ``swiglu`` (Llama's gate, up and down projections)."""

_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


class PlanError(ConfigError):
    """A plan or an input is impossible: unknown strategy, wrong length, indivisible shapes, no memory."""


@dataclass(kw_only=True, slots=True, frozen=True)
class ModelConfig:
    """A stack of identical pre-norm transformer blocks (RMSNorm, RoPE, causal GQA attention, GELU MLP).

    ``ffn`` defaults to ``4 * hidden``. Shapes are validated here; what depends on the parallel degree
    (heads and KV heads divisible by it) is checked by :func:`check_plan` / :meth:`check_degree`.
    """

    name: str = "custom"
    hidden: int
    heads: int
    kv_heads: int | None = None
    layers: int
    ffn: int | None = None
    causal: bool = True
    rope_theta: float = 10_000.0
    eps: float = 1e-6
    attn_chunk: int = 1024  # ring attention's query rows per score block
    dtype: str = "float32"
    ring_layout: str = "contiguous"  # ring attention's sequence layout (RING_LAYOUTS)
    mlp: str = "gelu"  # "gelu": w2 gelu(w1 x); "swiglu" (Llama): w2 (silu(w1 x) * w3 x)
    overlap: bool = False  # prefetch ZeRO-3 gathers and METP broadcasts; ring backward sends KV early

    def __post_init__(self) -> None:
        kv = self.heads if self.kv_heads is None else self.kv_heads
        object.__setattr__(self, "kv_heads", kv)
        object.__setattr__(self, "ffn", 4 * self.hidden if self.ffn is None else self.ffn)
        for name in ("hidden", "heads", "kv_heads", "layers", "ffn"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if self.hidden % self.heads:
            raise ConfigError(f"hidden={self.hidden} is not divisible by heads={self.heads}")
        if (self.hidden // self.heads) % 2:
            raise ConfigError(f"head_dim={self.hidden // self.heads} must be even for RoPE")
        if self.heads % kv:
            raise ConfigError(
                f"heads={self.heads} is not a multiple of kv_heads={kv} (grouped-query attention)"
            )
        if self.ring_layout not in RING_LAYOUTS:
            raise ConfigError(
                f"ModelConfig.ring_layout={self.ring_layout!r} is not one of {', '.join(RING_LAYOUTS)}"
            )
        if self.ring_layout == "zigzag" and not self.causal:
            raise ConfigError(
                "ModelConfig.ring_layout='zigzag' balances causal attention; this model is not causal",
                hint="use ring_layout='contiguous' (every rank already does equal work without a mask)",
            )
        if self.mlp not in MLP_KINDS:
            raise ConfigError(f"ModelConfig.mlp={self.mlp!r} is not one of {', '.join(MLP_KINDS)}")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"ModelConfig.dtype={self.dtype!r} is not one of {', '.join(_DTYPES)}")

    def seq_multiple(self, p: int) -> int:
        """What a sequence length must divide by on ``p`` ranks (zigzag shards hold two chunks)."""
        return 2 * p if (self.ring_layout == "zigzag" and p > 1) else p

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    @property
    def dtype_bytes(self) -> int:
        return torch.empty((), dtype=self.torch_dtype).element_size()

    @property
    def params_per_layer(self) -> int:
        """Weights of one block: Q, K, V, O, the MLP's matrices (W1, W2; W3 for swiglu) and the two norms."""
        h, d = self.hidden, self.head_dim
        mats = 3 if self.mlp == "swiglu" else 2
        return h * self.heads * d * 2 + h * self.kv_heads * d * 2 + mats * h * self.ffn + 2 * h

    def check_degree(self, p: int) -> None:
        """Every strategy shards heads, KV heads and the FFN over ``p`` ranks: they must divide."""
        if p < 1:
            raise PlanError(f"the parallel degree must be >= 1, got {p}")
        bad = [
            f"{name}={value}"
            for name, value in (("heads", self.heads), ("kv_heads", self.kv_heads), ("ffn", self.ffn))
            if value % p
        ]
        if bad:
            raise PlanError(
                f"{', '.join(bad)} not divisible by the parallel degree {p}",
                hint="every rank holds 1/p of the heads, KV heads and FFN columns; pick a degree that "
                "divides them (or change kv_heads)",
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        try:
            return cls(**data)
        except TypeError as err:
            raise ConfigError(f"not a paradyse model config: {err}") from None


def check_sequence(seq_len: int, p: int, cfg: ModelConfig | None = None) -> None:
    """Activations are sharded along the sequence between layers: ``seq_len`` must divide by ``p``
    (by ``2p`` for a zigzag ring, ``cfg.ring_layout``)."""
    if seq_len < 1:
        raise PlanError(f"sequence length must be >= 1, got {seq_len}")
    m = p if cfg is None else cfg.seq_multiple(p)
    if m != p and seq_len % m:
        raise PlanError(
            f"sequence length {seq_len} is not divisible by {m}: a zigzag ring's shards hold two chunks each",
            hint=f"pad it to {-(-seq_len // m) * m}",
        )
    if seq_len % p:
        raise PlanError(
            f"sequence length {seq_len} is not divisible by the parallel degree {p}",
            hint=f"pad it to {-(-seq_len // p) * p} (the data stream pads to a multiple of p)",
        )


def check_plan(plan: list[str] | tuple[str, ...] | str, layers: int) -> list[str]:
    """A plan is one strategy name per layer (a single name means all layers); returns the list."""
    names = [plan] * layers if isinstance(plan, str) else list(plan)
    if len(names) != layers:
        raise PlanError(f"a plan needs one strategy per layer: got {len(names)} for {layers} layers")
    unknown = sorted({n for n in names if n not in STRATEGIES})
    if unknown:
        raise PlanError(f"unknown strategy {', '.join(unknown)}", hint=f"choose from {', '.join(STRATEGIES)}")
    return names


MODELS: dict[str, ModelConfig] = {
    # Unit tests and the gloo benchmarks (2-core CPU).
    "tiny": ModelConfig(name="tiny", hidden=64, heads=8, kv_heads=4, layers=2, ffn=128, attn_chunk=5),
    "small": ModelConfig(name="small", hidden=128, heads=8, kv_heads=4, layers=4),
    "bench": ModelConfig(name="bench", hidden=256, heads=8, kv_heads=4, layers=4),
    # The paper's time-fit configurations (time_calculator.py), for the simulator.
    "paper-1b": ModelConfig(name="paper-1b", hidden=1024, heads=16, layers=24, dtype="bfloat16"),
    "paper-7b": ModelConfig(name="paper-7b", hidden=4096, heads=32, layers=32, dtype="bfloat16"),
    "paper-wide": ModelConfig(name="paper-wide", hidden=8192, heads=64, layers=5, dtype="bfloat16"),
}


def get_model(name: str) -> ModelConfig:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}", hint=f"choose one of {', '.join(MODELS)}")
    return MODELS[name]
