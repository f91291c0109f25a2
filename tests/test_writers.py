"""Writers: XPT v5 rules as facts, Dataset-JSON 1.1 shape, long text split, atomic output."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdisc_convert.errors import ConversionError
from cdisc_convert.sdtm.engine import split_text_200
from cdisc_convert.writers import Dataset, atomic_output, write_dataset_json, write_xpt

CREATED = "2026-01-01T00:00:00"


def ds(data: dict, name="AE", label="Adverse Events", labels=None):
    frame = pd.DataFrame(data)
    return Dataset(name, label, frame, labels or {c: c.title() for c in frame.columns}, keys=["USUBJID"],
                   record_ids=["USUBJID"])


def test_variable_name_over_8_characters_stops_the_write(tmp_path):
    with pytest.raises(ConversionError, match="variable name 'AETERMLONG'") as err:
        write_xpt(ds({"USUBJID": ["1"], "AETERMLONG": ["x"]}), tmp_path, CREATED)
    assert err.value.dataset == "AE" and err.value.field == "AETERMLONG"
    assert not list(tmp_path.iterdir())


def test_dataset_name_over_8_characters_stops_the_write(tmp_path):
    with pytest.raises(ConversionError, match="dataset name 'SUPPAEXXX'"):
        write_xpt(ds({"USUBJID": ["1"]}, name="SUPPAEXXX"), tmp_path, CREATED)


def test_label_over_40_characters_stops_the_write(tmp_path):
    with pytest.raises(ConversionError, match="longer than 40") as err:
        write_xpt(ds({"USUBJID": ["1"]}, labels={"USUBJID": "x" * 41}), tmp_path, CREATED)
    assert err.value.field == "USUBJID"


def test_value_over_200_bytes_names_dataset_variable_and_record(tmp_path):
    with pytest.raises(ConversionError, match="201 bytes exceeds") as err:
        write_xpt(ds({"USUBJID": ["1", "2"], "AETERM": ["ok", "x" * 201]}), tmp_path, CREATED)
    assert (err.value.dataset, err.value.field, err.value.record) == ("AE", "AETERM", "row 2 (USUBJID=2)")


def test_non_ascii_value_stops_the_write(tmp_path):
    with pytest.raises(ConversionError, match="non-ASCII") as err:
        write_xpt(ds({"USUBJID": ["1"], "AETERM": ["Fièvre"]}), tmp_path, CREATED)
    assert err.value.record == "row 1 (USUBJID=1)"


def test_infinite_number_stops_the_write(tmp_path):
    # XPT has no infinity, and strict JSON parsers reject the Infinity that json.dumps would write
    with pytest.raises(ConversionError, match="not finite") as err:
        write_xpt(ds({"USUBJID": ["1", "2"], "AESEQ": [1.0, float("-inf")]}), tmp_path, CREATED)
    assert (err.value.field, err.value.record) == ("AESEQ", "row 2 (USUBJID=2)")
    with pytest.raises(ConversionError, match="not finite"):
        write_dataset_json(ds({"USUBJID": ["1"], "AESEQ": [float("inf")]}), tmp_path, CREATED, "S", "0")
    assert not list(tmp_path.iterdir())


def test_xpt_header_and_character_lengths(tmp_path):
    import pyreadstat
    path = write_xpt(ds({"USUBJID": ["1", "22"], "AETERM": ["abc", "abcdef"], "AESEQ": [1.0, 2.0]}), tmp_path, CREATED)
    _, meta = pyreadstat.read_xport(str(path))
    assert meta.variable_storage_width["AETERM"] == 6 and meta.variable_storage_width["USUBJID"] == 2
    assert b"01JAN26:00:00:00" in path.read_bytes()[:400]
    assert path.read_bytes()[:80].startswith(b"HEADER RECORD*******LIBRARY HEADER RECORD")


def test_same_data_same_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    d = ds({"USUBJID": ["1"], "AESEQ": [1.0]})
    assert write_xpt(d, a, CREATED).read_bytes() == write_xpt(d, b, CREATED).read_bytes()


def test_dataset_json_1_1_shape(tmp_path):
    path = write_dataset_json(ds({"USUBJID": ["1", "2"], "AESEQ": [1.0, float("nan")]}), tmp_path, CREATED, "S", "0")
    doc = json.loads(path.read_text())
    assert doc["datasetJSONVersion"] == "1.1.0" and doc["records"] == 2 and doc["name"] == "AE"
    assert [c["dataType"] for c in doc["columns"]] == ["string", "integer"]
    assert doc["columns"][0]["keySequence"] == 1 and doc["rows"] == [["1", 1], ["2", None]]


def test_atomic_output_leaves_nothing_on_error(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_output(out) as tmp:
            (tmp / "half.xpt").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="abc ", min_size=1, max_size=12), min_size=1, max_size=80).map(" ".join))
def test_long_text_split_keeps_every_character_in_pieces_of_200(text):
    pieces = split_text_200(text)
    assert "".join(pieces) == text and all(len(p) <= 200 for p in pieces)


def test_our_xpt_writer_gives_pyreadstats_bytes(tmp_path):
    """The column-wise writer against pyreadstat's on awkward values: missing, zero, negative, tiny,
    huge and fractional numbers, empty, full-width and blank-edged text (repeated values are encoded
    once), date formats, and no rows at all."""
    import re

    import numpy as np
    import pyreadstat

    from cdisc_convert.xpt import write_xpt_v5

    numbers = [np.nan, 0.0, -0.0, 1.0, -2.5, 0.1, 1e-70, 3.4e70, 123456789.123, -1e-5, 5.397605e-79]
    frame = pd.DataFrame({"USUBJID": ["S-1", "", "S-10000", "x", "", "y", "z", "S-2", "a", "b", "c"],
                          "AVAL": numbers, "ADT": [np.nan, 23387.0] * 5 + [0.0],
                          "EMPTY": [""] * 11,
                          "PADDED": ["a  ", " b", "", "c", "a  ", "dd d", "", " ", "x", "a  ", "b"]})
    stamp = re.compile(rb"\d\d[A-Z]{3}\d\d:\d\d:\d\d:\d\d")
    for data in (frame, frame.iloc[0:0]):
        theirs, ours = tmp_path / "theirs.xpt", tmp_path / "ours.xpt"
        pyreadstat.write_xport(data, str(theirs), file_label="Test Data", table_name="ADXX", file_format_version=5,
                               column_labels={"USUBJID": "Subject", "AVAL": "Value", "ADT": "Date", "EMPTY": ""},
                               variable_format={"ADT": "DATE9."})
        widths = {c: max(1, int(data[c].str.len().max())) if len(data) else 1 for c in ("USUBJID", "EMPTY", "PADDED")}
        write_xpt_v5(ours, data, "ADXX", "Test Data", {"USUBJID": "Subject", "AVAL": "Value", "ADT": "Date"},
                     {"ADT": "DATE9."}, widths, b"01JAN26:00:00:00")
        assert stamp.sub(b"T", ours.read_bytes()) == stamp.sub(b"T", theirs.read_bytes())
    back, _ = pyreadstat.read_xport(str(tmp_path / "theirs.xpt"))
    assert len(back) == 0


def test_ibm_conversion_equals_readstats_over_the_whole_double_range(tmp_path):
    import numpy as np
    import pyreadstat

    from cdisc_convert.xpt import ibm_doubles

    rng = np.random.default_rng(20260101)
    edges = [5.397605e-79, 5.3976054e-79, 2.0 ** -260, 2.0 ** -261, 2.0 ** 248, 2.0 ** 249, 7.2e75, 1e300, -1e300,
             np.inf, -np.inf, np.nan, 0.0, -0.0]
    values = np.concatenate([edges, rng.standard_normal(3000) * 10.0 ** rng.integers(-90, 90, 3000)])
    pyreadstat.write_xport(pd.DataFrame({"A": values}), str(tmp_path / "a.xpt"), file_format_version=5)
    raw = (tmp_path / "a.xpt").read_bytes()
    start = raw.find(b"HEADER RECORD*******OBS     HEADER RECORD") + 80
    theirs = np.frombuffer(raw[start:start + 8 * len(values)], dtype=">u8")
    assert (ibm_doubles(values) == theirs).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=False), st.integers(-10**6, 10**6).map(float),
                          st.sampled_from([0.0, -0.0, 1e-7, 2.5e-05, 1e-4, 1e16, 1.5e300, 5e-324])), max_size=40),
       st.lists(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=12), max_size=40))
def test_dataset_json_rows_are_what_json_dumps_writes(tmp_path_factory, numbers, texts):
    # orjson writes the rows; the bytes must not depend on it (floats below 1e-4, DEL, controls).
    # Infinity is refused before anything is written (test_infinite_number_stops_the_write).
    n = min(len(numbers), len(texts))
    frame = pd.DataFrame({"AVAL": pd.Series(numbers[:n], dtype=float), "AVALC": pd.Series(texts[:n], dtype=object),
                          "ADT": pd.Series([float(i * 400 - 3000) for i in range(n)], dtype=float)})
    ds = Dataset("ADX", "X", frame, {"AVAL": "v", "AVALC": "c", "ADT": "d"}, formats={"ADT": "DATE9."})
    folder = tmp_path_factory.mktemp("json")
    doc = json.loads((write_dataset_json(ds, folder, "2026-01-01T00:00:00", "S1", "1")).read_text())
    text, whole = (folder / "adx.json").read_text(), doc["columns"][0]["dataType"] == "integer"
    expected_rows = [[None if a != a else int(a) if whole else a, b, str((pd.Timestamp("1960-01-01") + pd.Timedelta(days=d)).date())]
                     for a, b, d in zip(frame.AVAL, frame.AVALC, frame.ADT)]
    assert text.endswith(json.dumps(expected_rows, ensure_ascii=True, separators=(",", ":"))[1:] + "}\n")
    assert len(doc["rows"]) == n



def test_dataset_json_written_in_chunks_is_the_whole_file(tmp_path, monkeypatch):
    import cdisc_convert.writers as writers

    frame = pd.DataFrame({"USUBJID": [f"S-{i % 3}" for i in range(10)], "AVAL": [i / 3 for i in range(10)],
                          "ADT": [float(i) for i in range(10)]})
    ds = Dataset("ADX", "X", frame, {"USUBJID": "u", "AVAL": "v", "ADT": "d"}, formats={"ADT": "DATE9."})
    whole = write_dataset_json(ds, tmp_path, CREATED, "S", "0").read_bytes()
    monkeypatch.setattr(writers, "JSON_CHUNK_ROWS", 3)  # 4 chunks, the last one short
    assert write_dataset_json(ds, tmp_path, CREATED, "S", "0").read_bytes() == whole
    assert len(json.loads(whole)["rows"]) == 10

def test_read_xpt_gives_the_whole_dataset_and_reads_an_empty_one(tmp_path, monkeypatch):
    import cdisc_convert.writers as writers
    from cdisc_convert.writers import read_xpt

    frame = pd.DataFrame({"USUBJID": [f"S-{i % 3}" for i in range(10)], "AESEQ": [float(i) for i in range(10)],
                          "AETERM": ["" if i % 4 else "HEADACHE " * 8 for i in range(10)]})  # 83-byte records
    path = write_xpt(ds(frame.to_dict("list")), tmp_path, CREATED)
    back = read_xpt(path).data
    assert back.to_dict("list") == frame.assign(AETERM=frame.AETERM.str.rstrip()).to_dict("list")
    assert back["USUBJID"].iloc[0] is back["USUBJID"].iloc[3]  # one object per distinct value
    # the general reader (pandas in chunks), for files outside what the column-wise reader handles
    monkeypatch.setattr(writers, "READ_CHUNK_ROWS", 3)  # 4 chunks
    import cdisc_convert.xpt as xpt
    monkeypatch.setattr(xpt, "read_xpt_v5_data", lambda path: None)
    back = read_xpt(path).data
    assert back.to_dict("list") == frame.assign(AETERM=frame.AETERM.str.rstrip()).to_dict("list")
    assert back["USUBJID"].iloc[0] is back["USUBJID"].iloc[3]  # one object per distinct value across chunks
    (tmp_path / "e").mkdir()
    empty = write_xpt(ds({"USUBJID": [], "AESEQ": []}), tmp_path / "e", CREATED)
    assert list(read_xpt(empty).data.columns) == ["USUBJID", "AESEQ"] and len(read_xpt(empty).data) == 0


def test_column_wise_reader_equals_pandas_and_pyreadstat_readers(tmp_path):
    """Our numpy XPT reader against pandas' and pyreadstat's on awkward values: numbers over the
    IBM range (tiny, huge, negative zero, missing), text with blanks at either end, wide and narrow."""
    import numpy as np
    import pyreadstat

    from cdisc_convert.xpt import ieee_doubles, read_xpt_v5_data

    rng = np.random.default_rng(7)
    numbers = np.concatenate([[np.nan, 0.0, -0.0, 1e-75, 5.397605e-79, 7.2e75, -3.25, 1 / 3],
                              rng.standard_normal(192) * 10.0 ** rng.integers(-60, 60, 192)])
    text = [" lead", "trail  ", "", "x" * 120, "a b", "Z"] * 33 + ["", ""]
    frame = pd.DataFrame({"AVAL": numbers, "WIDE": text, "FL": (["Y", "", "N", "Y"] * 50), "CODE": text[::-1]})
    path = write_xpt(ds(frame.to_dict("list")), tmp_path, CREATED)
    ours = read_xpt_v5_data(path)
    assert read_xpt_v5_data(path, chunk_rows=7).equals(ours)  # read in chunks: the same frame
    theirs, _ = pyreadstat.read_xport(str(path))
    pandas_read = pd.read_sas(path, format="xport", encoding="ascii")
    largest = np.isinf(theirs["AVAL"].to_numpy())  # pyreadstat reads the largest IBM value (7.2e75) as inf
    assert largest.sum() == 1 and ours["AVAL"].iloc[np.flatnonzero(largest)[0]] > 7.2e75
    assert np.array_equal(ours["AVAL"].to_numpy()[~largest], theirs["AVAL"].to_numpy()[~largest], equal_nan=True)
    # pandas reads a stored 0 as 5.4e-79, and truncates the largest value's 56-bit fraction (ours rounds)
    tiny = (np.abs(pandas_read["AVAL"].to_numpy()) < 1e-78) | largest
    assert np.array_equal(ours["AVAL"].to_numpy()[~tiny], pandas_read["AVAL"].to_numpy()[~tiny], equal_nan=True)
    for col in ("WIDE", "FL", "CODE"):
        assert ours[col].tolist() == [v.rstrip() for v in frame[col]] == theirs[col].tolist(), col
    # SAS special missing values .A-.Z and ._ are missing too
    raw = np.array([0x41 << 56, 0x5A << 56, 0x5F << 56, 0x2E << 56, (0x41 << 56) | 1], dtype=">u8")
    assert np.isnan(ieee_doubles(raw)[:4]).all() and not np.isnan(ieee_doubles(raw)[4])


def test_read_xpt_keeps_the_last_record_of_a_file_with_records_shorter_than_80_bytes(tmp_path):
    # pandas.read_sas reads 9 of these 10 records (19-byte records, blank last values); --adam-only,
    # validate and compare read through read_xpt and must see all 10
    from cdisc_convert.writers import read_xpt

    frame = pd.DataFrame({"USUBJID": [f"S-{i % 3}" for i in range(10)], "AESEQ": [float(i) for i in range(10)],
                          "AETERM": ["" if i % 4 else "HEADACHE" for i in range(10)]})
    path = write_xpt(ds(frame.to_dict("list")), tmp_path, CREATED)
    assert read_xpt(path).data.to_dict("list") == frame.to_dict("list")


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 4).flatmap(lambda k: st.tuples(*[st.one_of(
    st.lists(st.one_of(st.none(), st.text(alphabet=st.sampled_from('ab ,"\n\r-1'), max_size=6)), min_size=3, max_size=3),
    st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=False, width=32)), min_size=3, max_size=3),
    st.lists(st.integers(-5, 5), min_size=3, max_size=3)) for _ in range(k)])))
def test_lineage_csv_text_equals_pandas_to_csv(columns):
    """The column-wise CSV writer of the lineage files gives pandas' to_csv bytes, quoting included."""
    import csv
    import io

    from cdisc_convert.pipeline import _csv_text

    frame = pd.DataFrame({f"C{i}": values for i, values in enumerate(columns)})
    buf = io.StringIO()
    frame.to_csv(buf, index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    assert _csv_text(frame) == buf.getvalue()
    plain = frame.apply(lambda c: c.map(lambda v: "" if v is None or v != v else str(v)) if c.dtype == object else c)
    buf = io.StringIO()
    plain.to_csv(buf, index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    assert _csv_text(plain) == buf.getvalue()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.text(alphabet=st.sampled_from('ab ,"\n-1'), max_size=4)),
                          st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=False, width=32)),
                          st.sampled_from(["NCT-1", "NCT-2"])), max_size=9), st.integers(1, 4))
