"""Every (dp, tp, pp) mesh of world 4 trains tiny Llama and GPT-2 exactly as one process does.

One gloo launch runs every configuration (a launch costs seconds of imports); each rank returns its
losses and whole gradients, compared here with a single-process run over the same micro-batches.
"""

from __future__ import annotations

import pytest
import torch

from effcore.testing.distributed import launch
from effcore.testing.tiny import tiny_model
from merak.parallel import causal_lm_loss

pytestmark = pytest.mark.distributed

BATCH, SEQ = 8, 16
# model, mesh (dp, tp, pp), schedule, recompute ratio, micro-batch size, sub-pipelined TP:
# every mesh of world 4 on both models, every schedule, and the TP overlap on both models
CONFIGS = [
    ("llama", (1, 1, 4), "shifted-critical-path", 0.5, 1, False),
    ("llama", (1, 2, 2), "1f1b", 0.5, 1, False),
    ("llama", (2, 1, 2), "pre-recompute", 0.5, 1, False),
    ("llama", (2, 2, 1), "1f1b", None, 1, False),
    ("llama", (1, 4, 1), "gpipe", None, 1, False),
    ("llama", (4, 1, 1), "torch-1f1b", None, 1, False),
    ("gpt2", (1, 1, 4), "torch-gpipe", None, 1, False),
    ("gpt2", (1, 2, 2), "shifted-critical-path", 0.5, 1, False),
    ("gpt2", (2, 1, 2), "last-no-recompute", 0.5, 1, False),
    ("gpt2", (2, 2, 1), "gpipe", 0.5, 1, False),
    ("gpt2", (1, 4, 1), "1f1b", None, 1, False),
    ("gpt2", (4, 1, 1), "pre-recompute", None, 1, False),
    ("llama", (1, 2, 2), "1f1b", None, 2, True),
    ("gpt2", (2, 2, 1), "1f1b", 0.5, 2, True),
]


def _model(family: str):
    # 4 heads and 4 kv heads so tp=4 divides them; tied embeddings cross the first and last stage
    extra = {"num_key_value_heads": 4} if family == "llama" else {}
    return tiny_model(family, num_hidden_layers=4, tie_word_embeddings=True, **extra).train()


def _batch():
    ids = torch.randint(0, 128, (BATCH, SEQ), generator=torch.Generator().manual_seed(1))
    return ids, ids.clone()


def _reference(family: str, mb: int):
    model = _model(family)
    ids, labels = _batch()
    total = 0.0
    for i in range(0, BATCH, mb):
        loss = causal_lm_loss(model(input_ids=ids[i : i + mb]).logits, labels[i : i + mb]) / (BATCH // mb)
        loss.backward()
        total += loss.item()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    tied = "model.embed_tokens.weight" if family == "llama" else "transformer.wte.weight"
    grads["lm_head.weight"] = grads[tied]
    return total, grads


def _rank(rank: int, world: int, configs):
    from merak.parallel import parallelize

    results = []
    for family, mesh, schedule, ratio, mb, overlap in configs:
        dp = mesh[0]
        pm = parallelize(_model(family), mesh, microbatch=(mb, SEQ), microbatches=BATCH // dp // mb,
                         schedule=schedule, recompute_ratio=ratio, tp_overlap=overlap)  # fmt: skip
        coord = pm.mesh["dp"].get_local_rank()
        ids, labels = _batch()
        rows = slice(coord * BATCH // dp, (coord + 1) * BATCH // dp)
        loss = pm.train_step(ids[rows], labels[rows])
        results.append((None if loss is None else loss.item(), pm.full_tensors(grads=True)))
    return results


@pytest.fixture(scope="module")
def runs():
    return launch(_rank, 4, CONFIGS, timeout_s=600)


_IDS = [f"{c[0]}-{c[1]}-{c[2]}" + ("-overlap" if c[5] else "") for c in CONFIGS]


@pytest.mark.parametrize("index", range(len(CONFIGS)), ids=_IDS)
def test_mesh_matches_single_process_loss_and_gradients(runs, index):
    family, mesh, _, _, mb, _ = CONFIGS[index]
    ref_loss, ref_grads = _reference(family, mb)
    losses = [r[index][0] for r in runs if r[index][0] is not None]
    assert len(losses) == mesh[0] * mesh[1], "one loss per last-stage rank"
    # each data-parallel rank reports the mean over its micro-batches; their mean is the batch's
    per_dp = sorted(set(round(x, 6) for x in losses))
    assert sum(per_dp) / len(per_dp) == pytest.approx(ref_loss, abs=1e-5)
    covered = set()
    for rank_results in runs:
        for name, grad in rank_results[index][1].items():
            torch.testing.assert_close(grad, ref_grads[name], rtol=1e-5, atol=1e-6, msg=name)
            covered.add(name)
    assert covered == set(ref_grads), "every parameter is trained by some rank"


@pytest.fixture
def fake_world():
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", rank=0, world_size=4, store=FakeStore())
    yield
    dist.destroy_process_group()


def test_a_mesh_that_does_not_match_the_world_is_an_error(fake_world):
    from effcore.errors import ConfigError
    from merak.parallel import make_mesh

    with pytest.raises(ConfigError, match=r"needs 2 ranks but the world has 4"):
        make_mesh((1, 2, 1))
    with pytest.raises(ConfigError, match="three positive sizes"):
        make_mesh((2, 2))


def test_a_meta_model_is_refused_with_the_fix(fake_world):
    from effcore.errors import ConfigError
    from merak.models import load_model
    from merak.parallel import parallelize

    with pytest.raises(ConfigError, match="meta device"):
        parallelize(load_model("tiny:llama", weights=False), (1, 1, 4), microbatch=(1, 8), microbatches=4)
