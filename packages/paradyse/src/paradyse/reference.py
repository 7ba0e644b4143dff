"""The exact single-process block stack every strategy is checked against (independent plain code)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from paradyse.config import ModelConfig
from paradyse.weights import full_weights

__all__ = ["reference_forward", "reference_weights"]


def reference_weights(cfg: ModelConfig, *, seed: int = 0, requires_grad: bool = True) -> list[dict]:
    """Every layer's full weights (leaf tensors, so their gradients can be compared)."""
    layers = []
    for i in range(cfg.layers):
        w = {
            k: v.to(cfg.torch_dtype).requires_grad_(requires_grad)
            for k, v in full_weights(cfg, i, seed=seed).items()
        }
        layers.append(w)
    return layers


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    # x [b, n, s, d]; positions 0..s-1, rotate-half
    s, d = x.shape[-2:]
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    ang = torch.arange(s, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def _attention(q, k, v, causal: bool) -> torch.Tensor:
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        s = scores.shape[-1]
        scores = scores.masked_fill(torch.ones(s, s, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1) @ v


def _norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def reference_forward(cfg: ModelConfig, weights: list[dict], x: torch.Tensor) -> torch.Tensor:
    """The whole stack on the full sequence ``x [b, s, h]`` in one process."""
    b, s, h = x.shape
    d = cfg.head_dim
    for w in weights:
        xn = _norm(x, w["attn_norm"], cfg.eps)
        q = _rope((xn @ w["wq"].t()).view(b, s, cfg.heads, d).transpose(1, 2), cfg.rope_theta)
        k = _rope((xn @ w["wk"].t()).view(b, s, cfg.kv_heads, d).transpose(1, 2), cfg.rope_theta)
        v = (xn @ w["wv"].t()).view(b, s, cfg.kv_heads, d).transpose(1, 2)
        o = _attention(q, k, v, cfg.causal).transpose(1, 2).reshape(b, s, h)
        x = x + o @ w["wo"].t()
        xn = _norm(x, w["mlp_norm"], cfg.eps)
        if cfg.mlp == "swiglu":
            x = x + (F.silu(xn @ w["w1"].t()) * (xn @ w["w3"].t())) @ w["w2"].t()
        else:
            x = x + F.gelu(xn @ w["w1"].t(), approximate="tanh") @ w["w2"].t()
    return x
