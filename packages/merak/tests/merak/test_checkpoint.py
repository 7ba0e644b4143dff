"""A checkpoint saved on one mesh resumes the run exactly, on the same mesh and on another one.

One gloo launch of world 4 trains tiny GPT-2 (fused q/k/v: the tensor-parallel permutation is the
hard case) for two AdamW steps on mesh (dp, tp, pp) = (1, 2, 2), saves, exports an HF folder, then
runs two more steps. Fresh models (other seeds, other optimizer settings) on (1, 2, 2) and on
(2, 2, 1) load the checkpoint: their parameters equal the saved ones bit for bit, and their next two
losses equal the original run's (the second one depends on the restored AdamW state). The parent
process checks the exported and the offline-converted HF folders against the pipeline's logits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from effcore.testing.distributed import launch
from effcore.testing.tiny import tiny_model
from merak.checkpoint import MANIFEST, CheckpointError, read_manifest, to_hf

pytestmark = pytest.mark.distributed

BATCH, SEQ, MB = 8, 16, 2
SAVED_AT = 2
MESH_A, MESH_B = (1, 2, 2), (2, 2, 1)


def _model(seed: int):
    return tiny_model("gpt2", seed=seed, num_hidden_layers=4, tie_word_embeddings=True).train()


def _batch(step: int):
    ids = torch.randint(0, 128, (BATCH, SEQ), generator=torch.Generator().manual_seed(100 + step))
    return ids, ids.clone()


def _train(pm, opt, steps) -> list[float | None]:
    dp, coord = pm.mesh["dp"].size(), pm.mesh["dp"].get_local_rank()
    losses = []
    for step in steps:
        ids, labels = _batch(step)
        rows = slice(coord * BATCH // dp, (coord + 1) * BATCH // dp)
        loss = pm.train_step(ids[rows], labels[rows])
        opt.step()
        opt.zero_grad()
        losses.append(None if loss is None else loss.item())
    return losses


def _errors(*calls) -> list[str]:
    out = []
    for call in calls:
        with pytest.raises(CheckpointError) as err:
            call()
        out.append(str(err.value))
    return out


def _rank(rank: int, world: int, root: Path):
    import torch.distributed as dist

    from merak.checkpoint import export_hf, load, save
    from merak.parallel import parallelize

    def fresh(mesh, seed):
        pm = parallelize(_model(seed), mesh, microbatch=(MB, SEQ), microbatches=BATCH // mesh[0] // MB)
        return pm, torch.optim.AdamW(pm.parameters(), lr=1e-2, weight_decay=0.0)

    out: dict = {}
    pm, opt = fresh(MESH_A, seed=0)
    out["train"] = _train(pm, opt, range(SAVED_AT))
    save(pm, root / "ck", optimizer=opt, step=SAVED_AT)
    # a save that fails (one optimizer state DCP cannot pickle) leaves the old checkpoint in place
    opt.state[pm.parameters()[0]]["poison"] = lambda: None
    with pytest.raises(CheckpointError) as failed:
        save(pm, root / "ck", optimizer=opt, step=99)
    out["failed_save"] = str(failed.value)
    del opt.state[pm.parameters()[0]]["poison"]
    out["saved"] = pm.full_tensors()
    export_hf(pm, root / "hf")
    ids, labels = _batch(9)
    last = pm.is_last
    out["logits"] = pm.schedule.eval(*((ids,) if pm.stage.is_first else ()), target=labels if last else None,
                                     losses=[] if last else None)  # fmt: skip
    out["cont"] = _train(pm, opt, range(SAVED_AT, SAVED_AT + 2))

    for mesh in (MESH_A, MESH_B):
        pm, opt = fresh(mesh, seed=1)
        for group in opt.param_groups:  # the checkpoint's hyperparameters replace these
            group.update(lr=1e-4, weight_decay=0.5)
        step = load(pm, root / "ck", optimizer=opt)
        out[mesh] = (step, pm.full_tensors(), _train(pm, opt, range(SAVED_AT, SAVED_AT + 2)))

    if rank == 0:  # the same checkpoint, claiming a config with a larger vocabulary
        shutil.copytree(root / "ck", root / "other")
        manifest = json.loads((root / "other" / MANIFEST).read_text())
        manifest["config"]["vocab_size"] = 256
        manifest["params"]["transformer.wte.weight"] = [256, 64]
        (root / "other" / MANIFEST).write_text(json.dumps(manifest))
    dist.barrier()
    out["errors"] = _errors(
        lambda: load(pm, root / "missing"),
        lambda: load(pm, root / "other"),
        lambda: load(pm, root / "ck", optimizer=torch.optim.SGD(pm.parameters(), lr=0.1)),
        lambda: save(pm, root / "ck" / MANIFEST),
    )
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("checkpoint")


@pytest.fixture(scope="module")
def runs(root):
    return launch(_rank, 4, root, timeout_s=600)


def _losses(runs, key, index=None) -> list[float]:
    """Per step, the batch's loss: the mean over the data-parallel ranks' (last-stage) losses."""
    values = [r[key] if index is None else r[key][index] for r in runs]
    per_rank = [v for v in values if v[0] is not None]
    return [sum(step) / len(step) for step in zip(*{tuple(v) for v in per_rank}, strict=True)]


def _saved(runs) -> dict[str, torch.Tensor]:
    return {name: t for r in runs for name, t in r["saved"].items()}


def test_save_writes_a_manifest_of_mesh_stages_and_step(runs, root):
    manifest = read_manifest(root / "ck")
    assert (manifest.step, manifest.optimizer, manifest.model_class) == (SAVED_AT, "AdamW", "GPT2LMHeadModel")
    assert manifest.mesh == dict(zip(("dp", "tp", "pp"), MESH_A, strict=True))
    assert len(manifest.stages) == MESH_A[2]
    assert set().union(*manifest.stages) == set(manifest.params) == set(_saved(runs))
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")], "no temporary folder is left"


def test_failed_save_keeps_the_previous_checkpoint(runs, root):
    assert all(r["failed_save"] == runs[0]["failed_save"] for r in runs), "every rank raises the same error"
    assert "Can't pickle" in runs[0]["failed_save"] and "\n" not in runs[0]["failed_save"]
    assert read_manifest(root / "ck").step == SAVED_AT


@pytest.mark.parametrize("mesh", [MESH_A, MESH_B], ids=["same-mesh", "other-mesh"])
def test_load_restores_parameters_exactly(runs, mesh):
    saved = _saved(runs)
    for r in runs:
        step, params, _ = r[mesh]
        assert step == SAVED_AT
        for name, value in params.items():
            torch.testing.assert_close(value, saved[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("mesh", [MESH_A, MESH_B], ids=["same-mesh", "other-mesh"])
def test_resumed_run_continues_with_the_original_losses(runs, mesh):
    # the first loss needs the parameters only, the second also the restored AdamW state; another
    # mesh sums gradients in another order, so it agrees to float32 rounding, not bit for bit
    expected = _losses(runs, "cont")
    assert _losses(runs, mesh, 2) == pytest.approx(expected, rel=1e-6, abs=0 if mesh == MESH_A else 2e-6)


def test_exported_hf_folder_gives_the_pipeline_logits(runs, root):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(root / "hf").eval()
    saved = _saved(runs)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.detach(), saved[name], rtol=0, atol=0, msg=name)
    with torch.no_grad():
        logits = model(_batch(9)[0]).logits
    pipeline = [r["logits"] for r in runs if r["logits"] is not None]
    assert len(pipeline) == MESH_A[1]
    for theirs in pipeline:
        torch.testing.assert_close(theirs, logits, rtol=1e-5, atol=1e-5)


def test_offline_conversion_equals_the_live_export(runs, root, tmp_path):
    from safetensors.torch import load_file

    to_hf(root / "ck", tmp_path / "hf")
    offline = load_file(tmp_path / "hf" / "model.safetensors")
    live = {k: v for f in (root / "hf").glob("*.safetensors") for k, v in load_file(f).items()}
    assert offline.keys() == live.keys()
    for name, value in offline.items():
        torch.testing.assert_close(value, live[name], rtol=0, atol=0, msg=name)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]


def test_bad_checkpoints_are_one_line_errors(runs, root, tmp_path):
    missing, other, optimizer, onto_file = runs[0]["errors"]
    assert all(r["errors"] == runs[0]["errors"] for r in runs), "every rank raises the same error"
    assert "no checkpoint at" in missing
    assert "different model (vocab_size=256 there, 128 here)" in other
    assert "holds AdamW, not SGD state" in optimizer
    assert "it is a file" in onto_file
    broken = tmp_path / "broken"
    shutil.copytree(root / "ck", broken)
    text = (broken / MANIFEST).read_text()
    (broken / MANIFEST).write_text(text[: len(text) // 2])
    (tmp_path / "no-metadata").mkdir()
    (tmp_path / "no-metadata" / MANIFEST).write_text(text)
    errors = []
    for folder in (broken, tmp_path / "no-metadata", tmp_path):
        with pytest.raises(CheckpointError) as err:
            to_hf(folder, tmp_path / "out")
        errors.append(str(err.value))
    assert "merak.json is damaged" in errors[0]
    assert "no DCP metadata" in errors[1]
    assert "is not a merak checkpoint" in errors[2]
    assert all("\n" not in e for e in [*errors, *runs[0]["errors"]])
    assert not (tmp_path / "out").exists()
