"""Every strategy's tensors as ``effcore.layout`` layouts on the 1-D ``sp`` mesh of ``p`` ranks.

The shared part is what makes switching free: the layer input/output ``x`` is ``Shard(seq)`` and each
weight is ``Shard`` along the dim this package splits it on, for every strategy. The rest describes
what each strategy builds inside a layer (gathered sequences, all-to-all head shards, rotating KV
blocks, broadcast weight shards). Tests check that the model's real shards are these layouts' shards.
"""

from __future__ import annotations

from effcore.layout import TensorLayout
from paradyse.config import STRATEGIES, ModelConfig

__all__ = ["shared_layouts", "strategy_layouts"]


def _lay(dims, shape, p, shard=None, partial=()) -> TensorLayout:
    return TensorLayout.build(dims=dims, shape=shape, mesh={"sp": p}, shard=shard, partial=partial)


def shared_layouts(cfg: ModelConfig, seq_len: int, p: int, *, batch: int = 1) -> dict[str, TensorLayout]:
    """The layer boundary activation and the weight shards, identical for all strategies."""
    h, f, d = cfg.hidden, cfg.ffn, cfg.head_dim
    q_out, kv_out = cfg.heads * d, cfg.kv_heads * d
    return {
        "x": _lay(("batch", "seq", "hidden"), (batch, seq_len, h), p, {"sp": "seq"}),
        "attn_norm": _lay(("hidden",), (h,), p),
        "wq": _lay(("q_out", "hidden"), (q_out, h), p, {"sp": "q_out"}),
        "wk": _lay(("kv_out", "hidden"), (kv_out, h), p, {"sp": "kv_out"}),
        "wv": _lay(("kv_out", "hidden"), (kv_out, h), p, {"sp": "kv_out"}),
        "wo": _lay(("hidden", "q_out"), (h, q_out), p, {"sp": "q_out"}),
        "mlp_norm": _lay(("hidden",), (h,), p),
        "w1": _lay(("ffn", "hidden"), (f, h), p, {"sp": "ffn"}),
        "w2": _lay(("hidden", "ffn"), (h, f), p, {"sp": "ffn"}),
    }


def strategy_layouts(
    cfg: ModelConfig, strategy: str, seq_len: int, p: int, *, batch: int = 1
) -> dict[str, TensorLayout]:
    """The shared layouts plus the tensors ``strategy`` creates inside a layer."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}")
    b, s, h, f, d = batch, seq_len, cfg.hidden, cfg.ffn, cfg.head_dim
    hq, hk = cfg.heads, cfg.kv_heads
    heads = ("batch", "heads", "seq", "head_dim")
    out = shared_layouts(cfg, seq_len, p, batch=batch)
    if strategy == "megatron":
        out |= {
            "x_gathered": _lay(("batch", "seq", "hidden"), (b, s, h), p),
            "q": _lay(heads, (b, hq, s, d), p, {"sp": "heads"}),
            "kv": _lay(heads, (b, hk, s, d), p, {"sp": "heads"}),
            "attn_out_partial": _lay(("batch", "seq", "hidden"), (b, s, h), p, partial=("sp",)),
            "mlp_up": _lay(("batch", "seq", "ffn"), (b, s, f), p, {"sp": "ffn"}),
            "mlp_out_partial": _lay(("batch", "seq", "hidden"), (b, s, h), p, partial=("sp",)),
        }
    elif strategy in ("ulysses", "ring"):
        out |= {f"{w}_gathered": _lay(lay.dims, lay.shape, p) for w, lay in out.items() if w.startswith("w")}
        out |= {
            "q": _lay(heads, (b, hq, s, d), p, {"sp": "seq"}),
            "kv": _lay(heads, (b, hk, s, d), p, {"sp": "seq"}),
            "mlp_up": _lay(("batch", "seq", "ffn"), (b, s, f), p, {"sp": "seq"}),
        }
        if strategy == "ulysses":
            out |= {
                "q_all_to_all": _lay(heads, (b, hq, s, d), p, {"sp": "heads"}),
                "kv_all_to_all": _lay(heads, (b, hk, s, d), p, {"sp": "heads"}),
            }
        else:
            out["kv_ring_block"] = _lay(heads, (b, hk, s, d), p, {"sp": "seq"})
    else:  # metp: shard i's weights broadcast to all; its heads' q/k/v on the local sequence
        out |= {
            "wq_shard_broadcast": _lay(("q_out", "hidden"), (hq * d // p, h), p),
            "q_shard": _lay(heads, (b, hq // p, s, d), p, {"sp": "seq"}),
            "kv_shard": _lay(heads, (b, hk // p, s, d), p, {"sp": "seq"}),
            "attn_out_shard_partial": _lay(("batch", "seq", "hidden"), (b, s, h), p, {"sp": "seq"}),
        }
    return out
