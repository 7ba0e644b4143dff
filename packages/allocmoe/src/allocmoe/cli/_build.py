"""``allocmoe build-model``: upcycle SmolLM2-135M into a trained MoE and cache it."""

from __future__ import annotations

from typing import Annotated

import typer

from allocmoe.cli._common import (
    app,
)
from effcore.assets import portable_path
from effcore.cli import (
    DataDirOpt,
    JsonOutOpt,
    console,
    progress_bar,
    render_table,
    write_out,
)


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
