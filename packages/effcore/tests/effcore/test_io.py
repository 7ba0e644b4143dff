"""effcore.io: atomic writes leave either the old file or the new one, never a half or a stray temp."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from effcore.errors import ConfigError
from effcore.io import atomic_write_text, sha256_file, write_json, write_rows


def test_atomic_write_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old\n")
    with pytest.raises(TypeError):
        atomic_write_text(target, 123)  # type: ignore[arg-type]  # write() refuses a non-str
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_concurrent_writers_of_one_path_never_interleave(tmp_path: Path) -> None:
    target = tmp_path / "shared.txt"
    texts = [str(i) * 200_000 for i in range(8)]
    threads = [threading.Thread(target=atomic_write_text, args=(target, t)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["shared.txt"]


@settings(max_examples=30, deadline=None)
@given(st.text())
def test_atomic_write_round_trips_any_text(text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.txt"
        atomic_write_text(path, text)
        assert path.read_bytes().decode("utf-8") == text


def test_write_rows_csv_and_sha(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "r.csv", [{"a": 1, "b": 2}, {"a": 3, "b": 4}])
    assert path.read_text().splitlines() == ["a,b", "1,2", "3,4"]
    assert len(sha256_file(path)) == 64
    with pytest.raises(ConfigError):
        write_rows(tmp_path / "r.txt", [{"a": 1}])


def test_atomic_path_renames_on_success_and_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    from effcore.io import atomic_path

    target = tmp_path / "sub" / "ckpt.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer died")
    assert target.read_bytes() == b"first"
    assert [p.name for p in target.parent.iterdir()] == ["ckpt.bin"], "a temporary file was left behind"
