"""``tkgqa ask``, ``tkgqa eval`` and ``tkgqa replay``: run the agent, score it, re-run its tool calls."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Annotated

import typer

from effcore.cli import (
    DataDirOpt,
    OutOpt,
    SeedOpt,
    console,
    err_console,
    progress_bar,
    render_table,
    write_out,
)
from effcore.errors import ConfigError
from tkgqa.cli._shared import EncoderOpt, KgOpt, ModeOpt, PolicyOpt, ThreadsOpt, load_runtime, set_threads

__all__ = ["ask", "eval_cmd", "replay"]

BaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8765/v1 ($TKGQA_BASE_URL)."
    ),
]
ModelOpt = Annotated[
    str | None, typer.Option("--model", help="Model name sent to the server ($TKGQA_MODEL).")
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="OPENAI_API_KEY",
        show_default=False,
        help="Bearer token for the server ($OPENAI_API_KEY).",
    ),
]
LlmOpt = Annotated[str, typer.Option("--llm", help="Local model for --policy local: smollm2 or gemma3-270m.")]
StepsOpt = Annotated[
    int, typer.Option("--max-steps", help="Assistant turns before a best-effort answer (AT2QA: 20).")
]
LogOpt = Annotated[
    Path | None,
    typer.Option("--log", help="Write every trajectory as JSONL (replay it with `tkgqa replay`)."),
]
FewshotOpt = Annotated[
    bool,
    typer.Option(
        "--fewshot/--zero-shot", help="LLM prompt: AT2QA's rules + 3 examples + 2 notes, or the rules only."
    ),
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds per LLM request before giving up.")]


def _policy(policy, rt, base_url, model, timeout, llm, fewshot=True, api_key=None):
    from tkgqa.runtime import policy_factory

    return policy_factory(
        policy, rt, base_url=base_url, model=model, api_key=api_key, timeout=timeout, llm=llm, fewshot=fewshot
    )


def ask(
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
    show: Annotated[
        bool, typer.Option("--show/--quiet", help="Print each tool call and its first hits.")
    ] = True,
    kg: KgOpt = "multitq",
    encoder: EncoderOpt = "minilm",
    data_dir: DataDirOpt = None,
    threads: ThreadsOpt = 1,
    log: LogOpt = None,
    out: OutOpt = None,
) -> None:
    """Answer one question with the agent loop and show its trajectory."""
    from tkgqa.agent import run_agent, write_trajectories

    set_threads(threads)
    rt = load_runtime(kg, data_dir, encoder, mode)
    make, close = _policy(policy, rt, base_url, model, timeout, llm, fewshot, api_key)
    try:
        res = run_agent(question, make(), rt.tool, max_steps=max_steps)
    finally:
        close()
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
    flag = " [yellow](best effort: step cap reached)[/]" if res.best_effort else ""
    console.print(f"[bold]answer:[/] {', '.join(res.answers) or '(none)'}{flag}  "
                  f"[dim]({res.tool_calls} tool calls, {res.seconds:.1f}s)[/]", highlight=False)  # fmt: skip
    if log:
        write_trajectories(log, [res])
    write_out(out, res.to_dict())


def eval_cmd(
    split: Annotated[
        str, typer.Option("--split", help="dev (tune here), test (report once) or all.")
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
    compare: Annotated[
        bool,
        typer.Option("--compare/--no-compare", help="Score AT2QA's published answers on the same questions."),
    ] = True,
    kg: KgOpt = "multitq",
    encoder: EncoderOpt = "minilm",
    data_dir: DataDirOpt = None,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 1,
    log: LogOpt = None,
    out: OutOpt = None,
) -> None:
    """Hits@1 on MultiTQ questions, strict (first answer exact) and lenient (AT2QA's substring rule).

    Broken down by qtype, Single/Multiple, answer type and time granularity (official labels where the
    question is in labeled_500/3000, otherwise derived from the text: see the meta_source rows), with tool
    calls per question, step-cap hits and, with --compare, AT2QA's published answers scored the same way.
    """
    from tkgqa.agent import write_trajectories
    from tkgqa.evaluate import evaluate
    from tkgqa.questions import load_questions, load_reference

    set_threads(threads)
    questions = load_questions(data_dir, split=split, labelled_only=labelled_only)
    if not questions:
        raise ConfigError(f"no questions in split {split!r}", hint="check --split and --labelled-only")
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {limit}")
        questions = sorted(
            random.Random(seed).sample(questions, min(limit, len(questions))), key=lambda q: q.quid
        )
    if split != "dev":
        err_console.print(f"[yellow]evaluating on {split}: report it, do not tune on it[/]")
    rt = load_runtime(kg, data_dir, encoder, mode)
    reference = load_reference(data_dir) if compare else None
    make, close = _policy(policy, rt, base_url, model, timeout, llm, fewshot, api_key)
    try:
        with progress_bar() as bar:
            task = bar.add_task(f"{policy} on {split}", total=len(questions))
            report = evaluate(questions, make, rt.tool, max_steps=max_steps, reference=reference,
                              progress=lambda d, t: bar.update(task, completed=d), keep_results=log is not None)  # fmt: skip
    finally:
        close()
    cols = ["group", "value", "n", "strict", "lenient", "tool_calls", "step_cap_hits", "repairs"]
    console.print(render_table(f"tkgqa {policy} ({mode}) on MultiTQ {split}", report.table, columns=cols))
    payload = {"policy": policy, "mode": mode, "split": split, "n": len(questions), "table": report.table,
               "rows": report.rows}  # fmt: skip
    if report.comparison:
        at = report.comparison["at2qa_table"]
        console.print(render_table("AT2QA published answers, same questions and metrics", at,
                                   columns=["group", "value", "n", "strict", "lenient", "published_correct", "tool_calls"]))  # fmt: skip
        c = report.comparison
        console.print(f"per question (strict): both {c['both_strict']}, only ours {c['only_ours_strict']}, "
                      f"only AT2QA {c['only_at2qa_strict']}, neither {c['neither_strict']}")  # fmt: skip
        payload["comparison"] = c
    if log:
        write_trajectories(log, report.results)
        err_console.print(f"wrote {log}")
    write_out(out, payload, rows=report.table)


def replay(
    log: Annotated[Path, typer.Argument(help="A JSONL trajectory log from `tkgqa ask/eval --log`.")],
    mode: Annotated[
        str | None, typer.Option("--mode", help="Tool mode to replay under (default: the logged one).")
    ] = None,
    show: Annotated[
        bool, typer.Option("--show", help="Print every call with old and new hit line numbers.")
    ] = False,
    kg: KgOpt = "multitq",
    encoder: EncoderOpt = "minilm",
    data_dir: DataDirOpt = None,
    threads: ThreadsOpt = 1,
    out: OutOpt = None,
) -> None:
    """Re-run every logged tool call against the store and compare the hits with the logged ones."""
    from tkgqa.agent import read_trajectories
    from tkgqa.replay import replay_runs

    set_threads(threads)
    runs = read_trajectories(log)
    rt = load_runtime(kg, data_dir, encoder, mode or (runs[0].get("mode") if runs else None) or "default")
    rows, details = replay_runs(runs, rt.tool)
    if show:
        for d in details:
            mark = "[green]same[/]" if d["same"] else "[red]differs[/]"
            console.print(f"{mark} q{d['quid']} {json.dumps(d['arguments'])}\n   logged {d['logged']}\n   now    {d['now']}",
                          highlight=False)  # fmt: skip
    console.print(render_table(f"replay of {log.name}", rows))
    write_out(out, {"rows": rows, "calls": details}, rows=rows)
