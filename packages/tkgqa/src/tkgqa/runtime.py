"""Wiring: KG + encoder + cached index + tool, and the policies the CLI and the tour build on them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from effcore.errors import ConfigError
from tkgqa.agent import Policy
from tkgqa.ann import ANN_MIN_FACTS, AnnIndex, load_or_build_ann
from tkgqa.embed import Encoder, get_encoder
from tkgqa.index import FactIndex, load_or_build_index
from tkgqa.loaders import load_kg
from tkgqa.search import SearchTool
from tkgqa.slices import KGSlice, SliceSpec, load_slice
from tkgqa.store import FactStore, kg_days

__all__ = [
    "ANN_CHOICES",
    "POLICIES",
    "STORES",
    "Runtime",
    "kg_days",
    "open_runtime",
    "open_store",
    "policy_factory",
]

POLICIES = ("planner", "openai", "local")
ANN_CHOICES = ("auto", "on", "off")
"""The approximate vector index: ``auto`` from :data:`tkgqa.ann.ANN_MIN_FACTS` facts up, always, or never."""
STORES = ("numpy", "duckdb")
"""KG back ends: the in-memory numpy store (default) and a DuckDB file written by ``tkgqa import``."""


@dataclass(kw_only=True, slots=True)
class Runtime:
    """Everything a question needs: the KG, its encoder and index, and the search tool over them.

    ``kg_slice`` is set when the KG is a slice of MultiTQ (its questions are the ones it was cut for).
    """

    store: FactStore
    encoder: Encoder
    index: FactIndex
    tool: SearchTool
    kg_slice: KGSlice | None = None
    ann: AnnIndex | None = None
    _planner: object = None

    def planner(self, *, abstain: bool = True, **config):
        """The deterministic planner over this KG (built once; ``config`` -> :class:`PlannerConfig`).

        ``abstain=False`` answers questions it would abstain on, still recording why (to measure the cost).
        """
        from tkgqa.abstain import AbstentionConfig
        from tkgqa.planner import Planner, PlannerConfig
        from tkgqa.relations import RelationScorer

        p = self._planner
        if p is None or config or p.abstention.enabled != abstain:
            scorer = RelationScorer(self.store.relations.names, self.encoder)
            self._planner = Planner(self.store.entities.names, scorer, PlannerConfig(**config),
                                    kg_days=kg_days(self.store), abstention=AbstentionConfig(enabled=abstain))  # fmt: skip
        return self._planner


def open_runtime(
    kg: str | Path = "multitq",
    *,
    slice_spec: SliceSpec | None = None,
    data_dir: str | Path | None = None,
    encoder: str = "minilm",
    mode: str = "default",
    rebuild: bool = False,
    progress: Callable[[int, int], None] | None = None,
    device: str = "cpu",
    store: str = "numpy",
    db: str | Path | None = None,
    ann: str = "auto",
    ann_progress: Callable[[int, int], None] | None = None,
) -> Runtime:
    """Load the KG (``multitq``, ``icews14`` or a TSV path; ``slice_spec`` cuts MultiTQ's), its encoder
    and its verified cached index (built when missing).

    ``store="duckdb"`` opens the database file ``db`` instead of loading ``kg`` (read-only); the index
    cache is keyed by the facts' digest, so a store imported from a TSV shares that TSV's index.
    ``ann`` (:data:`ANN_CHOICES`) adds the approximate index, kept in the index's folder (built when
    missing, reporting to ``ann_progress``); ``auto`` uses it from :data:`~tkgqa.ann.ANN_MIN_FACTS` facts up.
    """
    if ann not in ANN_CHOICES:
        raise ConfigError(f"unknown ann setting {ann!r}", hint=f"use one of {', '.join(ANN_CHOICES)}")
    facts, kg_slice = open_store(kg, slice_spec=slice_spec, data_dir=data_dir, store=store, db=db)
    enc = get_encoder(encoder, device=device)
    index = load_or_build_index(facts, enc, rebuild=rebuild, progress=progress)
    graph = None
    if ann == "on" or (ann == "auto" and len(facts) >= ANN_MIN_FACTS):
        graph = load_or_build_ann(index, progress=ann_progress)
    return Runtime(store=facts, encoder=enc, index=index, tool=SearchTool(facts, index, enc, mode=mode, ann=graph),
                   kg_slice=kg_slice, ann=graph)  # fmt: skip


def open_store(
    kg: str | Path = "multitq",
    *,
    slice_spec: SliceSpec | None = None,
    data_dir: str | Path | None = None,
    store: str = "numpy",
    db: str | Path | None = None,
) -> tuple[FactStore, KGSlice | None]:
    """The facts alone (no encoder, no index): ``kg`` in memory, a slice of MultiTQ's, or a DuckDB file."""
    kg_slice = None
    if store not in STORES:
        raise ConfigError(f"unknown store {store!r}", hint=f"use one of {', '.join(STORES)}")
    if (store == "duckdb") != (db is not None):
        raise ConfigError("a database path goes with store='duckdb', and only with it",
                          hint="pass both store='duckdb' and db=PATH, or neither")  # fmt: skip
    if store == "duckdb":
        from tkgqa.duckstore import DuckDBStore

        if slice_spec is not None:
            raise ConfigError("--slice cuts MultiTQ's in-memory KG; it does not apply to --store duckdb",
                              hint="write the slice to a database first, or drop --slice")  # fmt: skip
        facts = DuckDBStore(db)
    elif slice_spec is not None:
        if str(kg) != "multitq":
            raise ConfigError(f"--slice cuts MultiTQ's KG; it does not apply to --kg {kg}",
                              hint="drop --slice, or use --kg multitq")  # fmt: skip
        kg_slice = load_slice(slice_spec, data_dir)
        facts = kg_slice.store
    else:
        facts = load_kg(kg, data_dir)
    return facts, kg_slice


def policy_factory(
    name: str,
    runtime: Runtime,
    *,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    timeout: float = 60.0,
    llm: str = "smollm2",
    fewshot: bool = True,
    abstain: bool = True,
) -> tuple[Callable[[], Policy], Callable[[], None]]:
    """``(make_policy, close)`` for ``planner``, ``openai`` (any OpenAI-compatible server) or ``local``.

    ``local`` loads ``llm`` with transformers, serves it on a free loopback port (the same server as
    ``tkgqa serve-llm``) and talks to it over HTTP, so the client path is the one real servers get.
    """
    from tkgqa.policies import OpenAIChatPolicy, PlannerPolicy

    if name == "planner":
        planner = runtime.planner(abstain=abstain)
        return (lambda: PlannerPolicy(planner)), (lambda: None)
    if name == "openai":
        return (lambda: OpenAIChatPolicy(base_url=base_url, model=model, api_key=api_key, timeout=timeout,
                                         fewshot=fewshot)), (lambda: None)  # fmt: skip
    if name == "local":
        from tkgqa.llm import LocalChatModel
        from tkgqa.server import serve_in_thread

        chat = LocalChatModel(llm)
        server, url = serve_in_thread(chat.chat, model_name=llm)
        return (lambda: OpenAIChatPolicy(base_url=url, model=llm, timeout=max(timeout, 300.0),
                                         fewshot=fewshot)), server.shutdown  # fmt: skip
    raise ConfigError(f"unknown policy {name!r}", hint=f"use one of {', '.join(POLICIES)}")
