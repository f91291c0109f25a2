"""Fast helpers for columns of text: one code path, vectorised, used by engine and writers.

Example:
    >>> import pandas as pd
    >>> as_text(pd.Series(["a", None, 3.0, 2.5], dtype=object)).tolist()
    ['a', '', '3', '2.5']
    >>> on_unique(pd.Series(["x", "y", "x"]), lambda u: u.str.upper()).tolist()
    ['X', 'Y', 'X']
"""
from __future__ import annotations

import ctypes
from typing import Callable

import numpy as np
import pandas as pd


def _scalar_text(value) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d") if value == value.normalize() else value.isoformat()
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, (float, np.floating)):
        return _number_text(float(value))
    return str(value)


def _number_text(value: float) -> str:
    """A number as written: no float noise, at most 10 significant digits (``3.0`` -> ``3``)."""
    return f"{round(value, 8):.10g}"


def _float_text(values: pd.Series) -> pd.Series:
    return pd.Series(["" if v != v else _number_text(v) for v in values.astype(float).tolist()],
                     index=values.index, dtype=object)


def char_lengths(strings: list[str]) -> np.ndarray:
    """Length in characters of each ``str`` (one C loop; pandas' ``.str.len()`` is several times slower)."""
    return np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))


def addresses(column: np.ndarray) -> np.ndarray:
    """The addresses of the objects a contiguous ``object`` array holds, as an unsigned integer view
    of it (numpy has no such view of an object array; ``column`` keeps the objects alive meanwhile)."""
    if not len(column):
        return np.zeros(0, dtype=np.uintp)
    return np.ctypeslib.as_array((ctypes.c_size_t * len(column)).from_address(column.ctypes.data))


def first_appearances(codes: np.ndarray) -> np.ndarray:
    """Where each code of a factorisation (numbered in order of first appearance) first occurs:
    where the running maximum grows."""
    return np.flatnonzero(np.diff(np.maximum.accumulate(codes), prepend=-1) > 0) if len(codes) else codes


def factorize(values) -> tuple[np.ndarray, np.ndarray | pd.Index]:
    """``pd.factorize(values, use_na_sentinel=False)``: the same codes and distinct values, missing
    values one value of their own. An ``object`` column is told apart by the objects it holds
    first, then only its distinct objects by value: a column of a dataset holds one ``str`` per
    distinct value (:func:`shared_text`), and hashing addresses costs a fraction of hashing and
    null-checking a million strings (the numbering is the same: an object's first appearance is
    its value's first appearance, or comes after it).

    >>> codes, uniques = factorize(pd.Series(["b", None, "b", "a", float("nan")] * 300, dtype=object))
    >>> codes[:6].tolist(), list(uniques)
    ([0, 1, 0, 2, 1, 0], ['b', nan, 'a'])
    """
    array = values.to_numpy() if isinstance(values, pd.Series) else values
    if not isinstance(array, np.ndarray) or array.dtype != object or len(array) < _BY_OBJECT_MIN:
        return pd.factorize(values, use_na_sentinel=False)
    array = np.ascontiguousarray(array)
    object_codes, _ = pd.factorize(addresses(array))
    first = first_appearances(object_codes)
    if len(first) > len(array) // 2:  # mostly an object a record (text not yet shared): by value at once
        del object_codes
        return pd.factorize(array, use_na_sentinel=False)
    codes, uniques = pd.factorize(array[first], use_na_sentinel=False)
    return codes[object_codes], uniques


_BY_OBJECT_MIN = 1_000  # below this the plain factorisation costs no more


def on_unique(values: pd.Series, compute: Callable[[pd.Series], pd.Series | pd.DataFrame]):
    """Apply ``compute`` once per distinct value and broadcast back (EDC columns repeat a lot:
    one date per page becomes one date per transposed test)."""
    codes, uniques = factorize(values)
    result = compute(pd.Series(uniques, dtype=object))
    picked = result.iloc[codes]
    return picked.set_axis(values.index)


def is_plain_text(values: pd.Series) -> bool:
    """True when every value is already a ``str`` in an object column (what :func:`as_text` returns)."""
    return values.dtype == object and pd.api.types.infer_dtype(values, skipna=False) in ("string", "empty")


def on_distinct(columns: pd.DataFrame, compute: Callable[[pd.DataFrame], pd.Series]) -> pd.Series:
    """Apply ``compute`` once per distinct row of ``columns`` and broadcast back: a subject's
    visit date is shared by all the tests of that visit.

    >>> f = pd.DataFrame({"USUBJID": ["1", "1", "2"], "DTC": ["2024", "2024", "2024"]})
    >>> on_distinct(f, lambda d: d["USUBJID"] + "/" + d["DTC"]).tolist()
    ['1/2024', '1/2024', '2/2024']
    """
    if columns.empty:
        return compute(columns)
    codes = columns.groupby(list(columns.columns), sort=False, dropna=False).ngroup().to_numpy()
    first = np.unique(codes, return_index=True)[1]  # where each distinct row first occurs, in code order
    result = compute(columns.iloc[first].reset_index(drop=True))
    return result.iloc[codes].set_axis(columns.index)


