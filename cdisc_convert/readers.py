"""Readers: EDC exports in, one DataFrame of text per CRF form out.

Every reader returns ``{FORM: DataFrame}``; all values are strings (empty for missing) and
each row carries ``__src``, a pointer to where it came from: ``file:line`` for CSV, the ODM
path for ODM XML, ``file:row`` for SAS datasets.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "ae.csv").write_bytes("\\ufeffSUBJECT,AETERM\\n01-001,Fever\\n".encode("utf-8"))
    >>> read_csv_forms(d)["AE"].to_dict("records")
    [{'SUBJECT': '01-001', 'AETERM': 'Fever', '__src': 'ae.csv:2'}]
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pandas as pd
from lxml import etree

from .errors import ConversionError

ODM_NS = "{http://www.cdisc.org/ns/odm/v1.3}"
# C0 controls but tab, line feed and carriage return; DEL; C1 controls (cp1252 text read as Latin-1)
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _refuse_control(header: list[str], rows: list[list[str]], sources: list[str], file: str) -> None:
    """A control character (NUL, C1 ...) in a value is an error naming file, row and field: it
    would be cut or kept invisibly in the outputs."""
    for row, source in zip(rows, sources):
        for name, value in zip(header, row):
            found = CONTROL.search(value)
            if found:
                code = ord(found.group())
                hint = "; the export may be Windows-1252: pass --encoding cp1252" if 0x80 <= code <= 0x9f else ""
                raise ConversionError(f"control character U+{code:04X} in value {value!r}{hint}", source=source,
                                      field=name)
    raise ConversionError("control character in the header row", source=f"{file}:1")


def _frame(columns: list[str], rows: list[list[str]], sources: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns, dtype=object) if rows else pd.DataFrame(columns=columns, dtype=object)
    frame["__src"] = pd.Series(sources, dtype=object, index=frame.index)
    return frame


def read_csv_form(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read one CSV form; a UTF-8 BOM is accepted; a ragged row is an error naming its line."""
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        text = path.read_bytes().decode(codec)
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConversionError(f"file is not valid {encoding} (byte {exc.start}); pass --encoding latin-1 if the "
                              f"export is Latin-1", source=f"{path.name}:{line}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        raise ConversionError("CSV form has no header row", source=f"{path.name}:1")
    header = [h.strip() for h in header]
    rows, sources = [], []
    for row in reader:
        if not row:
            continue
        if len(row) != len(header):
            raise ConversionError(f"ragged row: {len(row)} fields where the header has {len(header)}",
                                  source=f"{path.name}:{reader.line_num}")
        rows.append([v.strip() for v in row])
        sources.append(f"{path.name}:{reader.line_num}")
    if CONTROL.search(text):
        _refuse_control(header, rows, sources, path.name)
    return _frame(header, rows, sources)


def csv_form_files(folder: Path, forms: list[str] | None = None, ignore: list[str] | None = None) -> list[Path]:
    """The form files of an EDC folder: ``forms`` (file names, with or without ``.csv``) when
    given, else every ``*.csv`` not matching an ``ignore`` pattern (a CT file is not a form)."""
    import fnmatch

    if forms is not None:
        files = []
        for name in forms:
            path = folder / (name if name.lower().endswith(".csv") else f"{name}.csv")
            if not path.is_file():
                raise ConversionError(f"form file {path.name} named in study.yaml (edc.forms) is not in the EDC folder",
                                      source=str(folder))
            files.append(path)
        return sorted(files)
    return sorted(p for p in folder.glob("*.csv")
                  if not any(fnmatch.fnmatch(p.name.lower(), pat.lower()) for pat in ignore or []))


def read_csv_forms(folder: Path, encoding: str = "utf-8", forms: list[str] | None = None,
                   ignore: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Read the CSV forms of ``folder`` (see :func:`csv_form_files`); the form name is the upper-cased file stem."""
    files = csv_form_files(folder, forms, ignore)
    if not files:
        raise ConversionError("no CSV forms found in the EDC folder", source=str(folder))
    return {p.stem.upper(): read_csv_form(p, encoding) for p in files}


def _refuse_doctype(path: Path) -> None:
    """ODM never needs a DTD; refusing one blocks entity expansion bombs and external entities."""
    with path.open("rb") as fh:
        head = fh.read(65536)
    if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
        line = head[: head.find(b"<!")].count(b"\n") + 1
        raise ConversionError("ODM file declares a DOCTYPE/ENTITY; DTDs and entities are refused "
                              "(external entities and entity expansion are a security risk)",
                              source=f"{path.name}:{line}")


def read_odm_forms(path: Path, key_fields: tuple[str, str, str, str] = ("SITEID", "SUBJECT", "FOLDER", "FORMREPEAT")
                   ) -> dict[str, pd.DataFrame]:
    """Read ODM 1.3.2 ClinicalData into one frame per form, columns ordered by the metadata.

    Forms, folders and fields take the ``Name`` of their FormDef, StudyEventDef and ItemDef
    when the file has metadata, else their OID. The parser never resolves entities, never
    loads a DTD and never touches the network.
    """
    if not path.exists():
        raise ConversionError("ODM file not found", source=str(path))
    _refuse_doctype(path)
    parser_args = dict(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_comments=True)
    site_f, subj_f, folder_f, repeat_f = key_fields
    item_names: dict[str, str] = {}
    names: dict[str, str] = {}  # StudyEventDef/FormDef OID -> Name
    group_items: dict[str, list[str]] = {}
    form_groups: dict[str, list[str]] = {}  # form Name -> its ItemGroupOIDs
    rows: dict[str, list[dict[str, str]]] = {}
    sources: dict[str, list[str]] = {}
    subject = site = folder = event_oid = ""
    try:
        for event, el in etree.iterparse(str(path), events=("start", "end"), **parser_args):
            tag = el.tag.replace(ODM_NS, "") if isinstance(el.tag, str) else ""
            if event == "start":
                if tag == "SubjectData":
                    subject, site = el.get("SubjectKey", ""), ""
                elif tag == "SiteRef":
                    site = el.get("LocationOID", "")
                elif tag == "StudyEventData":
                    event_oid = el.get("StudyEventOID", "")
                    folder = names.get(event_oid, event_oid)
                continue
            if tag == "ItemDef":
                item_names[el.get("OID")] = el.get("Name")
            elif tag in ("StudyEventDef", "FormDef"):
                names[el.get("OID")] = el.get("Name") or el.get("OID")
                if tag == "FormDef":
                    form_groups[names[el.get("OID")]] = [r.get("ItemGroupOID") for r in el.iter(f"{ODM_NS}ItemGroupRef")]
            elif tag == "ItemGroupDef":
                group_items[el.get("OID")] = [r.get("ItemOID") for r in el.iter(f"{ODM_NS}ItemRef")]
                el.clear()
            elif tag == "FormData":
                form_oid, repeat = el.get("FormOID"), el.get("FormRepeatKey", "1")
                form = names.get(form_oid, form_oid)
                values = {site_f: site, subj_f: subject, folder_f: folder, repeat_f: repeat}
                for item in el.iter(f"{ODM_NS}ItemData"):
                    oid = item.get("ItemOID")
                    values[item_names.get(oid, oid.rsplit(".", 1)[-1])] = (item.get("Value") or "").strip()
                rows.setdefault(form, []).append(values)
                sources.setdefault(form, []).append(
                    f"{path.name}#SubjectData[@SubjectKey='{subject}']/StudyEventData[@StudyEventOID='{event_oid}']"
                    f"/FormData[@FormOID='{form_oid}'][@FormRepeatKey='{repeat}']")
                el.clear()
    except etree.XMLSyntaxError as exc:
        raise ConversionError(f"ODM file is not well-formed XML: {exc.msg}", source=f"{path.name}:{exc.lineno}") from None
    forms = {}
    for form, form_rows in rows.items():
        item_oids = [o for group in form_groups.get(form, [form]) for o in group_items.get(group, [])]
        columns = [site_f, subj_f, folder_f, repeat_f] + [item_names.get(o, o) for o in item_oids]
        for r in form_rows:
            for name in r:
                if name not in columns:
                    columns.append(name)
        forms[form] = _frame(columns, [[r.get(c, "") for c in columns] for r in form_rows], sources[form])
    return forms


def read_sas_forms(folder: Path) -> dict[str, pd.DataFrame]:
    """Read ``*.sas7bdat`` and ``*.xpt`` forms through pyreadstat; values become text."""
    import pyreadstat

    forms = {}
    for path in sorted([*folder.glob("*.sas7bdat"), *folder.glob("*.xpt")]):
        reader = pyreadstat.read_sas7bdat if path.suffix == ".sas7bdat" else pyreadstat.read_xport
        frame, _meta = reader(str(path))
        text = frame.astype(object).where(frame.notna(), "").map(_sas_text)
        forms[path.stem.upper()] = _frame(list(text.columns), text.values.tolist(),
                                          [f"{path.name}:{i + 1}" for i in range(len(text))])
    if not forms:
        raise ConversionError("no SAS datasets found in the EDC folder", source=str(folder))
    return forms


def _sas_text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
