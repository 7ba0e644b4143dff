"""GRASS under DDP at world 2 (gloo) equals one process: the same layers sampled from the MGN measured
on the all-reduced gradients, the same losses, the same weights up to reduction order.

Why ``atol=1e-4`` on the weights: AdamW divides by ``sqrt(v) + eps``, so where a gradient is ~0 a
1e-9 difference from the order of the all-reduce becomes a visible fraction of one ``lr=1e-3`` step.
Full fine-tuning under DDP against one process shows the same (9e-5 on the embeddings, measured).
A NaN loss on one rank stops every rank at that step (the GRASS launch checks it too)."""

from __future__ import annotations

import pytest
import torch

from effcore.testing.distributed import launch
from grass.checkpoint import CHECKPOINT
from grass.config import RunConfig
from grass.train import TrainingError, run

pytestmark = pytest.mark.distributed

_CFG = dict(method="grass", model="tiny:llama", task="shakespeare", steps=6, batch=4, seq_len=32,
            probe_steps=2, sample_period=2, update_period=2, gamma=2, train_limit=64, lr=1e-3)  # fmt: skip


def _rank(rank: int, world: int, out: str, method: str, nan_dir: str | None = None) -> list[str]:
    result = run(
        RunConfig(**{**_CFG, "method": method}), device="cpu", run_dir=out, eval_limit=2, measure_memory=False
    )
    if nan_dir is not None:
        # only rank 1's loss turns NaN: both ranks must stop at that step, not rank 0 hang in backward
        cfg = RunConfig(
            **{**_CFG, "method": method, "steps": 4, "save_every": 2}, nan_at_step=2 if rank == 1 else None
        )
        with pytest.raises(TrainingError, match=r"loss is nan at step 3: .*summed over the ranks"):
            run(cfg, device="cpu", run_dir=nan_dir, eval_limit=2, measure_memory=False)
    return [(str(r.get("active")), r["loss"]) for r in result.rows]


@pytest.mark.parametrize("method", ["grass", "lisa-keep"])
def test_ddp_world_2_equals_one_process(tmp_path, method):
    nan_dir = tmp_path / "nan" if method == "grass" else None
    ranks = launch(_rank, 2, str(tmp_path / "ddp"), method, nan_dir and str(nan_dir), timeout_s=600)
    single = _rank(0, 1, str(tmp_path / "one"), method)
    assert [a for a, _ in ranks[0]] == [a for a, _ in single], "DDP sampled other layers than one process"
    assert ranks[0] == ranks[1], "the ranks disagree"
    for (_, x), (_, y) in zip(ranks[0], single, strict=True):
        assert abs(x - y) < 1e-5
    a = torch.load(tmp_path / "ddp" / CHECKPOINT, weights_only=False)["model_state"]
    b = torch.load(tmp_path / "one" / CHECKPOINT, weights_only=False)["model_state"]
    for name, tensor in a.items():
        torch.testing.assert_close(tensor, b[name], rtol=1e-4, atol=1e-4, msg=name)
    if nan_dir is not None:
        assert torch.load(nan_dir / CHECKPOINT, weights_only=False)["step"] == 2, (
            "the last good checkpoint is lost"
        )


def _trainer_rank(rank: int, world: int, out: str) -> tuple[list[float], list[str], bool]:
    import os

    from accelerate.state import AcceleratorState
    from transformers import TrainingArguments

    from effcore.testing.tiny import tiny_model
    from grass.hf import GrassTrainer
    from grass.sampler import GrassSampler, GrassSettings

    # what torchrun would set; the process group is already up, so accelerate joins it
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT="29500")  # fmt: skip
    AcceleratorState._reset_state(True)  # a state inherited from the parent is single-process
    gen = torch.Generator().manual_seed(0)
    rows = [{"input_ids": ids, "labels": ids} for ids in torch.randint(3, 128, (32, 8), generator=gen)]
    model = tiny_model("llama").train()
    settings = GrassSettings(gamma=1, probe_steps=2, sample_period=1, update_period=1)
    sampler = GrassSampler(model.config.num_hidden_layers, settings, seed=0)
    args = TrainingArguments(
        output_dir=out, max_steps=6, per_device_train_batch_size=2, learning_rate=1e-3, lr_scheduler_type="constant",
        save_strategy="no", report_to=[], logging_strategy="no", use_cpu=True, disable_tqdm=True,
        dataloader_num_workers=0,
    )  # fmt: skip
    trainer = GrassTrainer(model=model, args=args, train_dataset=rows, sampler=sampler)
    trainer.train()
    wrapped = isinstance(trainer.model_wrapped, torch.nn.parallel.DistributedDataParallel)
    return sampler.mgn.tolist(), [str(h["probabilities"]) for h in sampler.history], wrapped


def test_grass_trainer_under_ddp_measures_the_all_reduced_gradient(tmp_path):
    """Each rank sees other rows; measured on the local gradients, the ranks' MGN (and so their
    samples) would differ. Read from DDP's all-reduce they are the same on every rank."""
    ranks = launch(_trainer_rank, 2, str(tmp_path), timeout_s=600)
    assert ranks[0][2] and ranks[1][2], "the Trainer did not run the model in DDP"
    assert ranks[0][0] == ranks[1][0], "the ranks measured different MGN"
    assert ranks[0][1] == ranks[1][1], "the ranks' sampling probabilities differ"
