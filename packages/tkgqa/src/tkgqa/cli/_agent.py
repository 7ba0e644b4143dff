"""``tkgqa ask``, ``tkgqa eval`` and ``tkgqa replay``: run the agent, score it, re-run its tool calls."""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path
from typing import Annotated

import typer

from effcore.cli import (
    DataDirOpt,
    JsonOutOpt,
    OutOpt,
    SeedOpt,
    console,
    err_console,
    progress_bar,
    render_table,
    write_out,
)
from effcore.errors import ConfigError
from tkgqa.cli._gen_lm import GeneratorOpt, GnnOpt, VariantOpt, check_method, eval_gentkgqa
from tkgqa.cli._retrieval import BackendOpt, RetrievalOpt, eval_retrieval
from tkgqa.cli._shared import (
    AnnOpt,
    DbOpt,
    EncoderOpt,
    KgOpt,
    LogOpt,
    ModeOpt,
    PolicyOpt,
    SliceOpt,
    StoreOpt,
    ThreadsOpt,
    check_choice,
    check_kg,
    given,
    load_runtime,
    run_meta,
    set_threads,
)
from tkgqa.llm import LOCAL_LLMS
from tkgqa.policies import ENV_BASE_URL, check_base_url
from tkgqa.questions import SPLITS
from tkgqa.runtime import POLICIES
from tkgqa.search import MODES

__all__ = ["ask", "eval_cmd", "replay"]

BaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="-p openai: OpenAI-compatible server, e.g. http://127.0.0.1:8765/v1 ($TKGQA_BASE_URL).",
    ),
]
ModelOpt = Annotated[
    str | None, typer.Option("--model", help="-p openai: model name sent to the server ($TKGQA_MODEL).")
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="OPENAI_API_KEY",
        show_default=False,
        help="-p openai: bearer token for the server ($OPENAI_API_KEY).",
    ),
]
LlmOpt = Annotated[str, typer.Option("--llm", help="-p local: smollm2 or gemma3-270m.")]
StepsOpt = Annotated[
    int,
    typer.Option("--max-steps", help="Assistant turns (AT2QA: 20); a run that uses them all has no answer."),
]
FewshotOpt = Annotated[
    bool,
    typer.Option(
        "--fewshot/--zero-shot",
        help="-p openai/local: AT2QA's rules + 3 examples + 2 notes, or the rules only.",
    ),
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", help="-p openai/local: seconds per LLM request before giving up.")
]

AbstainOpt = Annotated[
    bool,
    typer.Option("--abstain/--no-abstain", help="-p planner: withhold the answer, with a reason, when the question's "
                 "entity, relation or time is not in the KG (--no-abstain answers anyway and records the reason)."),
]  # fmt: skip

# Options that only some policies take.
_LLM_OPTIONS = ("base_url", "model", "api_key", "llm", "timeout", "fewshot", "abstain")
_APPLIES = {"planner": ("abstain",), "openai": ("base_url", "model", "api_key", "timeout", "fewshot"),
            "local": ("llm", "timeout", "fewshot")}  # fmt: skip


def _check_policy(ctx: typer.Context, policy: str, *, max_steps: int, base_url: str | None, llm: str,
                  timeout: float) -> None:  # fmt: skip
    """The policy and its options, before anything loads: LLM options given to another policy are errors."""
    check_choice(policy, POLICIES, "--policy")
    if max_steps < 1:
        raise ConfigError(f"--max-steps must be >= 1, got {max_steps}", hint="AT2QA uses 20")
    stray = given(ctx, *(o for o in _LLM_OPTIONS if o not in _APPLIES[policy]))
    if stray:
        raise ConfigError(f"{', '.join(stray)} {'does' if len(stray) == 1 else 'do'} not apply to --policy {policy}",
                          hint="drop them, or pick the policy they belong to")  # fmt: skip
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout}")
    if policy == "openai":
        if base_url is not None:
            check_base_url(base_url)
        elif os.environ.get(ENV_BASE_URL):
            check_base_url(os.environ[ENV_BASE_URL], source=f"${ENV_BASE_URL}")
    if policy == "local":
        check_choice(llm, LOCAL_LLMS, "--llm")


def _policy(policy, rt, base_url, model, timeout, llm, fewshot=True, api_key=None, abstain=True):
    from tkgqa.runtime import policy_factory

    return policy_factory(policy, rt, base_url=base_url, model=model, api_key=api_key, timeout=timeout, llm=llm,
                          fewshot=fewshot, abstain=abstain)  # fmt: skip


