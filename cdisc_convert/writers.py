"""Writers: SAS XPT v5 (our column-wise writer, :mod:`cdisc_convert.xpt`) and CDISC Dataset-JSON 1.1, plus the atomic
output folder.

Before a byte is written, :func:`check_xpt_rules` enforces the XPT v5 / FDA rules: names of at
most 8 characters, labels of at most 40, character values of at most 200 bytes, ASCII only.
A breach stops the write with an error naming dataset, variable and record.

Example:
    >>> import tempfile, pathlib
    >>> ds = Dataset("DM", "Demographics", pd.DataFrame({"STUDYID": ["S1"], "AGE": [41.0]}),
    ...              {"STUDYID": "Study Identifier", "AGE": "Age"}, keys=["STUDYID"])
    >>> path = write_xpt(ds, pathlib.Path(tempfile.mkdtemp()), "2026-01-01T00:00:00")
    >>> pd.read_sas(path, format="xport", encoding="ascii").to_dict("records")
    [{'STUDYID': 'S1', 'AGE': 41.0}]
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from .errors import ConversionError
from .text import as_text, char_lengths, factorize, is_plain_text, on_unique, shared_text

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]


@dataclass
class Dataset:
    """A dataset ready to write: name, label, data (typed), variable labels and sort keys."""

    name: str
    label: str
    data: pd.DataFrame  # a CompactFrame while put at rest (put_at_rest / restore)
    labels: dict[str, str]
    keys: list[str] = field(default_factory=list)
    record_ids: list[str] | None = None  # how to name a record in errors (e.g. USUBJID + --SEQ)
    formats: dict[str, str] = field(default_factory=dict)
    # text facts, computed once by check_xpt_rules and shared by both writers, define.xml and the
    # validator: each text column as plain str values, and its width in bytes (at least 1)
    texts: dict[str, pd.Series] | None = field(default=None, repr=False, compare=False)
    widths: dict[str, int] | None = field(default=None, repr=False, compare=False)

    def text_facts(self) -> tuple[dict[str, pd.Series], dict[str, int]]:
        """``(texts, widths)`` of the text columns, checked against the XPT v5 rules on first use."""
        if self.texts is None or self.widths is None:
            check_xpt_rules(self)
        return self.texts, self.widths

    def put_at_rest(self) -> None:
        """Hold ``data`` compact (:class:`~cdisc_convert.at_rest.CompactFrame`) while a later phase
        waits for it; ``len(data)`` and ``data.columns`` still answer. The widths are kept. A
        dataset of fewer than ``AT_REST_MIN_RECORDS`` records stays as it is."""
        from .at_rest import CompactFrame, at_rest

        if not isinstance(self.data, CompactFrame):
            self.data = at_rest(self.data)
            if isinstance(self.data, CompactFrame):
                self.texts = None  # they held the text columns the codes replace

    def restore(self) -> None:
        """``data`` as a DataFrame again, after :meth:`put_at_rest`; its text columns are the
        plain ``str`` columns the text facts hold, so they are not measured again."""
        from .at_rest import CompactFrame

        if isinstance(self.data, CompactFrame):
            coded, self.data = self.data.coded, self.data.frame()
            if self.widths is not None:
                self.texts = {c: v if c in coded or is_plain_text(v) else as_text(v)
                              for c, v in ((c, self.data[c]) for c in self.widths)}


def _record_name(ds: Dataset, i: int) -> str:
    ids = [c for c in (ds.record_ids or ds.keys) if c in ds.data.columns]
    parts = []
    for c in ids:
        v = ds.data[c].iloc[i]
        parts.append(f"{c}={v:g}" if isinstance(v, float) else f"{c}={v}")
    return f"row {i + 1}" + (f" ({', '.join(parts)})" if parts else "")


def check_xpt_rules(ds: Dataset) -> dict[str, int]:
    """Raise a ConversionError for the first breach of the XPT v5 naming, label and value rules;
    return each text column's width (its longest value in bytes, at least 1), computed once here.
    The widths and each text column as plain ``str`` values are kept on the dataset
    (``ds.widths``, ``ds.texts``) for the writers, define.xml and the validator."""
    texts: dict[str, pd.Series] = {}
    if len(ds.name) > 8 or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", ds.name):
        raise ConversionError(f"dataset name '{ds.name}' is not a valid XPT v5 name (1-8 letters, digits, _)",
                              dataset=ds.name)
    if len(ds.label) > 40 or not ds.label.isascii():
        raise ConversionError(f"dataset label '{ds.label}' is longer than 40 characters or not ASCII", dataset=ds.name)
    widths: dict[str, int] = {}
    for col in ds.data.columns:
        if len(col) > 8 or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", col):
            raise ConversionError(f"variable name '{col}' is not a valid XPT v5 name (1-8 letters, digits, _)",
                                  dataset=ds.name, field=col)
        label = ds.labels.get(col, "")
        if len(label) > 40 or not label.isascii():
            raise ConversionError(f"label '{label}' of {col} is longer than 40 characters or not ASCII",
                                  dataset=ds.name, field=col)
        values = ds.data[col]
        if values.dtype.kind in "fiu":
            if values.dtype.kind == "f":
                infinite = np.isinf(values.to_numpy())
                if infinite.any():  # XPT has no infinity and strict JSON parsers reject Infinity
                    i = int(np.flatnonzero(infinite)[0])
                    error = ConversionError(f"value {values.iloc[i]} of {col} is not finite (XPT and Dataset-JSON "
                                            f"hold finite numbers only)", dataset=ds.name, field=col,
                                            record=_record_name(ds, i))
                    error.row = i
                    raise error
            continue
        # each distinct value checked and measured once (a dataset's column holds one str per value)
        codes, distinct = factorize(values)
        if values.dtype == object and all(type(v) is str for v in distinct):
            text = values  # typed data: shared, not copied
        else:
            text = as_text(values)
            codes, distinct = factorize(text)
        texts[col] = text
        distinct = list(distinct)
        if "".join(distinct).isascii():  # one C pass; then characters are bytes
            lengths = char_lengths(distinct)
        else:
            bad = np.array([not v.isascii() for v in distinct])
            i = int(np.flatnonzero(bad[codes])[0])
            error = ConversionError(f"non-ASCII character in value '{text.iloc[i]}' (XPT v5 holds ASCII only; map "
                                    f"or transliterate it in the spec)", dataset=ds.name, field=col,
                                    record=_record_name(ds, i))
            error.row = i  # the caller may name the source row of this record
            raise error
        too_long = lengths > 200
        if too_long.any():
            i = int(np.flatnonzero(too_long[codes])[0])
            error = ConversionError(f"value of {lengths[codes[i]]} bytes exceeds the XPT v5 limit of 200",
                                    dataset=ds.name, field=col, record=_record_name(ds, i))
            error.row = i
            raise error
        widths[col] = max(1, int(lengths.max())) if len(lengths) else 1
    ds.texts, ds.widths = texts, widths
    return widths


def sas_timestamp(iso: str) -> bytes:
    """``2026-01-01T00:00:00`` -> ``01JAN26:00:00:00``, the XPT header date format.

    >>> sas_timestamp("2026-03-04T05:06:07")
    b'04MAR26:05:06:07'
    """
    t = dt.datetime.fromisoformat(iso)
    return f"{t.day:02d}{MONTHS[t.month - 1]}{t.year % 100:02d}:{t:%H:%M:%S}".encode()


def write_xpt(ds: Dataset, folder: Path, created: str) -> Path:
    """Write ``<name>.xpt`` (XPT v5) with dataset and variable labels by our column-wise writer
    (:mod:`cdisc_convert.xpt`, byte for byte what pyreadstat wrote before, several times faster);
    header timestamps are ``created`` so that the same data always gives the same bytes."""
    from .xpt import write_xpt_v5

    texts, widths = ds.text_facts()
    path = folder / f"{ds.name.lower()}.xpt"
    try:
        write_xpt_v5(path, ds.data, ds.name, ds.label, ds.labels, ds.formats or {}, widths, sas_timestamp(created),
                     texts)
    except OSError as exc:
        raise ConversionError(f"could not write the XPT file ({exc.strerror or exc}): is the disk full or the folder "
                              f"not writable?", source=str(path), dataset=ds.name) from None
    return path


def _json_type(name: str, series: pd.Series) -> str:
    """``integer`` when every value is whole (as define.xml types it), else ``double``."""
    if series.dtype.kind not in "fiu":
        return "string"
    values = series.dropna().astype(float)
    if values.empty or ((values == values.round()).all() and values.abs().max() < 1e15):
        return "integer"
    return "double"


def write_dataset_json(ds: Dataset, folder: Path, created: str, studyid: str, version: str, model: str = "SDTM") -> Path:
    """Write CDISC Dataset-JSON 1.1 (``<name>.json``): metadata, columns and rows. The study and
    metadata-version OIDs are define.xml's (``ST.<studyid>``, ``MDV.<studyid>.<SDTM|ADAM>``).

    Rows are serialised column-wise by orjson, in chunks (a million-record dataset never becomes
    one Python list of lists); the text is what ``json.dumps(ensure_ascii=True)`` writes."""
    texts, widths = ds.text_facts()
    columns = []
    for col in ds.data.columns:
        fmt = ds.formats.get(col, "")
        kind = "datetime" if fmt.startswith("DATETIME") else "date" if fmt.startswith("DATE") else _json_type(col, ds.data[col])
        entry = {"itemOID": f"IT.{ds.name}.{col}", "name": col, "label": ds.labels.get(col, ""), "dataType": kind}
        if kind in ("date", "datetime"):
            entry["targetDataType"] = "integer"  # a SAS numeric date/datetime in the XPT
        if fmt:
            entry["displayFormat"] = fmt
        if kind == "string":
            entry["length"] = widths[col]  # ASCII: bytes are characters; an empty dataset declares 1
        if col in ds.keys:
            entry["keySequence"] = ds.keys.index(col) + 1
        columns.append(entry)
    doc = {
        "datasetJSONCreationDateTime": created, "datasetJSONVersion": "1.1.0",
        "fileOID": f"{studyid}.{ds.name}", "originator": "cdisc_convert",
        "sourceSystem": {"name": "cdisc_convert", "version": version},
        "studyOID": f"ST.{studyid}", "metaDataVersionOID": f"MDV.{studyid}.{model}", "itemGroupOID": f"IG.{ds.name}",
        "records": len(ds.data), "name": ds.name, "label": ds.label, "columns": columns, "rows": [],
    }
    head = json.dumps(doc, ensure_ascii=True, separators=(",", ":"))
    assert head.endswith('"rows":[]}')
    path = folder / f"{ds.name.lower()}.json"
    with path.open("wb") as fh:
        fh.write(head[:-2].encode("ascii"))
        for start in range(0, len(ds.data), JSON_CHUNK_ROWS):
            stop = start + JSON_CHUNK_ROWS
            values = [texts[c].iloc[start:stop].tolist() if e["dataType"] == "string"
                      else _json_column(ds.data[c].iloc[start:stop], e["dataType"]) for c, e in zip(ds.data.columns, columns)]
            rows = list(zip(*values))
            # DEL can only be inside a string: json.dumps escapes it, orjson does not
            text = orjson.dumps(rows).replace(b"\x7f", b"\\u007f")
            fh.write((b"," if start else b"") + text[1:-1])
        fh.write(b"]}\n")
    return path


JSON_CHUNK_ROWS = 25_000  # the chunk's Python values: ~50 MB for a 35-variable dataset (100,000 rows: 200 MB)


def _json_column(series: pd.Series, kind: str) -> list:
    """One numeric column's values as JSON-ready Python values (ISO text for SAS dates), vectorised."""
    if kind in ("date", "datetime"):
        unit = "D" if kind == "date" else "s"

        def iso(u: pd.Series) -> pd.Series:  # once per distinct date
            stamps = pd.Timestamp("1960-01-01") + pd.to_timedelta(u.astype(float), unit=unit)
            return stamps.dt.strftime("%Y-%m-%d" if unit == "D" else "%Y-%m-%dT%H:%M:%S").astype(object)
        return [None if v != v else v for v in on_unique(series, iso).tolist()]
    numbers = series.to_numpy(dtype=float)
    missing = np.isnan(numbers)
    out = np.empty(len(numbers), dtype=object)  # None where missing
    if kind == "integer":
        out[~missing] = numbers[~missing].astype(np.int64)
        return out.tolist()
    present = numbers[~missing]
    out[~missing] = present  # Python floats: orjson writes them as json.dumps does (shortest repr) ...
    # ... except below 1e-4, where Python writes 1e-07 and orjson 1e-7; and inf/nan, which orjson nulls
    differ = np.flatnonzero(~missing)[(np.abs(present) < 1e-4) & (present != 0) | ~np.isfinite(present)]
    for i in differ.tolist():
        out[i] = orjson.Fragment(json.dumps(float(numbers[i])))
    return out.tolist()


