"""The effcore CLI: output, --out files and the one-red-line / exit-code-2 error convention."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from effcore.cli import app

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
