"""tkgqa's part of the effml tour: the planner on a synthetic MultiTQ, then on real MultiTQ dev questions."""

from __future__ import annotations

import random

__all__ = ["demo"]


def demo(*, quick: bool = False) -> list[dict]:
    """Synthetic benchmark, then real MultiTQ dev questions with the best index already cached.

    The MiniLM index of the whole KG (`tkgqa index`) with a seeded dev sample; else the MiniLM index
    of the CI slice (`tkgqa index --slice dev`) with its questions; else the model-free hashing
    encoder over the whole KG (weaker relation scores, said in the row). The tour never starts a
    MiniLM build.
    """
    from effcore.errors import DataNotFoundError
    from effcore.tour import TourSteps
    from tkgqa.embed import MINILM_NAME, HashEncoder, MiniLMEncoder
    from tkgqa.evaluate import evaluate
    from tkgqa.index import FactIndex, cached_index, load_or_build_index
    from tkgqa.loaders import load_multitq_kg
    from tkgqa.planner import Planner
    from tkgqa.policies import PlannerPolicy
    from tkgqa.questions import load_questions
    from tkgqa.relations import RelationScorer
    from tkgqa.search import SearchTool
    from tkgqa.slices import CI_SLICE, make_slice
    from tkgqa.synthetic import make_benchmark

    step = TourSteps("tkgqa")

    def synthetic() -> str:
        b = make_benchmark(seed=0)
        enc = HashEncoder()
        idx = FactIndex(
            enc.encode(b.store.texts()).astype("float16"), encoder_name=enc.name, kg_digest=b.store.digest
        )
        planner = Planner(b.store.entities.names, RelationScorer(b.store.relations.names, enc))
        rep = evaluate(b.questions, lambda: PlannerPolicy(planner), SearchTool(b.store, idx, enc))
        s = rep.summary()
        return f"{s['n']} synthetic questions (6 qtypes): strict Hits@1 {s['strict']:.3f}, {s['tool_calls']:.2f} tool calls each"

    def multitq() -> str:
        try:
            kg = load_multitq_kg()
            questions = load_questions(split="dev")
        except DataNotFoundError as err:
            return f"skipped: {err}"
        cut = make_slice(kg, questions, CI_SLICE) if cached_index(kg, MINILM_NAME) is None else None
        if cut is not None and cached_index(cut.store, MINILM_NAME) is not None:
            store, sample, enc = cut.store, cut.questions, MiniLMEncoder()
            what = f"the {len(sample)} MultiTQ dev questions of the {CI_SLICE} KG slice ({enc.name})"
        else:
            store = kg
            sample = sorted(random.Random(0).sample(questions, 100 if quick else 500), key=lambda q: q.quid)
            enc = HashEncoder() if cut is not None else MiniLMEncoder()
            hint = " (run `tkgqa index` once for the MiniLM index)" if cut is not None else ""
            what = f"{len(sample)} MultiTQ dev questions ({enc.name}{hint})"
        idx = load_or_build_index(store, enc)
        planner = Planner(store.entities.names, RelationScorer(store.relations.names, enc))
        rep = evaluate(sample, lambda: PlannerPolicy(planner), SearchTool(store, idx, enc))
        s = rep.summary()
        return (
            f"{what}: strict {s['strict']:.3f}, lenient {s['lenient']:.3f}, {s['tool_calls']:.2f} tool calls each"
            " (dev = 10% of MultiTQ's test questions; the KG holds the facts AT2QA retrieved on them)"
        )

    step("planner on a synthetic MultiTQ", synthetic)
    step("planner on MultiTQ dev (kg_partial)", multitq)
    return step.rows
