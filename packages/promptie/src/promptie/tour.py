"""promptie's part of the effml tour: prompts composed from fragments, constrained slot filling on SmolLM2
with the prefix KV cache shared (same output as without), and the metrics on real CoNLL04 sentences."""

from __future__ import annotations

__all__ = ["demo"]


def demo(*, quick: bool = False) -> list[dict]:
    """Runs on the bundled schemas and SmolLM2-135M-Instruct (untrained for IE: a smoke demo, not a result)."""
    import time

    from effcore.errors import DataNotFoundError
    from effcore.tour import TourSteps
    from promptie.backbone import load_backbone
    from promptie.data import load_dataset, subsample
    from promptie.extractor import ExtractConfig, Extractor
    from promptie.metrics import score_documents
    from promptie.prompts import compose
    from promptie.schema import load_schema

    step = TourSteps("promptie")
    casie = load_schema("casie")

    def prompts() -> str:
        p = compose(casie, "Ransom", "composable")
        shared = sum(
            f"{{{r}}}" in compose(casie, t, "composable").text for t in casie.events for r in p.slots[1:]
        )
        return f"Ransom from {len(p.slots) - 1} role fragments ({shared} role uses across CASIE's 5 types): {p.text[:70]}..."

    state: dict = {}

    def reuse() -> str:
        bb = load_backbone("smollm2", device="cpu")
        state["bb"] = bb
        text = "Hackers stole the passwords of 2 million Target customers in December 2013."
        cfg = dict(mode="composable", max_new_tokens=16 if quick else 32)
        ours, ref = (
            Extractor(bb, casie, ExtractConfig(**cfg)),
            Extractor(bb, casie, ExtractConfig(**cfg, shared_prefix=False)),
        )
        t0 = time.perf_counter()
        a = ours.extract(text)
        t1 = time.perf_counter()
        b = ref.extract(text)
        t2 = time.perf_counter()
        same = a.events == b.events
        found = sum(len(e.arguments) + len(e.triggers) for e in a.events)
        return (f"5 CASIE prompts on one sentence: shared prefix + batch {t1 - t0:.1f} s vs one at a time "
                f"{t2 - t1:.1f} s; identical output: {same}; {found} spans, all from the text")  # fmt: skip

    def metrics() -> str:
        try:
            docs = subsample(load_dataset("conll04", "test"), limit=2 if quick else 4)
        except DataNotFoundError as err:
            return f"skipped: {err}"
        ex = Extractor(state["bb"], load_schema("conll04"), ExtractConfig(mode="specific", max_new_tokens=16))
        preds = [ex.extract(d.text) for d in docs]
        s = score_documents(preds, docs, metrics=("entity",))["entity"]
        return f"untrained SmolLM2 on {len(docs)} CoNLL04 test sentences: entity F1 {s.f1:.3f} (train with `promptie train`)"

    step("prompt composition (CASIE)", prompts)
    step("constrained decoding, prefix KV reuse", reuse)
    step("metrics on CoNLL04", metrics)
    return step.rows
