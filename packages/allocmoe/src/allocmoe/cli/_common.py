"""Shared pieces of the ``allocmoe`` command line: the app, option aliases, checks and helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from effcore.cli import (
    make_app,
)
from effcore.errors import ConfigError

app = make_app(
    "allocmoe",
    "Alloc-MoE: spend a fixed budget of routed-expert activations where it matters.\n\n"
    "Typical session on the built-in model (SmolLM2-135M upcycled into a 30-layer Qwen2-MoE):\n\n"
    "  allocmoe build-model                 # once, ~10 min on 2 CPU cores, cached\n\n"
    "  allocmoe profile -o prof.json        # Alloc-L sensitivity, resumable\n\n"
    "  allocmoe allocate --budget 1/2 --profile prof.json\n\n"
    "  allocmoe eval --budget 1/2 --profile prof.json\n\n"
    "  allocmoe generate --budget 1/2 --profile prof.json 'The capital of France'\n\n"
    "--model takes 'smollm2-moe' (the built model; 'smollm2-moe:ci' for the reduced CI build), a folder "
    "with an HF MoE checkpoint, or 'tiny:<family>' (random tiny weights and random tokens, for smoke tests).",
)

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="'smollm2-moe' (built by build-model; 'smollm2-moe:<recipe>' for another recipe, e.g. ci), "
        "an HF checkpoint folder, tiny:<family> (mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v2, "
        "deepseek_v3), or shape:dsv2lite (random weights in DeepSeek-V2-Lite's MoE proportions; for bench).",
    ),
]
ProfileOpt = Annotated[
    Path | None,
    typer.Option("--profile", "-p", help="Sensitivity profile from `allocmoe profile` (Alloc-L)."),
]
BudgetOpt = Annotated[
    str,
    typer.Option(
        "--budget",
        "-b",
        help="Total routed activations per token B: an integer, a fraction of full (1/2, 0.5), or 'full'.",
    ),
]
KBaseOpt = Annotated[
    int,
    typer.Option(
        "--k-base", help="Alloc-T per-token floor K_base (paper default 1); every layer keeps >= it."
    ),
]
ExactOpt = Annotated[
    bool,
    typer.Option(
        "--exact-budget",
        help="Alloc-L spends exactly B (sum K_l = B). Default: at most B, the paper's constraint "
        "(the DP spends less when the profile says fewer experts score better).",
    ),
]
EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Routed experts under a budget: 'allocmoe' (our path: dropped slots cost nothing; Triton on "
        "CUDA) or 'hf' (transformers' own experts forward).",
    ),
]
BlocksOpt = Annotated[int, typer.Option("--blocks", help="Number of token blocks (>= 1).")]
BlockSizeOpt = Annotated[int, typer.Option("--block-size", help="Tokens per block (>= 2).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Blocks per forward pass (>= 1).")]


# --------------------------------------------------------------------------------------- helpers
def _at_least(flag: str, value: int, low: int = 1) -> None:
    if value < low:
        raise ConfigError(f"{flag} must be >= {low}, got {value}")


def _k_bases(text: str) -> list[int]:
    """``--k-base`` of eval: one value or a comma-separated sweep of integers >= 0."""
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        vals = []
    if not vals or min(vals) < 0:
        raise ConfigError(f"--k-base must be integers >= 0 (comma-separated), got {text!r}")
    return sorted(set(vals))


def _engine(engine: str) -> str:
    """``--engine`` checked before any model is loaded."""
    from typing import get_args

    from allocmoe.runtime import Engine

    if engine not in get_args(Engine):
        raise ConfigError(f"--engine {engine!r} is not one of: {', '.join(get_args(Engine))}")
    return engine


def _device(device: str):
    """The resolved ``--device`` (checked before any model is loaded)."""
    from effcore.device import infer_device

    return infer_device(device)


def _profile(path: Path | None, model, *, required: bool):
    from allocmoe.alloc_l import SensitivityProfile

    if path is None:
        if required:
            raise ConfigError(
                "this needs a sensitivity profile", hint="create one with `allocmoe profile -o prof.json`"
            )
        return None
    prof = SensitivityProfile.load(path)
    prof.check_model(model)
    return prof


def _bar_callback(bar, label: str):
    task = bar.add_task(label, total=None)

    def cb(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return cb


def _allocation(policy, num_layers: int, k_orig: int) -> dict:
    """The per-layer ``K_l`` of an exact budget (a digit per layer when all are < 10) and whether it is
    the Uniform split of the same B (then the method computes exactly what Uniform computes)."""
    from allocmoe.budget import ActivationBudget

    if not isinstance(policy, ActivationBudget):
        return {"K_l": "threshold", "k_layers": None, "same_as_uniform": False}
    ks = policy.k_layers
    text = "".join(map(str, ks)) if max(ks) < 10 else ",".join(map(str, ks))
    plain = policy.k_base is None or all(policy.k_base >= k for k in ks)  # no pooling: top-K_l per token
    uniform = plain and ks == ActivationBudget.spread(num_layers, k_orig, policy.total, k_base=None).k_layers
    return {"K_l": text, "k_layers": list(ks), "same_as_uniform": uniform}