@dataclass
class XptFile:
    """An XPT file read back: data, dataset name and label, variable labels, widths, formats."""

    name: str
    label: str
    data: pd.DataFrame  # a CompactFrame while put at rest (put_at_rest / restore)
    labels: dict[str, str]
    widths: dict[str, int]
    formats: dict[str, str]


def read_xpt(path: Path) -> XptFile:
    """Read an XPT file: metadata through pyreadstat; data by our column-wise numpy reader
    (:func:`cdisc_convert.xpt.read_xpt_v5_data`), or, for files outside what it handles, through
    pandas' XPT reader in chunks (pyreadstat for narrow records). Character missing values become
    ``""``; text columns hold one ``str`` object per distinct value."""
    from .xpt import read_xpt_v5_data

    try:
        import pyreadstat  # here, not at import: a run that reads no XPT does not pay for it

        _empty, meta = pyreadstat.read_xport(str(path), metadataonly=True)
        frame = read_xpt_v5_data(Path(path))
        if frame is None:
            frame = _read_xpt_general(path, meta)
    except ConversionError:
        raise
    except Exception as exc:  # the readers raise their own error types
        raise ConversionError(f"unreadable XPT file: {exc}", source=Path(path).name) from None
    formats = {c: f"{f}." for c, f in (meta.original_variable_types or {}).items() if f and f.startswith("DATE")}
    return XptFile((meta.table_name or Path(path).stem).upper(), meta.file_label or "", frame,
                   dict(meta.column_names_to_labels), dict(meta.variable_storage_width or {}), formats)


