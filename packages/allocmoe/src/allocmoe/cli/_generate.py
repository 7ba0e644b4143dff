"""``allocmoe generate``: text under a budget through transformers' generate."""

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
    _device,
    _engine,
    _profile,
    app,
)
from effcore.cli import (
    DeviceOpt,
    JsonOutOpt,
    SeedOpt,
    console,
    err_console,
    write_out,
)
from effcore.errors import ConfigError


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
