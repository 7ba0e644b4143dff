"""The quick start's first command (the effml tour) runs end to end and reports every step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from effcore.assets import data_dir
from effcore.errors import DataNotFoundError

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def test_tour_quick_runs_every_effcore_step(tmp_path):
    try:
        data_dir()
    except DataNotFoundError as err:
        pytest.skip(str(err))
    out = tmp_path / "tour.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "tour.py"), "--quick", "--only", "effcore", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["step"] for r in rows][:2] == ["device spec", "prepare SmolLM2 (GGUF -> safetensors cache)"]
    assert not any("FAILED" in str(r["result"]) for r in rows)
    assert "perplexity" in next(r["result"] for r in rows if r["step"] == "perplexity")


def test_tour_rejects_an_unknown_package():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "tour.py"), "--only", "nosuchpkg"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "no tour demo for nosuchpkg" in proc.stdout
