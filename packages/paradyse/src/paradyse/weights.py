"""The block weights: their shard layout and a per-shard initialisation that never builds a full weight.

Every weight is drawn in fixed *units* that no rank's shard boundary cuts: one attention head's rows
of ``wq``/``wk``/``wv`` (columns of ``wo``), and ``ffn / gcd(heads, kv_heads, ffn)`` rows of ``w1``
(columns of ``w2``); every valid degree divides that gcd (:meth:`ModelConfig.check_degree`). Each
unit has its own generator, seeded by ``(seed, layer, weight, unit)``, so a rank draws only its own
units and the concatenation of all ranks' shards is the single-process weight, bit for bit, at any
degree. The model's parameters are built on the ``meta`` device and filled shard by shard
(:func:`init_shard`): a rank holds its shards and one unit in flight, never a full layer.
"""

from __future__ import annotations

import math

import torch

from paradyse.config import ModelConfig

__all__ = [
    "SHARD_DIM",
    "WEIGHT_NAMES",
    "full_weights",
    "init_shard",
    "shard_shape",
    "shard_weights",
    "weight_names",
]

WEIGHT_NAMES = ("attn_norm", "wq", "wk", "wv", "wo", "mlp_norm", "w1", "w2", "w3")
"""Every block weight; ``w3`` (the up projection) exists in ``swiglu`` blocks only (:func:`weight_names`)."""
# How each weight is split over ranks: the dim (None: replicated).
SHARD_DIM = {
    "attn_norm": None,
    "wq": 0,
    "wk": 0,
    "wv": 0,
    "wo": 1,
    "mlp_norm": None,
    "w1": 0,
    "w2": 1,
    "w3": 0,
}


def weight_names(cfg: ModelConfig) -> tuple[str, ...]:
    """The weights of one block of ``cfg``."""
    return WEIGHT_NAMES if cfg.mlp == "swiglu" else WEIGHT_NAMES[:-1]


def _full_shape(cfg: ModelConfig, name: str) -> tuple[int, ...]:
    h, hq, hk = cfg.hidden, cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    return {"attn_norm": (h,), "mlp_norm": (h,), "wq": (hq, h), "wk": (hk, h), "wv": (hk, h), "wo": (h, hq),
            "w1": (cfg.ffn, h), "w2": (h, cfg.ffn), "w3": (cfg.ffn, h)}[name]  # fmt: skip


def _unit_count(cfg: ModelConfig, name: str) -> int:
    if name in ("wq", "wo"):
        return cfg.heads
    if name in ("wk", "wv"):
        return cfg.kv_heads
    return math.gcd(cfg.heads, cfg.kv_heads, cfg.ffn)  # w1, w2, w3


def _scale(cfg: ModelConfig, name: str) -> float:
    fan_in = _full_shape(cfg, name)[1]
    return fan_in**-0.5 / (cfg.layers**0.5 if name in ("wo", "w2") else 1.0)


def _generator(seed: int, layer: int, name: str, unit: int) -> torch.Generator:
    key = ((seed * 1_000_003 + layer) * 101 + WEIGHT_NAMES.index(name)) * 100_003 + unit
    return torch.Generator().manual_seed(key % 2**63)


def shard_shape(cfg: ModelConfig, name: str, p: int) -> tuple[int, ...]:
    """The shape of one rank's shard of ``name`` at degree ``p``."""
    shape = list(_full_shape(cfg, name))
    dim = SHARD_DIM[name]
    if dim is not None:
        shape[dim] //= p
    return tuple(shape)


def init_shard(cfg: ModelConfig, layer: int, name: str, rank: int, p: int, *, seed: int = 0) -> torch.Tensor:
    """Rank ``rank``'s shard of weight ``name`` of ``layer`` at degree ``p``, in fp32, drawn unit by unit."""
    dim = SHARD_DIM[name]
    full = _full_shape(cfg, name)
    if dim is None:
        return 1 + 0.1 * torch.randn(full, generator=_generator(seed, layer, name, 0))
    units = _unit_count(cfg, name)
    size = full[dim] // units
    per_rank = units // p
    other = full[1 - dim]
    parts = []
    for u in range(rank * per_rank, (rank + 1) * per_rank):
        shape = (size, other) if dim == 0 else (other, size)
        parts.append(torch.randn(shape, generator=_generator(seed, layer, name, u)) * _scale(cfg, name))
    return torch.cat(parts, dim=dim)


def full_weights(cfg: ModelConfig, layer: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """The full (unsharded) weights of one layer: the single-process shards, in fp32."""
    return {name: init_shard(cfg, layer, name, 0, 1, seed=seed) for name in weight_names(cfg)}


def shard_weights(weights: dict[str, torch.Tensor], rank: int, p: int) -> dict[str, torch.Tensor]:
    """This rank's shard of every full weight (norms replicated)."""
    out = {}
    for name, w in weights.items():
        dim = SHARD_DIM[name]
        out[name] = w.clone() if dim is None else w.chunk(p, dim=dim)[rank].clone()
    return out
