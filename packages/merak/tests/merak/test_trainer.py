"""MerakTrainer trains as HF's single-process Trainer does: same losses and gradient norms per step.

The module docstring of ``merak.trainer`` holds a single-process HF script and its merak version;
both are executed here: the first in this process (the reference), the second on four gloo ranks
set up as torchrun sets them up (RANK, WORLD_SIZE, LOCAL_RANK... in the environment). The same
launch trains on mesh (1, 2, 2) with a checkpoint at step 2, and resumes that checkpoint on mesh
(2, 2, 1). Tiny Llama with AdamW (no weight decay), gradient clipping at HF's default norm 1.0
(active: the norms are ~2): per-step losses agree to rel 1e-5 and gradient norms to rel 1e-4 (the
ranks sum in another order; measured differences are ~1e-7).
"""

from __future__ import annotations

import difflib
import os
import re
import textwrap
from pathlib import Path

import pytest
import torch

import merak.trainer
from effcore.errors import ConfigError
from effcore.testing.distributed import launch
from effcore.testing.tiny import tiny_model
from merak.trainer import MerakArguments

pytestmark = pytest.mark.distributed

ROWS, SEQ, STEPS = 32, 16, 3
# learning rate high enough that three steps move the loss; clipping (max_grad_norm=1.0) stays on
SETTINGS = dict(max_steps=STEPS, logging_steps=1, learning_rate=1e-3, report_to="none", save_strategy="no",
                disable_tqdm=True, weight_decay=0.0, dataloader_pin_memory=False)  # fmt: skip


def _examples() -> list[str]:
    """The code blocks (after ``::``) of merak.trainer's docstring: the HF script, then merak's."""
    return [textwrap.dedent(b) for b in re.findall(r"::\n\n((?:    .*\n|\n)+)", merak.trainer.__doc__)]


def _model():
    # Llama, not GPT-2: HF's Trainer counts GPT2LMHeadModel's tokens without the label shift
    # (its loss_type is None), which scales its loss by (seq - 1) / seq
    return tiny_model("llama", num_hidden_layers=4, tie_word_embeddings=True, num_key_value_heads=4).train()


def _dataset():
    ids = torch.randint(0, 128, (ROWS, SEQ), generator=torch.Generator().manual_seed(3))
    return [{"input_ids": row, "labels": row.clone()} for row in ids]


def _history(trainer) -> dict[int, tuple[float, float]]:
    return {h["step"]: (h["loss"], h["grad_norm"]) for h in trainer.state.log_history if "loss" in h}


def _rank(rank: int, world: int, root: Path):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT="29500", OMP_NUM_THREADS="1")  # fmt: skip
    from merak.trainer import MerakArguments, MerakTrainer

    example = {"model": _model(), "dataset": _dataset(), "out": root / "example", "settings": SETTINGS}
    exec(_examples()[1], example)  # mesh (dp, tp, pp) = (2, 1, 2)

    def run(mesh, out, **extra):
        args = MerakArguments(output_dir=str(out), per_device_train_batch_size=2, microbatches=4 // mesh[0],
                              dp=mesh[0], tp=mesh[1], pp=mesh[2], **{**SETTINGS, **extra})  # fmt: skip
        return MerakTrainer(model=_model(), args=args, train_dataset=_dataset())

    saving = run((1, 2, 2), root / "saving", save_strategy="steps", save_steps=2)
    saving.train()
    resumed = run((2, 2, 1), root / "resumed")
    resumed.train(resume_from_checkpoint=str(root / "saving" / "checkpoint-2"))
    return {
        "example": _history(example["trainer"]),
        "saving": _history(saving),
        "resumed": _history(resumed),
        "world": (example["trainer"].args.world_size, example["trainer"].args.parallel_mode.value),
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("trainer")


@pytest.fixture(scope="module")
def runs(root):
    return launch(_rank, 4, root, timeout_s=600)


@pytest.fixture(scope="module")
def reference(runs, root):
    """HF's single-process run of the docstring's first script (after the launch: fork a clean process)."""
    example = {"model": _model(), "dataset": _dataset(), "out": root / "reference", "settings": SETTINGS}
    exec(_examples()[0], example)
    return _history(example["trainer"])


def _close(history, reference, steps) -> None:
    for step in steps:
        loss, norm = history[step]
        assert loss == pytest.approx(reference[step][0], rel=1e-5), f"loss at step {step}"
        assert norm == pytest.approx(reference[step][1], rel=1e-4), f"grad norm at step {step}"


def test_docstring_script_changes_in_three_lines():
    hf, merak_script = (e.strip().splitlines() for e in _examples())
    changed = [ln for ln in difflib.unified_diff(hf, merak_script, lineterm="", n=0) if ln[:1] == "+"]
    assert len(changed) - 1 == 3, changed  # the first "+" line is the diff's header


def test_launched_like_torchrun_every_rank_is_one_distributed_process(runs):
    assert all(r["world"] == (4, "distributed") for r in runs)


def test_docstring_example_matches_single_process_trainer(runs, reference):
    assert sorted(reference) == list(range(1, STEPS + 1))
    for r in runs:
        _close(r["example"], reference, range(1, STEPS + 1))


def test_tensor_and_pipeline_parallel_run_matches_single_process_trainer(runs, reference):
    for r in runs:
        _close(r["saving"], reference, range(1, STEPS + 1))


def test_checkpoint_resumes_on_another_mesh(runs, reference, root):
    checkpoint = root / "saving" / "checkpoint-2"
    assert (checkpoint / "merak" / "merak.json").is_file() and (checkpoint / "config.json").is_file()
    for r in runs:
        _close(r["resumed"], reference, [STEPS])


def test_saved_checkpoint_is_a_plain_hf_model(runs, reference, root):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(root / "saving" / "checkpoint-2")
    assert type(model).__name__ == "LlamaForCausalLM"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("gradient_accumulation_steps", 2, "the pipeline accumulates"),
        ("schedule", "zigzag", "unknown schedule 'zigzag'"),
        ("partition", "random", "unknown partition 'random'"),
        ("dp", 0, "dp must be >= 1"),
        ("eval_strategy", "steps", "does not support eval_strategy"),
    ],
)
def test_arguments_reject_what_merak_does_not_run(field, value, message, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(message)):
        MerakArguments(output_dir=str(tmp_path), **{field: value})
