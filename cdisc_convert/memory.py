"""Give memory the run no longer uses back to the operating system between phases.

A conversion frees millions of small text objects and column arrays after each phase (working
frames after SDTM is built, lineage after it is written). glibc keeps freed heap pages mapped,
so the resident size stays at the phase's high-water mark and the next phase's peak adds to it;
``malloc_trim(0)`` returns the free pages. Elsewhere (macOS, musl, Windows) this does nothing.

Python's cyclic garbage collector is also told to run less often while a run builds its objects
(:func:`fewer_collections`).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import lru_cache, wraps

import numpy as np
import pandas as pd

_ANCHOR = "__concat_anchor"
# records below which concat_records joins whole frames: the copy is small, the per-column cost is not
COLUMNWISE_MIN_RECORDS = 50_000


@lru_cache(maxsize=None)
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Return free heap pages to the system; True when the C library could."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


# young objects allowed before a collection (Python's default is 700): a run creates millions of
# short-lived containers, few of them in cycles, and each collection walks every young one
GC_YOUNG_THRESHOLD = 10_000


def fewer_collections(run):
    """Run ``run`` with the cyclic collector's first threshold at :data:`GC_YOUNG_THRESHOLD`, then
    restore it: about a tenth of the 18-subject example's time went to collections (loading the
    bundled CT alone collected 2.5x longer than it parsed); at 2,000 subjects neither time nor peak
    changed (``benchmarks/``)."""

    @wraps(run)
    def with_fewer_collections(*args, **kwargs):
        before = gc.get_threshold()
        gc.set_threshold(max(before[0], GC_YOUNG_THRESHOLD), *before[1:])
        try:
            return run(*args, **kwargs)
        finally:
            gc.set_threshold(*before)

    return with_fewer_collections


def concat_records(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """``pd.concat(parts, ignore_index=True)`` made one column at a time, each part's column let go
    as soon as it is joined (``parts`` is emptied): the records are not held twice over, as a
    whole-frame concat holds them (QS at 2,000 subjects: +200 MB for its four sources).

    >>> a = pd.DataFrame({"X": [1, 2], "Y": ["a", "b"]})
    >>> concat_records([a, pd.DataFrame({"Y": ["c"], "Z": [1.5]})]).to_dict("list")
    {'X': [1.0, 2.0, nan], 'Y': ['a', 'b', 'c'], 'Z': [nan, nan, 1.5]}
    """
    lengths = [len(p) for p in parts]
    columns = list(dict.fromkeys(c for p in parts for c in p.columns))
    # a whole-frame concat: for fewer records (a column at a time costs ~0.1 ms a column more), and
    # for parts without records or columns (pandas' type rules count them differently)
    if len(parts) < 2 or sum(lengths) < COLUMNWISE_MIN_RECORDS or \
            any(not n or not len(p.columns) or p.columns.has_duplicates for p, n in zip(parts, lengths)):
        whole = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        parts.clear()
        return whole
    pieces = [{c: p[c] for c in p.columns} for p in parts]
    parts.clear()
    out = {}
    for name in columns:
        series = [piece.pop(name, None) for piece in pieces]
        if all(s is not None for s in series) and len({s.dtype for s in series}) == 1:
            out[name] = pd.concat(series, ignore_index=True)
        else:  # a part without the column, or types to reconcile: as a whole-frame concat does it (the
            # anchor keeps a part that lacks the column from counting as an empty frame)
            out[name] = pd.concat([pd.DataFrame({_ANCHOR: np.zeros(n, dtype=bool), **({name: s} if s is not None else {})},
                                                index=s.index if s is not None else pd.RangeIndex(n))
                                   for s, n in zip(series, lengths)], ignore_index=True)[name]
        del series
    return pd.DataFrame(out, copy=False)
