"""The mapping specification as an Excel workbook a reviewer reads and signs off, generated from
the specs (never typed), so it cannot drift from what the programs do:

- ``Datasets``: each SDTM domain and ADaM dataset with label, class, keys and spec file;
- one sheet per SDTM domain: variable, label, type, length, core, origin, source form and field,
  the rule in words, codelist, comment, spec file:line (SUPP-- qualifiers as ``QNAM in SUPPxx``)
  and, when the export carries a CRF design, the aCRF page(s) where the variable is annotated;
- one sheet per ADaM dataset: variable, label, type, origin, the step that derives it, spec line;
- ``Codelists``: every codelist the specs bind, with its terms and whether it is CDISC or sponsor;
- ``Value level``: the findings test tables (test code, name, result field, units, codelist);
- ``Methods``: every ADaM step in words; ``Changes``: the spec diff against a previous version.

Built with openpyxl; headers bold, panes frozen below the header, filters and column widths set.
The file is byte-stable: document dates are the study's creation date and the zip entries carry
a fixed timestamp.

Example:
    cdisc-convert spec-workbook mappings/nct05948982 --out spec.xlsx
"""
from __future__ import annotations

import io
import re
import zipfile
from datetime import datetime
from pathlib import Path

from .lineage import _describe
from .metadata import load_sdtmig
from .spec import ORIGIN_OF_KIND, StudyConfig

HEADER = ["Variable", "Label", "Type", "Length", "Core", "Origin", "Source form", "Source field", "Rule",
          "Codelist", "Comment", "Spec", "aCRF page"]
ADAM_HEADER = ["Variable", "Label", "Type", "Origin", "Derivation", "Comment", "Spec"]
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
LONG_CODELIST = 60  # a CDISC codelist longer than this is named, not listed term by term


def _rule_dict(rule) -> dict:
    return rule.model_dump(exclude_none=True, by_alias=True, exclude_defaults=True)


def _kind(rule) -> str:
    return next((k for k in ORIGIN_OF_KIND if getattr(rule, k, None) is not None), "")


def _pages(crf_pages: dict | None, dataset: str, variable: str) -> str:
    """The aCRF pages holding a variable's annotations (``7`` or ``13 14``), '' when none."""
    from .acrf import pages_of

    return " ".join(map(str, pages_of(crf_pages, dataset, variable) or ()))


def sdtm_rows(spec, md, lengths: dict[str, int], crf_pages: dict | None = None) -> list[list]:
    """One row per variable of an SDTM domain spec (and per SUPP-- qualifier); ``crf_pages``
    (from the aCRF plan) adds the pages where each is annotated."""
    meta = md.domain(spec.domain, spec.class_)
    rows = []
    order = {v.name: i for i, v in enumerate(meta.variables)}
    joined = {f: j.form for s in spec.sources for j in s.join for f in j.fields}  # fields of joined forms
    names = sorted(spec.variables, key=lambda n: (order.get(n, len(order)), n))
    for name in names:
        rule = spec.variables[name]
        vm = md.allowed_variable(spec.domain, name, spec.class_)
        override = spec.metadata.get(name)
        field = rule.field or rule.date or ""
        forms = [joined[field]] if field in joined else sorted({s.form for s in spec.sources})
        rows.append([
            name, (override.label if override and getattr(override, "label", None) else (vm.label if vm else "")),
            "Num" if rule.type == "num" or (vm and vm.type == "Num") else "Char",
            lengths.get(name, ""), vm.core if vm else "", rule.origin,
            ", ".join(forms) if field else "", field, _describe(_rule_dict(rule)),
            (override.codelist if override and override.codelist else rule.codelist or (vm.codelist if vm else "")) or "",
            getattr(rule, "comment", None) or "", spec.line_of("variables", name),
            _pages(crf_pages, spec.domain, name)])
    for i, source in enumerate(spec.sources):
        for name, rule in source.variables.items():  # a source's own rule for a variable
            rows.append([name, "", "", lengths.get(name, ""), "", rule.origin, source.form, rule.field or rule.date or "",
                         _describe(_rule_dict(rule)), rule.codelist or "", f"for records from {source.form}",
                         spec.line_of("sources", i, "variables", name), _pages(crf_pages, spec.domain, name)])
    for k, supp in enumerate(spec.supp):
        rows.append([f"{supp.qnam} in SUPP{spec.domain}", supp.qlabel, "Char", "", "",
                     ("Collected" if supp.qorig.upper() == "CRF" else supp.qorig.title()) if supp.qorig else "", ", ".join(sorted({s.form for s in spec.sources})), supp.rule.field or "",
                     _describe(_rule_dict(supp.rule)), supp.rule.codelist or "", "supplemental qualifier",
                     spec.line_of("supp", k), _pages(crf_pages, f"SUPP{spec.domain}", supp.qnam)])
    return rows