def as_text(values: pd.Series) -> pd.Series:
    """Object Series of ``str``: missing -> ``""``, numbers without float noise (``3.0`` -> ``3``)."""
    if is_plain_text(values):  # typed datasets: one C pass instead of a missing-value scan and fill
        return values.copy()
    if values.dtype.kind == "f":  # numbers: the same text as _scalar_text, without its per-value checks
        return on_unique(values, _float_text).astype(object)
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind in ("string", "empty"):
        return values.fillna("").astype(object)
    return on_unique(values, lambda u: u.map(_scalar_text)).astype(object)


def shared_text(values: pd.Series) -> pd.Series:
    """The same text with one ``str`` object per distinct value: a column of a million records
    that repeats a few hundred terms then costs 8 bytes a record instead of about 60.

    >>> a = shared_text(pd.Series(["AB", "A" + "B"], dtype=object))
    >>> a.tolist(), a.iloc[0] is a.iloc[1]
    (['AB', 'AB'], True)
    """
    codes, uniques = factorize(values.to_numpy(dtype=object))
    return pd.Series(np.asarray(uniques, dtype=object)[codes], index=values.index, name=values.name, dtype=object)


def joined_by_group(frame: pd.DataFrame, by: list[str], column: str, sep: str = " + ",
                    dropna: bool = True) -> pd.Series:
    """``frame.groupby(by, sort=False, dropna=dropna)[column].agg(sep.join)`` without a pandas call
    per group: rows are ordered by group once and each group's slice joined (a lineage column of a
    computed parameter joins its source records, a hundred thousand groups at a time).

    >>> f = pd.DataFrame({"USUBJID": ["1", "2", "1"], "SRC": ["a", "b", "c"]})
    >>> joined_by_group(f, ["USUBJID"], "SRC").to_dict()
    {'1': 'a + c', '2': 'b'}
    """
    grouped = frame.groupby(by, sort=False, dropna=dropna)
    codes = grouped.ngroup().to_numpy()
    keep = codes >= 0  # dropna: rows with a missing key are in no group
    codes = codes[keep]
    order = np.argsort(codes, kind="stable")
    values = frame[column].to_numpy(dtype=object)[keep][order].tolist()
    sorted_codes = codes[order]
    bounds = [0, *(np.flatnonzero(np.diff(sorted_codes)) + 1).tolist(), len(values)]
    joined = [sep.join(values[a:b]) for a, b in zip(bounds[:-1], bounds[1:])] if len(values) else []
    return pd.Series(joined, index=grouped.size().index, name=column, dtype=object)  # groups in ngroup order


def column_codes(column: pd.Series) -> tuple[np.ndarray, int]:
    """A column's values as codes 0..k-1 (missing is a value of its own), and k."""
    values, distinct = factorize(column)
    return values, max(len(distinct), 1)


def combine_codes(parts, rows: int) -> tuple[np.ndarray, int]:
    """Codes of several columns (``(codes, k)`` pairs, an iterable taken one at a time) as one code
    per row, 0, 1, ... in order of first appearance, and the number of distinct rows. Mixed-radix,
    as pandas' group index: one hash pass per column and one at the end (made dense again only
    where the radix product would pass 2**62)."""
    codes, span = np.zeros(rows, dtype=np.int64), 1
    for values, k in parts:
        if span > (1 << 62) // k:
            codes, seen = pd.factorize(codes)
            span = max(len(seen), 1)
        codes = codes * k + values
        span *= k
    codes, seen = pd.factorize(codes)
    return codes.astype(np.int64, copy=False), len(seen)


def row_codes(columns: list[pd.Series]) -> tuple[np.ndarray, int]:
    """One code per row (0, 1, ... in order of first appearance), equal exactly where the rows are
    equal in every column (missing equal to missing), and the number of distinct rows. Columns
    are factorised one at a time, so memory holds two arrays of codes, not one per column as
    pandas' ``duplicated`` and ``groupby`` do (35 columns of ADLB at 2,000 subjects: 250 MB).

    >>> codes, n = row_codes([pd.Series(["a", "b", "a", None]), pd.Series([1.0, 1.0, 1.0, None])])
    >>> codes.tolist(), n
    ([0, 1, 0, 2], 3)
    """
    if not columns:
        return np.zeros(0, dtype=np.int64), 0
    return combine_codes((column_codes(c) for c in columns), len(columns[0]))


def first_of_code(codes: np.ndarray, count: int) -> np.ndarray:
    """For codes from :func:`row_codes`: the position of each row's first equal row.

    >>> first_of_code(np.array([0, 1, 0, 2, 1]), 3).tolist()
    [0, 1, 0, 3, 1]
    """
    first = np.full(count, len(codes), dtype=np.int64)
    np.minimum.at(first, codes, np.arange(len(codes)))
    return first[codes]


def distinct_per_group(group: np.ndarray, groups: int, value: pd.Series | tuple[np.ndarray, int]) -> np.ndarray:
    """For each row, how many distinct ``value``s (a column, or its :func:`column_codes`) its group
    (codes from :func:`row_codes`) holds: ``groupby(...)[value].transform("nunique")`` without a code
    array per grouping column.

    >>> distinct_per_group(np.array([0, 0, 1, 0]), 2, pd.Series(["x", "y", "x", "x"])).tolist()
    [2, 2, 1, 2]
    """
    value_codes = column_codes(value) if isinstance(value, pd.Series) else value
    pairs, count = combine_codes([(group, max(groups, 1)), value_codes], len(group))
    group_of_pair = np.zeros(count, dtype=np.int64)
    group_of_pair[pairs] = group
    return np.bincount(group_of_pair, minlength=groups)[group]
