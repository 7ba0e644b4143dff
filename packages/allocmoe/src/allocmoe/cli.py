"""The ``allocmoe`` command line: build a MoE, profile it, allocate budgets, evaluate, benchmark, generate.

Thin over the library: models load through :func:`allocmoe.models.load_model`, token blocks come from
:func:`allocmoe.data.eval_blocks`; every option is checked before a model is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from effcore.assets import portable_path
from effcore.cli import (
    DataDirOpt,
    DeviceOpt,
    JsonOutOpt,
    OutOpt,
    SeedOpt,
    console,
    err_console,
    int_list,
    make_app,
    out_option,
    progress_bar,
    render_table,
    write_out,
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


# -------------------------------------------------------------------------------------- commands
@app.command("build-model")
def build_model(
    recipe: Annotated[
        str,
        typer.Option(
            "--recipe",
            help="Named build recipe: 'full' (the README's model), 'ci' (reduced), 'experts' / 'ci-experts' "
            "(the same, then experts trained end to end with a load-balancing loss).",
        ),
    ] = "full",
    experts: Annotated[int | None, typer.Option(help="Routed experts per layer (E).")] = None,
    top_k: Annotated[
        int | None, typer.Option("--top-k", help="Routed top-k of the built model (K_orig).")
    ] = None,
    shared: Annotated[int | None, typer.Option(help="Neurons of the always-on shared expert (S).")] = None,
    refresh: Annotated[bool, typer.Option(help="Rebuild even when a valid cache exists.")] = False,
    data_dir: DataDirOpt = None,
    out: JsonOutOpt = None,
) -> None:
    """Upcycle SmolLM2-135M-Instruct into a trained Qwen2-MoE and cache it (outside the repo).

    MoEfication-style: dense MLP neurons are split into a shared expert and E experts by co-activation,
    routers are trained layer by layer to reproduce the dense MLP. Prints the quality against the dense
    model and the expert load (routing must be non-trivial). --experts/--top-k/--shared change the
    named recipe (a separate cache).
    """
    import dataclasses
    import json

    from allocmoe.build import build_moe, named_recipe

    base = named_recipe(recipe)
    changes = {
        k: v
        for k, v in {"num_experts": experts, "top_k": top_k, "shared_size": shared}.items()
        if v is not None
    }
    chosen = dataclasses.replace(base, **changes)  # validated by BuildRecipe before any work
    with progress_bar() as bar:
        tasks: dict[str, int] = {}

        def cb(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        path = build_moe(chosen, data_dir=data_dir, refresh=refresh, progress=cb)
    report = json.loads((path / "build.json").read_text())
    console.print(f"[bold]built[/] {path} (recipe {recipe}{', changed' if changes else ''})")
    q = report.get("quality", {})
    rows = [{"model": k, **v} for k, v in q.items() if isinstance(v, dict)]
    if rows:
        console.print(render_table(f"WikiText-2 test ({q.get('eval', '')}, full budget)", rows))
    if "total_s" in report:
        load = report.get("load_average")
        console.print(
            f"build time {report['total_s']:.0f} s (wall), {report.get('cpu_s', 0):.0f} s CPU"
            + (f"; load average {load[0]:.1f} at the end" if load else "")
        )
    write_out(out, {"recipe_name": recipe, "path": portable_path(path), **report})


@app.command()
def profile(
    model: ModelOpt = "smollm2-moe",
    out: Annotated[
        Path, out_option("Profile file (JSON); resumed when it exists.", suffixes=(".json",))
    ] = Path("allocmoe-profile.json"),
    blocks: BlocksOpt = 8,
    block_size: BlockSizeOpt = 256,
    batch_size: BatchOpt = 4,
    prefix_cache: Annotated[
        bool,
        typer.Option(
            help="Reuse the unchanged layer prefix (fast); --no-prefix-cache runs L*K full forwards."
        ),
    ] = True,
    restart: Annotated[bool, typer.Option(help="Discard an existing profile at --out.")] = False,
    engine: EngineOpt = "allocmoe",
    device: DeviceOpt = "auto",
    data_dir: DataDirOpt = None,
) -> None:
    """Alloc-L isolated sensitivity profiling: S(i,k) = calibration perplexity, L x K_orig runs.

    Layers are profiled deep to shallow; layer i runs at top-k, deeper layers at top-1, shallower at
    K_orig. Calibration text: the second half of WikiText-2 validation. Interrupt at any time; the same
    command resumes.
    """
    from allocmoe.alloc_l import profile_sensitivity
    from allocmoe.data import eval_blocks
    from allocmoe.models import load_model

    _at_least("--blocks", blocks)
    _at_least("--block-size", block_size, 2)
    _at_least("--batch-size", batch_size)
    _engine(engine)
    lm = load_model(model, device=_device(device))
    calib = eval_blocks(
        lm.model, lm.tokenizer, "calib", blocks=blocks, block_size=block_size, data_dir=data_dir
    )
    with progress_bar() as bar:
        prof = profile_sensitivity(
            lm.model,
            calib,
            out=out,
            batch_size=batch_size,
            prefix_cache=prefix_cache,
            restart=restart,
            engine=engine,
            progress=_bar_callback(bar, f"profile {lm.name}"),
            meta={"model": lm.name, "calibration": f"wikitext2 valid 2nd half, {blocks}x{block_size}"},
        )
    rows = [{"layer": i, **{f"k={k + 1}": v for k, v in enumerate(row)}} for i, row in enumerate(prof.S)]
    console.print(render_table(f"S(i,k): calibration perplexity ({lm.name})", rows))
    console.print(f"profile: {out} ({prof.meta.get('profile_seconds', 0):.1f} s of profiling)")


@app.command()
def allocate(
    budget: BudgetOpt,
    profile: ProfileOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Check the profile against this model (and score LExI on it with --lexi). "
            "Default with --lexi: the model the profile records.",
            show_default=False,
        ),
    ] = None,
    k_base: KBaseOpt = 1,
    exact_budget: ExactOpt = False,
    lexi: Annotated[bool, typer.Option(help="Also show LExI's data-free allocation at the same B.")] = False,
    out: OutOpt = None,
) -> None:
    """Alloc-L: the per-layer budgets K_l (grouped-knapsack DP over sum K_l <= B) from a profile.

    The title states the activations the allocation spends (sum K_l): at most B by default, exactly B
    with --exact-budget. B = full is every layer at K_orig (the unmodified model), never a DP choice.
    """
    from allocmoe.alloc_l import SensitivityProfile
    from allocmoe.alloc_l import allocate as dp
    from allocmoe.budget import check_budget_text, parse_budget

    check_budget_text(budget)
    _at_least("--k-base", k_base, 0)
    if profile is None:
        raise ConfigError("allocate needs --profile", hint="create one with `allocmoe profile -o prof.json`")
    prof = SensitivityProfile.load(profile)
    total = parse_budget(budget, prof.num_layers, prof.k_orig, k_base=k_base)
    if lexi and model is None:
        model = prof.meta.get("model")
        if not model:
            raise ConfigError(f"{profile} records no model for LExI", hint="pass --model with --lexi")
    m = None
    if model is not None:
        from allocmoe.models import load_model

        m = load_model(model, device="cpu").model
        prof.check_model(m)
    b = prof.allocate(total, k_base=k_base, exact=exact_budget)
    rows = [{"layer": i, "K_l (Alloc-L)": k} for i, k in enumerate(b.k_layers)]
    payload = {
        "B": total,
        "spent": b.total,
        "exact_budget": exact_budget,
        "budget": b.to_dict(),
        "profile": str(profile),
        "model": model,
    }
    if lexi:
        from allocmoe.baselines import lexi_sensitivity

        lb = dp(lexi_sensitivity(m), total, prof.k_orig, k_base=None, exact=exact_budget)
        for r, k in zip(rows, lb.k_layers, strict=True):
            r["K_l (LExI)"] = k
        payload["lexi"] = {**lb.to_dict(), **_allocation(lb, prof.num_layers, prof.k_orig)}
    rule = "exactly B" if exact_budget else "at most B"
    title = f"B = {total} of {b.full} ({rule}); Alloc-L spends {b.total} (K_base = {k_base})"
    if lexi:
        title += f"; LExI spends {lb.total}"
    console.print(render_table(title, rows))
    if lexi and payload["lexi"]["same_as_uniform"]:
        console.print(
            f"LExI's allocation at B = {total} is the Uniform one: the same computation as Uniform."
        )
    write_out(out, payload, rows=rows)


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


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="The prompt text.")],
    budget: BudgetOpt = "full",
    profile: ProfileOpt = None,
    model: ModelOpt = "smollm2-moe",
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate (>= 1).")] = 48,
    k_base: KBaseOpt = 1,
    exact_budget: ExactOpt = False,
    engine: EngineOpt = "allocmoe",
    sample: Annotated[bool, typer.Option("--sample", help="Sample instead of greedy decoding.")] = False,
    temperature: Annotated[
        float | None,
        typer.Option(help="Sampling temperature (> 0; with --sample) [default: 1.0].", show_default=False),
    ] = None,
    top_p: Annotated[
        float | None,
        typer.Option(
            help="Nucleus sampling mass (0 < p <= 1; with --sample) [default: 1.0].", show_default=False
        ),
    ] = None,
    stream: Annotated[bool, typer.Option(help="Print tokens as they are generated.")] = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    out: JsonOutOpt = None,
) -> None:
    """Generation under a budget through transformers' own generate (greedy, or --sample; --stream).

    Alloc-MoE with --profile, else Alloc-T on a uniform split. -b full runs the unmodified model
    (nothing wrapped): full is never a DP choice.
    """
    import contextlib

    import torch

    from allocmoe.baselines import serving_policy
    from allocmoe.budget import check_budget_text, parse_budget
    from allocmoe.models import load_model, moe_shape
    from allocmoe.runtime import budgeted

    if not prompt.strip():
        raise ConfigError("the prompt is empty", hint="give the text to continue")
    check_budget_text(budget)
    _at_least("--max-new-tokens", max_new_tokens)
    _at_least("--k-base", k_base, 0)
    if exact_budget and profile is None:
        raise ConfigError(
            "--exact-budget applies only with --profile (Alloc-L)", hint="drop it or add --profile"
        )
    _engine(engine)
    if not sample and (temperature is not None or top_p is not None):
        raise ConfigError(
            "--temperature and --top-p apply only with --sample", hint="add --sample or drop them"
        )
    if temperature is not None and not temperature > 0:
        raise ConfigError(f"--temperature must be > 0, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1], got {top_p}")
    lm = load_model(model, device=_device(device))
    m, tok = lm.model, lm.tokenizer
    if tok is None:
        raise ConfigError(
            f"{lm.name} has no tokenizer", hint="generate needs a real model: --model smollm2-moe"
        )
    L, K = moe_shape(m)
    prof = _profile(profile, m, required=False)
    total = parse_budget(budget, L, K, k_base=k_base)
    pol = serving_policy(total, num_layers=L, k_orig=K, profile=prof, k_base=k_base, exact=exact_budget)
    torch.manual_seed(seed)
    ids = tok(prompt, return_tensors="pt").to(lm.device)
    ctx = budgeted(m, pol, engine=engine) if pol is not None else contextlib.nullcontext()
    options: dict = {"do_sample": sample}
    if sample:
        options |= {"temperature": temperature or 1.0, "top_p": top_p or 1.0, "top_k": None}
    if stream:
        from transformers import TextStreamer

        options["streamer"] = TextStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    with torch.inference_mode(), ctx as stats:
        outp = m.generate(**ids, max_new_tokens=max_new_tokens, **options)
    text = tok.decode(outp[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    if not stream:
        console.print(text)
    spent = float(L * K) if stats is None else stats.activations_per_token
    err_console.print(
        f"B = {total}/{L * K}"
        + (" (full: the unmodified model)" if pol is None else "")
        + f"; spent {spent:.2f} routed activations per token"
    )
    write_out(
        out,
        {
            "prompt": prompt,
            "completion": text,
            "B": total,
            "spent": spent,
            "budget": None if pol is None else pol.to_dict(),
            "device": str(lm.device),
        },
    )
