"""``allocmoe profile`` and ``allocate``: Alloc-L sensitivity profiling and the per-layer budgets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from allocmoe.cli._common import (
    BatchOpt,
    BlockSizeOpt,
    BlocksOpt,
    BudgetOpt,
    EngineOpt,
    ExactOpt,
    KBaseOpt,
    ModelOpt,
    ProfileOpt,
    _allocation,
    _at_least,
    _bar_callback,
    _device,
    _engine,
    app,
)
from effcore.cli import (
    DataDirOpt,
    DeviceOpt,
    OutOpt,
    console,
    out_option,
    progress_bar,
    render_table,
    write_out,
)
from effcore.errors import ConfigError


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
