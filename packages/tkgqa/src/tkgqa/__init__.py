"""tkgqa: temporal knowledge-graph question answering, AT2QA's search agent on MultiTQ.

The KG store (``tkgqa.store``; on DuckDB ``tkgqa.duckstore``; loaders in ``tkgqa.loaders``, slices in ``tkgqa.slice``), encoders
(``tkgqa.embed``), the fact index (``tkgqa.index``), the ``vector_search`` tool (``tkgqa.search``), the agent loop (``tkgqa.agent``) with its policies
(``tkgqa.policies``: planner and OpenAI-compatible client; ``tkgqa.llm`` and ``tkgqa.server`` for a
local model), the deterministic planner (``tkgqa.planner``) and evaluation (``tkgqa.evaluate``).
Names resolve lazily, so ``import tkgqa`` is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from effcore.lazy import lazy_getattr

if TYPE_CHECKING:
    from tkgqa.agent import AgentResult, Policy, run_agent
    from tkgqa.duckstore import DuckDBStore
    from tkgqa.embed import HashEncoder, MiniLMEncoder
    from tkgqa.evaluate import EvalReport, evaluate
    from tkgqa.index import FactIndex, load_or_build_index
    from tkgqa.loaders import load_icews14, load_kg, load_multitq_kg, load_tsv
    from tkgqa.metrics import lenient_correct, strict_correct
    from tkgqa.names import NameIndex, UnknownNameError
    from tkgqa.planner import Planner, PlannerConfig
    from tkgqa.policies import OpenAIChatPolicy, PlannerPolicy
    from tkgqa.questions import Question, load_questions
    from tkgqa.runtime import Runtime, open_runtime
    from tkgqa.search import SearchTool, ToolError, tool_schema
    from tkgqa.store import Fact, FactStore, TemporalKG

__version__ = "0.1.0"

_LAZY: dict[str, str] = {}
for _module, _names in {
    "tkgqa.store": ("Fact", "FactStore", "TemporalKG"),
    "tkgqa.duckstore": ("DuckDBStore",),
    "tkgqa.names": ("NameIndex", "UnknownNameError"),
    "tkgqa.loaders": ("load_icews14", "load_kg", "load_multitq_kg", "load_tsv"),
    "tkgqa.embed": ("HashEncoder", "MiniLMEncoder"),
    "tkgqa.index": ("FactIndex", "load_or_build_index"),
    "tkgqa.search": ("SearchTool", "ToolError", "tool_schema"),
    "tkgqa.agent": ("AgentResult", "Policy", "run_agent"),
    "tkgqa.policies": ("OpenAIChatPolicy", "PlannerPolicy"),
    "tkgqa.planner": ("Planner", "PlannerConfig"),
    "tkgqa.questions": ("Question", "load_questions"),
    "tkgqa.metrics": ("lenient_correct", "strict_correct"),
    "tkgqa.evaluate": ("EvalReport", "evaluate"),
    "tkgqa.runtime": ("Runtime", "open_runtime"),
}.items():  # fmt: skip
    _LAZY.update(dict.fromkeys(_names, _module))

__all__ = [  # noqa: RUF022 -- grouped by submodule
    # store and loaders
    "Fact",
    "FactStore",
    "TemporalKG",
    "DuckDBStore",
    "NameIndex",
    "UnknownNameError",
    "load_icews14",
    "load_kg",
    "load_multitq_kg",
    "load_tsv",
    # retrieval
    "FactIndex",
    "HashEncoder",
    "MiniLMEncoder",
    "load_or_build_index",
    "SearchTool",
    "ToolError",
    "tool_schema",
    # agent and policies
    "AgentResult",
    "Policy",
    "run_agent",
    "OpenAIChatPolicy",
    "PlannerPolicy",
    "Planner",
    "PlannerConfig",
    # questions and evaluation
    "Question",
    "load_questions",
    "lenient_correct",
    "strict_correct",
    "EvalReport",
    "evaluate",
    # wiring
    "Runtime",
    "open_runtime",
    # version
    "__version__",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
