"""Streaming import into DuckDB: the same store as the in-memory loader, resumable after a bad line late in a file."""

from __future__ import annotations

import gzip
import json

import duckdb
import numpy as np
import pytest

from effcore.errors import DataNotFoundError
from effcore.testing.cli import cli_fails, cli_ok
from tkgqa.cli import app
from tkgqa.duckstore import DuckDBStore, StoreError
from tkgqa.importer import import_tsv
from tkgqa.loaders import load_tsv

BAD_LINE = 1_203  # late in the file, in the middle of the 7th chunk of 200


def _facts_file(tmp_path, bench, *, bad_at: int | None = None, header: bool = True):
    """The synthetic KG as a TSV with a header (line 1), a blank line, and optionally a bad date at ``bad_at``."""
    lines = ["head\trelation\ttail\tdate"] if header else []
    for f in bench.store.facts(np.arange(len(bench.store))):
        lines.append(f.raw)
    lines.insert(10, "")
    if bad_at is not None:
        h, r, t, _ = lines[bad_at - 1].split("\t")
        lines[bad_at - 1] = f"{h}\t{r}\t{t}\t2014-13-45"
    path = tmp_path / "facts.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _same(duck: DuckDBStore, kg) -> None:
    every = np.arange(len(kg))
    assert len(duck) == len(kg) and duck.digest == kg.digest
    assert duck.entities.names == kg.entities.names and duck.relations.names == kg.relations.names
    assert duck.facts(every) == kg.facts(every)


def test_import_builds_the_store_the_loader_builds(tmp_path, bench):
    path = _facts_file(tmp_path, bench)
    seen = []
    report = import_tsv(
        path, tmp_path / "kg.duckdb", chunk_rows=200, progress=lambda d, t: seen.append((d, t))
    )
    assert (
        report.facts == len(bench.store)
        and report.resumed_at_line == 1
        and report.lines == len(bench.store) + 2
    )
    assert len(seen) == 8 and seen[-1] == (path.stat().st_size, path.stat().st_size)
    with DuckDBStore(tmp_path / "kg.duckdb") as duck:
        _same(duck, load_tsv(path))


def test_import_of_a_gzip_file_with_a_line_column_keeps_its_line_numbers(tmp_path):
    path = tmp_path / "facts.tsv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(
            "line\thead\trelation\ttail\tdate\n17\tA\tR\tB\t2014-01-02\n40\tB\tR\tC\t2014-01-03\nx\tC\tS\tA\t2014-02-01\n"
        )
    import_tsv(path, tmp_path / "kg.duckdb")
    with DuckDBStore(tmp_path / "kg.duckdb") as duck:
        _same(duck, load_tsv(path))
        assert [f.line for f in duck.facts([0, 1, 2])] == [17, 40, -1]


def test_a_bad_line_late_in_the_file_keeps_the_rows_before_it_and_the_fixed_file_resumes(tmp_path, bench):
    bad = _facts_file(tmp_path, bench, bad_at=BAD_LINE)
    db = tmp_path / "kg.duckdb"
    with pytest.raises(
        DataNotFoundError, match=rf"facts.tsv:{BAD_LINE}: date '2014-13-45' is not YYYY-MM-DD"
    ) as err:
        import_tsv(bad, db, chunk_rows=200)
    kept = BAD_LINE - 3  # the header and the blank line are not facts
    assert f"keeps the {kept:,} facts before line {BAD_LINE:,}" in str(err.value)
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*), max(row) FROM facts").fetchone() == (kept, kept - 1)
    con.close()
    with pytest.raises(StoreError, match="has not finished"):
        DuckDBStore(db)
    fixed = _facts_file(tmp_path, bench)
    report = import_tsv(fixed, db, chunk_rows=200)
    assert report.resumed_at_line == BAD_LINE and report.facts == len(bench.store)
    with DuckDBStore(db) as duck:
        _same(duck, load_tsv(fixed))