def adam_rows(spec, others: dict[str, list[str]]) -> list[list]:
    from .adam.output import adam_label_type
    from .define_xml import adam_origins

    origins = adam_origins(spec, others)
    rows = []
    for i, var in enumerate(spec.variables):
        name = var if isinstance(var, str) else var.name
        known = adam_label_type(name)
        label = (None if isinstance(var, str) else var.label) or (known[0] if known else "")
        origin, text, method = origins.get(name, ("Derived", "", ""))
        rows.append([name, label, known[1] if known else "", origin, method or text,
                     "" if isinstance(var, str) else (var.comment or ""), spec.line_of("variables", i)])
    return rows


def _sheet(wb, title: str, header: list[str], rows: list[list]) -> None:
    from openpyxl.styles import Alignment, Font
    from openpyxl.utils import get_column_letter

    ws = wb.create_sheet(title[:31])
    ws.append(header)
    for row in rows:
        ws.append(["" if v is None else v for v in row])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    ws.freeze_panes = "A2"
    if rows:
        ws.auto_filter.ref = f"A1:{get_column_letter(len(header))}{len(rows) + 1}"
    for c, name in enumerate(header, start=1):
        width = max([len(str(name))] + [min(len(str(r[c - 1])), 80) for r in rows if c - 1 < len(r)])
        ws.column_dimensions[get_column_letter(c)].width = min(max(8, width + 2), 82)
        if width > 80:
            for row in ws.iter_rows(min_row=2, min_col=c, max_col=c):
                row[0].alignment = Alignment(wrap_text=True, vertical="top")


def _stable(raw: bytes, created: datetime) -> bytes:
    """The same workbook gives the same bytes: fixed zip timestamps, and the document's modified
    date (which openpyxl sets to now on save) is its created date."""
    src = zipfile.ZipFile(io.BytesIO(raw))
    buf = io.BytesIO()
    stamp = created.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                data = re.sub(rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)", rb"\g<1>" + stamp + rb"\g<2>",
                              data)
            fixed = zipfile.ZipInfo(info.filename, ZIP_TIME)
            fixed.compress_type, fixed.external_attr = zipfile.ZIP_DEFLATED, 0o600 << 16
            dst.writestr(fixed, data)
    return buf.getvalue()


def build_workbook(study_dir: Path, study: StudyConfig, specs, adam_specs, terminology,
                   metadata: dict | None = None, changes: list | None = None, crf_pages: dict | None = None) -> bytes:
    """The workbook's bytes. ``metadata`` (``metadata.json`` of a run) adds the written lengths,
    ``crf_pages`` the aCRF pages of each variable."""
    from openpyxl import Workbook

    from .diff import _short
    md = load_sdtmig()
    metadata = metadata or {}
    created = datetime.fromisoformat(str(study.study.get("created", "2026-01-01T00:00:00")))
    wb = Workbook()
    wb.remove(wb.active)
    wb.properties.creator = "cdisc_convert"
    wb.properties.title = f"{study.studyid} mapping specification"
    wb.properties.created = wb.properties.modified = created
    datasets = []
    for spec in specs:
        meta = md.domain(spec.domain, spec.class_)
        datasets.append(["SDTM", spec.domain, spec.label or meta.label, meta.cls, ", ".join(meta.keys), spec.file,
                         spec.comment or ""])
        if spec.supp:
            datasets.append(["SDTM", f"SUPP{spec.domain}", f"Supplemental Qualifiers for {spec.domain}",
                             "RELATIONSHIP", "STUDYID, RDOMAIN, USUBJID, IDVAR, IDVARVAL, QNAM", spec.file, ""])
    # built from study.yaml, not from a domain spec: the trial design, SE/SV and RELREC
    design = [("TA", bool(study.arms)), ("TE", bool(study.elements)), ("TV", bool(study.visits)),
              ("TS", bool(study.trial_summary)), ("SE", bool(study.elements)), ("SV", bool(study.visits)),
              ("RELREC", bool(study.relationships))]
    for name, present in design:
        if present and name not in {s.domain for s in specs}:
            meta = md.domain(name)
            datasets.append(["SDTM", name, meta.label, meta.cls, ", ".join(meta.keys), study.file,
                             "from the study's trial design and visits" if name != "RELREC" else
                             "from the study's relationships"])
    for spec in adam_specs:
        datasets.append(["ADaM", spec.dataset, spec.label, spec.class_, ", ".join(spec.keys), f"adam/{spec.file}",
                         spec.comment or ""])
    _sheet(wb, "Datasets", ["Standard", "Dataset", "Label", "Class", "Keys", "Spec file", "Comment"], datasets)
    for spec in specs:
        lengths = {v["name"]: v["length"] for v in metadata.get(spec.domain, {}).get("variables", [])}
        _sheet(wb, spec.domain, HEADER, sdtm_rows(spec, md, lengths, crf_pages))
    others = {s.dataset: s.variable_names() for s in adam_specs}
    for spec in adam_specs:
        _sheet(wb, spec.dataset, ADAM_HEADER, adam_rows(spec, others))
    _sheet(wb, "Codelists", ["Codelist", "NCI code", "Name", "Extensible", "Term", "Decode", "Term NCI code",
                             "Source", "Package"], codelist_rows(specs, terminology))
    _sheet(wb, "Value level", ["Domain", "Test code", "Test", "Result field", "Original unit", "Standard unit",
                               "Category", "Result codelist", "Spec"], value_level_rows(specs))
    _sheet(wb, "Methods", ["Dataset", "Step", "Derivation", "In words", "Spec"], method_rows(adam_specs))
    if changes is not None:
        _sheet(wb, "Changes", ["File", "Path", "Change", "Old", "New"],
               [[c.file, " / ".join(map(str, c.path)), c.kind, "" if c.old is None else _short(c.old),
                 "" if c.new is None else _short(c.new)] for c in changes])
    buf = io.BytesIO()
    wb.save(buf)
    return _stable(buf.getvalue(), created)


