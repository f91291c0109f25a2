"""Datasets at rest: what a run keeps for a later phase, held compact until that phase reads it.

The SDTM datasets wait while ADaM is derived (ADaM reads a few domains, its validation checks
lineage against them), and each ADaM dataset, once written, waits for define.xml and validation
while the next one is derived. A text column of a million records holds an 8-byte pointer a record
even when its few hundred terms are shared objects; at rest it holds a 1-4 byte code into its
distinct values instead (LB and QS at 2,000 subjects: 260 MB of pointers, about 40 MB of codes).

A phase that reads a dataset at rest gets an ordinary pandas frame back (:meth:`CompactFrame.frame`),
made on access and not kept: the same values, the same column order and types, each text column
again ``object`` dtype with one ``str`` per distinct value. Nothing else in the engine sees codes.

Example:
    >>> frame = pd.DataFrame({"USUBJID": pd.Series(["S-1", "S-1", "S-2"], dtype=object), "AVAL": [1.0, 2.0, 3.0]})
    >>> at_rest = CompactFrame.of(frame)
    >>> len(at_rest), list(at_rest.columns), at_rest.frame().equals(frame)
    (3, ['USUBJID', 'AVAL'], True)
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .text import addresses, first_appearances


@dataclass(frozen=True)
class TextCodes:
    """A text column at rest: ``values[codes]`` is the column (``codes`` as small as its distinct count allows)."""

    codes: np.ndarray
    values: np.ndarray  # object: one str per distinct value, in order of first appearance

    @classmethod
    def of(cls, column: np.ndarray) -> TextCodes | None:
        """The codes of a column of ``str`` values; None when they would not save memory (mostly
        distinct values, or anything but text: such a column stays as it is).

        Values are told apart by the object they are, not by comparing text: a dataset as
        written holds one object per distinct value (:func:`~cdisc_convert.text.shared_text`),
        and hashing a million addresses costs a fifth of hashing a million strings. Equal text
        in two objects only gets two codes; the column given back is the same either way."""
        column = np.ascontiguousarray(column, dtype=object)
        codes, _ = pd.factorize(addresses(column), use_na_sentinel=False)
        first = first_appearances(codes)
        if len(first) > len(column) // 2:
            return None
        values = column[first]
        if not all(type(v) is str for v in values):
            return None
        small = next(t for t in (np.int8, np.int16, np.int32, np.int64) if len(values) <= np.iinfo(t).max)
        return cls(codes.astype(small), values)

    def text(self) -> np.ndarray:
        return self.values[self.codes]


# fewer records than this are not worth compacting: a column's pointers are under 400 KB, and
# compacting costs a fixed ~20 us a column (the example study's datasets all stay as they are)
AT_REST_MIN_RECORDS = 50_000


class CompactFrame:
    """A data frame at rest: text columns as :class:`TextCodes`, the others as they were."""

    def __init__(self, rows: int, columns: pd.Index, text: dict[str, TextCodes], other: pd.DataFrame):
        self._rows, self._columns, self._text, self._other = rows, columns, text, other

    @classmethod
    def of(cls, frame: pd.DataFrame) -> CompactFrame:
        """``frame`` at rest (its index is not kept: datasets as written are numbered 0..n-1)."""
        text = {}
        for name in frame.columns:
            values = frame[name]
            if values.dtype == object:
                codes = TextCodes.of(values.to_numpy())
                if codes is not None:
                    text[name] = codes
        # the other columns are shared, not copied (copy-on-write keeps the frame given back apart)
        other = frame[[c for c in frame.columns if c not in text]].reset_index(drop=True)
        return cls(len(frame), frame.columns, text, other)

    def __len__(self) -> int:
        return self._rows

    @property
    def columns(self) -> pd.Index:
        return self._columns

    @property
    def coded(self) -> frozenset[str]:
        """The columns held as codes: each gives back only ``str`` values."""
        return frozenset(self._text)

    @property
    def shape(self) -> tuple[int, int]:
        return self._rows, len(self._columns)

    def frame(self, columns: list[str] | None = None) -> pd.DataFrame:
        """The frame (or only ``columns`` of it, in the frame's order) as an ordinary DataFrame."""
        wanted = self._columns if columns is None else self._columns[self._columns.isin(columns)]
        out = {}
        for name in wanted:
            codes = self._text.get(name)
            out[name] = self._other[name] if codes is None else pd.Series(codes.text(), dtype=object, copy=False)
        return pd.DataFrame(out, index=pd.RangeIndex(self._rows), columns=wanted, copy=False)


def at_rest(frame: pd.DataFrame) -> CompactFrame | pd.DataFrame:
    """``frame`` at rest, or as it is when it has fewer than :data:`AT_REST_MIN_RECORDS` records."""
    return CompactFrame.of(frame) if len(frame) >= AT_REST_MIN_RECORDS else frame


class FramesAtRest(Mapping):
    """Data frames by dataset name, kept at rest; ``frames[name]`` gives one back as a DataFrame
    (made on each access: a phase takes it once). ``name in frames`` and ``len`` make none.
    A frame too small to be worth compacting may be held as it is (and is given back as it is)."""

    def __init__(self, frames: Mapping[str, CompactFrame | pd.DataFrame]):
        self._frames = dict(frames)

    def __getitem__(self, name: str) -> pd.DataFrame:
        found = self._frames[name]
        return found.frame() if isinstance(found, CompactFrame) else found

    def __contains__(self, name: object) -> bool:
        return name in self._frames

    def __iter__(self) -> Iterator[str]:
        return iter(self._frames)

    def __len__(self) -> int:
        return len(self._frames)

    def columns_of(self, name: str, columns: list[str]) -> pd.DataFrame:
        """Only ``columns`` of dataset ``name``: a check reading two columns of LB makes no more."""
        found = self._frames[name]
        return found.frame(columns) if isinstance(found, CompactFrame) else found[found.columns[found.columns.isin(columns)]]

    def rows(self, name: str) -> int:
        return len(self._frames[name])
