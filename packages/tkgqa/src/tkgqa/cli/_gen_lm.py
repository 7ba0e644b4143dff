"""``tkgqa gen-train``, ``tkgqa gen-ask`` and ``tkgqa eval --method gentkgqa``: GenTKGQA's generator."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from effcore.cli import (
    DataDirOpt,
    DeviceOpt,
    JsonOutOpt,
    SeedOpt,
    console,
    out_option,
    progress_bar,
    render_table,
    write_out,
)
from effcore.errors import ConfigError
from tkgqa.cli._gen import gen_meta
from tkgqa.cli._shared import EncoderOpt, KgOpt, ThreadsOpt, check_choice, check_kg, given, set_threads
from tkgqa.embed import ENCODERS
from tkgqa.llm import LOCAL_LLMS

__all__ = ["GeneratorOpt", "GnnOpt", "VariantOpt", "eval_gentkgqa", "gen_ask", "gen_train"]

GnnOpt = Annotated[
    Path | None, typer.Option("--gnn", help="The temporal GNN checkpoint (`tkgqa gen-pretrain --checkpoint`) of this KG.",
                              show_default=False),
]  # fmt: skip
GeneratorOpt = Annotated[
    Path | None, typer.Option("--generator", help="The generator checkpoint written by `tkgqa gen-train`.",
                              show_default=False),
]  # fmt: skip
VariantOpt = Annotated[
    str, typer.Option("--variant", help="--method gentkgqa: 'full', or an ablation: 'no_retrieval', "
                      "'random_subgraph', 'no_gnn', 'no_time' (inference-time; see the README).")
]  # fmt: skip
FactsOpt = Annotated[int, typer.Option("--facts", help="Facts in the subgraph (GenTKGQA's best: about 5-6).")]


def _identity(kg, gnn: Path) -> dict[str, Any]:
    from effcore.io import sha256_file

    return {"kg": kg.digest, "gnn_sha256": sha256_file(gnn)}


def _need(path: Path | None, flag: str, hint: str) -> Path:
    if path is None:
        raise ConfigError(f"{flag} is missing", hint=hint)
    if not path.is_file():
        raise ConfigError(f"{flag} {path} does not exist", hint=hint)
    return path


_GNN_HINT = "pre-train one: tkgqa gen-pretrain --kg KG --checkpoint gnn.pt"
_GEN_HINT = "train one: tkgqa gen-train --kg KG --gnn gnn.pt --questions q.jsonl --checkpoint gen.pt"


def gen_train(
    ctx: typer.Context,
    checkpoint: Annotated[
        Path,
        out_option(
            "The generator checkpoint (.pt): written every --save-every steps; --resume continues it.",
            suffixes=(".pt",),
            flag="--checkpoint",
            short=None,
        ),
    ],
    kg: KgOpt = "multitq",
    gnn: GnnOpt = None,
    questions: Annotated[
        Path | None,
        typer.Option(
            "--questions",
            help="Training questions (`tkgqa gen-questions --questions-out`).",
            show_default=False,
        ),
    ] = None,
    llm: Annotated[
        str, typer.Option("--llm", help="The LM: 'smollm2' (SmolLM2-135M-Instruct) or 'gemma3-270m'.")
    ] = "smollm2",
    steps: Annotated[
        int, typer.Option("--steps", help="Optimiser steps (the default recipe: ~1 h on 2 CPU cores).")
    ] = 400,
    batch: Annotated[int, typer.Option("--batch", help="Questions per step.")] = 4,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", help="Use only the first N questions.")
    ] = None,
    facts: FactsOpt = 6,
    lora_rank: Annotated[int, typer.Option("--lora-rank", help="LoRA rank on q_proj/v_proj.")] = 8,
    save_every: Annotated[int, typer.Option("--save-every", help="Save the checkpoint every N steps.")] = 50,
    max_minutes: Annotated[
        float | None, typer.Option("--max-minutes", help="Stop (and save) after this long.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue --checkpoint from its last saved step.")
    ] = False,
    encoder: EncoderOpt = "minilm",
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    data_dir: DataDirOpt = None,
    threads: ThreadsOpt = 1,
    out: JsonOutOpt = None,
) -> None:
    """Instruction-tune the generator (LoRA + the knowledge-token projection) on KG-generated questions.

    Each question's subgraph is stage 1's retrieval (rules back end) with the facts that support its
    answer put in (training only); the target is its first gold answer.
    """
    from tkgqa.gen.train import GenTrainConfig

    cfg = GenTrainConfig(llm=check_choice(llm, LOCAL_LLMS, "--llm"), steps=steps, batch=batch, facts=facts,
                         lora_rank=lora_rank, save_every=save_every, seed=seed)  # fmt: skip
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    if max_minutes is not None and max_minutes <= 0:
        raise ConfigError(f"--max-minutes must be > 0, got {max_minutes}")
    check_choice(encoder, ENCODERS, "--encoder")
    gnn = _need(gnn, "--gnn", _GNN_HINT)
    questions = _need(
        questions, "--questions", "write them: tkgqa gen-questions --kg KG --questions-out q.jsonl"
    )
    if resume and not checkpoint.is_file():
        raise ConfigError(f"--resume: {checkpoint} does not exist yet", hint="drop --resume to start")
    set_threads(threads)
    check_kg(ctx, kg, None)
    started = time.perf_counter()
    from effcore.assets import load_causal_lm
    from effcore.device import infer_device
    from tkgqa.embed import get_encoder
    from tkgqa.gen.answer import stage1_retriever
    from tkgqa.gen.model import SubgraphFeatures
    from tkgqa.gen.pretrain import load_encoder
    from tkgqa.gen.questions import read_questions
    from tkgqa.gen.train import build_examples, build_generator, train_generator
    from tkgqa.loaders import load_kg

    dev = infer_device(device)
    store = load_kg(kg, data_dir)
    enc = load_encoder(gnn, store)
    qs = read_questions(questions, store)[:limit]
    retrieve = stage1_retriever(store, get_encoder(encoder), facts=facts)
    with progress_bar(transient=True) as bar:
        task = bar.add_task("retrieving subgraphs", total=len(qs))
        examples = []
        for i in range(0, len(qs), 50):
            examples += build_examples(
                store, qs[i : i + 50], lambda q: retrieve(q)[0], facts=facts, seed=seed + i
            )
            bar.update(task, completed=min(i + 50, len(qs)))
    lm, tok = load_causal_lm(cfg.llm)
    model = build_generator(lm, tok, enc.cfg.dim, cfg).to(dev)
    with progress_bar() as bar:
        task = bar.add_task("training", total=cfg.steps)

        def report(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, description=f"training loss {loss:.3f}")

        history = train_generator(model, SubgraphFeatures(enc, store), examples, cfg, checkpoint=checkpoint,
                                  identity=_identity(store, gnn), resume=resume, progress=report,
                                  max_seconds=None if max_minutes is None else max_minutes * 60)  # fmt: skip
    done = history[-1]["step"] if history else 0
    rows = [{"item": "steps done", "value": done}, {"item": "examples", "value": len(examples)},
            {"item": "first loss", "value": history[0]["loss"]}, {"item": "last loss", "value": history[-1]["loss"]},
            {"item": "mean loss, last 20 steps", "value": sum(h["loss"] for h in history[-20:]) / len(history[-20:])}]  # fmt: skip
    console.print(render_table(f"tkgqa gen-train {kg}: {cfg.llm} + LoRA, checkpoint {checkpoint}", rows))
    if done < cfg.steps:
        console.print(f"stopped at step {done} of {cfg.steps}; continue with the same command and --resume")
    write_out(out, {"meta": gen_meta(ctx, store, started, threads=threads, device=str(dev)), "config": asdict(cfg),
                    "examples": len(examples), "steps_done": done, "history": history})  # fmt: skip


def _answerer(kg_name: str, data_dir, gnn: Path, generator: Path, encoder: str, facts: int, variant: str, seed: int,
              device: str):  # fmt: skip
    from effcore.device import infer_device
    from tkgqa.embed import get_encoder
    from tkgqa.gen.answer import GenAnswerer, stage1_retriever
    from tkgqa.gen.model import SubgraphFeatures
    from tkgqa.gen.pretrain import load_encoder
    from tkgqa.gen.train import load_generator
    from tkgqa.loaders import load_kg

    store = load_kg(kg_name, data_dir)
    enc = load_encoder(gnn, store)
    model, _ = load_generator(generator, _identity(store, gnn), device=str(infer_device(device)))
    feats = SubgraphFeatures(enc, store, gnn=variant != "no_gnn", time=variant != "no_time")
    retrieve = stage1_retriever(store, get_encoder(encoder), facts=facts)
    return store, GenAnswerer(store, model, feats, retrieve, variant=variant, facts=facts, seed=seed)


def gen_ask(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="The question, e.g. 'Who visited China on 8 May 2013?'.")],
    kg: KgOpt = "multitq",
    gnn: GnnOpt = None,
    generator: GeneratorOpt = None,
    facts: FactsOpt = 6,
    encoder: EncoderOpt = "minilm",
    device: DeviceOpt = "auto",
    data_dir: DataDirOpt = None,
    threads: ThreadsOpt = 1,
    out: JsonOutOpt = None,
) -> None:
    """Answer one question with GenTKGQA: stage-1 subgraph, then the trained generator."""
    if not question.strip():
        raise ConfigError("the question is empty", hint='ask e.g. "Who visited China on 8 May 2013?"')
    if facts < 1:
        raise ConfigError(f"--facts must be >= 1, got {facts}")
    check_choice(encoder, ENCODERS, "--encoder")
    gnn, generator = _need(gnn, "--gnn", _GNN_HINT), _need(generator, "--generator", _GEN_HINT)
    set_threads(threads)
    check_kg(ctx, kg, None)
    _, answerer = _answerer(kg, data_dir, gnn, generator, encoder, facts, "full", 0, device)
    a = answerer(question)
    for line in a.facts:
        console.print(f"[dim]{line}[/]", highlight=False)
    for note in a.notes:
        console.print(f"[yellow]{note}[/]", highlight=False)
    console.print(f"answer: {a.answer}" if not a.abstained else "no answer", highlight=False)
    write_out(out, asdict(a))


_GEN_ONLY = ("generator", "gnn", "variant")
_AGENT_ONLY = ("policy", "mode", "max_steps", "fewshot", "compare", "log", "ann", "base_url", "model", "api_key",
               "llm", "timeout", "store", "db", "slice_text", "retrieval", "backend", "abstain")  # fmt: skip


def check_method(ctx: typer.Context, method: str) -> None:
    """``--method``'s options: the generator's only with gentkgqa, the agent's never with it."""
    from tkgqa.gen.answer import VARIANTS

    check_choice(method, ("agent", "gentkgqa"), "--method")
    if method == "agent":
        if stray := given(ctx, *_GEN_ONLY):
            raise ConfigError(
                f"{', '.join(stray)} apply to --method gentkgqa", hint="add --method gentkgqa, or drop them"
            )
        return
    if stray := given(ctx, *_AGENT_ONLY):
        raise ConfigError(f"{', '.join(stray)} {'does' if len(stray) == 1 else 'do'} not apply to --method gentkgqa",
                          hint="drop them")  # fmt: skip
    check_choice(ctx.params["variant"], VARIANTS, "--variant")


