"""Fast helpers for columns of text: one code path, vectorised, used by engine and writers.

Example:
    >>> import pandas as pd
    >>> as_text(pd.Series(["a", None, 3.0, 2.5], dtype=object)).tolist()
    ['a', '', '3', '2.5']
    >>> on_unique(pd.Series(["x", "y", "x"]), lambda u: u.str.upper()).tolist()
    ['X', 'Y', 'X']
"""
from __future__ import annotations

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
        return f"{round(float(value), 8):.10g}"
    return str(value)


def on_unique(values: pd.Series, compute: Callable[[pd.Series], pd.Series | pd.DataFrame]):
    """Apply ``compute`` once per distinct value and broadcast back (EDC columns repeat a lot:
    one date per page becomes one date per transposed test)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    result = compute(pd.Series(uniques, dtype=object))
    picked = result.iloc[codes]
    return picked.set_axis(values.index)


def is_plain_text(values: pd.Series) -> bool:
    """True when every value is already a ``str`` in an object column (what :func:`as_text` returns)."""
    return values.dtype == object and pd.api.types.infer_dtype(values, skipna=False) in ("string", "empty")


def as_text(values: pd.Series) -> pd.Series:
    """Object Series of ``str``: missing -> ``""``, numbers without float noise (``3.0`` -> ``3``)."""
    if is_plain_text(values):  # typed datasets: one C pass instead of a missing-value scan and fill
        return values.copy()
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
    codes, uniques = pd.factorize(values.to_numpy(dtype=object), use_na_sentinel=False)
    return pd.Series(np.asarray(uniques, dtype=object)[codes], index=values.index, name=values.name, dtype=object)


def text_lengths(values: pd.Series) -> pd.Series:
    """Length in UTF-8 bytes of each value (characters when the column is ASCII)."""
    text = as_text(values)
    if "".join(text.tolist()).isascii():
        return text.str.len()
    return text.map(lambda s: len(s.encode("utf-8")))
