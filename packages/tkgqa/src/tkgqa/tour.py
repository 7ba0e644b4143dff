"""tkgqa's part of the effml tour: the planner on a synthetic MultiTQ, then on real MultiTQ dev questions."""

from __future__ import annotations

import random

__all__ = ["demo"]


def demo(*, quick: bool = False) -> list[dict]:
    """Synthetic benchmark, then a MultiTQ dev sample (cached MiniLM index, else the hashing encoder)."""
    from effcore.errors import DataNotFoundError
    from effcore.tour import TourSteps
    from tkgqa.embed import FactIndex, HashEncoder, MiniLMEncoder, index_dir, load_or_build_index
    from tkgqa.evaluate import evaluate
    from tkgqa.loaders import load_multitq_kg
    from tkgqa.planner import Planner
    from tkgqa.policies import PlannerPolicy
    from tkgqa.questions import load_questions
    from tkgqa.relations import RelationScorer
    from tkgqa.search import SearchTool
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
        cached = (index_dir(kg.digest, "all-MiniLM-L6-v2@64") / "manifest.json").is_file()
        # The tour never starts the MiniLM index build (5-20 min): it uses the index when `tkgqa index`
        # has cached it, else the model-free hashing encoder (weaker relation scores, said in the row).
        enc = MiniLMEncoder() if cached else HashEncoder()
        idx = load_or_build_index(kg, enc)
        sample = sorted(random.Random(0).sample(questions, 100 if quick else 500), key=lambda q: q.quid)
        planner = Planner(kg.entities.names, RelationScorer(kg.relations.names, enc))
        rep = evaluate(sample, lambda: PlannerPolicy(planner), SearchTool(kg, idx, enc))
        s = rep.summary()
        hint = "" if cached else " (run `tkgqa index` once for the MiniLM index)"
        return (f"{s['n']} MultiTQ dev questions ({enc.name}{hint}): strict {s['strict']:.3f}, "
                f"lenient {s['lenient']:.3f}, {s['tool_calls']:.2f} tool calls each")  # fmt: skip

    step("planner on a synthetic MultiTQ", synthetic)
    step("planner on MultiTQ dev (kg_partial)", multitq)
    return step.rows
