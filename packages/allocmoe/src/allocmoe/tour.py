"""allocmoe's part of the effml tour: Alloc-L + Alloc-T at half budget.

On the built SmolLM2-MoE when ``allocmoe build-model`` has cached it (real text, real quality numbers);
otherwise on a tiny random Qwen2-MoE (random tokens: it shows the machinery, not quality).
"""

from __future__ import annotations

__all__ = ["demo"]


def demo(*, quick: bool = False) -> list[dict]:
    """Profile, allocate and evaluate at half budget; one summary row per step."""
    import torch

    from allocmoe.adapters import find_moe_layers, model_k_orig
    from allocmoe.alloc_l import profile_sensitivity
    from allocmoe.budget import ActivationBudget
    from allocmoe.evaluation import evaluate
    from effcore.tour import TourSteps

    step = TourSteps("allocmoe")
    state: dict = {}

    def load() -> str:
        model = tok = None
        if not quick:
            from allocmoe.build import load_moe
            from effcore.errors import AssetError

            try:
                model, tok = load_moe(None)
            except AssetError:
                model = None
        if model is None:
            from effcore.testing.tiny import tiny_model

            model = tiny_model("qwen2_moe")
        layers = find_moe_layers(model)
        state.update(model=model, tok=tok, L=len(layers), K=model_k_orig(model, layers))
        kind = (
            "built SmolLM2-MoE" if tok is not None else "tiny random Qwen2-MoE (build-model for the real one)"
        )
        return f"{kind}: {state['L']} MoE layers, top-{state['K']} of {layers[0].num_experts} experts"

    def blocks(split: str, n: int, size: int) -> torch.Tensor:
        if state["tok"] is None:
            g = torch.Generator().manual_seed(0 if split == "calib" else 1)
            return torch.randint(3, 128, (n, size), generator=g)
        from allocmoe.data import text_blocks

        return text_blocks(state["tok"], split, blocks=n, block_size=size)

    def profile() -> str:
        real = state["tok"] is not None
        calib = blocks("calib", 1 if real else 4, 64 if real else 32)  # 180 entries on the real model
        prof = profile_sensitivity(state["model"], calib)
        state["prof"] = prof
        return f"S(i,k) for {prof.num_layers}x{prof.k_orig} entries in {prof.meta['profile_seconds']:.1f} s"

    def compare() -> str:
        L, K, m = state["L"], state["K"], state["model"]
        half = L * K // 2
        test = blocks("test", 2 if state["tok"] is not None else 4, 256 if state["tok"] is not None else 32)
        full = evaluate(m, test, ActivationBudget.full_budget(L, K))
        uni = evaluate(m, test, ActivationBudget.spread(L, K, half, k_base=None))
        ours = evaluate(m, test, state["prof"].allocate(half, k_base=1))
        return (
            f"ppl full {full.perplexity:.2f} | B={half}: uniform {uni.perplexity:.2f}, "
            f"Alloc-MoE {ours.perplexity:.2f} ({ours.activations_per_token:.1f} activations/token)"
        )

    step("load MoE", load)
    step("Alloc-L sensitivity profile (prefix cache)", profile)
    step("half budget: uniform vs Alloc-MoE", compare)
    return step.rows
