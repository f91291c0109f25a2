"""SAS transport (XPT) version 5, written column-wise with numpy.

The layout is the one SAS publishes (TS-140: "The record layout of a data set in SAS transport
(XPORT) format"): 80-byte header records, one 140-byte NAMESTR per variable, then the
observations as fixed-width records, padded with blanks to a multiple of 80 bytes. Numbers are
IBM System/370 double precision; IEEE doubles convert exactly (53 bits fit in the 56-bit IBM
fraction), bit for bit, in bulk; values beyond the IBM range go to zero or to the largest value,
as SAS's own ``ieee2xpt`` does. The bytes equal what pyreadstat's writer gives for the same
frame (tests/test_writers.py checks it), only several times faster, and with no row loop.

Example:
    >>> ibm_doubles(np.array([1.0, 0.5, -2.0, 0.0, np.nan])).tobytes().hex(" ", 8).split()
    ['4110000000000000', '4080000000000000', 'c120000000000000', '0000000000000000', '2e00000000000000']
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from .text import factorize, first_appearances

_HEADER = "HEADER RECORD*******{kind:<8}HEADER RECORD!!!!!!!{digits:<30}  "


def _record(text: str | bytes, width: int = 80) -> bytes:
    data = text.encode("ascii") if isinstance(text, str) else text
    return data[:width].ljust(width, b" ")


def ibm_doubles(values: np.ndarray) -> np.ndarray:
    """IEEE doubles to big-endian IBM System/370 doubles (as ``>u8``); 0 gives 8 zero bytes and
    a missing value SAS's ``.`` (0x2E followed by zeros)."""
    v = np.asarray(values, dtype=np.float64)
    bits = v.view(np.uint64)
    sign = (bits >> np.uint64(63)).astype(np.int64)
    exponent = ((bits >> np.uint64(52)) & np.uint64(0x7FF)).astype(np.int64) - 1023
    mantissa = (bits & np.uint64((1 << 52) - 1)) | np.uint64(1 << 52)  # the implicit leading 1
    shift = (exponent & 3).astype(np.uint64)
    fraction = mantissa << shift  # 53 bits moved into the 56-bit base-16 fraction: exact
    characteristic = ((exponent >> 2) + 65) | (sign << 7)
    out = (characteristic.astype(np.uint64) << np.uint64(56)) | fraction
    # beyond the IBM range: too large (or infinite) -> the largest value of its sign, as SAS's
    # ieee2xpt and ReadStat do; too small -> zero
    largest = np.where(sign == 1, np.uint64(0xFFFFFFFFFFFFFFFF), np.uint64(0x7FFFFFFFFFFFFFFF))
    out = np.where((exponent > 248) | np.isinf(v), largest, out)
    out = np.where((v == 0) | (exponent < -260), np.uint64(0), out)
    out = np.where(np.isnan(v), np.uint64(0x2E) << np.uint64(56), out)
    return out.astype(">u8")


def _char_block(values: pd.Series, width: int, is_text: bool = False) -> np.ndarray:
    """A character column as fixed-width ASCII bytes, blank-padded (values are checked earlier);
    ``is_text``: already plain ``str`` with no missing values. Each distinct value is encoded and
    padded once and the column taken from those by its codes: SDTM text repeats a lot."""
    text = values if is_text else values.fillna("").astype(str)
    if not len(text):
        return np.zeros(0, dtype=f"S{width}")
    codes, uniques = factorize(text.to_numpy(dtype=object))
    # XPT pads with blanks, and a NUL inside a value is written as a blank, as before
    padded = np.array([u.replace("\x00", " ").ljust(width) for u in uniques.tolist()], dtype=f"S{width}")
    return padded[codes]