def codelist_rows(specs, terminology) -> list[list]:
    """Every codelist a spec binds (on a variable, a test's result or a metadata override)."""
    used: set[str] = set()
    md = load_sdtmig()
    for spec in specs:
        for name, rule in spec.variables.items():
            vm = md.allowed_variable(spec.domain, name, spec.class_)
            for cl in (rule.codelist, vm.codelist if vm else None):
                if cl:
                    used.add(cl)
        for meta in spec.metadata.values():
            if meta.codelist:
                used.add(meta.codelist)
        for source in spec.sources:
            used |= {t.codelist for t in source.tests or [] if t.codelist}
        for supp in spec.supp:
            if supp.rule.codelist:
                used.add(supp.rule.codelist)
    rows = []
    for name in sorted(used):
        cl = terminology.get(name)
        if cl is None:
            rows.append([name, "", "", "", "", "", "", "not in the CT in use", ""])
            continue
        source = "sponsor" if cl.source not in ("CDISC",) and not cl.dictionary else \
            (cl.dictionary if cl.dictionary else "CDISC")
        terms = list(cl.terms) if not cl.dictionary else []
        first = len(rows)
        if source == "CDISC" and len(terms) > LONG_CODELIST:  # UNIT, LBTESTCD ...: the package has them
            rows.append([name, cl.code, cl.label, "Yes" if cl.extensible else "No",
                         f"({len(terms)} CDISC terms: see the CT package)", "", "", source, cl.package])
            terms = []
        for term in terms:
            rows.append([name, cl.code, cl.label, "Yes" if cl.extensible else "No", term, cl.decodes.get(term, ""),
                         cl.term_codes.get(term, ""), source, cl.package])
        for term in cl.extended:
            rows.append([name, cl.code, cl.label, "Yes" if cl.extensible else "No", term, cl.decodes.get(term, ""),
                         "", "sponsor extension", cl.package])
        if len(rows) == first:  # an external dictionary (ISO 3166 ...) or an empty list: the codelist itself
            rows.append([name, cl.code, cl.label, "Yes" if cl.extensible else "No", "", "", "", source, cl.package])
    return rows


def value_level_rows(specs) -> list[list]:
    rows = []
    for spec in specs:
        for i, source in enumerate(spec.sources):
            for t, test in enumerate(source.tests or []):
                rows.append([spec.domain, test.testcd, test.test, f"{source.form}.{test.result}", test.unit or "",
                             test.stdunit or "", test.cat or "", test.codelist or "",
                             spec.line_of("sources", i, "tests", t)])
    return rows


def method_rows(adam_specs) -> list[list]:
    from .define_xml import describe_step

    rows = []
    for spec in adam_specs:
        for i, step in enumerate(spec.steps):
            dump = step.model_dump(exclude_none=True, by_alias=True, exclude_defaults=True)
            rows.append([spec.dataset, i + 1, step.derive,
                         describe_step(step.derive, {k: v for k, v in dump.items() if k != "derive"}),
                         spec.line_of("steps", i)])
    return rows


_NOT_GIVEN = object()


def write_spec_workbook(study_dir: Path, out: Path, metadata: dict | None = None, previous: Path | None = None,
                        terminology=None, crf_pages=_NOT_GIVEN) -> Path:
    """``cdisc-convert spec-workbook``: the study's specs as ``out`` (xlsx), written whole or not at all.
    ``crf_pages``: the aCRF pages a run just laid out (None: no aCRF); when not given, planned here."""
    from .adam.spec import load_adam_specs
    from .diff import diff_specs, read_spec_folder
    from .metadata.ct import load_terminology
    from .sdtm.engine import load_specs
    from .spec import load_study_config

    study_dir = Path(study_dir)
    study = load_study_config(study_dir / "study.yaml")
    specs = load_specs(study_dir)
    adam_specs = load_adam_specs(study_dir / "adam")
    terminology = terminology if terminology is not None else load_terminology(None, study_dir)
    changes = diff_specs(read_spec_folder(Path(previous)), read_spec_folder(study_dir)) if previous else None
    if crf_pages is _NOT_GIVEN:  # the aCRF the export's CRF design gives (a run draws the same)
        from .acrf import planned_pages
        crf_pages = planned_pages(study, study_dir, specs)
    data = build_workbook(study_dir, study, specs, adam_specs, terminology, metadata, changes, crf_pages)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out
