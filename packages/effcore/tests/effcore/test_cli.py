"""The effcore CLI: output, --out files and the one-red-line / exit-code-2 error convention."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from effcore.cli import app
from effcore.errors import AssetError, EffmlError

runner = CliRunner()


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("info", "assets", "profile"):
        assert cmd in result.output


def test_info_writes_json(tmp_path):
    out = tmp_path / "info.json"
    result = runner.invoke(app, ["info", "--no-measure", "--out", str(out)])
    assert result.exit_code == 0, result.output
    items = {row["item"] for row in json.loads(out.read_text())["rows"]}
    assert {"torch", "device", "data dir", "cache"} <= items


def test_info_reports_a_missing_data_dir_without_failing(tmp_path):
    result = runner.invoke(app, ["info", "--no-measure", "--data-dir", str(tmp_path / "nope")])
    assert result.exit_code == 0
    assert "missing" in result.output


def test_unknown_asset_is_one_red_line_and_exit_2():
    result = runner.invoke(app, ["assets", "prepare", "smollm3"])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown asset 'smollm3'" in lines[0] and "smollm2" in lines[0]
    assert "Traceback" not in result.output


def test_bad_out_extension_is_rejected(tmp_path):
    result = runner.invoke(app, ["assets", "list", "--out", str(tmp_path / "x.xml")])
    assert result.exit_code == 2 and "use .json or .csv" in result.output


def test_assets_list_csv(tmp_path):
    out = tmp_path / "assets.csv"
    result = runner.invoke(app, ["assets", "list", "--out", str(out)])
    assert result.exit_code == 0
    header = out.read_text().splitlines()[0]
    assert header.startswith("name,kind,wheel,status")


def test_unknown_device_is_a_clean_error():
    result = runner.invoke(app, ["info", "--device", "tpu", "--no-measure"])
    assert result.exit_code == 2 and "unknown device" in result.output


def _one_error_line(result) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_missing_data_dir_is_one_line_and_exit_2(tmp_path):
    line = _one_error_line(runner.invoke(app, ["data", "--data-dir", str(tmp_path / "nope")]))
    assert "does not exist" in line and "EFFML_DATA" in line


def test_data_verify_flags_a_corrupt_file(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "SHA256SUMS").write_text("0" * 64 + "  a.txt\n")
    result = runner.invoke(app, ["data", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "checksum mismatch" in result.output


def test_corrupt_model_cache_is_reported_by_verify(tmp_path, monkeypatch):
    from effcore.assets import models

    monkeypatch.setenv("EFFML_CACHE", str(tmp_path))
    try:
        folder = models._cache_dir(models.asset("smollm2"))
    except AssetError as err:  # the model wheel may be absent in a package's isolated environment
        pytest.skip(f"smollm2 wheel not installed: {err}")
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    manifest = {"files": {"model.safetensors": {"size": 20, "sha256": "0" * 64}}}
    (folder / "effml-manifest.json").write_text(json.dumps(manifest))
    line = _one_error_line(runner.invoke(app, ["assets", "verify", "smollm2"]))
    assert "truncated" in line and "effcore assets prepare smollm2" in line


def test_impossible_layout_is_one_line_and_exit_2():
    line = _one_error_line(
        runner.invoke(app, ["layout", "--shape", "8,10,64", "--mesh", "tp=4", "--shard", "tp=seq"])
    )
    assert "'seq'" in line and "not divisible by 4" in line


def test_layout_plan_reports_the_switch_volume(tmp_path):
    out = tmp_path / "plan.json"
    args = ["layout", "--shape", "2,64,32", "--mesh", "tp=4", "--shard", "tp=seq", "--to", "tp=hidden"]
    result = runner.invoke(app, [*args, "--dtype", "float32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    local = 2 * 64 * 32 * 4 // 4
    assert [s["collective"] for s in payload["plan"]] == ["all_to_all"]
    assert payload["bytes_per_rank"] == 3 * local // 4, "all-to-all sends (p-1)/p of the local shard"


@pytest.mark.parametrize("bad", [["--mesh", "tp4"], ["--shape", "a,b,c"], ["--dtype", "float99"]])
def test_malformed_layout_options_are_clean_errors(bad):
    _one_error_line(runner.invoke(app, ["layout", *bad]))


def test_an_asset_whose_wheel_is_missing_is_listed_unavailable_and_prepare_fails_cleanly(monkeypatch):
    from dataclasses import replace

    from effcore.assets import models

    ghost = replace(
        models.MODEL_ASSETS["smollm2"], name="ghost", distribution="effml-no-such-wheel", module="no_mod"
    )
    monkeypatch.setitem(models.MODEL_ASSETS, "ghost", ghost)
    listing = runner.invoke(app, ["assets", "list"])
    assert listing.exit_code == 0 and "unavailable" in listing.output
    line = _one_error_line(runner.invoke(app, ["assets", "prepare", "ghost"]))
    assert "effml-no-such-wheel" in line and "uv sync" in line


def test_profile_with_backward_reports_saved_activations_per_layer(tmp_path):
    out = tmp_path / "prof.json"
    args = [
        "profile",
        "-m",
        "tiny-llama",
        "--seq-len",
        "16",
        "--repeats",
        "3",
        "--backward",
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = {r["module"]: r for r in json.loads(out.read_text())["rows"]}
    assert {"embed_tokens", "layers.0", "layers.1", "norm", "lm_head", "other"} <= set(rows)
    assert rows["layers.0"]["saved MiB"] > 0 and rows["layers.0"]["backward ms"] > 0
    assert rows["layers.0"]["GFLOP"] == rows["layers.1"]["GFLOP"] > 0


def test_unknown_profile_preset_is_a_clean_error():
    line = _one_error_line(runner.invoke(app, ["profile", "-m", "gpt5"]))
    assert "unknown model preset 'gpt5'" in line and "tiny-llama" in line


def test_error_messages_print_square_brackets_literally():
    # Messages quote TOML tables and ranges ("[eml]", "[0, 1)"); rich must not read them as markup.
    import typer

    from effcore.cli import make_app
    from effcore.errors import ConfigError

    demo = make_app("demo", "demo")

    @demo.command()
    def fail() -> None:
        raise ConfigError("[eml] has unknown keys ['spectra']; rate must be in [0, 1)")

    @demo.command()
    def other() -> None:  # a second command keeps Typer in group mode
        typer.echo("ok")

    line = _one_error_line(runner.invoke(demo, ["fail"]))
    assert line == "error: [eml] has unknown keys ['spectra']; rate must be in [0, 1)"


def test_int_list_parses_and_refuses_with_the_flag():
    import pytest

    from effcore.cli import int_list
    from effcore.errors import EffmlError

    assert int_list("8, 16,32", "--sizes") == [8, 16, 32]
    with pytest.raises(EffmlError, match="--sizes takes comma-separated integers, got '4,x'"):
        int_list("4,x", "--sizes")
    with pytest.raises(EffmlError, match="--sizes needs positive integers"):
        int_list("0,4", "--sizes")


def test_progress_bar_writes_plain_lines_when_stderr_is_not_a_terminal(capsys) -> None:
    from effcore.cli import _common

    assert not _common.err_console.is_terminal  # pytest captures stderr
    with _common.progress_bar() as bar:  # a quick job: one line per task, when it completes
        for _ in bar.track(range(20), description="[eml] work"):
            pass
        task = bar.add_task("bytes", total=4)
        for _ in range(4):
            bar.advance(task)
        bar.update(task, completed=4)  # already reported: no second line
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["[eml] work: 20/20", "bytes: 4/4"]

    with _common._LogProgress(min_gap_s=0.0) as bar:  # a slow job: a line at every tenth
        for _ in bar.track(range(20), description="slow"):
            pass
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"slow: {2 * i}/20" for i in range(1, 11)]


def test_an_effml_error_that_is_also_a_key_error_prints_its_message_unquoted() -> None:
    from effcore.errors import EffmlError

    class Missing(EffmlError, KeyError):
        pass

    err = Missing("unknown entity 'Obama'", hint="did you mean 'Barack Obama'?")
    assert str(err) == "unknown entity 'Obama' (did you mean 'Barack Obama'?)"
    assert isinstance(err, KeyError)


def test_cli_helpers_check_the_convention():
    from effcore.cli import make_app
    from effcore.errors import ConfigError
    from effcore.testing.cli import cli_fails, cli_ok

    demo = make_app("demo", "demo app")

    @demo.command()
    def run(fail: bool = False, crash: bool = False) -> None:
        if crash:
            raise RuntimeError("bug")
        if fail:
            raise ConfigError("--fail was given", hint="drop it")

    @demo.command()
    def other() -> None:
        pass

    cli_ok(demo, ["run"])
    assert "--fail was given (drop it)" in cli_fails(demo, ["run", "--fail"], "--fail was given").output
    with pytest.raises(AssertionError):
        cli_fails(demo, ["run"], "anything")  # it succeeded
    with pytest.raises(AssertionError):
        cli_fails(demo, ["run", "--crash"], "bug")  # a crash is not the exit-2 convention
    with pytest.raises(AssertionError):
        cli_ok(demo, ["run", "--fail"])


def test_a_corrupt_cache_of_the_right_size_is_not_listed_ready(tmp_path, monkeypatch):
    from effcore.assets import models

    monkeypatch.setenv("EFFML_CACHE", str(tmp_path))
    try:
        folder = models._cache_dir(models.asset("smollm2"))
    except AssetError as err:
        pytest.skip(f"smollm2 wheel not installed: {err}")
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 20)
    manifest = {"files": {"model.safetensors": {"size": 20, "sha256": "0" * 64}}}
    (folder / "effml-manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "assets.json"
    assert runner.invoke(app, ["assets", "list", "--out", str(out)]).exit_code == 0
    status = {row["name"]: row["status"] for row in json.loads(out.read_text())}
    assert status["smollm2"] == "model.safetensors fails its sha256 checksum"
    assert runner.invoke(app, ["assets", "list", "--no-checksums", "--out", str(out)]).exit_code == 0
    status = {row["name"]: row["status"] for row in json.loads(out.read_text())}
    assert status["smollm2"] == "sizes match (checksums not checked)"


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("afile/x.json", "is a file, not a folder"),
        ("adir.json", "is a directory"),
        ("x.xlsx", "use .json or .csv"),
        ("afile/deeper/x.csv", "is a file, not a folder"),
    ],
)
def test_an_unwritable_out_fails_before_any_work(tmp_path, target, match):
    from effcore.testing.cli import cli_fails

    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir.json").mkdir()
    # `info --measure` would time the CPU first: the path is refused before that work starts
    result = cli_fails(app, ["info", "--out", str(tmp_path / target)], match)
    assert "effml environment" not in result.output


def test_an_out_in_a_folder_without_write_permission_is_refused(tmp_path):
    import os

    from effcore.io import check_writable

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK) and os.geteuid() == 0:
        # root ignores permission bits; /proc is a folder in which nobody can create a file
        locked = Path("/proc")
    with pytest.raises(EffmlError, match="cannot create files in"):
        check_writable(locked / "x.json")