def test_resuming_with_a_file_changed_before_the_resume_point_is_refused(tmp_path, bench):
    bad = _facts_file(tmp_path, bench, bad_at=BAD_LINE)
    db = tmp_path / "kg.duckdb"
    with pytest.raises(DataNotFoundError):
        import_tsv(bad, db, chunk_rows=200)
    lines = bad.read_text().replace("\t2014-13-45", "\t2014-01-05").splitlines()
    lines[5] = "x" + lines[5]  # a head renamed on line 6, long before the resume point
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        StoreError, match=f"differs from the file imported so far in its first {BAD_LINE - 1:,} lines"
    ):
        import_tsv(bad, db, chunk_rows=200)
    assert import_tsv(bad, db, chunk_rows=200, restart=True).resumed_at_line == 1


def test_a_finished_store_is_not_imported_into_again(tmp_path, bench):
    path = _facts_file(tmp_path, bench)
    import_tsv(path, tmp_path / "kg.duckdb")
    with pytest.raises(StoreError, match="already holds a finished import"):
        import_tsv(path, tmp_path / "kg.duckdb")


def test_an_empty_file_leaves_no_store(tmp_path):
    path = tmp_path / "empty.tsv"
    path.write_text("head\trelation\ttail\tdate\n\n")
    with pytest.raises(DataNotFoundError, match="holds no facts"):
        import_tsv(path, tmp_path / "kg.duckdb")
    assert not (tmp_path / "kg.duckdb").exists()


def test_import_command_reports_and_bad_input_is_one_line(tmp_path, bench):
    path = _facts_file(tmp_path, bench, bad_at=BAD_LINE)
    db = tmp_path / "kg.duckdb"
    cli_fails(app, ["import", str(path), "--store", "duckdb", "--db", str(db), "--chunk-rows", "200"],
              rf"facts.tsv:{BAD_LINE}: date")  # fmt: skip
    path.write_text(path.read_text().replace("2014-13-45", "2014-01-05"))
    out = tmp_path / "import.json"
    cli_ok(app, ["import", str(path), "--store", "duckdb", "--db", str(db), "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["facts"] == len(bench.store) and report["resumed_at_line"] == BAD_LINE
    cli_fails(
        app,
        ["import", str(path), "--store", "numpy", "--db", str(db)],
        "--store 'numpy' is not one of duckdb",
    )
    cli_fails(app, ["import", str(path), "--store", "duckdb"], "--db is missing")
    cli_fails(
        app,
        ["import", str(path), "--store", "duckdb", "--db", str(db), "--chunk-rows", "0"],
        "--chunk-rows must be >= 1",
    )
    cli_fails(app, ["import", str(tmp_path / "nope.tsv"), "--store", "duckdb", "--db", str(db)], "not found")
    cli_fails(
        app, ["import", str(path), "--store", "duckdb", "--db", str(db)], "already holds a finished import"
    )


def test_an_import_stopped_between_chunks_resumes_after_the_committed_ones(tmp_path, bench):
    path = _facts_file(tmp_path, bench)
    db = tmp_path / "kg.duckdb"

    def stop(done, total):
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_tsv(path, db, chunk_rows=200, progress=stop)
    report = import_tsv(path, db, chunk_rows=200)
    assert 1 < report.resumed_at_line < len(bench.store) and report.facts == len(bench.store)
    with DuckDBStore(db) as duck:
        _same(duck, load_tsv(path))


def test_the_benchmark_s_synthetic_kg_imports_to_the_loader_s_store(tmp_path):
    from tkgqa.synthetic import write_large_tsv

    path = tmp_path / "large.tsv"
    write_large_tsv(path, 3_000, chunk=1_000, seed=1)
    kg = load_tsv(path)
    assert len(kg) == 3_000 and kg.date_range()[0] >= "2000-01-01" and kg.date_range()[1] < "2020-01-01"
    import_tsv(path, tmp_path / "kg.duckdb", chunk_rows=700)
    with DuckDBStore(tmp_path / "kg.duckdb") as duck:
        _same(duck, kg)
