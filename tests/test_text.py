"""Row codes: what pandas' duplicated and groupby-nunique give, with less memory."""
from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from cdisc_convert.text import distinct_per_group, first_of_code, row_codes

cells = st.one_of(st.sampled_from(["A", "B", "", "a"]), st.none(), st.sampled_from([1.0, 0.0, -0.0, float("nan")]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(cells, cells, st.sampled_from(["X", "Y"])), max_size=30))
def test_row_codes_find_the_duplicates_pandas_finds(rows):
    frame = pd.DataFrame(rows, columns=["A", "B", "C"], dtype=object)
    codes, count = row_codes([frame[c] for c in frame.columns])
    first = first_of_code(codes, count)
    assert (first != np.arange(len(frame))).tolist() == frame.duplicated(keep="first").tolist()
    assert count == len(frame.drop_duplicates())
    for i, j in enumerate(first):  # the first equal row, as pandas compares rows
        assert j <= i and (i == j or frame.iloc[[j, i]].duplicated(keep="first").tolist() == [False, True])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["S1", "S2"]), st.sampled_from(["ALT", "AST"]),
                          st.sampled_from([1.0, 2.0, 2.5])), max_size=30))
def test_distinct_per_group_is_groupby_nunique(rows):
    frame = pd.DataFrame(rows, columns=["USUBJID", "PARAMCD", "BASE"])
    group, groups = row_codes([frame["USUBJID"], frame["PARAMCD"]])
    expected = frame.groupby(["USUBJID", "PARAMCD"], sort=False)["BASE"].transform("nunique")
    assert distinct_per_group(group, groups, frame["BASE"]).tolist() == expected.tolist()
