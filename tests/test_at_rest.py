"""Datasets at rest (cdisc_convert.at_rest): compact while a later phase waits, the same frame back."""
from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from cdisc_convert.at_rest import CompactFrame, FramesAtRest, TextCodes
from cdisc_convert.text import shared_text
from cdisc_convert.writers import Dataset


def _lb(rows: int = 1000) -> pd.DataFrame:
    tests = np.array(["ALT", "AST", "BILI"], dtype=object)
    return pd.DataFrame({
        "STUDYID": shared_text(pd.Series(["S1"] * rows, dtype=object)),
        "USUBJID": shared_text(pd.Series([f"S1-{i // 10:03d}" for i in range(rows)], dtype=object)),
        "LBSEQ": np.arange(1, rows + 1, dtype=float),
        "LBTESTCD": pd.Series(tests[np.arange(rows) % 3], dtype=object),
        "LBSPID": pd.Series([f"P{i}" for i in range(rows)], dtype=object),  # all distinct: stays as it is
        "LBSTRESN": np.where(np.arange(rows) % 7 == 0, np.nan, np.arange(rows) / 4),
    }, copy=False)


def test_a_frame_comes_back_the_same_with_its_text_as_codes():
    frame = _lb()
    at_rest = CompactFrame.of(frame)
    back = at_rest.frame()
    pd.testing.assert_frame_equal(back, frame)
    assert list(back.dtypes) == list(frame.dtypes) and back["LBTESTCD"].dtype == object
    assert at_rest.coded == {"STUDYID", "USUBJID", "LBTESTCD"}  # LBSPID: a code per record would save nothing
    assert (len(at_rest), at_rest.shape, list(at_rest.columns)) == (1000, (1000, 6), list(frame.columns))
    assert at_rest._text["USUBJID"].codes.dtype == np.int8 and at_rest._text["LBTESTCD"].codes.nbytes == 1000
    # the very objects: a term is one str for every record, as before
    assert back["USUBJID"].iloc[0] is frame["USUBJID"].iloc[0] is back["USUBJID"].iloc[9]


def test_codes_take_the_smallest_integer_their_count_allows():
    many = pd.Series([f"V{i % 300}" for i in range(1000)], dtype=object)
    assert TextCodes.of(shared_text(many).to_numpy()).codes.dtype == np.int16
    assert len(TextCodes.of(np.array([], dtype=object)).codes) == 0


def test_anything_but_text_stays_as_it_is():
    frame = pd.DataFrame({"A": pd.Series(["x", None, "x", "x"], dtype=object),
                          "B": pd.Series([1, "1", 1, 1], dtype=object)})
    at_rest = CompactFrame.of(frame)
    assert at_rest.coded == frozenset()
    pd.testing.assert_frame_equal(at_rest.frame(), frame)


def test_a_frame_given_back_is_apart_from_the_one_at_rest():
    at_rest = CompactFrame.of(_lb())
    back = at_rest.frame()
    back.loc[0, "LBSTRESN"] = -1.0
    back.loc[0, "LBTESTCD"] = "CHANGED"
    again = at_rest.frame()
    assert again.loc[0, "LBSTRESN"] != -1.0 and again.loc[0, "LBTESTCD"] == "ALT"


def test_only_the_columns_asked_for_are_made():
    frames = FramesAtRest({"LB": CompactFrame.of(_lb())})
    two = frames.columns_of("LB", ["USUBJID", "LBSEQ", "NOTTHERE"])
    assert list(two.columns) == ["USUBJID", "LBSEQ"] and len(two) == 1000
    assert "LB" in frames and "AE" not in frames and frames.get("AE") is None and frames.rows("LB") == 1000
    assert list(frames) == ["LB"] and len(frames) == 1


def test_a_small_dataset_stays_as_it_is():
    ds = Dataset("LB", "Laboratory Test Results", _lb(), {c: c for c in _lb().columns})
    frame = ds.data
    ds.put_at_rest()
    assert ds.data is frame
    from cdisc_convert.at_rest import at_rest

    assert at_rest(frame) is frame and isinstance(at_rest(pd.concat([frame] * 50, ignore_index=True)), CompactFrame)
    frames = FramesAtRest({"LB": frame})
    assert frames["LB"] is frame and list(frames.columns_of("LB", ["LBSEQ", "USUBJID"]).columns) == ["USUBJID", "LBSEQ"]


def test_a_dataset_at_rest_keeps_its_widths_and_its_text_facts_come_back_without_measuring(monkeypatch):
    import cdisc_convert.at_rest as at_rest

    monkeypatch.setattr(at_rest, "AT_REST_MIN_RECORDS", 1)
    ds = Dataset("LB", "Laboratory Test Results", _lb(), {c: c for c in _lb().columns})
    texts, widths = ds.text_facts()
    ds.put_at_rest()
    assert isinstance(ds.data, CompactFrame) and ds.texts is None and len(ds.data) == 1000
    import cdisc_convert.writers as writers
    monkeypatch.setattr(writers, "check_xpt_rules", lambda ds: (_ for _ in ()).throw(AssertionError("measured")))
    ds.restore()
    again, widths_again = ds.text_facts()
    assert widths_again == widths and list(again) == list(texts)
    for c in texts:
        pd.testing.assert_series_equal(again[c], texts[c])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["", "A", "B", "Ä", "long value " * 3]), min_size=0, max_size=60),
       st.integers(min_value=0, max_value=3))
def test_any_text_column_comes_back_equal(values, repeat):
    column = pd.Series(values * (repeat + 1), dtype=object)
    frame = pd.DataFrame({"X": shared_text(column), "N": np.arange(len(column), dtype=float)}, copy=False)
    pd.testing.assert_frame_equal(CompactFrame.of(frame).frame(), frame)


_COLUMN = st.sampled_from([
    ("TEXT", lambda n: pd.Series(["a", "b", ""] * n, dtype=object)[:n]),
    ("TEXT", lambda n: pd.Series([1.5] * n)),  # the same name, a number in another part: reconciled
    ("NUM", lambda n: pd.Series(np.arange(n, dtype=float))),
    ("INT", lambda n: pd.Series(np.arange(n, dtype=np.int64))),
    ("FLAG", lambda n: pd.Series([True, False] * n)[:n]),
    ("DATE", lambda n: pd.Series(pd.to_datetime(["2024-01-01"] * n))),
    ("STR", lambda n: pd.Series(["x"] * n)),  # pandas' own string dtype
])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=4), st.lists(_COLUMN, min_size=0, max_size=5)),
                min_size=1, max_size=4))
def test_records_concatenated_a_column_at_a_time_equal_a_whole_frame_concat(shapes):
    from unittest import mock

    import cdisc_convert.memory as memory

    parts = []
    for rows, columns in shapes:
        frame = pd.DataFrame(index=pd.RangeIndex(rows))
        for name, make in columns:
            frame[name] = make(rows).to_numpy() if name != "STR" else make(rows).set_axis(frame.index)
        parts.append(frame)
    expected = pd.concat(parts, ignore_index=True)
    given_parts = list(parts)
    with mock.patch.object(memory, "COLUMNWISE_MIN_RECORDS", 0):  # a column at a time, however few
        got = memory.concat_records(given_parts)
    pd.testing.assert_frame_equal(got, expected)
    assert given_parts == []