def test_lineage_csv_written_in_chunks_is_the_whole_file(tmp_path_factory, rows, chunk_rows):
    """Lineage files go out a chunk of rows at a time: the bytes of pandas' to_csv of the whole frame."""
    import csv

    from cdisc_convert.pipeline import write_csv

    frame = pd.DataFrame(rows, columns=["AETERM", "AESEQ", "USUBJID"]).astype({"USUBJID": object})
    path = tmp_path_factory.mktemp("csv") / "lineage.csv"
    write_csv(frame, path, chunk_rows=chunk_rows)
    with open(path, encoding="utf-8", newline="") as fh:
        written = fh.read()
    assert written == frame.to_csv(index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)


def test_distinct_bytes_of_a_text_column_hashed_or_sorted(monkeypatch):
    """The reader's distinct values and codes, for narrow and wide columns, and when two values
    share a hash (forced here): always what sorting gives."""
    import numpy as np

    import cdisc_convert.xpt as xpt

    rng = np.random.default_rng(3)
    for width in (1, 5, 8, 9, 16, 40):
        pool = np.array([bytes(rng.choice(list(b"AB C"), size=rng.integers(0, width + 1))) for _ in range(30)],
                        dtype=f"S{width}")
        values = pool[rng.integers(0, len(pool), 500)]
        uniques, codes = xpt._distinct_bytes(values)
        assert [uniques[c] for c in codes] == values.tolist() and len(set(uniques)) == len(uniques)
    real = pd.factorize
    monkeypatch.setattr(xpt.pd, "factorize", lambda h: (np.zeros(len(h), dtype=np.intp), real(h)[1][:1]))
    values = np.array([b"A" * 12, b"B" * 12, b"A" * 12], dtype="S12")
    uniques, codes = xpt._distinct_bytes(values)  # every hash "equal": the check sees it and sorts instead
    assert [uniques[c] for c in codes] == values.tolist()
