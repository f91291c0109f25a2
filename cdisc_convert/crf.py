"""The CRF design an EDC export carries: forms, their fields (question text, type, length,
codelist, unit) and codelists with decodes. It is what a blank CRF is drawn from.

Two sources, as EDC systems deliver them:

- CDISC ODM 1.3.2 metadata: ``FormDef`` -> ``ItemGroupRef`` -> ``ItemGroupDef`` -> ``ItemRef`` ->
  ``ItemDef`` (``Question``, ``Length``, ``CodeListRef``, ``MeasurementUnitRef``, an ``Alias`` in context
  ``EDC display format``) and ``CodeList``
  (``CodeListItem`` with ``Decode``); form titles from the FormDef's ``Description`` (else its Name);
- a data dictionary CSV beside the CSV export (``edc.data_dictionary`` in study.yaml), one row per
  field: ``FORM, FORM_TITLE, FIELD, QUESTION, DATATYPE, LENGTH, FORMAT, UNITS, CODELIST, CHOICES`` with
  ``CHOICES`` as ``code=decode`` pairs joined by `` | `` (as REDCap and Rave data dictionaries do).

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "dd.csv"
    >>> _ = p.write_text("FORM,FORM_TITLE,FIELD,QUESTION,DATATYPE,LENGTH,UNITS,CODELIST,CHOICES\\n"
    ...                  "AE,Adverse Events,AESER,Serious?,text,3,,NY,Yes=Yes | No=No\\n")
    >>> design = read_data_dictionary(p)
    >>> design.forms[0].title, design.forms[0].items[0].question, design.codelists["NY"]
    ('Adverse Events', 'Serious?', [('Yes', 'Yes'), ('No', 'No')])
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConversionError

DICTIONARY_COLUMNS = ["FORM", "FORM_TITLE", "FIELD", "QUESTION", "DATATYPE", "LENGTH", "FORMAT", "UNITS", "CODELIST",
                      "CHOICES"]
DISPLAY_FORMAT = "EDC display format"  # ODM Alias Context of a field's display format (DD MON YYYY)
ODM_NS = "{http://www.cdisc.org/ns/odm/v1.3}"


@dataclass(frozen=True)
class CrfItem:
    """One CRF field as designed in the EDC."""

    name: str
    question: str
    datatype: str = "text"
    length: int | None = None
    codelist: str | None = None
    unit: str | None = None
    display_format: str | None = None  # how the EDC shows the value (DD MON YYYY, HH:MM)


@dataclass
class CrfForm:
    name: str
    title: str
    items: list[CrfItem] = field(default_factory=list)


@dataclass
class CrfDesign:
    """Forms in design order and codelists as (coded value, decode) pairs."""

    forms: list[CrfForm]
    codelists: dict[str, list[tuple[str, str]]]
    source: str = ""

    def form(self, name: str) -> CrfForm | None:
        return next((f for f in self.forms if f.name == name), None)


def read_data_dictionary(path: Path) -> CrfDesign:
    """The CRF design from a data dictionary CSV (see the module doc for its columns)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConversionError(f"data dictionary cannot be read: {exc}", source=str(path)) from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in ("FORM", "FIELD", "QUESTION") if c not in (reader.fieldnames or [])]
    if missing:
        raise ConversionError(f"data dictionary lacks column(s) {', '.join(missing)} "
                              f"(expected {', '.join(DICTIONARY_COLUMNS)})", source=f"{path.name}:1")
    forms: dict[str, CrfForm] = {}
    codelists: dict[str, list[tuple[str, str]]] = {}
    for line, row in enumerate(reader, start=2):
        form, name = (row.get("FORM") or "").strip(), (row.get("FIELD") or "").strip()
        if not form or not name:
            raise ConversionError("data dictionary row without FORM or FIELD", source=f"{path.name}:{line}")
        length = (row.get("LENGTH") or "").strip()
        if length and not length.isdigit():
            raise ConversionError(f"LENGTH '{length}' is not a whole number", source=f"{path.name}:{line}",
                                  field="LENGTH")
        codelist = (row.get("CODELIST") or "").strip() or None
        choices = (row.get("CHOICES") or "").strip()
        if choices:
            pairs = []
            for part in choices.split(" | "):
                code, sep, decode = part.partition("=")
                pairs.append((code.strip(), decode.strip() if sep else code.strip()))
            codelist = codelist or f"{form}.{name}"
            if codelist in codelists and codelists[codelist] != pairs:
                raise ConversionError(f"codelist {codelist} has different choices on another row",
                                      source=f"{path.name}:{line}", field="CHOICES")
            codelists[codelist] = pairs
        target = forms.setdefault(form, CrfForm(form, (row.get("FORM_TITLE") or "").strip() or form))
        target.items.append(CrfItem(name, (row.get("QUESTION") or "").strip() or name,
                                    (row.get("DATATYPE") or "").strip() or "text", int(length) if length else None,
                                    codelist, (row.get("UNITS") or "").strip() or None,
                                    (row.get("FORMAT") or "").strip() or None))
    return CrfDesign(list(forms.values()), codelists, path.name)


