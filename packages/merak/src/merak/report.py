"""Readable rows of a pipeline plan: what each stage holds and what it is predicted to cost."""

from __future__ import annotations

import re
from collections.abc import Sequence

from merak.plan import PipelinePlan

__all__ = ["describe_leaves", "stage_rows"]

_MiB = 2**20


def describe_leaves(leaves: Sequence[str], blocks: str) -> str:
    """``model.embed_tokens, model.layers.0.self_attn, ..., model.layers.6.mlp`` -> ``embed_tokens,
    blocks 0-6`` (a block counts when the stage holds any of its leaves)."""
    pattern = re.compile(re.escape(blocks) + r"\.(\d+)\.(\w+)")
    items: list[str] = []
    run: dict[int, list[str]] = {}

    def flush() -> None:
        if run:
            first, last = min(run), max(run)
            text = f"block {first}" if first == last else f"blocks {first}-{last}"
            items.append(text)
            run.clear()

    for leaf in leaves:
        m = pattern.fullmatch(leaf)
        if m:
            run.setdefault(int(m.group(1)), []).append(m.group(2))
        else:
            flush()
            items.append(leaf.rsplit(".", 1)[-1])
    flush()
    return ", ".join(items)


def stage_rows(plan: PipelinePlan, blocks: str, *, bytes_per_param_state: int = 16) -> list[dict]:
    """One row per stage: shards, what they hold, parameters, predicted ms per micro-batch, and the
    static memory of training it (``bytes_per_param_state`` per parameter byte/4: fp32 weights,
    gradients and AdamW's two moments = 16 bytes per parameter)."""
    rows = []
    for st in plan.stages:
        leaves = [leaf for i in range(st.first, st.last + 1) for leaf in plan.shards[i].leaves]
        rows.append(
            {
                "stage": st.index,
                "shards": f"{st.first}-{st.last}",
                "holds": describe_leaves(leaves, blocks),
                "params MiB": st.param_bytes / _MiB,
                "recompute": st.recompute_ratio,
                "fwd ms": st.forward_s * 1e3,
                "bwd ms": st.backward_s * 1e3,
                "recompute ms": st.recompute_s * 1e3,
                "send ms": st.send_s * 1e3,
                "stage ms": st.time_s * 1e3,
                "static MiB": st.param_bytes / 4 * bytes_per_param_state / _MiB,
                "act MiB/mb": st.activation_bytes / _MiB,
            }
        )
    return rows
