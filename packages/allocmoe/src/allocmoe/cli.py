"""The ``allocmoe`` command line: build a MoE, profile it, allocate budgets, evaluate, benchmark, generate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from effcore.cli import (
    DataDirOpt,
    OutOpt,
    SeedOpt,
    console,
    err_console,
    make_app,
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
    "--model takes 'smollm2-moe' (the built model), a folder with an HF MoE checkpoint, or 'tiny:<family>' "
    "(random tiny weights and random tokens, for smoke tests).",
)

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="'smollm2-moe' (built by build-model), an HF checkpoint folder, tiny:<family> "
        "(mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v2, deepseek_v3), or shape:dsv2lite "
        "(random weights in DeepSeek-V2-Lite's MoE proportions; for bench only).",
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
KBaseOpt = Annotated[int, typer.Option("--k-base", help="Alloc-T per-token floor K_base (paper default 1).")]
ScopeOpt = Annotated[
    str,
    typer.Option("--scope", help="Alloc-T pool: 'forward' (all tokens of a forward pass) or 'sequence'."),
]
BlocksOpt = Annotated[int, typer.Option("--blocks", help="Number of token blocks.")]
BlockSizeOpt = Annotated[int, typer.Option("--block-size", help="Tokens per block.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Blocks per forward pass.")]


# --------------------------------------------------------------------------------------- helpers
# Random-weight models with the MoE proportions of real ones, for speed only (`bench -m shape:<name>`):
# DeepSeek-V2-Lite's MoE layer (hidden 2048, 64 routed experts of width 1408, top-6, 2 shared experts,
# no renormalisation) on Qwen2-MoE's block, with MHA attention in place of MLA and a small vocabulary so
# the MoE layers dominate as they do in the 27-layer original.
SHAPES = {
    "dsv2lite": dict(
        hidden_size=2048,
        num_attention_heads=16,
        num_key_value_heads=16,
        moe_intermediate_size=1408,
        num_experts=64,
        num_experts_per_tok=6,
        shared_expert_intermediate_size=2816,
        intermediate_size=10944,
        norm_topk_prob=False,
        vocab_size=4096,
        max_position_embeddings=4096,
    ),
}


def _shape_model(name: str, layers: int = 2):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2MoeConfig

    if name not in SHAPES:
        raise ConfigError(f"unknown model shape {name!r}", hint=f"known: {', '.join(SHAPES)}")
    cfg = Qwen2MoeConfig(**SHAPES[name], num_hidden_layers=layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()


def _load(model: str):
    """``(model, tokenizer | None, name)``."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars only

    if model.startswith("shape:"):
        return _shape_model(model.split(":", 1)[1]), None, model
    if model.startswith("tiny:"):
        from effcore.testing.tiny import tiny_model

        m = tiny_model(model.split(":", 1)[1])
        return m, None, model
    if model == "smollm2-moe":
        from allocmoe.build import load_moe

        m, tok = load_moe(None)
        return m, tok, model
    path = Path(model)
    if not path.is_dir():
        raise ConfigError(
            f"--model {model!r} is neither 'smollm2-moe', tiny:<family>, nor a checkpoint folder",
            hint="build the default model with `allocmoe build-model` or pass an HF MoE checkpoint folder",
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from effcore.assets import quiet_transformers

    with quiet_transformers():
        m = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(path)) if (path / "tokenizer_config.json").is_file() else None
    return m, tok, str(path)


def _blocks(model, tok, split: str, blocks: int, block_size: int, data_dir, seed: int = 0):
    import torch

    if tok is None:  # tiny random models: random tokens (smoke tests only)
        vocab = model.config.get_text_config().vocab_size
        g = torch.Generator().manual_seed(seed + (0 if split == "calib" else 1))
        return torch.randint(3, vocab, (blocks, block_size), generator=g)
    from allocmoe.data import text_blocks

    return text_blocks(tok, split, blocks=blocks, block_size=block_size, data_dir=data_dir)


def _shape(model):
    from allocmoe.adapters import find_moe_layers, model_k_orig

    layers = find_moe_layers(model)
    return len(layers), model_k_orig(model, layers)


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


