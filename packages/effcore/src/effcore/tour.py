"""effcore's part of the effml tour: the machine, an offline model, its perplexity and its profile."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["TourSteps", "demo"]


class TourSteps:
    """The rows of one package's tour demo (``tools/tour.py`` prints them): ``steps(name, fn)`` runs
    ``fn()``, records its result and seconds under ``name``, and returns the result."""

    def __init__(self, package: str) -> None:
        self.package = package
        self.rows: list[dict[str, Any]] = []

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        result = fn()
        self.rows.append(
            {"package": self.package, "step": name, "result": result, "seconds": time.perf_counter() - t0}
        )
        return result


def demo(*, quick: bool = False) -> list[dict]:
    """Run effcore's headline steps on embedded defaults; one summary row per step."""
    from effcore.assets import load_causal_lm, load_text, prepare_model
    from effcore.cli._common import progress_bar, stage_reporter
    from effcore.cli._profile import run_profile
    from effcore.device import device_spec
    from effcore.lm import perplexity, token_blocks

    step = TourSteps("effcore")

    def spec() -> str:
        s = device_spec()
        return (
            f"{s.name[:40]}: {s.flops('float32') / 1e9:.0f} GFLOP/s fp32, {s.memory_bandwidth / 1e9:.0f} GB/s"
        )

    def prepare() -> str:
        with progress_bar(transient=True) as bar:
            folder = prepare_model("smollm2", progress=stage_reporter(bar, "smollm2"))
        return f"verified cache at {folder}"

    state: dict = {}

    def ppl() -> str:
        model, tok = load_causal_lm("smollm2")
        state["model"] = model
        text = load_text("wikitext2", "test", max_chars=60_000)
        blocks = token_blocks(
            tok(text, return_tensors="pt").input_ids[0], block_size=256, max_blocks=2 if quick else 8
        )
        r = perplexity(model, blocks)
        return f"SmolLM2-135M WikiText-2 test perplexity {r.perplexity:.2f} over {r.tokens} tokens"

    def prof() -> str:
        _, summary = run_profile(
            model="smollm2", seq_len=128, batch=1, repeats=4 if quick else 12, device="auto"
        )
        return (
            f"per-layer sum {summary['sum_rows_ms']:.1f} ms vs whole model {summary['whole_model_ms']:.1f} ms "
            f"(ratio {summary['ratio']:.3f})"
        )

    step("device spec", spec)
    step("prepare SmolLM2 (GGUF -> safetensors cache)", prepare)
    step("perplexity", ppl)
    step("profile", prof)
    return step.rows