def ask(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="A question, e.g. 'Who visited China on 8 May 2013?'")],
    policy: PolicyOpt = "planner",
    mode: ModeOpt = "default",
    max_steps: StepsOpt = 20,
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    api_key: ApiKeyOpt = None,
    llm: LlmOpt = "smollm2",
    timeout: TimeoutOpt = 60.0,
    fewshot: FewshotOpt = True,
    abstain: AbstainOpt = True,
    show: Annotated[
        bool, typer.Option("--show/--quiet", help="Print each tool call and its first hits.")
    ] = True,
    kg: KgOpt = "multitq",
    slice_text: SliceOpt = None,
    store: StoreOpt = "numpy",
    db: DbOpt = None,
    ann: AnnOpt = "auto",
    encoder: EncoderOpt = "minilm",
    data_dir: DataDirOpt = None,
    threads: ThreadsOpt = 1,
    log: LogOpt = None,
    out: JsonOutOpt = None,
) -> None:
    """Answer one question with the agent loop and show its trajectory."""
    from tkgqa.agent import run_agent, write_trajectories

    started = time.perf_counter()
    set_threads(threads)
    if not question.strip():
        raise ConfigError("the question is empty", hint='ask e.g. "Who visited China on 8 May 2013?"')
    _check_policy(ctx, policy, max_steps=max_steps, base_url=base_url, llm=llm, timeout=timeout)
    check_choice(mode, MODES, "--mode")
    choice = check_kg(ctx, kg, slice_text, store, db)
    rt = load_runtime(choice, data_dir, encoder, mode, ann=ann)
    make, close = _policy(policy, rt, base_url, model, timeout, llm, fewshot, api_key, abstain)
    try:
        agent = make()
        res = run_agent(question, agent, rt.tool, max_steps=max_steps)
    finally:
        close()
    outcome = getattr(agent, "last", None)
    if show:
        for m in res.messages:
            if m.get("tool_calls"):
                for c in m["tool_calls"]:
                    console.print(f"[cyan]call[/] {c['function']['arguments']}", highlight=False)
            elif m.get("role") == "tool":
                hits = json.loads(m["content"])
                shown = hits[:3] if isinstance(hits, list) else [hits]
                for h in shown:
                    console.print(
                        f"  [dim]{h.get('text', h) if isinstance(h, dict) else h}[/]", highlight=False
                    )
    if res.hit_step_cap:
        guess = ", ".join(res.best_effort_answers) or "nothing"
        answer = f"(none: all {max_steps} turns used; the last observation suggests {guess})"
    elif outcome is not None and outcome.abstained:
        answer = f"(abstains: {outcome.abstention.reason})"
    else:
        answer = ", ".join(res.answers) or "(none)"
    if outcome is not None:
        res.extra = {"abstained": outcome.abstained, "confidence": outcome.confidence,
                     "abstention": None if outcome.abstention is None else
                     {"kind": outcome.abstention.kind, "reason": outcome.abstention.reason}}  # fmt: skip
        answer += f"  [bold]confidence:[/] {outcome.confidence:.2f}"
        if outcome.abstention is not None and not outcome.abstained:
            answer += f"  [yellow](would abstain: {outcome.abstention.reason})[/]"
    console.print(f"[bold]answer:[/] {answer}  [dim]({res.tool_calls} tool calls, {res.seconds:.1f}s)[/]",
                  highlight=False)  # fmt: skip
    if log:
        write_trajectories(log, [res])
    if out:
        write_out(out, {"meta": run_meta(ctx, rt, started, threads=threads), **res.to_dict()})


def _questions(ctx, split, limit, labelled_only, seed, slice_spec, data_dir):
    """The questions to evaluate and how to name them (checked before the KG loads)."""
    from tkgqa.questions import load_questions

    if slice_spec is not None:
        stray = given(ctx, "split", "limit", "seed", "labelled_only")
        if stray:
            raise ConfigError(f"{', '.join(stray)} {'does' if len(stray) == 1 else 'do'} not apply with --slice: "
                              "it evaluates the questions the slice was cut for", hint="drop them")  # fmt: skip
        return None, f"the {slice_spec} KG slice's questions of MultiTQ {slice_spec.split}"
    check_choice(split, SPLITS, "--split")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    if limit is None and given(ctx, "seed"):
        raise ConfigError("--seed draws the -n sample; without -n every question of the split runs",
                          hint="add -n N, or drop --seed")  # fmt: skip
    questions = load_questions(data_dir, split=split, labelled_only=labelled_only)
    if not questions:
        raise ConfigError(f"no questions in split {split!r}", hint="check --split and --labelled-only")
    if limit is not None:
        questions = sorted(
            random.Random(seed).sample(questions, min(limit, len(questions))), key=lambda q: q.quid
        )
    part = {"dev": "dev (a 10% hash split of MultiTQ's test questions)",
            "test": "test (the other 90% of MultiTQ's test questions)", "all": "dev + test (all of MultiTQ's test questions)"}[split]  # fmt: skip
    sample = f"a seed-{seed} sample of {len(questions)} from " if limit is not None else ""
    return questions, f"{sample}MultiTQ {part}"