# -------------------------------------------------------------------------------------- commands
@app.command("build-model")
def build_model(
    experts: Annotated[int | None, typer.Option(help="Routed experts per layer (E).")] = None,
    top_k: Annotated[
        int | None, typer.Option("--top-k", help="Routed top-k of the built model (K_orig).")
    ] = None,
    shared: Annotated[int | None, typer.Option(help="Neurons of the always-on shared expert (S).")] = None,
    refresh: Annotated[bool, typer.Option(help="Rebuild even when a valid cache exists.")] = False,
    data_dir: DataDirOpt = None,
    out: OutOpt = None,
) -> None:
    """Upcycle SmolLM2-135M-Instruct into a trained Qwen2-MoE and cache it (outside the repo).

    MoEfication-style: dense MLP neurons are split into a shared expert and E experts by co-activation,
    routers are trained layer by layer to reproduce the dense MLP. Prints the quality against the dense
    model and the expert load (routing must be non-trivial).
    """
    import dataclasses
    import json

    from allocmoe.build import BuildRecipe, build_moe

    changes = {
        k: v for k, v in {"experts": experts, "top_k": top_k, "shared": shared}.items() if v is not None
    }
    fields = {f.name for f in dataclasses.fields(BuildRecipe)}
    unknown = set(changes) - fields
    if unknown:
        raise ConfigError(
            f"the build recipe has no parameter {sorted(unknown)}", hint=f"known: {sorted(fields)}"
        )
    recipe = BuildRecipe(**changes)
    with progress_bar() as bar:
        tasks: dict[str, int] = {}

        def cb(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        path = build_moe(recipe, data_dir=data_dir, refresh=refresh, progress=cb)
    report = json.loads((path / "build.json").read_text())
    console.print(f"[bold]built[/] {path}")
    q = report.get("quality", {})
    rows = [{"model": k, **v} for k, v in q.items() if isinstance(v, dict)]
    if rows:
        console.print(render_table("WikiText-2 test (full budget)", rows))
    write_out(out, report)


@app.command()
def profile(
    model: ModelOpt = "smollm2-moe",
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Profile file (JSON); resumed when it exists.")
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
    data_dir: DataDirOpt = None,
) -> None:
    """Alloc-L isolated sensitivity profiling: S(i,k) = calibration perplexity, L x K_orig runs.

    Layers are profiled deep to shallow; layer i runs at top-k, deeper layers at top-1, shallower at
    K_orig. Calibration text: the second half of WikiText-2 validation. Interrupt at any time; the same
    command resumes.
    """
    from allocmoe.alloc_l import profile_sensitivity

    m, tok, name = _load(model)
    calib = _blocks(m, tok, "calib", blocks, block_size, data_dir)
    with progress_bar() as bar:
        prof = profile_sensitivity(
            m,
            calib,
            out=out,
            batch_size=batch_size,
            prefix_cache=prefix_cache,
            restart=restart,
            progress=_bar_callback(bar, f"profile {name}"),
            meta={"model": name, "calibration": f"wikitext2 valid 2nd half, {blocks}x{block_size}"},
        )
    rows = [{"layer": i, **{f"k={k + 1}": v for k, v in enumerate(row)}} for i, row in enumerate(prof.S)]
    console.print(render_table(f"S(i,k): calibration perplexity ({name})", rows))
    console.print(f"profile: {out} ({prof.meta.get('profile_seconds', 0):.1f} s of profiling)")


@app.command()
def allocate(
    budget: BudgetOpt,
    profile: ProfileOpt = None,
    model: ModelOpt = "smollm2-moe",
    k_base: KBaseOpt = 1,
    lexi: Annotated[bool, typer.Option(help="Also show LExI's data-free allocation at the same B.")] = False,
    out: OutOpt = None,
) -> None:
    """Alloc-L: the per-layer budgets K_l (grouped-knapsack DP over sum K_l <= B) from a profile."""
    from allocmoe.alloc_l import SensitivityProfile
    from allocmoe.alloc_l import allocate as dp
    from allocmoe.budget import parse_budget

    if profile is None:
        raise ConfigError("allocate needs --profile", hint="create one with `allocmoe profile -o prof.json`")
    prof = SensitivityProfile.load(profile)
    total = parse_budget(budget, prof.num_layers, prof.k_orig, k_base=k_base)
    b = prof.allocate(total, k_base=k_base)
    rows = [{"layer": i, "K_l (Alloc-L)": k} for i, k in enumerate(b.k_layers)]
    payload = {"budget": b.to_dict(), "profile": str(profile)}
    if lexi:
        from allocmoe.baselines import lexi_sensitivity

        m, _, _ = _load(model)
        prof.check_model(m)
        lb = dp(lexi_sensitivity(m), total, prof.k_orig, k_base=None)
        for r, k in zip(rows, lb.k_layers, strict=True):
            r["K_l (LExI)"] = k
        payload["lexi"] = lb.to_dict()
    console.print(render_table(f"B = {b.total} of {b.full} (K_base = {k_base})", rows))
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
    calib_blocks: Annotated[int, typer.Option(help="Calibration blocks for top-p/NAEE thresholds.")] = 4,
    batch_size: BatchOpt = 4,
    k_base: KBaseOpt = 1,
    scope: ScopeOpt = "forward",
    data_dir: DataDirOpt = None,
    out: OutOpt = None,
) -> None:
    """Held-out perplexity and next-token accuracy (WikiText-2 test) of every method at every budget.

    Each row also shows the budget actually spent (threshold baselines match it only on average).
    """
    from allocmoe.baselines import METHODS, calibrate_threshold, lexi_sensitivity, method_policy
    from allocmoe.budget import ActivationBudget, parse_budget
    from allocmoe.evaluation import evaluate

    m, tok, name = _load(model)
    L, K = _shape(m)
    wanted = list(METHODS) if methods == "all" else [x.strip() for x in methods.split(",") if x.strip()]
    bad = [x for x in wanted if x not in METHODS]
    if bad:
        raise ConfigError(f"unknown methods {bad}", hint=f"choose from: {', '.join(METHODS)}, all")
    needs_profile = any(x in ("alloc_l", "alloc_moe") for x in wanted)
    prof = _profile(profile, m, required=needs_profile)
    totals = [parse_budget(b, L, K, k_base=k_base) for b in budget.split(",")]
    test = _blocks(m, tok, "test", blocks, block_size, data_dir)
    calib = (
        _blocks(m, tok, "calib", calib_blocks, block_size, data_dir)
        if {"top_p", "naee"} & set(wanted)
        else None
    )
    lexi_table = lexi_sensitivity(m) if "lexi" in wanted else None
    rows = []
    with progress_bar() as bar:
        task = bar.add_task("eval", total=(len(totals) * len(wanted) + 1))
        full = evaluate(m, test, ActivationBudget.full_budget(L, K), batch_size=batch_size)
        rows.append({"method": "full", "B": L * K, **full.to_dict()})
        bar.advance(task)
        for total in totals:
            for meth in wanted:
                pol = method_policy(
                    meth,
                    total,
                    num_layers=L,
                    k_orig=K,
                    profile=prof,
                    lexi_table=lexi_table,
                    k_base=k_base,
                    scope=scope,
                    threshold=lambda kind, t: calibrate_threshold(m, calib, kind, t, batch_size=batch_size),
                )
                res = evaluate(m, test, pol, batch_size=batch_size)
                rows.append({"method": meth, "B": total, **res.to_dict()})
                bar.advance(task)
    cols = ["method", "B", "activations_per_token", "perplexity", "accuracy", "unique_experts_per_call"]
    console.print(render_table(f"{name}: WikiText-2 test, {blocks}x{block_size} tokens", rows, columns=cols))
    write_out(out, {"model": name, "rows": rows}, rows=rows)


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
    out: OutOpt = None,
) -> None:
    """Prefill and decode latency: budget vs full budget on our path, and our full path vs HF's own MoE.

    Uses Alloc-MoE (Alloc-L + Alloc-T) when --profile is given, else Alloc-T on a uniform split.
    """
    from allocmoe.bench import LatencyConfig, measure_latency
    from allocmoe.budget import ActivationBudget, parse_budget

    m, _, name = _load(model)
    L, K = _shape(m)
    prof = _profile(profile, m, required=False)
    total = parse_budget(budget, L, K, k_base=k_base)
    pol = prof.allocate(total, k_base=k_base) if prof else ActivationBudget.spread(L, K, total, k_base=k_base)
    configs = [
        LatencyConfig("hf-full", None),
        LatencyConfig("allocmoe-full", ActivationBudget.full_budget(L, K)),
        LatencyConfig(f"allocmoe-B={total}", pol),
        LatencyConfig(f"uniform-B={total}", ActivationBudget.spread(L, K, total, k_base=None)),
    ]
    rows = []
    with progress_bar() as bar:
        for bs in [int(x) for x in batch.split(",")]:
            rows += measure_latency(
                m,
                configs,
                batch=bs,
                prompt_len=prompt_len,
                new_tokens=new_tokens,
                repeats=repeats,
                progress=_bar_callback(bar, f"batch {bs}"),
            )
    cols = [
        "config",
        "batch",
        "prefill_ms",
        "prefill_speedup",
        "decode_ms_per_token",
        "decode_speedup",
        "unique_experts_per_layer",
    ]
    console.print(
        render_table(
            f"{name}: latency, median of {repeats} (speedup vs hf-full; IQR in --out)", rows, columns=cols
        )
    )
    write_out(out, {"model": name, "budget": pol.to_dict(), "rows": rows}, rows=rows)


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="The prompt text.")],
    budget: BudgetOpt = "full",
    profile: ProfileOpt = None,
    model: ModelOpt = "smollm2-moe",
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 48,
    k_base: KBaseOpt = 1,
    seed: SeedOpt = 0,
    out: OutOpt = None,
) -> None:
    """Greedy generation under a budget (Alloc-MoE with --profile, else Alloc-T on a uniform split)."""
    import torch

    from allocmoe.budget import ActivationBudget, parse_budget
    from allocmoe.runtime import budgeted

    m, tok, name = _load(model)
    if tok is None:
        raise ConfigError(f"{name} has no tokenizer", hint="generate needs a real model: --model smollm2-moe")
    L, K = _shape(m)
    prof = _profile(profile, m, required=False)
    total = parse_budget(budget, L, K, k_base=k_base)
    pol = prof.allocate(total, k_base=k_base) if prof else ActivationBudget.spread(L, K, total, k_base=k_base)
    torch.manual_seed(seed)
    ids = tok(prompt, return_tensors="pt")
    with torch.inference_mode(), budgeted(m, pol) as stats:
        outp = m.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    text = tok.decode(outp[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    console.print(text)
    err_console.print(
        f"B = {pol.total}/{pol.full}; spent {stats.activations_per_token:.2f} routed activations per token"
    )
    write_out(out, {"prompt": prompt, "completion": text, "budget": pol.to_dict()})
