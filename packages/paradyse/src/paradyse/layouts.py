"""Every strategy's tensors as ``effcore.layout`` layouts on the 1-D ``sp`` mesh of ``p`` ranks.

The shared part is what makes switching free: the layer input/output ``x`` is ``Shard(seq)`` and each
weight is ``Shard`` along the dim this package splits it on, for every strategy. The rest describes
what each strategy builds inside a layer (gathered sequences, all-to-all head shards, rotating KV
blocks, broadcast weight shards), with the dtype it has: the model's, except ring attention's KV
blocks, which travel in fp32 (the lse merge's accumulation type). The tests record the tensors each
strategy's code really builds on a rank and compare their shapes and dtypes with these layouts.
"""

from __future__ import annotations

import torch

from effcore.layout import TensorLayout
from paradyse.config import STRATEGIES, ModelConfig

__all__ = ["shared_layouts", "strategy_layouts"]


def _lay(dims, shape, p, shard=None, partial=(), dtype=torch.float32) -> TensorLayout:
    return TensorLayout.build(
        dims=dims, shape=shape, mesh={"sp": p}, shard=shard, partial=partial, dtype=dtype
    )


def shared_layouts(cfg: ModelConfig, seq_len: int, p: int, *, batch: int = 1) -> dict[str, TensorLayout]:
    """The layer boundary activation and the weight shards, identical for all strategies."""
    h, f, d, dt = cfg.hidden, cfg.ffn, cfg.head_dim, cfg.torch_dtype
    q_out, kv_out = cfg.heads * d, cfg.kv_heads * d
    return {
        "x": _lay(("batch", "seq", "hidden"), (batch, seq_len, h), p, {"sp": "seq"}, dtype=dt),
        "attn_norm": _lay(("hidden",), (h,), p, dtype=dt),
        "wq": _lay(("q_out", "hidden"), (q_out, h), p, {"sp": "q_out"}, dtype=dt),
        "wk": _lay(("kv_out", "hidden"), (kv_out, h), p, {"sp": "kv_out"}, dtype=dt),
        "wv": _lay(("kv_out", "hidden"), (kv_out, h), p, {"sp": "kv_out"}, dtype=dt),
        "wo": _lay(("hidden", "q_out"), (h, q_out), p, {"sp": "q_out"}, dtype=dt),
        "mlp_norm": _lay(("hidden",), (h,), p, dtype=dt),
        "w1": _lay(("ffn", "hidden"), (f, h), p, {"sp": "ffn"}, dtype=dt),
        "w2": _lay(("hidden", "ffn"), (h, f), p, {"sp": "ffn"}, dtype=dt),
        **(
            {"w3": _lay(("ffn", "hidden"), (f, h), p, {"sp": "ffn"}, dtype=dt)} if cfg.mlp == "swiglu" else {}
        ),
    }


def strategy_layouts(
    cfg: ModelConfig, strategy: str, seq_len: int, p: int, *, batch: int = 1
) -> dict[str, TensorLayout]:
    """The shared layouts plus the tensors ``strategy`` creates inside a layer."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}")
    b, s, h, f, d, dt = batch, seq_len, cfg.hidden, cfg.ffn, cfg.head_dim, cfg.torch_dtype
    acc = torch.promote_types(dt, torch.float32)  # ring attention's KV blocks
    hq, hk = cfg.heads, cfg.kv_heads
    heads = ("batch", "heads", "seq", "head_dim")
    out = shared_layouts(cfg, seq_len, p, batch=batch)
    if strategy == "megatron":
        out |= {
            "x_gathered": _lay(("batch", "seq", "hidden"), (b, s, h), p, dtype=dt),
            "q": _lay(heads, (b, hq, s, d), p, {"sp": "heads"}, dtype=dt),
            "kv": _lay(heads, (b, hk, s, d), p, {"sp": "heads"}, dtype=dt),
            "attn_out_partial": _lay(("batch", "seq", "hidden"), (b, s, h), p, partial=("sp",), dtype=dt),
            "mlp_up": _lay(("batch", "seq", "ffn"), (b, s, f), p, {"sp": "ffn"}, dtype=dt),
            "mlp_out_partial": _lay(("batch", "seq", "hidden"), (b, s, h), p, partial=("sp",), dtype=dt),
        }
    elif strategy in ("ulysses", "ring"):
        out |= {
            f"{w}_gathered": _lay(lay.dims, lay.shape, p, dtype=dt)
            for w, lay in out.items()
            if w.startswith("w")
        }
        out |= {
            "q": _lay(heads, (b, hq, s, d), p, {"sp": "seq"}, dtype=dt),
            "kv": _lay(heads, (b, hk, s, d), p, {"sp": "seq"}, dtype=dt),
            "mlp_up": _lay(("batch", "seq", "ffn"), (b, s, f), p, {"sp": "seq"}, dtype=dt),
        }
        if strategy == "ulysses":
            out |= {
                "q_all_to_all": _lay(heads, (b, hq, s, d), p, {"sp": "heads"}, dtype=dt),
                "kv_all_to_all": _lay(heads, (b, hk, s, d), p, {"sp": "heads"}, dtype=dt),
            }
        else:
            out["kv_ring_block"] = _lay(heads, (b, hk, s, d), p, {"sp": "seq"}, dtype=acc)
    else:  # metp: shard i's weights broadcast to all; its heads' q/k/v on the local sequence
        out |= {
            f"{w}_shard_broadcast": _lay(lay.dims, lay.local_shape(), p, dtype=dt)
            for w, lay in out.items()
            if w.startswith("w")
        }
        out |= {
            "q_shard": _lay(heads, (b, hq // p, s, d), p, {"sp": "seq"}, dtype=dt),
            "kv_shard": _lay(heads, (b, hk // p, s, d), p, {"sp": "seq"}, dtype=dt),
            "kv_ring_block": _lay(heads, (b, hk // p, s, d), p, {"sp": "seq"}, dtype=acc),
            "attn_out_shard_partial": _lay(("batch", "seq", "hidden"), (b, s, h), p, {"sp": "seq"}, dtype=dt),
        }
    return out