def translated(el, child: str) -> str:
    """The text of an ODM element's ``child/TranslatedText`` ('' when absent)."""
    node = el.find(f"{ODM_NS}{child}/{ODM_NS}TranslatedText")
    return (node.text or "").strip() if node is not None else ""


def read_odm_design(path: Path) -> CrfDesign | None:
    """The CRF design from an ODM file's MetaDataVersion; None when its ItemDefs carry no questions
    (an export of data only: nothing to draw a CRF from)."""
    from lxml import etree

    from .readers import _refuse_doctype

    _refuse_doctype(path)
    units: dict[str, str] = {}
    mdv = None
    try:  # read up to the end of the metadata only: ClinicalData may be large
        for _event, el in etree.iterparse(str(path), events=("end",), resolve_entities=False, no_network=True,
                                          load_dtd=False, remove_comments=True):
            if el.tag == f"{ODM_NS}MeasurementUnit":
                units[el.get("OID")] = translated(el, "Symbol") or el.get("Name")
            elif el.tag == f"{ODM_NS}MetaDataVersion":
                mdv = el
                break
    except etree.XMLSyntaxError as exc:
        raise ConversionError(f"ODM file is not well-formed XML: {exc.msg}", source=f"{path.name}:{exc.lineno}") from None
    if mdv is None:
        return None

    codelists = {}
    codelist_names = {}
    for cl in mdv.iter(f"{ODM_NS}CodeList"):
        codelist_names[cl.get("OID")] = cl.get("Name") or cl.get("OID")
        codelists[codelist_names[cl.get("OID")]] = [(i.get("CodedValue"), translated(i, "Decode") or i.get("CodedValue"))
                                                    for i in cl.iter(f"{ODM_NS}CodeListItem")]
    item_defs = {}
    asked = False
    for it in mdv.iter(f"{ODM_NS}ItemDef"):
        question = translated(it, "Question")
        asked = asked or bool(question)
        ref = it.find(f"{ODM_NS}CodeListRef")
        unit = it.find(f"{ODM_NS}MeasurementUnitRef")
        length = it.get("Length")
        alias = next((a.get("Name") for a in it.iter(f"{ODM_NS}Alias") if a.get("Context") == DISPLAY_FORMAT), None)
        item_defs[it.get("OID")] = CrfItem(it.get("Name") or it.get("OID"), question or it.get("Name") or "",
                                           it.get("DataType") or "text", int(length) if length else None,
                                           codelist_names.get(ref.get("CodeListOID")) if ref is not None else None,
                                           units.get(unit.get("MeasurementUnitOID")) if unit is not None else None,
                                           alias)
    if not asked:
        return None
    groups = {g.get("OID"): [r.get("ItemOID") for r in g.iter(f"{ODM_NS}ItemRef")]
              for g in mdv.iter(f"{ODM_NS}ItemGroupDef")}
    forms = []
    for fd in mdv.iter(f"{ODM_NS}FormDef"):
        name = fd.get("Name") or fd.get("OID")
        items = [item_defs[oid] for ref in fd.iter(f"{ODM_NS}ItemGroupRef")
                 for oid in groups.get(ref.get("ItemGroupOID"), []) if oid in item_defs]
        forms.append(CrfForm(name, translated(fd, "Description") or name, items))
    return CrfDesign(forms, codelists, path.name)


def write_data_dictionary(design: CrfDesign, path: Path) -> Path:
    """Write ``design`` as a data dictionary CSV (the layout :func:`read_data_dictionary` reads)."""
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(DICTIONARY_COLUMNS)
    for form in design.forms:
        for item in form.items:
            choices = " | ".join(f"{c}={d}" for c, d in design.codelists.get(item.codelist, [])) if item.codelist else ""
            writer.writerow([form.name, form.title, item.name, item.question, item.datatype, item.length or "",
                             item.display_format or "", item.unit or "", item.codelist or "", choices])
    path.write_bytes(buf.getvalue().encode("utf-8"))
    return path