def write_xpt_v5(path: Path, frame: pd.DataFrame, name: str, label: str, labels: dict[str, str],
                 formats: dict[str, str], widths: dict[str, int], timestamp: bytes,
                 texts: dict[str, pd.Series] | None = None) -> None:
    """Write ``frame`` as an XPT v5 member: numeric columns as 8-byte IBM doubles, text columns
    ``widths[col]`` bytes wide; ``formats`` such as ``DATE9.``; ``timestamp`` as ``01JAN26:00:00:00``;
    ``texts``: text columns already made plain ``str`` (by the checks), used as they are."""
    texts = texts or {}
    columns = list(frame.columns)
    numeric = [frame[c].dtype.kind in "fiub" for c in columns]
    lengths = [8 if num else max(1, int(widths.get(c, 1))) for c, num in zip(columns, numeric)]
    stamp = timestamp.decode("ascii")
    head = [
        _record(_HEADER.format(kind="LIBRARY", digits="0" * 30)),
        _record(f"{'SAS':<8}{'SAS':<8}{'SASLIB':<8}{'6.06':<8}{'bsd4.2':<8}{'':<24}{stamp}"),
        _record(f"{stamp}"),
        _record(_HEADER.format(kind="MEMBER", digits="0" * 17 + "160000000014" + "0")),
        _record(_HEADER.format(kind="DSCRPTR", digits="0" * 30)),
        _record(f"{'SAS':<8}{name:<8}{'SASDATA':<8}{'6.06':<8}{'bsd4.2':<8}{'':<24}{stamp}"),
        _record(f"{stamp}{'':<16}{label:<40}{'':<8}"),
        _record(_HEADER.format(kind="NAMESTR", digits=f"000000{len(columns):04d}" + "0" * 20)),
    ]
    namestrs = bytearray()
    position = 0
    for number, (col, num, length) in enumerate(zip(columns, numeric, lengths), start=1):
        fmt = formats.get(col, "")
        fmt_name = fmt.rstrip(".0123456789") if fmt else ""
        digits = fmt[len(fmt_name):].rstrip(".")
        fmt_len, _, fmt_dec = digits.partition(".")
        namestrs += np.array([(1 if num else 2, 0, length, number)], dtype=">i2").tobytes()
        namestrs += col.encode("ascii").ljust(8) + labels.get(col, "").encode("ascii").ljust(40)[:40]
        namestrs += fmt_name.encode("ascii").ljust(8)
        namestrs += np.array([int(fmt_len or 0), int(fmt_dec or 0), 1 if num else 0], dtype=">i2").tobytes()  # NFJ: numbers right-justified
        namestrs += b"\x00\x00" + b" " * 8 + np.array([0, 0], dtype=">i2").tobytes()
        namestrs += np.array([position], dtype=">i4").tobytes() + b"\x00" * 52
        position += length
    namestrs += b" " * (-len(namestrs) % 80)
    obs = _record(_HEADER.format(kind="OBS", digits="0" * 30))
    record = np.dtype([(f"f{i}", ">u8" if num else f"S{length}") for i, (num, length) in
                       enumerate(zip(numeric, lengths))])
    written = 0
    with open(path, "wb") as fh:
        fh.write(b"".join(head))
        fh.write(bytes(namestrs))
        fh.write(obs)
        # observations in chunks: the packed copy of a million-record frame never exists whole
        for start in range(0, len(frame), CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, len(frame))
            rows = np.empty(stop - start, dtype=record)
            for i, (col, num, length) in enumerate(zip(columns, numeric, lengths)):
                if num:
                    rows[f"f{i}"] = ibm_doubles(frame[col].iloc[start:stop].to_numpy(dtype=np.float64))
                elif col in texts:
                    rows[f"f{i}"] = _char_block(texts[col].iloc[start:stop], length, True)
                else:
                    rows[f"f{i}"] = _char_block(frame[col].iloc[start:stop], length)
            fh.write(rows.data)  # text is blank-padded already: the records go out as they are
            written += rows.nbytes
        fh.write(b" " * (-written % 80))


CHUNK_ROWS = 100_000


def ieee_doubles(raw: np.ndarray) -> np.ndarray:
    """Big-endian IBM System/370 doubles (``>u8``) to IEEE doubles, in bulk; SAS missing values
    (``.``, ``.A``-``.Z``, ``._``: that byte, then seven zero bytes) become NaN. The 56-bit IBM
    fraction is rounded to IEEE's 53 bits; what :func:`ibm_doubles` wrote comes back exactly.

    >>> ieee_doubles(ibm_doubles(np.array([1.0, -2.5, 0.0, 1e-70, np.nan]))).tolist()
    [1.0, -2.5, 0.0, 1e-70, nan]
    """
    u = np.asarray(raw).astype(np.uint64)
    sign = (u >> np.uint64(63)).astype(bool)
    exponent = ((u >> np.uint64(56)) & np.uint64(0x7F)).astype(np.int64)
    fraction = (u & np.uint64((1 << 56) - 1)).astype(np.float64)  # 0.F in units of 2^-56
    value = np.ldexp(fraction, (4 * (exponent - 64) - 56).astype(np.int32))
    value = np.where(sign, -value, value)
    first = (u >> np.uint64(56)).astype(np.int64)
    missing = ((u & np.uint64((1 << 56) - 1)) == 0) & ((first == 0x2E) | (first == 0x5F) | ((first >= 0x41) & (first <= 0x5A)))
    value[missing] = np.nan
    return value


_NAMESTR = re.compile(rb"HEADER RECORD\*{7}NAMESTR HEADER RECORD!{7}0{6}(\d{4})")
_OBS = b"HEADER RECORD*******OBS     HEADER RECORD!!!!!!!"


