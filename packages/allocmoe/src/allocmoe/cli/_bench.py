"""``allocmoe bench``: latency of a budget against the full budget and transformers' MoE."""

from __future__ import annotations

from typing import Annotated

import typer

from allocmoe.cli._common import (
    BudgetOpt,
    EngineOpt,
    ExactOpt,
    KBaseOpt,
    ModelOpt,
    ProfileOpt,
    _at_least,
    _bar_callback,
    _device,
    _engine,
    _profile,
    app,
)
from effcore.cli import (
    DeviceOpt,
    OutOpt,
    console,
    int_list,
    progress_bar,
    render_table,
    write_out,
)
from effcore.errors import ConfigError


@app.command()
def bench(
    budget: BudgetOpt = "1/2",
    profile: ProfileOpt = None,
    model: ModelOpt = "smollm2-moe",
    batch: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,16",
    prompt_len: Annotated[int, typer.Option(help="Prompt tokens (prefill).")] = 128,
    new_tokens: Annotated[int, typer.Option(help="Decode steps timed per round.")] = 16,
    repeats: Annotated[int, typer.Option(help="Timed rounds (after one warm-up).")] = 5,
    k_base: KBaseOpt = 1,
    exact_budget: ExactOpt = False,
    engine: EngineOpt = "allocmoe",
    device: DeviceOpt = "auto",
    out: OutOpt = None,
) -> None:
    """Prefill and decode latency: budget vs full budget on our path, and our full path vs HF's own MoE.

    Uses Alloc-MoE (Alloc-L + Alloc-T) when --profile is given, else Alloc-T on a uniform split. At
    batch-1 decode a forward pass holds one token, so Alloc-T's pool is that token's own top-K_l:
    'allocmoe-B' and 'uniform-B' are then the same computation when their K_l are the same.
    """
    from allocmoe.baselines import serving_policy
    from allocmoe.bench import LatencyConfig, against_ideal, measure_latency
    from allocmoe.budget import ActivationBudget, check_budget_text, parse_budget
    from allocmoe.models import load_model, moe_shape

    check_budget_text(budget)
    if budget.strip().lower() == "full":
        raise ConfigError(
            "bench compares a budget below full with the full budget", hint="give B < full, e.g. -b 1/2"
        )
    sizes = int_list(batch, "--batch")
    for flag, value, low in (("--prompt-len", prompt_len, 1), ("--new-tokens", new_tokens, 1),
                             ("--repeats", repeats, 1), ("--k-base", k_base, 0)):  # fmt: skip
        _at_least(flag, value, low)
    if exact_budget and profile is None:
        raise ConfigError(
            "--exact-budget applies only with --profile (Alloc-L)", hint="drop it or add --profile"
        )
    _engine(engine)
    lm = load_model(model, device=_device(device))
    m = lm.model
    L, K = moe_shape(m)
    prof = _profile(profile, m, required=False)
    total = parse_budget(budget, L, K, k_base=k_base)
    pol = serving_policy(total, num_layers=L, k_orig=K, profile=prof, k_base=k_base, exact=exact_budget)
    if pol is None:
        raise ConfigError(f"B={total} is the full budget", hint="bench compares a budget below full with it")
    configs = [
        LatencyConfig("hf-full", None),
        LatencyConfig(f"{engine}-full", ActivationBudget.full_budget(L, K), engine),
        LatencyConfig(f"{engine}-B={total}", pol, engine),
        LatencyConfig(f"uniform-B={total}", ActivationBudget.spread(L, K, total, k_base=None), engine),
    ]
    rows = []
    with progress_bar() as bar:
        for bs in sizes:
            rows += measure_latency(
                m,
                configs,
                batch=bs,
                prompt_len=prompt_len,
                new_tokens=new_tokens,
                repeats=repeats,
                progress=_bar_callback(bar, f"batch {bs}"),
            )
    against_ideal(rows, full=configs[1].label, ours=configs[2].label, ideal=configs[3].label)
    cols = [
        "config", "batch", "activations_per_token", "prefill_ms", "prefill_speedup", "prefill_vs_full",
        "prefill_of_ideal", "decode_ms_per_token", "decode_speedup", "decode_vs_full", "decode_of_ideal",
        "unique_experts_per_layer",
    ]  # fmt: skip
    console.print(
        render_table(
            f"{lm.name} on {lm.device}: latency, median of {repeats} (speedup vs hf-full; vs_full: vs our full "
            "budget; of_ideal: ours as a fraction of the uniform allocation's speed-up; IQR in --out)",
            rows,
            columns=cols,
        )
    )
    write_out(
        out,
        {
            "model": lm.name,
            "device": str(lm.device),
            "engine": engine,
            "exact_budget": exact_budget,
            "budget": pol.to_dict(),
            "rows": rows,
        },
        rows=rows,
    )
