"""The paradyse CLI: planning and simulation in-process; profile and train under a real torchrun."""

from __future__ import annotations

import json
import time

import pytest
import torch

from effcore.device import cuda_available
from effcore.testing.cli import cli_fails, cli_ok
from paradyse.cli import app
from paradyse.config import MODELS
from paradyse.costmodel import Profile, hardware_id


def _ok(args):
    return cli_ok(app, args).output


def _fails(args, match, code=2):
    return cli_fails(app, args, match, code=code).output


@pytest.fixture
def profile_file(tmp_path):
    cfg = MODELS["tiny"]
    pts = [{"strategy": k, "seq_len": s, "layer_time_s": a + b * s, "iqr_s": 0.0, "activation_bytes": 0,
            "activation_bytes_analytic": 0}
           for k, a, b in (("megatron", 1e-3, 1e-6), ("ulysses", 2e-3, 8e-7), ("ring", 2e-3, 9e-7), ("metp", 5e-3, 1e-6))
           for s in (16, 32, 64, 128)]  # fmt: skip
    return Profile(hardware=hardware_id("gloo"), world_size=2, batch=1, model=cfg, points=pts).save(
        tmp_path / "profile.json"
    )


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("To be, or not to be, that is the question.\n" * 300)
    return path


def test_help_lists_the_commands():
    out = _ok(["--help"])
    for command in ("profile", "plan", "simulate", "train"):
        assert command in out


def test_plan_prints_the_plan_and_writes_json(profile_file, tmp_path):
    out = _ok(
        [
            "plan",
            "-p",
            str(profile_file),
            "--seq-len",
            "64",
            "--memory-cap",
            "1GiB",
            "-o",
            str(tmp_path / "p.json"),
        ]
    )
    assert "plan:" in out and "megatron x2" in out
    assert json.loads((tmp_path / "p.json").read_text())["plan"] == ["megatron", "megatron"]
    assert "plan:" in _ok(["plan", "-p", str(profile_file), "--seq-len", "64", "--planner", "paradyse"])


def test_bad_input_fails_in_one_line(profile_file, tmp_path):
    _fails(["plan", "-p", str(tmp_path / "none.json")], "not found")
    _fails(
        ["plan", "-p", str(profile_file), "--seq-len", "63"], "63 is not divisible by the parallel degree 2"
    )
    _fails(["plan", "-p", str(profile_file), "--seq-len", "1048576", "--memory-cap", "64MiB"],
           "needs")  # fmt: skip
    _fails(["plan", "-p", str(profile_file), "--memory-cap", "lots"], "cannot read a memory size")
    _fails(["plan", "-p", str(profile_file), "--planner", "greedy"], "is not adaptive or paradyse")
    _fails(["profile", "-m", "tiny", "--nproc", "3"], "not divisible by the parallel degree 3")
    _fails(["train", "-m", "tiny", "-p", str(profile_file), "--nproc", "4"], "measured on 2 ranks, not 4")
    _fails(["simulate", "-m", "paper-7b", "--gpus", "24"], "not divisible by the parallel degree 24")


# Each of these would start torchrun (seconds) or write results if it were not refused first.
TRAIN = ["train", "-m", "tiny", "--nproc", "2", "--min-len", "16", "--max-len", "64"]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["profile", "-m", "tiny", "--nproc", "2", "--repeats", "0"], "--repeats must be >= 1, got 0"),
        (["profile", "-m", "tiny", "--nproc", "2", "--seq-lens", "16,32,32"], "at least 3 different lengths"),
        (
            ["profile", "-m", "tiny", "--nproc", "2", "--strategies", "ring", "--switch"],
            "--switch needs at least 2",
        ),
        (["simulate", "--memory-cap", "0GiB"], "--memory-cap must be positive, got '0GiB'"),
        (["simulate", "--margin", "80GiB"], "--margin 80GiB leaves nothing"),
        (["simulate", "--samples", "0"], "--samples must be >= 1, got 0"),
        (["simulate", "--hysteresis", "-0.1"], "--hysteresis must be >= 0"),
        (
            ["simulate", "--distribution", "uniform", "--median", "8192"],
            "applies to the longtail and bimodal",
        ),
        (["simulate", "--hardware", "calibrated"], "needs --profile and --memory-cap"),
        ([*TRAIN, "--steps", "0"], "--steps must be >= 1, got 0"),
        ([*TRAIN, "--mode", "megatron", "--hysteresis", "0.05"], "applies to --mode adaptive only"),
        ([*TRAIN, "--memory-cap", "1GiB", "--margin", "1GiB"], "leaves nothing of --memory-cap"),
        ([*TRAIN, "--mode", "zigzag"], "unknown mode 'zigzag'"),
        (["simulate", "--strict"], "--strict applies with --hysteresis > 0 only"),
        ([*TRAIN, "--strict"], "--strict applies with --hysteresis > 0 only"),
    ],
)
def test_degenerate_and_inapplicable_options_are_refused_before_any_work(profile_file, args, match):
    _fails([*args, "-p", str(profile_file)] if args[0] == "train" else args, match)