def _read_xpt_general(path: Path, meta) -> pd.DataFrame:
    """Any XPT file, through pandas' reader in chunks, or pyreadstat for records shorter than a card
    (pandas drops the last record of some such files)."""
    if sum((meta.variable_storage_width or {}).values()) < 80:
        import pyreadstat

        whole, _meta = pyreadstat.read_xport(str(path), disable_datetime_conversion=True)
        chunks = [_compact(whole)] if len(whole) else []
    else:
        # in chunks, each made compact before the next is read: a million-record file never
        # exists as a million separate str objects per column
        with pd.read_sas(path, format="xport", encoding="ascii", chunksize=READ_CHUNK_ROWS) as reader:
            chunks = [_compact(chunk) for chunk in reader]
    frame = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0] if chunks else pd.DataFrame()
    if len(chunks) > 1:
        for col in frame.columns:
            if frame[col].dtype.kind not in "fiu":
                frame[col] = shared_text(frame[col])  # one object per distinct value across chunks
    if not chunks:
        frame = pd.DataFrame({c: pd.Series(dtype=float if t == "double" else object)
                              for c, t in (meta.readstat_variable_types or {}).items()})
    return frame


READ_CHUNK_ROWS = 100_000


def _compact(frame: pd.DataFrame) -> pd.DataFrame:
    """Text missing as ``""`` with one object per distinct value; stored 0.0 read as 5.4e-79 undone."""
    for col in frame.columns:
        if frame[col].dtype.kind in "fiu":
            frame[col] = frame[col].mask(frame[col].abs() <= 1e-70, 0.0)
        else:
            frame[col] = shared_text(frame[col].fillna("").astype(object))
    return frame