def eval_cmd(
    ctx: typer.Context,
    split: Annotated[
        str,
        typer.Option(
            "--split", help="dev (10% of MultiTQ test; tune here), test (the other 90%; report once) or all."
        ),
    ] = "dev",
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", help="Evaluate a seeded random sample of N questions.")
    ] = None,
    labelled_only: Annotated[
        bool, typer.Option("--labelled-only", help="Only questions with official qtype labels.")
    ] = False,
    policy: PolicyOpt = "planner",
    mode: ModeOpt = "default",
    max_steps: StepsOpt = 20,
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    api_key: ApiKeyOpt = None,
    llm: LlmOpt = "smollm2",
    timeout: TimeoutOpt = 60.0,
    fewshot: FewshotOpt = True,
    abstain: AbstainOpt = True,
    compare: Annotated[
        bool,
        typer.Option("--compare/--no-compare", help="Score AT2QA's published answers on the same questions."),
    ] = True,
    per_question: Annotated[
        bool,
        typer.Option(
            "--rows/--no-rows",
            help="With --out x.json: include one row per question (question, "
            "gold, prediction, both metrics, AT2QA's answer), or only the tables (a summary file).",
        ),
    ] = True,
    kg: KgOpt = "multitq",
    slice_text: SliceOpt = None,
    store: StoreOpt = "numpy",
    db: DbOpt = None,
    ann: AnnOpt = "auto",
    encoder: EncoderOpt = "minilm",
    data_dir: DataDirOpt = None,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 1,
    log: LogOpt = None,
    out: OutOpt = None,
    retrieval: RetrievalOpt = False,
    backend: BackendOpt = "rules",
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="'agent' (--policy answers through the search tool) or 'gentkgqa' "
            "(stage-1 subgraph + the trained generator: --gnn, --generator, --variant).",
        ),
    ] = "agent",
    generator: GeneratorOpt = None,
    gnn: GnnOpt = None,
    variant: VariantOpt = "full",
) -> None:
    """Hits@1 on MultiTQ questions, strict (first answer exact) and lenient (AT2QA's substring rule).

    dev is a seeded 10% hash split of MultiTQ's *test* questions (MultiTQ's own dev questions are not
    in the data), and the KG (kg_partial) holds the facts AT2QA's agent retrieved on the test
    questions. Broken down by qtype, Single/Multiple, answer type and time granularity (official labels
    where the question is in labeled_500/3000, otherwise derived from the text: see the meta_source
    rows), with tool calls per question, step-cap hits and, with --compare, AT2QA's published answers
    scored the same way. With --slice: the questions the slice was cut for, on the slice. With
    --retrieval: GenTKGQA's subgraph retrieval instead (recall of an answer-bearing fact at n = 1, 3, 6, 10).
    --method gentkgqa: GenTKGQA's generator answers instead of the agent (--gnn, --generator, --variant).
    """
    from tkgqa.agent import write_trajectories
    from tkgqa.evaluate import evaluate
    from tkgqa.questions import load_reference

    started = time.perf_counter()
    set_threads(threads)
    check_method(ctx, method)
    if method == "gentkgqa":
        eval_gentkgqa(
            ctx, started, lambda: _questions(ctx, split, limit, labelled_only, seed, None, data_dir)
        )
        return
    if retrieval or given(ctx, "backend"):
        if not retrieval:
            raise ConfigError("--backend applies to --retrieval", hint="add --retrieval, or drop --backend")
        eval_retrieval(
            ctx, started, lambda c: _questions(ctx, split, limit, labelled_only, seed, c.slice_spec, data_dir)
        )
        return
    _check_policy(ctx, policy, max_steps=max_steps, base_url=base_url, llm=llm, timeout=timeout)
    check_choice(mode, MODES, "--mode")
    if given(ctx, "per_question") and (out is None or out.suffix.lower() != ".json"):
        raise ConfigError(
            "--rows/--no-rows shape the --out JSON file", hint="add --out FILE.json, or drop it"
        )
    choice = check_kg(ctx, kg, slice_text, store, db)
    questions, label = _questions(ctx, split, limit, labelled_only, seed, choice.slice_spec, data_dir)
    if split == "test" and choice.slice_spec is None:
        err_console.print("[yellow]evaluating on test: report it, do not tune on it[/]")
    rt = load_runtime(choice, data_dir, encoder, mode, ann=ann)
    if rt.kg_slice is not None:
        questions = rt.kg_slice.questions
    reference = load_reference(data_dir) if compare else None
    make, close = _policy(policy, rt, base_url, model, timeout, llm, fewshot, api_key, abstain)
    try:
        with progress_bar() as bar:
            task = bar.add_task(f"{policy} on {len(questions)} questions", total=len(questions))
            report = evaluate(questions, make, rt.tool, max_steps=max_steps, reference=reference,
                              progress=lambda d, t: bar.update(task, completed=d), keep_results=log is not None)  # fmt: skip
    finally:
        close()
    cols = ["group", "value", "n", "strict", "lenient", "tool_calls", "step_cap_hits", "repairs"]
    if policy == "planner":  # Hits@1 counting flagged questions wrong, withheld answers, flagged questions
        cols[5:5] = ["strict_abstaining", "abstained", "flagged"]
    console.print(render_table(f"tkgqa {policy} ({mode}) on {label}", report.table, columns=cols))
    overall = report.table[0]
    if overall["step_cap_hits"]:
        console.print(f"step-cap hits: {overall['step_cap_hits']}, scored as no answer (AT2QA's rule); their "
                      f"best-effort guesses would be right (strict) on {overall['best_effort_right']}")  # fmt: skip
    payload = {"meta": {}, "policy": policy, "mode": mode, "questions": label, "n": len(questions),
               "table": report.table}  # fmt: skip
    if per_question:
        payload["rows"] = report.rows
    if report.comparison:
        at = report.comparison["at2qa_table"]
        console.print(render_table("AT2QA published answers, same questions and metrics", at,
                                   columns=["group", "value", "n", "strict", "lenient", "published_correct",
                                            "tool_calls", "step_cap_hits"]))  # fmt: skip
        c = report.comparison
        console.print(f"per question (strict): both {c['both_strict']}, only ours {c['only_ours_strict']}, "
                      f"only AT2QA {c['only_at2qa_strict']}, neither {c['neither_strict']}")  # fmt: skip
        payload["comparison"] = c
    if log:
        write_trajectories(log, report.results)
        err_console.print(f"wrote {log}")
    payload["meta"] = run_meta(ctx, rt, started, threads=threads)
    write_out(out, payload, rows=report.table)


