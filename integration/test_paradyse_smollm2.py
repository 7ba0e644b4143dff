"""paradyse on SmolLM2-135M and WikiText-2: the real weights in the shard layout; a training step under
each strategy and a mixed plan, on 3 gloo ranks (SmolLM2 has 9 heads and 3 KV heads), gives
transformers' loss and gradients on one process."""

from __future__ import annotations

import pytest
import torch

from effcore.testing.distributed import launch

pytestmark = [pytest.mark.integration, pytest.mark.distributed]

PER_RANK, WORLD = 32, 3
PLANS = ["megatron", "ulysses", "ring", "metp", ("megatron",) * 15 + ("metp",) * 15]


@pytest.fixture(scope="module")
def ids():
    from effcore.assets import data_dir, load_text, load_tokenizer
    from effcore.errors import DataNotFoundError

    try:
        data_dir()
    except DataNotFoundError as err:
        pytest.skip(str(err))
    tokens = load_tokenizer("smollm2")(load_text("wikitext2", "test", max_chars=20_000))["input_ids"]
    return torch.tensor(tokens[: PER_RANK * WORLD + 1])[None]


def _errors(rank: int, p: int, ids: torch.Tensor) -> dict[str, dict[str, float]]:
    from effcore.assets import load_causal_lm
    from paradyse.hf import LAYER_PARTS, load_hf
    from paradyse.weights import SHARD_DIM

    hf, _ = load_causal_lm("smollm2", device="cpu")
    s = ids.shape[1] - 1
    ref = hf(input_ids=ids, labels=ids).loss
    ref.backward()
    ref = ref.detach()
    sl = slice(rank * (s // p), (rank + 1) * (s // p))
    out = {}
    for plan in PLANS:
        lm = load_hf(hf, name="smollm2")
        loss = lm.loss(ids[:, :s][:, sl], ids[:, 1:][:, sl], plan, total_tokens=s)
        loss.backward()
        lm.finish_grads()
        total = loss.detach().clone()
        torch.distributed.all_reduce(total)

        def rel(a, b):
            return float((a - b).abs().max() / b.abs().max())

        worst = max(
            rel(lm.embed.grad, hf.model.embed_tokens.weight.grad),
            rel(lm.norm.grad, hf.model.norm.weight.grad),
        )
        for layer, blk in zip(hf.model.layers, lm.stack.blocks, strict=True):
            for path, name in LAYER_PARTS.items():
                want = layer.get_submodule(path).weight.grad
                dim = SHARD_DIM[name]
                worst = max(
                    worst, rel(getattr(blk, name).grad, want if dim is None else want.chunk(p, dim)[rank])
                )
        out[str(plan)[:40]] = {"loss": abs(float(total) - float(ref)) / float(ref), "grad": worst,
                               "value": float(total)}  # fmt: skip
        del lm
    return out


def test_a_smollm2_training_step_under_each_plan_equals_transformers(ids):
    results = launch(_errors, WORLD, ids, timeout_s=900)
    for plan in results[0]:
        loss = max(r[plan]["loss"] for r in results)
        grad = max(r[plan]["grad"] for r in results)
        print(
            f"{plan}: loss {results[0][plan]['value']:.4f}, relative error {loss:.1e}, gradients {grad:.1e}"
        )
        assert loss < 1e-5 and grad < 1e-4, (
            f"{plan}: relative error of the loss {loss:.2e}, gradients {grad:.2e}"
        )


def test_smollm2_shards_over_a_degree_dividing_its_9_heads_and_3_kv_heads_only():
    from effcore.assets import load_causal_lm
    from paradyse.config import PlanError
    from paradyse.hf import config_from_hf

    hf, _ = load_causal_lm("smollm2", device="cpu")
    cfg = config_from_hf(hf.config, name="smollm2")
    cfg.check_degree(3)
    with pytest.raises(PlanError, match="heads=9, kv_heads=3 not divisible by the parallel degree 2"):
        cfg.check_degree(2)
