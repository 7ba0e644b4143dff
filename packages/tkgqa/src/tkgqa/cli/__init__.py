"""The ``tkgqa`` command line: index a temporal KG, search it, ask and evaluate agents, serve a local LLM."""

from __future__ import annotations

from effcore.cli import make_app
from tkgqa.cli._abstain import abstention, retrieve
from tkgqa.cli._agent import ask, eval_cmd, replay
from tkgqa.cli._gen import gen_pretrain, gen_questions
from tkgqa.cli._gen_lm import gen_ask, gen_train
from tkgqa.cli._import import import_cmd
from tkgqa.cli._kg import index, search
from tkgqa.cli._serve import serve_llm

__all__ = ["app"]

app = make_app(
    "tkgqa",
    "Temporal KG question answering with AT2QA's search agent on MultiTQ.\n\n"
    "  tkgqa index                                     # embed the 227,892 MultiTQ facts once (15-20 min, cached)\n\n"
    "  tkgqa index --slice dev                         # or a 40,000-fact slice for ~120 dev questions (minutes)\n\n"
    '  tkgqa search "visit China" -e "Barack Obama" --position front --sort time_asc\n\n'
    '  tkgqa ask "Who visited China on 8 May 2013?"    # the deterministic planner\n\n'
    "  tkgqa eval --split dev --out dev.json           # strict + lenient Hits@1, per type, vs AT2QA\n\n"
    "  (dev: a 10% hash split of MultiTQ's test questions; the KG holds the facts AT2QA retrieved on them)\n\n"
    "  tkgqa import facts.tsv --store duckdb --db kg.duckdb   # a large KG into an on-disk store (resumable)\n\n"
    "  tkgqa eval --store duckdb --db kg.duckdb --split dev -n 100\n\n"
    "  tkgqa serve-llm --llm smollm2                   # an OpenAI-compatible server on 127.0.0.1:8765\n\n"
    "  tkgqa eval -p openai --base-url http://127.0.0.1:8765/v1 -n 20 --log run.jsonl\n\n"
    "  tkgqa replay run.jsonl                          # re-run the logged tool calls, compare the hits\n\n"
    '  tkgqa retrieve "After Japan, who was the first to visit China?"   # GenTKGQA stage 1: the subgraph\n\n'
    "  tkgqa eval --retrieval --split dev              # its recall at n = 1, 3, 6, 10 by question type\n\n"
    "  tkgqa abstention                                # the planner on 64 out-of-scope questions\n\n"
    "  tkgqa gen-pretrain --kg icews14 --checkpoint gnn.pt   # GenTKGQA: the temporal GNN (link prediction)\n\n"
    "  tkgqa gen-questions --kg multitq --questions-out q.jsonl   # leak-filtered training questions\n\n"
    "  tkgqa gen-train --gnn gnn.pt --questions q.jsonl --checkpoint gen.pt   # LoRA + knowledge tokens\n\n"
    '  tkgqa gen-ask "Who visited China on 8 May 2013?" --gnn gnn.pt --generator gen.pt\n\n'
    "  tkgqa eval --method gentkgqa --gnn gnn.pt --generator gen.pt -n 20\n\n"
    "Data: --data-dir, $EFFML_DATA or ../shared/data (multitq/, icews14/). Caches: $EFFML_CACHE/tkgqa.",
)
app.command()(index)
app.command()(search)
app.command()(ask)
app.command("eval")(eval_cmd)
app.command()(replay)
app.command("import")(import_cmd)
app.command("serve-llm")(serve_llm)
app.command()(retrieve)
app.command()(abstention)
app.command("gen-pretrain")(gen_pretrain)
app.command("gen-questions")(gen_questions)
app.command("gen-train")(gen_train)
app.command("gen-ask")(gen_ask)