def replay(
    ctx: typer.Context,
    log: Annotated[Path, typer.Argument(help="A JSONL trajectory log from `tkgqa ask/eval --log`.")],
    mode: Annotated[
        str | None, typer.Option("--mode", help="Tool mode to replay under (default: the logged one).")
    ] = None,
    show: Annotated[
        bool, typer.Option("--show", help="Print every call with old and new hit line numbers.")
    ] = False,
    kg: KgOpt = "multitq",
    slice_text: SliceOpt = None,
    store: StoreOpt = "numpy",
    db: DbOpt = None,
    ann: AnnOpt = "auto",
    encoder: EncoderOpt = "minilm",
    data_dir: DataDirOpt = None,
    threads: ThreadsOpt = 1,
    out: OutOpt = None,
) -> None:
    """Re-run every logged tool call against the store and compare the hits with the logged ones."""
    from tkgqa.agent import read_trajectories
    from tkgqa.replay import replay_runs

    set_threads(threads)
    if mode is not None:
        check_choice(mode, MODES, "--mode")
    choice = check_kg(ctx, kg, slice_text, store, db)
    runs = read_trajectories(log)
    rt = load_runtime(choice, data_dir, encoder, mode or runs[0].get("mode") or "default", ann=ann)
    rows, details = replay_runs(runs, rt.tool)
    if show:
        for d in details:
            mark = "[green]same[/]" if d["same"] else "[red]differs[/]"
            console.print(f"{mark} q{d['quid']} {json.dumps(d['arguments'])}\n   logged {d['logged']}\n   now    {d['now']}",
                          highlight=False)  # fmt: skip
    console.print(render_table(f"replay of {log.name}", rows))
    write_out(out, {"rows": rows, "calls": details}, rows=rows)
