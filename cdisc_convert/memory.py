"""Give memory the run no longer uses back to the operating system between phases.

A conversion frees millions of small text objects and column arrays after each phase (working
frames after SDTM is built, lineage after it is written). glibc keeps freed heap pages mapped,
so the resident size stays at the phase's high-water mark and the next phase's peak adds to it;
``malloc_trim(0)`` returns the free pages. Elsewhere (macOS, musl, Windows) this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache


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