def eval_gentkgqa(ctx: typer.Context, started: float, questions_of) -> None:
    """``tkgqa eval --method gentkgqa``: strict and lenient Hits@1 of the generator (or an ablation)."""
    p = ctx.params
    gnn, generator = _need(p["gnn"], "--gnn", _GNN_HINT), _need(p["generator"], "--generator", _GEN_HINT)
    check_choice(p["encoder"], ENCODERS, "--encoder")
    check_kg(ctx, p["kg"], None)
    questions, label = questions_of()
    from tkgqa.gen.answer import evaluate_generator

    store, answerer = _answerer(p["kg"], p["data_dir"], gnn, generator, p["encoder"], 6, p["variant"], p["seed"],
                                "cpu")  # fmt: skip
    with progress_bar() as bar:
        task = bar.add_task(f"gentkgqa ({p['variant']}) on {len(questions)} questions", total=len(questions))
        report = evaluate_generator(questions, answerer, progress=lambda d, t: bar.update(task, completed=d))
    cols = ["group", "value", "n", "strict", "lenient", "abstained"]
    console.print(render_table(f"tkgqa gentkgqa ({p['variant']}) on {label}", report["table"], columns=cols))
    payload = {"meta": {**gen_meta(ctx, store, started, threads=p["threads"], device="cpu"),
                        "generator": str(generator), "gnn": str(gnn)},
               "method": "gentkgqa", "variant": p["variant"], "questions": label, "n": len(questions),
               "table": report["table"]}  # fmt: skip
    if p["per_question"]:
        payload["rows"] = report["rows"]
    write_out(p["out"], payload, rows=report["table"])
