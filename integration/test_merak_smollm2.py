"""merak end to end on SmolLM2-135M and WikiText-2: partitioned from the meta device, and a 2-rank
gloo pipeline step (Merak's shifted critical path with stage-aware recomputation) equal to one process."""

from __future__ import annotations

import pytest
import torch

from effcore.testing.distributed import launch

pytestmark = [pytest.mark.integration, pytest.mark.distributed]

SEQ, MICRO = 64, 4


@pytest.fixture(scope="module")
def blocks():
    from effcore.assets import data_dir, load_text, load_tokenizer
    from effcore.errors import DataNotFoundError
    from effcore.lm import token_blocks

    try:
        data_dir()
    except DataNotFoundError as err:
        pytest.skip(str(err))
    ids = load_tokenizer("smollm2")(load_text("wikitext2", "test", max_chars=20_000))["input_ids"]
    return token_blocks(torch.tensor(ids), block_size=SEQ, max_blocks=MICRO)


def test_smollm2_partitions_into_balanced_stages_without_weights():
    from effcore.device import known_spec
    from merak.capture import capture
    from merak.models import load_model
    from merak.plan import plan_pipeline

    model = load_model("smollm2", weights=False)
    plan = plan_pipeline(capture(model, (1, 512)), 4, recompute_ratio=0.5, spec=known_spec("H100"))
    times = [st.time_s for st in plan.stages]
    assert len(plan.shards) == 32, "one shard per block, plus embedding and head"
    assert max(times) / min(times) < 1.2, "the time DP balances SmolLM2's stages"
    assert all(p.is_meta for p in model.parameters())


def _pipeline(rank: int, world: int, blocks):
    from merak.models import load_model
    from merak.parallel import parallelize

    pm = parallelize(load_model("smollm2"), (1, 1, world), microbatch=(1, SEQ), microbatches=MICRO,
                     schedule="shifted-critical-path", recompute_ratio=0.5)  # fmt: skip
    loss = pm.train_step(blocks, blocks)
    return (None if loss is None else loss.item()), pm.full_tensors(grads=True)


def test_a_pipeline_step_on_smollm2_equals_one_process(blocks):
    from merak.models import load_model
    from merak.parallel import causal_lm_loss

    runs = launch(_pipeline, 2, blocks, timeout_s=900)
    model = load_model("smollm2")
    loss = sum(
        causal_lm_loss(model(input_ids=blocks[i : i + 1]).logits, blocks[i : i + 1]) for i in range(MICRO)
    )
    (loss / MICRO).backward()
    ref = {n: p.grad for n, p in model.named_parameters()}
    ref["lm_head.weight"] = ref["model.embed_tokens.weight"]  # tied
    assert next(r[0] for r in runs if r[0] is not None) == pytest.approx(loss.item() / MICRO, rel=1e-5)
    covered = set()
    for _, grads in runs:
        for name, grad in grads.items():
            torch.testing.assert_close(grad, ref[name], rtol=1e-4, atol=1e-5, msg=name)
            covered.add(name)
    assert covered == set(ref)
