"""``tkgqa eval --retrieval``: GenTKGQA stage-1 recall of an answer-bearing fact at n = 1, 3, 6, 10."""

from __future__ import annotations

from typing import Annotated

import typer

from effcore.cli import console, err_console, progress_bar, render_table, write_out
from effcore.errors import ConfigError
from tkgqa.cli._shared import check_choice, check_kg, given, run_meta
from tkgqa.llm import LOCAL_LLMS
from tkgqa.mining import BACKENDS
from tkgqa.policies import check_base_url

__all__ = ["BackendOpt", "RetrievalOpt", "eval_retrieval"]

RetrievalOpt = Annotated[
    bool,
    typer.Option("--retrieval", help="Score GenTKGQA's subgraph retrieval instead of answering: how often the top "
                 "n facts (n = 1, 3, 6, 10) hold one carrying a gold answer, by question type."),
]  # fmt: skip
BackendOpt = Annotated[
    str,
    typer.Option("--backend", help="--retrieval: who ranks relations and mines time: 'rules' (the planner's "
                 "parser), 'llm' (an OpenAI-compatible server: --base-url/--model) or 'local' (--llm)."),
]  # fmt: skip

# Options of `tkgqa eval` that only the agent uses, and the LLM options each retrieval back end takes.
_AGENT_ONLY = ("policy", "mode", "max_steps", "fewshot", "abstain", "compare", "log", "ann")
_LLM = ("base_url", "model", "api_key", "llm", "timeout")
_BACKEND_APPLIES = {
    "rules": (),
    "llm": ("base_url", "model", "api_key", "timeout"),
    "local": ("llm", "timeout"),
}


def check_retrieval(
    ctx: typer.Context, backend: str, *, agent_only: tuple[str, ...] = _AGENT_ONLY
) -> tuple[str, ...]:
    """Options that do not apply to ``--retrieval`` (or to its back end) are errors, before anything loads.

    Returns the LLM options the back end takes (for :func:`tkgqa.retrieval.make_miner`).
    """
    check_choice(backend, BACKENDS, "--backend")
    stray = given(ctx, *agent_only)
    if stray:
        raise ConfigError(f"{', '.join(stray)} {'does' if len(stray) == 1 else 'do'} not apply to --retrieval "
                          "(it scores the retrieved subgraphs; no agent runs)", hint="drop them")  # fmt: skip
    stray = given(ctx, *(o for o in _LLM if o not in _BACKEND_APPLIES[backend]))
    if stray:
        raise ConfigError(f"{', '.join(stray)} {'does' if len(stray) == 1 else 'do'} not apply to --backend {backend}",
                          hint="drop them, or pick the back end they belong to")  # fmt: skip
    p = ctx.params
    if backend == "llm" and p.get("base_url") is not None:
        check_base_url(p["base_url"])
    if backend == "local":
        check_choice(p["llm"], LOCAL_LLMS, "--llm")
    return _BACKEND_APPLIES[backend]


def eval_retrieval(ctx: typer.Context, started: float, questions_of) -> None:
    """Run ``tkgqa eval --retrieval`` from the parsed options of ``tkgqa eval`` (checked here first)."""
    from tkgqa.abstain import AbstentionConfig
    from tkgqa.embed import get_encoder
    from tkgqa.recall import RECALL_AT, evaluate_retrieval
    from tkgqa.relations import RelationScorer
    from tkgqa.retrieval import SubgraphRetriever, make_miner
    from tkgqa.runtime import open_store

    p = ctx.params
    backend = p["backend"]
    check_retrieval(ctx, backend)
    if given(ctx, "per_question") and (p["out"] is None or p["out"].suffix.lower() != ".json"):
        raise ConfigError(
            "--rows/--no-rows shape the --out JSON file", hint="add --out FILE.json, or drop it"
        )
    choice = check_kg(ctx, p["kg"], p["slice_text"], p["store"], p["db"])
    questions, label = questions_of(choice)
    if p["split"] == "test" and choice.slice_spec is None:
        err_console.print("[yellow]evaluating on test: report it, do not tune on it[/]")
    store, kg_slice = open_store(choice.kg, slice_spec=choice.slice_spec, data_dir=p["data_dir"],
                                 store=choice.store, db=choice.db)  # fmt: skip
    if kg_slice is not None:
        questions = kg_slice.questions
    err_console.print(f"[dim]{store!r}[/]", highlight=False)
    scorer = RelationScorer(store.relations.names, get_encoder(p["encoder"]))
    llm_opts = {k: p[k] for k in _BACKEND_APPLIES[backend]}
    miner, close = make_miner(backend, store, scorer, **llm_opts)
    retriever = SubgraphRetriever(store, scorer, miner, abstention=AbstentionConfig(enabled=False))
    try:
        with progress_bar() as bar:
            task = bar.add_task(f"retrieval ({backend}) on {len(questions)} questions", total=len(questions))
            report = evaluate_retrieval(
                questions, retriever, progress=lambda d, t: bar.update(task, completed=d)
            )
    finally:
        close()
    cols = [
        "group",
        "value",
        "n",
        *(f"recall@{n}" for n in RECALL_AT),
        "empty",
        "flagged",
        "facts",
        "candidates",
    ]
    console.print(render_table(f"tkgqa retrieval ({backend}) on {label}: an answer-bearing fact in the top n",
                               report.table, columns=cols))  # fmt: skip
    payload = {"meta": {}, "retrieval_backend": backend, "questions": label, "n": len(questions),
               "recall_at": list(RECALL_AT), "config": {"relations": retriever.cfg.relations,
               "voice_weight": retriever.cfg.voice_weight, "ref_occurrence": retriever.cfg.ref_occurrence},
               "table": report.table}  # fmt: skip
    if p["per_question"]:
        payload["rows"] = report.rows
    payload["meta"] = run_meta(ctx, store, started, threads=p["threads"])
    write_out(p["out"], payload, rows=report.table)
