"""The library side of ``effcore profile``: a per-piece forward profile of a causal LM, with its check."""

from __future__ import annotations

from typing import Any

from effcore.errors import ConfigError

__all__ = ["load_preset", "run_profile"]

_TINY = {"tiny-llama": "llama", "tiny-gemma3": "gemma3", "tiny-qwen3-moe": "qwen3_moe"}


def load_preset(name: str, *, device: str = "auto"):
    """A model preset: an offline asset ('smollm2', 'gemma3-270m') or a tiny random one ('tiny-llama', ...)."""
    from effcore.assets import MODEL_ASSETS, load_causal_lm
    from effcore.device import infer_device
    from effcore.testing.tiny import tiny_model

    if name in _TINY:
        return tiny_model(_TINY[name]).to(infer_device(device))
    if name in MODEL_ASSETS and MODEL_ASSETS[name].kind == "causal-lm":
        model, _ = load_causal_lm(name, device=device)
        return model
    known = [n for n, a in MODEL_ASSETS.items() if a.kind == "causal-lm"] + list(_TINY)
    raise ConfigError(f"unknown model preset {name!r}", hint=f"known: {', '.join(known)}")


def run_profile(
    *,
    model: str,
    seq_len: int,
    batch: int,
    repeats: int,
    device: str = "auto",
    warmup: int = 2,
    backward: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Profile ``model`` piece by piece (embeddings, each decoder layer, norm, head, the rest).

    Returns table rows (ms, GFLOP, MiB) and a summary comparing the rows' forward-time sum with the
    whole-model forward time measured separately, without hooks. ``backward=True`` adds backward
    time and the activation bytes each piece saves for backward (the per-piece memory that
    checkpointing or offloading would free); the forward check still compares forward times.
    """
    import torch

    from effcore.profiling import profile_decoder, time_model

    net = load_preset(model, device=device)
    dev = next(net.parameters()).device
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, net.config.vocab_size, (batch, seq_len), generator=gen).to(dev)
    inputs = {"input_ids": ids}
    time_model(net, inputs, warmup=warmup, repeats=1)
    # Single steps of the whole model (no hooks) and of the instrumented model alternate, and each
    # side keeps its fastest step. Noise on a shared machine (preemption, CPU steal) only ever
    # slows a step down, so the fastest of several is a stable estimate of the true time, while
    # means or medians of two separately measured series drift apart by 10-20% here.
    wholes, steps = [], []
    for i in range(max(repeats, 3)):
        pair = [
            lambda: wholes.append(time_model(net, inputs, warmup=0, repeats=1, backward=backward)),
            lambda: steps.append(profile_decoder(net, ids, warmup=0, repeats=1, backward=backward)),
        ]
        for run in pair[:: 1 if i % 2 else -1]:
            run()
    whole = min(wholes, key=lambda w: w.forward_ns)
    profiles = min(steps, key=lambda ps: sum(p.forward_ns for p in ps))
    ratios = sorted(sum(p.forward_ns for p in ps) / w.forward_ns for ps, w in zip(steps, wholes, strict=True))
    rows = [
        {
            "module": p.name.removeprefix("model."),
            "forward ms": p.forward_ns / 1e6,
            "GFLOP": p.forward_flops / 1e9,
            "params MiB": p.param_bytes / 2**20,
            **(
                {"backward ms": (p.backward_ns or 0) / 1e6, "saved MiB": p.activation_bytes / 2**20}
                if backward
                else {}
            ),
        }
        for p in profiles
    ]
    total_ns = sum(p.forward_ns for p in profiles)
    summary = {
        "model": model,
        "batch": batch,
        "seq_len": seq_len,
        "steps": len(steps),
        "pair_ratio_min": ratios[0],
        "pair_ratio_max": ratios[-1],
        "device": str(dev),
        "sum_rows_ms": total_ns / 1e6,
        "whole_model_ms": whole.forward_ns / 1e6,
        "ratio": total_ns / whole.forward_ns,
    }
    return rows, summary
