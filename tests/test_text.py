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


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["A", "B", "AB", "", " "]), st.text(max_size=3), st.none(),
                          st.just(float("nan")), st.integers(-2, 2), st.floats(allow_nan=True)), max_size=60),
       st.booleans())
def test_factorize_by_object_gives_pandas_codes_and_values(values, shared):
    """Equal text in separate objects, None beside NaN, numbers beside text: the same codes and
    distinct values as pd.factorize, in the same order."""
    import cdisc_convert.text as text_module

    column = np.empty(len(values), dtype=object)
    # shared: one object per distinct text, as a dataset holds it; else a fresh object a record
    column[:] = [v if shared or not isinstance(v, str) else "".join(list(v)) for v in values]
    before, text_module._BY_OBJECT_MIN = text_module._BY_OBJECT_MIN, 0
    try:
        codes, uniques = text_module.factorize(column)
    finally:
        text_module._BY_OBJECT_MIN = before
    expected_codes, expected_uniques = pd.factorize(column, use_na_sentinel=False)
    assert codes.tolist() == expected_codes.tolist()
    assert pd.Series(uniques, dtype=object).equals(pd.Series(expected_uniques, dtype=object))