MARKER = ".cdisc-convert"  # written into every output folder: the run may replace it next time
_TMP = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)(?:-.*)?$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_folder(out_dir: Path, protected: tuple[Path, ...] = ()) -> None:
    """Refuse, before any work, an output folder that the run must not replace: one that is or
    holds a protected folder (the study, its EDC export), a file, or a folder with content that
    cdisc-convert did not write (no marker; a folder whose parent carries the marker counts as
    written by it)."""
    out = Path(out_dir).resolve()
    for place in protected:
        place = Path(place).resolve()
        if out == place or out in place.parents:
            raise ConversionError(f"the output folder {out_dir} is or contains {place}; choose a folder outside it",
                                  source=str(out_dir))
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ConversionError(f"the output {out_dir} is a file, not a folder; refusing to replace it",
                                  source=str(out_dir))
        ours = (out / MARKER).is_file() or (out.parent / MARKER).is_file()
        if not ours and any(out.iterdir()):
            raise ConversionError(f"the output folder {out_dir} is not empty and was not written by cdisc-convert "
                                  f"(no {MARKER} marker); refusing to replace it - choose a new or empty folder",
                                  source=str(out_dir))


def remove_stale_temporaries(parent: Path, name: str) -> None:
    """Remove the temporary folders of runs that were killed (their process no longer exists)."""
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        found = _TMP.match(entry.name)
        if not found or found["name"] != name or not entry.is_dir():
            continue
        pid = int(found["pid"])
        try:
            os.kill(pid, 0)
            alive = pid != os.getpid()
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def atomic_output(out_dir: Path):
    """Yield a temporary folder beside ``out_dir``; move it into place only on success.

    On any error the temporary folder is removed and ``out_dir`` is left as it was. Temporary
    folders of killed runs are removed first; the new folder follows the umask and carries the
    marker that lets a later run replace it.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir.parent, out_dir.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-{os.getpid()}-", dir=out_dir.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        (tmp / MARKER).write_text("written by cdisc-convert; a later run may replace this folder\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        out_dir.rename(old)
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
