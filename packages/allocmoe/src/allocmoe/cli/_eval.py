"""``allocmoe eval``: every method at every budget, with the spent budget and load preservation."""

from __future__ import annotations

from typing import Annotated

import typer

from allocmoe.cli._common import (
    BatchOpt,
    BlockSizeOpt,
    BlocksOpt,
    EngineOpt,
    ExactOpt,
    ModelOpt,
    ProfileOpt,
    _allocation,
    _at_least,
    _device,
    _engine,
    _k_bases,
    _profile,
    app,
)
from effcore.cli import (
    DataDirOpt,
    DeviceOpt,
    OutOpt,
    console,
    progress_bar,
    render_table,
    write_out,
)
from effcore.errors import ConfigError


@app.command("eval")
def eval_(
    budget: Annotated[
        str, typer.Option("--budget", "-b", help="Comma-separated budgets (integers or fractions of full).")
    ] = "1/3,1/2,2/3,5/6",
    methods: Annotated[
        str,
        typer.Option(
            help="Comma-separated: uniform, alloc_l, alloc_t, alloc_moe, lexi, top_p, naee, seqtopk, or 'all'."
        ),
    ] = "all",
    profile: ProfileOpt = None,
    model: ModelOpt = "smollm2-moe",
    blocks: BlocksOpt = 16,
    block_size: BlockSizeOpt = 512,
    calib_blocks: Annotated[
        int | None,
        typer.Option(
            help="Calibration blocks for the top_p/naee thresholds [default: 4].", show_default=False
        ),
    ] = None,
    batch_size: BatchOpt = 4,
    k_base: Annotated[
        str,
        typer.Option(
            "--k-base",
            help="Alloc-T per-token floor K_base of alloc_t/alloc_moe (paper default 1); comma-separated "
            "values sweep it (0,1,2: every pooled method at every budget for each).",
        ),
    ] = "1",
    scope: Annotated[
        str | None,
        typer.Option(
            "--scope",
            help="Alloc-T pool of alloc_t/alloc_moe: 'forward' (all tokens of a forward pass) or 'sequence' "
            "[default: forward].",
            show_default=False,
        ),
    ] = None,
    exact_budget: ExactOpt = False,
    engine: EngineOpt = "allocmoe",
    device: DeviceOpt = "auto",
    data_dir: DataDirOpt = None,
    out: OutOpt = None,
) -> None:
    """Held-out perplexity and next-token accuracy (WikiText-2 test) of every method at every budget.

    Each row also shows the budget actually spent (threshold baselines match it only on average), the
    expert-load preservation against the full budget (mean over layers of Spearman's rank correlation,
    load_spearman, and the Jensen-Shannon divergence in bits, load_js; per-expert loads in --out) and,
    for exact budgets, the per-layer allocation K_l (one digit per MoE layer) and whether it is the
    Uniform one (then the method computes exactly what Uniform computes).
    """
    from allocmoe.baselines import METHODS, calibrate_threshold, lexi_sensitivity, method_policy
    from allocmoe.budget import ActivationBudget, check_budget_text, parse_budget
    from allocmoe.data import eval_blocks
    from allocmoe.evaluation import evaluate
    from allocmoe.load import load_preservation
    from allocmoe.models import load_model, moe_shape

    wanted = list(METHODS) if methods == "all" else [x.strip() for x in methods.split(",") if x.strip()]
    bad = [x for x in wanted if x not in METHODS]
    if bad or not wanted:
        raise ConfigError(
            f"unknown methods {bad or methods!r}", hint=f"choose from: {', '.join(METHODS)}, all"
        )
    texts = [b.strip() for b in budget.split(",")]
    for text in texts:
        check_budget_text(text)
    pooled = {"alloc_t", "alloc_moe"} & set(wanted)
    thresholds = {"top_p", "naee"} & set(wanted)
    needs_profile = bool({"alloc_l", "alloc_moe"} & set(wanted))
    if scope is not None and not pooled:
        raise ConfigError(
            "--scope applies only to alloc_t and alloc_moe", hint="drop --scope or add those methods"
        )
    if scope is not None and scope not in ("forward", "sequence"):
        raise ConfigError(f"--scope {scope!r} is not one of: forward, sequence")
    if calib_blocks is not None and not thresholds:
        raise ConfigError(
            "--calib-blocks applies only to top_p and naee", hint="drop it or add those methods"
        )
    if profile is not None and not needs_profile:
        raise ConfigError(
            "--profile applies only to alloc_l and alloc_moe", hint="drop it or add those methods"
        )
    if exact_budget and not {"alloc_l", "alloc_moe", "lexi"} & set(wanted):
        raise ConfigError(
            "--exact-budget applies only to the DP-allocated methods alloc_l, alloc_moe and lexi",
            hint="drop it or add those methods",
        )
    _engine(engine)
    k_bases = _k_bases(k_base)
    if len(k_bases) > 1 and not pooled:
        raise ConfigError(
            "a --k-base sweep applies only to alloc_t and alloc_moe",
            hint="give one value or add those methods",
        )
    calib_blocks = 4 if calib_blocks is None else calib_blocks
    for flag, value, low in (("--blocks", blocks, 1), ("--block-size", block_size, 2),
                             ("--batch-size", batch_size, 1), ("--calib-blocks", calib_blocks, 1)):  # fmt: skip
        _at_least(flag, value, low)
    lm = load_model(model, device=_device(device))
    m, name = lm.model, lm.name
    L, K = moe_shape(m)
    prof = _profile(profile, m, required=needs_profile)
    totals = [parse_budget(t, L, K, k_base=max(k_bases)) for t in texts]
    test = eval_blocks(m, lm.tokenizer, "test", blocks=blocks, block_size=block_size, data_dir=data_dir)
    calib = (
        eval_blocks(m, lm.tokenizer, "calib", blocks=calib_blocks, block_size=block_size, data_dir=data_dir)
        if thresholds
        else None
    )
    lexi_table = lexi_sensitivity(m) if "lexi" in wanted else None
    runs = [
        (t, meth, kb)
        for t in totals
        for meth in wanted
        for kb in (k_bases if meth in pooled else k_bases[:1])
    ]
    rows, loads = [], {}
    with progress_bar() as bar:
        task = bar.add_task("eval", total=len(runs) + 1)
        full_policy = ActivationBudget.full_budget(L, K)
        full = evaluate(m, test, full_policy, batch_size=batch_size, engine=engine)
        reference = full.expert_load

        def row(meth: str, total: int, pol, res) -> dict:
            lp = load_preservation(reference, res.expert_load)
            loads[f"{meth}@B={total},k_base={getattr(pol, 'k_base', None)}"] = res.expert_load
            kb = getattr(pol, "k_base", None)
            return {"method": meth, "B": total, "k_base": kb, **res.to_dict(), "load_spearman": lp.spearman_mean,
                    "load_js": lp.js_mean, **_allocation(pol, L, K)}  # fmt: skip

        rows.append(row("full", L * K, full_policy, full))
        bar.advance(task)
        for total, meth, kb in runs:
            pol = method_policy(
                meth,
                total,
                num_layers=L,
                k_orig=K,
                profile=prof,
                lexi_table=lexi_table,
                k_base=kb,
                scope=scope or "forward",
                threshold=lambda kind, t: calibrate_threshold(m, calib, kind, t, batch_size=batch_size),
                exact=exact_budget,
            )
            rows.append(row(meth, total, pol, evaluate(m, test, pol, batch_size=batch_size, engine=engine)))
            bar.advance(task)
    cols = [
        "method", "B", "k_base", "activations_per_token", "perplexity", "accuracy", "load_spearman", "load_js",
        "unique_experts_per_call", "K_l", "same_as_uniform",
    ]  # fmt: skip
    text = "WikiText-2 test" if lm.tokenizer is not None else "random tokens"
    rule = "exactly B" if exact_budget else "at most B"
    title = f"{name}: {text}, {blocks}x{block_size} tokens (DP methods spend {rule}; spent = activations_per_token)"
    console.print(render_table(title, rows, columns=cols))
    same = [
        f"{r['method']} at B={r['B']}"
        for r in rows
        if r["same_as_uniform"] and r["method"] not in ("full", "uniform")
    ]
    if same:
        console.print(f"same allocation as Uniform (so the same computation): {', '.join(same)}")
    payload = {
        "model": name,
        "exact_budget": exact_budget,
        "engine": engine,
        "rows": rows,
        "expert_load": loads,
    }
    write_out(out, payload, rows=rows)
