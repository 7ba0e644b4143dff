"""Loaders: raw names kept (CSV quotes, NA), line numbers kept, CRLF, ICEWS14 ids and hours, clear errors."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from effcore.errors import DataNotFoundError
from tkgqa.loaders import load_icews14, load_kg, load_multitq_kg, load_tsv


def test_tsv_with_header_keeps_raw_names_and_line_numbers(tmp_path):
    path = tmp_path / "kg.tsv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write('line\thead\trelation\ttail\tdate\n6913\t"Nicholas_""Nick""_Xenophon"\tMake_statement\tNA\t2005-03-06\n'
                 "7\tA\tConsult\tB\t2005-01-02\n")  # fmt: skip
    kg = load_tsv(path)
    facts = kg.facts([0, 1])
    assert facts[0].head == '"Nicholas_""Nick""_Xenophon"' and facts[0].tail == "NA"
    assert [f.line for f in facts] == [6913, 7]
    assert len(kg.digest) == 64


def test_headerless_crlf_tsv_loads(tmp_path):
    path = tmp_path / "kg.tsv"
    path.write_bytes(b"A\tR\tB\t2014-01-01\r\nB\tR\tC\t2014-01-05\r\n")
    kg = load_kg(path)
    assert len(kg) == 2 and kg.facts([1])[0].date == "2014-01-05"


@pytest.mark.parametrize(
    ("content", "match"),
    [("", "holds no facts"), ("A\tR\tB\n", ":1: expected 4"), ("A\tR\tB\t2014-13-01\n", ":1: date '2014-13-01'"),
     ("A\tR\tB\t2014-01-01\nA\t\tB\t2014-01-01\n", ":2: empty head")],
)  # fmt: skip
def test_malformed_files_fail_naming_the_line(tmp_path, content, match):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(DataNotFoundError, match=match):
        load_tsv(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="not found"):
        load_tsv(tmp_path / "nope.tsv")


def test_multitq_loader_reads_the_data_dir(data_dir, bench):
    kg = load_multitq_kg(data_dir)
    assert len(kg) == len(bench.store)
    assert kg.facts([0])[0].line == 1


def test_icews14_maps_ids_to_names_and_hours_to_days(tmp_path):
    root = tmp_path / "icews14"
    root.mkdir()
    members = {
        "icews14/train.txt": b"0\t1\t2\t0\t-1\r\n2\t0\t1\t24\t-1\r\n",
        "icews14/valid.txt": b"1\t1\t0\t7296\t-1\r\n",
        "icews14/test.txt": b"0\t0\t1\t8736\t-1\r\n",
        "icews14/entity2id.txt": b"China\t0\r\nIran\t1\r\nCitizen_(Nigeria)\t2\r\n",
        "icews14/relation2id.txt": b"Make_statement\t0\r\nConsult\t1\r\n",
    }
    with tarfile.open(root / "icews14.tar.gz", "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    kg = load_icews14(tmp_path)
    facts = kg.facts(range(len(kg)))
    assert (facts[0].head, facts[0].relation, facts[0].tail, facts[0].date) == (
        "China",
        "Consult",
        "Citizen_(Nigeria)",
        "2014-01-01",
    )
    assert facts[1].date == "2014-01-02" and facts[2].date == "2014-11-01" and facts[3].date == "2014-12-31"
    assert len(load_icews14(tmp_path, splits=("test",))) == 1