def _distinct_bytes(values: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    """Distinct values of a fixed-width bytes column (as numpy's ``S`` gives them: trailing NULs
    dropped) and each record's index into them. The bytes are hashed as 64-bit words and the hashes
    factorized; a hash collision (checked word by word) falls back to sorting."""
    n, width = len(values), values.dtype.itemsize
    if not n:
        return [], np.zeros(0, dtype=np.intp)
    words = -(-width // 8)
    matrix = np.zeros((n, 8 * words), dtype=np.uint8)
    matrix[:, :width] = values.view(np.uint8).reshape(n, width)
    keys = matrix.view("<u8")  # n x words
    hashed = keys[:, 0].copy()
    for j in range(1, words):
        hashed = hashed * np.uint64(0x9E3779B97F4A7C15) ^ keys[:, j]
    codes, _hashes = pd.factorize(hashed)
    first = first_appearances(codes)
    if words > 1 and not (keys == keys[first[codes]]).all():  # two values with one hash
        uniques, inverse = np.unique(values, return_inverse=True)
        return uniques.tolist(), inverse.reshape(-1)
    return values[first].tolist(), codes


def read_xpt_v5_data(path: Path, chunk_rows: int = 100_000) -> pd.DataFrame | None:
    """The observations of a one-member XPT v5 file, read column-wise with numpy: numbers as IEEE
    doubles, text as ``str`` with trailing blanks removed and one object per distinct value.
    None when the file is outside what this reader handles (numbers shorter than 8 bytes, records
    shorter than a card, several members, VAX namestrs): the caller then uses a general reader.

    The record count follows from the data length: for records of at least 80 bytes the blank
    padding of the last card is shorter than a record, so it is never taken for one. Records are
    read ``chunk_rows`` at a time.
    """
    with open(path, "rb") as fh:
        head = fh.read(80 * 8)
        found = _NAMESTR.search(head)
        if found is None:
            return None
        n_vars = int(found.group(1))
        names_at = found.start() + 80
        namestr_bytes = 140 * n_vars
        fh.seek(names_at)
        names = fh.read(namestr_bytes)
        obs_at = names_at + namestr_bytes + (-namestr_bytes % 80)
        fh.seek(obs_at)
        if fh.read(80)[:len(_OBS)] != _OBS:
            return None
        size = fh.seek(0, 2)
    columns, formats, offsets = [], [], []
    for i in range(n_vars):
        ns = names[140 * i:140 * (i + 1)]
        kind, length = int.from_bytes(ns[0:2], "big"), int.from_bytes(ns[4:6], "big")
        position = int.from_bytes(ns[84:88], "big")
        if kind == 1 and length != 8 or kind not in (1, 2) or length < 1:
            return None
        columns.append(ns[8:16].decode("ascii").rstrip())
        formats.append(">u8" if kind == 1 else f"S{length}")
        offsets.append(position)
    record = np.dtype({"names": [f"f{i}" for i in range(n_vars)], "formats": formats, "offsets": offsets,
                       "itemsize": sum(8 if f == ">u8" else int(f[1:]) for f in formats)})
    data_at = obs_at + 80
    if record.itemsize < 80:
        return None
    n = (size - data_at) // record.itemsize
    # records are read a chunk at a time, so the file never sits in memory whole: numbers are
    # converted per chunk; text keeps per-chunk codes into one table of distinct values
    numbers: dict[int, list[np.ndarray]] = {}
    codes: dict[int, list[np.ndarray]] = {}
    distinct: dict[int, dict[bytes, int]] = {}
    with open(path, "rb") as fh:
        fh.seek(data_at + n * record.itemsize)
        if fh.read().strip(b" "):
            return None  # more than blank padding after the last record: another member follows
        fh.seek(data_at)
        for start in range(0, n, chunk_rows):
            rows = np.fromfile(fh, dtype=record, count=min(chunk_rows, n - start))
            for i, fmt in enumerate(formats):
                field = rows[f"f{i}"]
                if fmt == ">u8":
                    numbers.setdefault(i, []).append(ieee_doubles(field))
                    continue
                uniques, inverse = _distinct_bytes(np.ascontiguousarray(field))
                table = distinct.setdefault(i, {})
                to_global = np.array([table.setdefault(u, len(table)) for u in uniques], dtype=np.int64)
                codes.setdefault(i, []).append(to_global[inverse])
            del rows
    out = {}
    for i, (name, fmt) in enumerate(zip(columns, formats)):
        if fmt == ">u8":
            out[name] = np.concatenate(numbers.pop(i)) if n else np.zeros(0, dtype=np.float64)
        else:
            text = np.array([u.rstrip().decode("ascii") for u in distinct.pop(i, {})], dtype=object)
            out[name] = text[np.concatenate(codes.pop(i))] if n else np.zeros(0, dtype=object)  # one str per value
    return pd.DataFrame({name: pd.Series(values, dtype=float if values.dtype.kind == "f" else object)
                         for name, values in out.items()})
