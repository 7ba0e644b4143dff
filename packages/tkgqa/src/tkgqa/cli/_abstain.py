"""``tkgqa abstention`` (the planner on out-of-scope questions) and ``tkgqa retrieve`` (one GenTKGQA subgraph)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from effcore.cli import DataDirOpt, JsonOutOpt, OutOpt, console, progress_bar, render_table, write_out
from effcore.errors import ConfigError, EffmlError
from tkgqa.cli._agent import AbstainOpt, ApiKeyOpt, BaseUrlOpt, LlmOpt, ModelOpt, TimeoutOpt
from tkgqa.cli._retrieval import BackendOpt, check_retrieval
from tkgqa.cli._shared import (
    DbOpt,
    EncoderOpt,
    KgOpt,
    StoreOpt,
    ThreadsOpt,
    check_kg,
    load_runtime,
    run_meta,
    set_threads,
)

__all__ = ["EmptySubgraphError", "abstention", "retrieve"]


class EmptySubgraphError(EffmlError):
    """No fact passed the retrieval's filters (or the question was abstained on): nothing to show."""


def abstention(
    ctx: typer.Context,
    questions: Annotated[
        Path | None,
        typer.Option(
            "--questions",
            help="A JSONL file of {question, category} lines (default: the bundled "
            "out-of-scope set, 64 questions: trivia, relation, entity, time).",
            show_default=False,
        ),
    ] = None,
    kg: KgOpt = "multitq",
    store: StoreOpt = "numpy",
    db: DbOpt = None,
    encoder: EncoderOpt = "minilm",
    data_dir: DataDirOpt = None,
    threads: ThreadsOpt = 1,
    out: OutOpt = None,
) -> None:
    """How often the planner abstains on questions its KG cannot answer, by category, with each reason."""
    from tkgqa.agent import run_agent
    from tkgqa.policies import PlannerPolicy
    from tkgqa.scope import load_scope_questions, scope_table

    started = time.perf_counter()
    set_threads(threads)
    qs = load_scope_questions(questions)
    choice = check_kg(ctx, kg, None, store, db)
    rt = load_runtime(choice, data_dir, encoder, "default", ann="auto")
    planner = rt.planner(abstain=True)
    rows = []
    with progress_bar() as bar:
        task = bar.add_task(f"planner on {len(qs)} out-of-scope questions", total=len(qs))
        for q in qs:
            policy = PlannerPolicy(planner)
            res = run_agent(q.question, policy, rt.tool, max_steps=20)
            o = policy.last
            why = o.abstention if o is not None else None
            rows.append({"id": q.id, "category": q.category, "question": q.question,
                         "abstained": bool(o and o.abstained), "kind": why.kind if why else None,
                         "reason": why.reason if why else None, "answer": ", ".join(res.answers[:1]),
                         "confidence": o.confidence if o else 0.0, "tool_calls": res.tool_calls})  # fmt: skip
            bar.update(task, completed=len(rows))
    table = scope_table(rows)
    console.print(render_table("planner abstention on out-of-scope questions", table,
                               columns=["category", "n", "abstained", "rate", "kinds"]))  # fmt: skip
    for r in rows:
        if not r["abstained"]:
            console.print(f"[yellow]answered[/] ({r['category']}) {r['question']} -> {r['answer']} "
                          f"(confidence {r['confidence']:.2f})", highlight=False)  # fmt: skip
    payload = {"meta": {}, "questions": str(questions) if questions else "tkgqa/data/out_of_scope.jsonl",
               "table": table, "rows": rows}  # fmt: skip
    payload["meta"] = run_meta(ctx, rt, started, threads=threads)
    write_out(out, payload, rows=table)


def retrieve(
    ctx: typer.Context,
    question: Annotated[
        str, typer.Argument(help="A question, e.g. 'After Japan, who was the first to visit China?'")
    ],
    backend: BackendOpt = "rules",
    top_n: Annotated[int, typer.Option("--top-n", help="Facts in the subgraph (GenTKGQA's best: 5-6).")] = 6,
    relations: Annotated[int, typer.Option("--relations", help="Relations the back end may choose.")] = 3,
    abstain: AbstainOpt = True,
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    api_key: ApiKeyOpt = None,
    llm: LlmOpt = "smollm2",
    timeout: TimeoutOpt = 60.0,
    kg: KgOpt = "multitq",
    store: StoreOpt = "numpy",
    db: DbOpt = None,
    encoder: EncoderOpt = "minilm",
    data_dir: DataDirOpt = None,
    threads: ThreadsOpt = 1,
    out: JsonOutOpt = None,
) -> None:
    """GenTKGQA stage 1 for one question: the linked entities, chosen relations, mined range and top-n facts."""
    from tkgqa.abstain import AbstentionConfig
    from tkgqa.embed import get_encoder
    from tkgqa.relations import RelationScorer
    from tkgqa.retrieval import RetrievalConfig, SubgraphRetriever, make_miner
    from tkgqa.runtime import open_store

    started = time.perf_counter()
    set_threads(threads)
    if not question.strip():
        raise ConfigError(
            "the question is empty", hint='ask e.g. "After Japan, who was the first to visit China?"'
        )
    cfg = RetrievalConfig(top_n=top_n, relations=relations)
    llm_keys = check_retrieval(ctx, backend, agent_only=())
    choice = check_kg(ctx, kg, None, store, db)
    facts, _ = open_store(choice.kg, data_dir=data_dir, store=choice.store, db=choice.db)
    scorer = RelationScorer(facts.relations.names, get_encoder(encoder))
    opts = {"base_url": base_url, "model": model, "api_key": api_key, "timeout": timeout, "llm": llm}
    miner, close = make_miner(backend, facts, scorer, **{k: opts[k] for k in llm_keys})
    try:
        sub = SubgraphRetriever(facts, scorer, miner, cfg, AbstentionConfig(enabled=abstain)).retrieve(
            question
        )
    finally:
        close()
    start, end = sub.time_range
    console.print(f"[bold]entities:[/] {', '.join(sub.entities) or '(none)'}  [bold]relations:[/] "
                  + ", ".join(f"{r} {s:.2f}" for r, s in sub.relations)
                  + f"  [bold]time:[/] {start or '...'} to {end or '...'} ({sub.time_source})", highlight=False)  # fmt: skip
    for f in sub.facts:
        console.print(f"  {f.raw}", highlight=False)
    if out:
        write_out(out, {"meta": run_meta(ctx, facts, started, threads=threads), **sub.to_dict()})
    if not sub.facts:
        why = sub.abstention.reason if sub.abstention is not None else "no fact passed the filters"
        raise EmptySubgraphError(f"the subgraph is empty: {why.removeprefix('the subgraph is empty: ')}",
                                 hint="check the question's names and dates against the KG")  # fmt: skip
    console.print(f"[bold]confidence:[/] {sub.confidence:.2f}"
                  + (f"  [yellow](would abstain: {sub.abstention.reason})[/]" if sub.abstention else ""),
                  highlight=False)  # fmt: skip