def test_an_empty_corpus_is_refused_before_the_ranks_start(profile_file, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    _fails([*TRAIN, "-p", str(profile_file), "--corpus", str(tmp_path / "empty.txt")], "is empty")
    _fails([*TRAIN, "-p", str(profile_file), "--corpus", "nosuchcorpus"], "unknown corpus")


def test_overlap_and_ring_layout_must_match_the_profile_and_be_valid(profile_file):
    _fails([*TRAIN, "-p", str(profile_file), "--overlap"], "model differs in overlap")
    _fails([*TRAIN, "-p", str(profile_file), "--ring-layout", "zigzag"], "model differs in ring_layout")
    _fails(
        ["profile", "-m", "tiny", "--nproc", "2", "--ring-layout", "spiral"],
        "ring_layout='spiral' is not one of",
    )
    _fails(["profile", "-m", "tiny", "--nproc", "2", "--ring-layout", "zigzag", "--seq-lens", "16,32,34"],
           "sequence length 34 is not divisible by 4: a zigzag ring's shards hold two chunks")  # fmt: skip


def test_train_refuses_a_profile_of_another_model(profile_file):
    # the profile was measured on `tiny`; training `small` with it would plan with the wrong times
    _fails(["train", "-m", "small", "-p", str(profile_file), "--nproc", "2"], "model differs in hidden")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["profile", "-m", "tiny", "--nproc", "2", "-o", "{tmp}/prof.txt"], "unsupported extension '.txt'"),
        (["profile", "-m", "tiny", "--nproc", "2", "--plot", "{tmp}/d.png"], "is a directory"),
        (["simulate", "--plot", "{tmp}/sim.jpg"], "unsupported extension '.jpg'"),
        (["simulate", "-o", "{tmp}/f.txt/sim.json"], "is a file, not a folder"),
        (["plan", "-p", "{profile}", "-o", "{tmp}/plan.yaml"], "unsupported extension '.yaml'"),
        (
            [*TRAIN, "-p", "{profile}", "--log", "{tmp}/log.json"],
            "--log {tmp}/log.json: unsupported extension",
        ),
        ([*TRAIN, "-p", "{profile}", "-o", "{tmp}/d.json"], "is a directory"),
    ],
)
def test_a_bad_output_path_fails_before_any_work(profile_file, tmp_path, args, match):
    (tmp_path / "f.txt").write_text("")
    (tmp_path / "d.png").mkdir()
    (tmp_path / "d.json").mkdir()
    fill = {"tmp": str(tmp_path), "profile": str(profile_file)}
    _fails([a.format(**fill) for a in args], match.format(**fill))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "d.png", "f.txt", "profile.json"]


def test_a_sequence_no_plan_can_hold_names_the_memory_needed(profile_file):
    out = _fails(
        ["plan", "-p", str(profile_file), "--seq-len", "1048576", "--memory-cap", "64MiB"], "GiB per rank"
    )
    assert "leanest plan" in out and "the cap is 0.06 GiB" in out


def test_simulate_reproduces_the_qualitative_result(tmp_path):
    out = _ok(["simulate", "-m", "paper-7b", "--gpus", "32", "--samples", "20", "--plot", str(tmp_path / "s.png"),
               "-o", str(tmp_path / "s.json")])  # fmt: skip
    assert "adaptive (hysteresis 0): slower than the fastest static strategy" in " ".join(out.split())
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["distribution"]["summary"]["adaptive"]["oom"] == 0
    assert data["distribution"]["summary"]["adaptive"]["slower_than_best_static"] == 0
    assert data["distribution"]["margin"] == 512 * 2**20 and data["distribution"]["hysteresis"] == 0
    assert (tmp_path / "s.png").stat().st_size > 1000


@pytest.mark.distributed
def test_train_under_torchrun_switches_and_logs(profile_file, corpus, tmp_path):
    log = tmp_path / "steps.jsonl"
    out = _ok(["train", "-m", "tiny", "-p", str(profile_file), "--nproc", "2", "--steps", "4", "--min-len", "16",
               "--max-len", "128", "--corpus", str(corpus), "--memory-cap", "1GiB", "--log", str(log)])  # fmt: skip
    assert "4 steps ran" in out
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert all(r["plan"] and r["loss"] > 0 and r["seq_len"] % 2 == 0 for r in records)


def _faulty_train(profile_file, corpus, tmp_path, fault: str, match: str) -> str:
    t0 = time.perf_counter()
    out = _fails([*TRAIN, "-p", str(profile_file), "--steps", "20", "--corpus", str(corpus), "--log",
                  str(tmp_path / "l.jsonl"), "--fail-at", fault, "--timeout", "120", "--rank-timeout", "3"],
                 match)  # fmt: skip
    assert time.perf_counter() - t0 < 90, "the surviving rank must not hang"
    return out


