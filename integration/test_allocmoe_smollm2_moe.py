"""End to end on the built SmolLM2-MoE (skipped with a reason until `allocmoe build-model` has run).

The build takes about 10 minutes on 2 CPU cores, so CI does not run it; on a machine where the model is
cached this checks the real model under the real budgets.
"""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def built():
    from allocmoe.build import load_moe
    from effcore.errors import AssetError, DataNotFoundError

    try:
        model, tok = load_moe(None)
    except (AssetError, DataNotFoundError) as err:
        pytest.skip(f"the SmolLM2-MoE is not built on this machine (run `allocmoe build-model`): {err}")
    return model, tok


@pytest.fixture(scope="module")
def test_blocks(built):
    from allocmoe.data import text_blocks
    from effcore.errors import DataNotFoundError

    try:
        return text_blocks(built[1], "test", blocks=2, block_size=128)
    except DataNotFoundError as err:
        pytest.skip(f"WikiText-2 is not available: {err}")


def test_full_budget_path_equals_transformers(built, test_blocks):
    from allocmoe import ActivationBudget, budgeted, find_moe_layers

    model, _ = built
    L, K = len(find_moe_layers(model)), model.config.num_experts_per_tok
    with torch.inference_mode():
        ref = model(input_ids=test_blocks).logits
        with budgeted(model, ActivationBudget.full_budget(L, K)):
            ours = model(input_ids=test_blocks).logits
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_half_budget_spends_exactly_half_and_stays_sane(built, test_blocks):
    from allocmoe import ActivationBudget, evaluate, find_moe_layers

    model, _ = built
    L, K = len(find_moe_layers(model)), model.config.num_experts_per_tok
    full = evaluate(model, test_blocks, ActivationBudget.full_budget(L, K))
    half = evaluate(model, test_blocks, ActivationBudget.spread(L, K, L * K // 2, k_base=1))
    assert half.activations_per_token == pytest.approx(L * K / 2)
    assert math.isfinite(half.perplexity) and full.perplexity <= half.perplexity < 3 * full.perplexity