@pytest.mark.distributed
def test_a_rank_that_dies_stops_the_job_in_bounded_time(profile_file, corpus, tmp_path):
    # the peer that lost contact is not the root cause, whichever torchrun observed first
    out = _faulty_train(profile_file, corpus, tmp_path, "1:2:exit",
                        "error: rank 1 died with exit code 17 without reporting an error")  # fmt: skip
    assert "lost contact" not in out


@pytest.mark.distributed
def test_an_error_in_a_ranks_step_is_shown_as_that_error(profile_file, corpus, tmp_path):
    out = _faulty_train(profile_file, corpus, tmp_path, "1:1:error",
                        "error: rank 1: failed: RuntimeError: ")  # fmt: skip
    assert "mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)" in out and "lost contact" not in out


@pytest.mark.distributed
def test_a_rank_that_stops_answering_is_a_timeout(profile_file, corpus, tmp_path):
    out = _faulty_train(profile_file, corpus, tmp_path, "1:1:hang",
                        "error: rank 0: timed out after 3 s waiting for another rank")  # fmt: skip
    assert "--rank-timeout" in out


@pytest.mark.distributed
def test_profile_under_torchrun_writes_a_loadable_profile(tmp_path):
    out_file = tmp_path / "prof.json"
    _ok(["profile", "-m", "tiny", "--nproc", "2", "--seq-lens", "16,32,48", "--repeats", "1", "--no-switch",
         "-o", str(out_file)])  # fmt: skip
    prof = Profile.load(out_file)
    assert prof.world_size == 2 and len(prof.points) == 12
    assert all(pt["activation_bytes"] == pt["activation_bytes_analytic"] for pt in prof.points)


def test_a_backend_the_device_cannot_run_is_refused(profile_file):
    _fails(["profile", "-m", "tiny", "--nproc", "2", "--device", "cpu", "--backend", "nccl"],
           "--backend nccl needs --device cuda")  # fmt: skip
    _fails(
        [*TRAIN, "-p", str(profile_file), "--device", "cpu", "--backend", "mpi"], "unknown --backend 'mpi'"
    )
    _fails([*TRAIN, "-p", str(profile_file), "--device", "tpu"], "unknown device 'tpu'")


@pytest.mark.skipif(cuda_available(), reason="checks the message on a machine without a GPU")
def test_cuda_on_a_machine_without_gpus_is_refused(profile_file):
    _fails(["profile", "-m", "tiny", "--nproc", "2", "--device", "cuda"], "no CUDA device is available")
    _fails([*TRAIN, "-p", str(profile_file), "--device", "cuda", "--backend", "nccl"], "no CUDA device")


@pytest.fixture
def two_gpus(monkeypatch):
    """Pretend the machine has two GPUs: the checks run before any rank (or CUDA call) starts."""
    import paradyse.placement as placement

    monkeypatch.setattr(placement, "infer_device", lambda requested: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_gpu_counts_and_backends_on_cuda_are_checked_before_any_rank_starts(two_gpus, profile_file):
    _fails(["profile", "-m", "tiny", "--nproc", "3", "--device", "cuda"], "heads=8, kv_heads=4, ffn=128 not divisible by the parallel degree 3")  # fmt: skip
    _fails(["profile", "-m", "tiny", "--nproc", "4", "--device", "cuda"], "--nproc 4 needs 4 GPUs (one per rank); this machine has 2")  # fmt: skip
    _fails([*TRAIN, "-p", str(profile_file), "--device", "cuda", "--backend", "gloo"],
           "--backend gloo cannot run the strategies on --device cuda")  # fmt: skip


def test_auto_picks_nccl_on_cuda_and_gloo_on_the_cpu(two_gpus):
    from paradyse.placement import resolve_placement

    cfg = MODELS["tiny"]
    assert resolve_placement("auto", "auto", nproc=2, cfg=cfg).backend == "nccl"
    assert resolve_placement("cuda", "auto", nproc=2, cfg=cfg).device == "cuda"


def test_auto_is_gloo_on_a_cpu():
    from paradyse.placement import resolve_placement

    place = resolve_placement("cpu", "auto", nproc=2, cfg=MODELS["tiny"])
    assert (place.device, place.backend) == ("cpu", "gloo")


def test_simulate_reports_how_often_the_hysteresis_is_slower_and_strict_mode_never_is(tmp_path):
    base = ["simulate", "-m", "paper-7b", "--gpus", "32", "--distribution", "bimodal", "--median", "16384",
            "--samples", "60", "--hysteresis", "0.05"]  # fmt: skip
    _ok([*base, "-o", str(tmp_path / "loose.json")])
    _ok([*base, "--strict", "-o", str(tmp_path / "strict.json")])
    loose = json.loads((tmp_path / "loose.json").read_text())["distribution"]
    strict = json.loads((tmp_path / "strict.json").read_text())["distribution"]
    assert loose["summary"]["adaptive"]["slower_than_best_static"] > 0  # the paper's 5 % does lose time
    assert loose["summary"]["adaptive"]["mean_ratio_when_slower"] > 1
    assert strict["strict"] and strict["summary"]["adaptive"]["slower_than_best_static"] == 0
    assert strict["summary"]["adaptive"]["seconds_over_best_static"] == 0
