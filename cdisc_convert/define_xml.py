"""Define-XML 2.1 for the SDTM and ADaM folders of a run, built with odmlib's Define-XML 2.1
model from what was written (the XPT files), the specs and the study config; validated against
the Define-XML 2.1 schema that ships with odmlib; rendered to define.html by the project's own
XSLT (``define/define2-1.xsl``) or by a stylesheet the user passes.

One path: :func:`read_written` (datasets as written) -> :func:`sdtm_metadata` or
:func:`adam_metadata` (neutral :class:`DatasetMeta`) -> :func:`build_define` (odmlib) ->
:func:`validate_define` -> :func:`render_html`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from lxml import etree

from . import __version__
from .errors import ConversionError
from .lineage import _describe
from .metadata import VALUE_LEVEL_CODELISTS, Terminology, load_sdtmig, load_terminology
from .spec import DomainSpec, StudyConfig
from .text import as_text

DEFINE_XSD = Path(__import__("odmlib").__file__).parent / "schemas" / "define" / "2.1" / "define2-1-0.xsd"
DEFAULT_XSL = Path(__file__).parent / "resources" / "define2-1.xsl"  # define/define2-1.xsl, shipped in the package
TRIAL_DESIGN = {"TA", "TE", "TV", "TS", "TI"}
AUTO_RESULTS = {
    "ORRES": ("Collected", None), "ORRESU": ("Collected", None),
    "STRESC": ("Derived", "Original result in standard format: the number converted to the standard unit with the "
                          "spec's conversion factor; '<'/'>' results keep their qualifier; text upper-cased."),
    "STRESN": ("Derived", "Numeric part of --STRESC; empty for '<'/'>' (censored) and text results."),
    "STRESU": ("Derived", "The test's standard unit from the spec's test table."),
    "STNRLO": ("Assigned", None), "STNRHI": ("Assigned", None),
    "NRIND": ("Derived", "LOW below --STNRLO, HIGH above --STNRHI, else NORMAL; a censored '<x' result is LOW when "
                         "x is at or below the lower limit."),
    "STAT": ("Derived", "NOT DONE when the result field is empty."),
}
ENGINE_METHODS = {
    "SE": "Elements start where study.yaml's element rules say (a DM reference date plus an offset) and end where "
          "the next starts or at RFPENDTC.",
    "SV": "One record per subject and visit found in the mapped domains, from the earliest to the latest date.",
}


@dataclass
class VarMeta:
    name: str
    label: str
    datatype: str
    length: int | None
    digits: int | None = None
    display_format: str = ""
    codelist: str = ""
    origin: str = "Derived"
    origin_source: str = ""
    origin_text: str = ""
    method: str = ""
    comment: str = ""
    mandatory: bool = False
    oid: str = ""
    role: str = ""  # SDTM variable role (Identifier, Topic, ... Timing): ItemRef/@Role
    pages: tuple[int, ...] | None = None  # its pages in the generated aCRF (None: no generated aCRF)


@dataclass
class DatasetMeta:
    name: str
    label: str
    cls: str
    structure: str
    purpose: str
    keys: list[str]
    domain: str
    repeating: bool
    reference: bool
    variables: list[VarMeta]
    subclass: str = ""
    comment: str = ""
    # variable -> (where variable, [(value, VarMeta)])
    value_lists: dict[str, tuple[str, list[tuple[str, VarMeta]]]] = field(default_factory=dict)
    codelist_decodes: dict[str, dict[str, str]] = field(default_factory=dict)
    vlm_values: dict[tuple[str, str], pd.Series] = field(default_factory=dict)  # (variable, where value) -> values
    data: pd.DataFrame | None = None  # the values written, for codelists restricted to what occurs


@dataclass
class Written:
    name: str
    label: str
    data: pd.DataFrame
    labels: dict[str, str]
    formats: dict[str, str]
    widths: dict[str, int] | None = None  # text widths in bytes, when the writer has computed them


def read_written(folder: Path) -> dict[str, Written]:
    """Every ``*.xpt`` in a folder, as written: data, dataset label, variable labels, formats."""
    from .writers import read_xpt

    out = {}
    for path in sorted(folder.glob("*.xpt")):
        xpt = read_xpt(path)
        out[xpt.name] = Written(xpt.name, xpt.label, xpt.data, xpt.labels, xpt.formats)
    return out


def from_datasets(datasets) -> dict[str, Written]:
    """The in-memory datasets a run has just written, in the form :func:`read_written` gives."""
    return {name: Written(ds.name, ds.label, ds.data, ds.labels, dict(ds.formats), ds.text_facts()[1])
            for name, ds in datasets.items()}


GENERATED_ACRF = "../acrf.pdf"  # where a run writes the aCRF, relative to sdtm/define.xml


def write_study_defines(study_dir: Path, out_dir: Path, study: StudyConfig, created: str,
                        stylesheet: Path | None = None, sdtm: dict[str, Written] | None = None,
                        adam: dict[str, Written] | None = None, ct: Terminology | None = None,
                        crf_pages: dict[tuple[str, str, str], list[int]] | None = None) -> list[Path]:
    """define.xml (+ define.html) in ``out_dir/sdtm`` and ``out_dir/adam`` (the latter when the
    study has ADaM specs and datasets); datasets are read from the XPT files unless given.
    ``crf_pages`` (from the generated aCRF, ``out_dir/acrf.pdf``): CRF origins point to their pages."""
    ct = ct if ct is not None else load_terminology(None, study_dir)
    written_paths = [write_sdtm_define(study_dir, out_dir, study, created, stylesheet, sdtm, ct, crf_pages)]
    adam_path = write_adam_define(study_dir, out_dir, study, created, stylesheet, adam, ct)
    return written_paths + ([adam_path] if adam_path is not None else [])


def write_sdtm_define(study_dir: Path, out_dir: Path, study: StudyConfig, created: str,
                      stylesheet: Path | None = None, sdtm: dict[str, Written] | None = None,
                      ct: Terminology | None = None,
                      crf_pages: dict[tuple[str, str, str], list[int]] | None = None) -> Path:
    """``out_dir/sdtm/define.xml`` (+ define.html); the datasets are read from the XPT files unless given."""
    from .metadata import load_sdtmig
    from .sdtm.engine import load_specs

    ct = ct if ct is not None else load_terminology(None, study_dir)
    sdtm_dir = out_dir / "sdtm"
    sdtm = sdtm if sdtm is not None else read_written(sdtm_dir)
    if not sdtm:
        raise ConversionError("no SDTM datasets to describe", source=str(sdtm_dir))
    declared = next((d for d in study.documents if d.type == "acrf"), None)
    if declared is not None and declared.href != GENERATED_ACRF:
        crf_pages = None  # the study names its own aCRF: the generated one's pages are not its pages
    if crf_pages is not None and declared is None:
        from .spec import DocumentDef
        study = study.model_copy(update={"documents": [
            DocumentDef(id="acrf", title="Annotated CRF", href=GENERATED_ACRF, type="acrf"), *study.documents]})
    return write_define(sdtm_dir, sdtm_metadata(sdtm, load_specs(study_dir), crf_pages), sdtm,
                        study, ("SDTMIG", load_sdtmig().version), created, stylesheet, ct)


def write_adam_define(study_dir: Path, out_dir: Path, study: StudyConfig, created: str,
                      stylesheet: Path | None = None, adam: dict[str, Written] | None = None,
                      ct: Terminology | None = None) -> Path | None:
    """``out_dir/adam/define.xml`` (+ define.html) when the study has ADaM specs and datasets
    (read from the XPT files unless given); None otherwise."""
    from .adam.spec import load_adam_specs
    from .metadata import adamig_version

    adam_specs = load_adam_specs(study_dir / "adam")
    adam_dir = out_dir / "adam"
    if not adam_specs or (adam is None and not adam_dir.is_dir()):
        return None
    ct = ct if ct is not None else load_terminology(None, study_dir)
    adam = adam if adam is not None else read_written(adam_dir)
    return write_define(adam_dir, adam_metadata(adam, adam_specs), adam, study, ("ADaMIG", adamig_version()),
                        created, stylesheet, ct)


def _datatype(name: str, values: pd.Series, display_format: str, width: int | None = None
              ) -> tuple[str, int | None, int | None]:
    """Define-XML DataType, Length and SignificantDigits from the values written (``width``: the
    text column's length as the writer measured it)."""
    if display_format:
        return "integer", 8, None
    if values.dtype.kind in "fiu":
        v = values.to_numpy(dtype=float, na_value=np.nan)  # numpy, not pandas: called for every variable
        v = v[~np.isnan(v)]
        if not len(v):
            return "integer", 1, None
        largest = np.abs(v).max()
        if (v == np.round(v)).all() and largest < 1e15:
            return "integer", max(1, int(largest).bit_length() and len(str(int(largest))) + int((v < 0).any())), None
        text = as_text(pd.Series(pd.unique(v))).tolist()  # numbers as written, once per distinct value
        decimals = max(len(t.partition(".")[2]) for t in text)
        return "float", max(len(t) - t.count("-") - t.count(".") for t in text), decimals
    if width is not None and not name.endswith("DTC"):
        return "text", width, None
    # lengths and date shapes are facts of the distinct values: a date repeats on every record of its visit
    text = pd.Series(pd.unique((as_text(values) if width is not None else values.fillna("").astype(str))
                               .to_numpy(dtype=object)), dtype=object)
    length = width if width is not None else (max(1, int(text.str.len().max())) if len(text) else 1)
    if name.endswith("DTC") and (text != "").any():  # an empty dataset: length 1, above
        return _dtc_datatype(text[text != ""]), length, None
    return "text", length, None


def _dtc_datatype(values: pd.Series) -> str:
    """Define-XML 2.1 DataType of ISO 8601 text: ``date``/``datetime`` only when every value is
    complete (YYYY-MM-DD, YYYY-MM-DDThh:mm:ss), else ``partialDate``/``partialDatetime``.

    >>> [_dtc_datatype(pd.Series(v)) for v in (["2024-01-02"], ["2024-01", "2024-01-02"],
    ...                                        ["2024-01-02T10:00:00"], ["2024-01-02T10:00", "2024-01-03"])]
    ['date', 'partialDate', 'datetime', 'partialDatetime']
    """
    width = values.str.len()
    if values.str.contains("T").any():
        return "datetime" if (width == 19).all() else "partialDatetime"
    return "date" if (width == 10).all() else "partialDate"


def _mk_var(w: Written, name: str, **kw) -> VarMeta:
    dtype, length, digits = _datatype(name, w.data[name], w.formats.get(name, ""),
                                      w.widths.get(name) if w.widths else None)
    return VarMeta(name, w.labels.get(name) or name, dtype, length, digits, w.formats.get(name, ""), **kw)


def _rule_origin(spec: DomainSpec, var: str) -> tuple[str, str, str, str]:
    """(origin type, source, origin text, method text) of an SDTM variable from its spec rules."""
    rules = [(None, spec.variables[var])] if var in spec.variables else []
    rules += [(s.form, s.variables[var]) for s in spec.sources if var in s.variables]
    if not rules:
        return "", "", "", ""
    kinds = {r.origin for _f, r in rules}
    origin = "Collected" if "Collected" in kinds and len(kinds) == 1 else ("Derived" if "Derived" in kinds or
                                                                          len(kinds) > 1 else kinds.pop())
    forms = [s.form for s in spec.sources]
    texts = []
    for form, rule in rules:
        for f in sorted(rule.fields()):
            texts.append(f"EDC form {form or '/'.join(forms)}, field {f}")
    method = "; ".join(_describe(r.model_dump(exclude_none=True, by_alias=True, exclude_defaults=True))
                       + (f" (form {f})" if f else "") for f, r in rules) if origin == "Derived" else ""
    source = "Investigator" if origin == "Collected" else ("Sponsor" if origin in ("Assigned", "Derived") else "")
    return origin, source, "; ".join(dict.fromkeys(texts)), method


def sdtm_metadata(written: dict[str, Written], specs: list[DomainSpec],
                  crf_pages: dict[tuple[str, str, str], list[int]] | None = None) -> list[DatasetMeta]:
    """Dataset, variable and value-level metadata for the SDTM folder (``crf_pages``: where each
    annotation of the generated aCRF is, by (dataset, variable, value key))."""
    from .acrf import pages_of
    md = load_sdtmig()
    by_domain = {s.domain: s for s in specs}
    metas = []
    for name, w in written.items():
        own_spec = by_domain.get(name)
        cls = own_spec.class_ if own_spec else None
        dm = md.domain(name, cls)
        variables = []
        for col in w.data.columns:
            vm = md.allowed_variable(name, col, cls)
            by_test = col in (f"{name}ORRES", f"{name}STRESC")  # result codelists apply per test (value level)
            var = _mk_var(w, col, codelist=(vm.codelist if vm and len(vm.codelists) <= 1 and not by_test else ""),
                          mandatory=bool(vm and vm.core == "Req"), role=vm.role if vm else "")
            rule = own_spec.variables.get(col) if own_spec else None
            if rule is not None and rule.codelist and (name, col) not in VALUE_LEVEL_CODELISTS:
                var.codelist = rule.codelist
            if own_spec and col in own_spec.metadata and own_spec.metadata[col].codelist:
                var.codelist = own_spec.metadata[col].codelist
            origin, source, text, method = _rule_origin(own_spec, col) if own_spec else ("", "", "", "")
            suffix = col[len(name):] if col.startswith(name) else ""
            if origin:
                var.origin, var.origin_source, var.origin_text, var.method = origin, source, text, method
                rule = own_spec.variables.get(col)
                var.comment = rule.comment if rule and rule.comment else ""
            elif own_spec and suffix in AUTO_RESULTS:
                var.origin, var.method = AUTO_RESULTS[suffix][0], AUTO_RESULTS[suffix][1] or ""
                if var.origin == "Collected":
                    var.origin_source = "Investigator"
                    var.origin_text = "EDC forms " + ", ".join(s.form for s in own_spec.sources if s.tests)
            elif name in TRIAL_DESIGN:
                var.origin, var.origin_text = "Protocol", "study.yaml"
            elif name.startswith("SUPP"):
                var.origin, var.origin_source = ("Collected", "Investigator") if col == "QVAL" else ("Assigned", "Sponsor")
            else:
                var.origin, var.method = "Derived", ENGINE_METHODS.get(name, "Derived by the engine from the mapped "
                                                                               "domains and DM reference dates.")
            if origin == "Assigned":
                var.method = ""
            var.pages = pages_of(crf_pages, name, None if name.startswith("SUPP") else col)
            variables.append(var)
        meta = DatasetMeta(name, w.label, dm.cls, dm.structure or "One record per record", "Tabulation",
                           list(dm.keys), name[4:] if name.startswith("SUPP") else name,
                           name not in ("DM",), name in TRIAL_DESIGN, variables,
                           comment=(own_spec.comment or "") if own_spec else "")
        _sdtm_value_lists(meta, w, own_spec, crf_pages)
        _value_level_codelists(meta, w)
        metas.append(meta)
    return metas


def _sdtm_value_lists(meta: DatasetMeta, w: Written, spec: DomainSpec | None,
                      crf_pages: dict[tuple[str, str, str], list[int]] | None = None) -> None:
    """VLM: findings results by --TESTCD (with the form field each test comes from), SUPP QVAL by QNAM."""
    from .acrf import pages_of
    name = meta.name
    testcd, orres = f"{name}TESTCD", f"{name}ORRES"
    if testcd in w.data.columns and orres in w.data.columns:
        field_of = {}
        if spec:
            for s in spec.sources:
                for t in s.tests or []:
                    field_of.setdefault(t.testcd, []).append(f"EDC form {s.form}, field {t.result}")
        items = []
        read = w.data[[c for c in (testcd, orres, f"{name}STRESN") if c in w.data.columns]]  # not a copy of all
        for code, group in read.groupby(testcd, sort=True):
            sub = Written(w.name, w.label, group, w.labels, w.formats)
            numeric = pd.to_numeric(group[f"{name}STRESN"], errors="coerce").notna().any() \
                if f"{name}STRESN" in group.columns else False
            var = _mk_var(sub, orres, origin="Collected", origin_source="Investigator",
                          origin_text="; ".join(dict.fromkeys(field_of.get(code, []))))
            var.label = f"{w.labels.get(orres, orres)} ({code})"[:40]
            var.datatype = "text" if not numeric else var.datatype
            var.pages = pages_of(crf_pages, name, orres, str(code))
            items.append((str(code), var))
        meta.value_lists[orres] = (testcd, items)
        result_codelists = {t.testcd: t.codelist for s in (spec.sources if spec else []) for t in s.tests or []
                            if t.codelist}
        if result_codelists:  # a test's result codelist, at value level
            _codelist_vlm(meta, w, f"{name}STRESC", testcd, result_codelists)
        test = f"{name}TEST"
        if test in w.data.columns:
            pairs = w.data[[testcd, test]].drop_duplicates(testcd)
            meta.codelist_decodes[testcd] = dict(zip(pairs[testcd], pairs[test]))
    if name.startswith("SUPP") and "QNAM" in w.data.columns:
        items = []
        read = w.data[[c for c in ("QNAM", "QVAL", "QORIG", "QLABEL") if c in w.data.columns]]
        for qnam, group in read.groupby("QNAM", sort=True):
            sub = Written(w.name, w.label, group, w.labels, w.formats)
            orig = str(group["QORIG"].iloc[0])
            var = _mk_var(sub, "QVAL", origin=orig if orig in ("Collected", "Derived", "Assigned", "Protocol")
                          else ("Collected" if orig.upper() == "CRF" else "Derived"), origin_source="Investigator")
            var.label = str(group["QLABEL"].iloc[0])[:40]
            var.pages = pages_of(crf_pages, name, str(qnam))
            items.append((str(qnam), var))
        meta.value_lists["QVAL"] = ("QNAM", items)


def _value_level_codelists(meta: DatasetMeta, w: Written) -> None:
    """VLM for codelists SDTMIG binds by another variable's value (DSDECOD by DSCAT)."""
    for (domain, var), (by, codelists) in VALUE_LEVEL_CODELISTS.items():
        if meta.name == domain:
            _codelist_vlm(meta, w, var, by, codelists)


def _codelist_vlm(meta: DatasetMeta, w: Written, var: str, by: str, codelists: dict[str, str]) -> None:
    """Value-level metadata of ``var`` where ``by`` takes each value that has a codelist: one item
    per value, carrying that codelist and the values written there."""
    base = next((v for v in meta.variables if v.name == var), None)
    if base is None or by not in w.data.columns:
        return
    items = []
    read = w.data.loc[w.data[by].isin(list(codelists)), list(dict.fromkeys([by, var]))]  # not every column
    for value, group in read.groupby(by, sort=True):
        sub = Written(w.name, w.label, group, w.labels, w.formats)
        source = base.origin_source or ("Sponsor" if base.origin in ("Derived", "Assigned") else "")
        vvar = _mk_var(sub, var, codelist=codelists[value], origin=base.origin, origin_source=source,
                       origin_text=base.origin_text, method=base.method)
        label = f"{base.label} ({value})"
        vvar.label = label if len(label) <= 40 else base.label
        items.append((str(value), vvar))
        meta.vlm_values[(var, str(value))] = group[var]
    if items:
        meta.value_lists[var] = (by, items)


def adam_metadata(written: dict[str, Written], specs) -> list[DatasetMeta]:
    """Dataset, variable and value-level (BDS by PARAMCD) metadata for the ADaM folder."""
    from .adam.spec import AdamVariable

    md = load_sdtmig()
    by_name = {s.dataset: s for s in specs}
    metas = []
    for name, w in written.items():
        spec = by_name.get(name)
        if spec is None:
            continue
        origins = adam_origins(spec, {n: s.variable_names() for n, s in by_name.items()})
        comments = {v.name: v.comment for v in spec.variables if isinstance(v, AdamVariable) and v.comment}
        variables = []
        for col in w.data.columns:
            origin, text, method = origins.get(col, ("Derived", "", "Derived by the spec's steps."))
            codelist = _adam_codelist(col, md)
            variables.append(_mk_var(w, col, codelist=codelist, origin=origin,
                                     origin_source="Sponsor" if origin in ("Derived", "Assigned") else "",
                                     origin_text=text, method=method if origin == "Derived" else "",
                                     comment=comments.get(col, ""),
                                     mandatory=col in ("STUDYID", "USUBJID", "PARAMCD", "PARAM") or col in spec.keys))
        meta = DatasetMeta(name, w.label, spec.class_, spec.structure, "Analysis", list(spec.keys), "",
                           name != "ADSL", False, variables, subclass=spec.subclass or "", comment=spec.comment or "")
        if "PARAMCD" in w.data.columns:
            items = []
            # the columns value-level metadata reads: grouping the whole dataset copied all of it
            # (ADQS at 2,000 subjects: +590 MB, the run's peak)
            read = w.data[[c for c in ("PARAMCD", "PARAM", "AVAL", "AVALC") if c in w.data.columns]]
            for code, group in read.groupby("PARAMCD", sort=True):
                sub = Written(w.name, w.label, group, w.labels, w.formats)
                has_num = group["AVAL"].notna().any() if "AVAL" in group.columns else False
                target = "AVAL" if has_num or "AVALC" not in group.columns else "AVALC"
                var = _mk_var(sub, target, origin="Derived", origin_source="Sponsor",
                              method=origins.get(target, ("", "", ""))[2] or "Derived by the spec's steps.")
                var.label = str(group["PARAM"].iloc[0])[:40] if "PARAM" in group.columns else code
                items.append((str(code), var))
            by_target: dict[str, list] = {}
            for code, var in items:
                by_target.setdefault(var.name, []).append((code, var))
            for target, target_items in by_target.items():
                meta.value_lists[target] = ("PARAMCD", target_items)
            pairs = w.data[["PARAMCD", "PARAM"]].drop_duplicates("PARAMCD") if "PARAM" in w.data.columns else None
            if pairs is not None:
                meta.codelist_decodes["PARAMCD"] = dict(zip(pairs["PARAMCD"], pairs["PARAM"]))
            for v in meta.variables:
                if v.name == "PARAMCD":
                    v.codelist = f"PARAMCD_{name}"
        metas.append(meta)
    return metas


def _adam_codelist(col: str, md) -> str:
    if col.endswith("FL") and len(col) <= 8:
        return "NY"
    from .metadata import adam_variable

    found = adam_variable(col)
    if found is not None and len(found.codelists) == 1:
        return found.codelists[0]
    for d in ("DM", "AE"):
        vm = md.domain(d).variable(col)
        if vm and vm.codelist:
            return vm.codelist
    return ""


def adam_origins(spec, others: dict[str, list[str]] | None = None) -> dict[str, tuple[str, str, str]]:
    """Variable -> (origin, origin text, method) from the step that last set it. ``others`` gives the
    variables of the study's other ADaM datasets (for ``merge`` with ``vars: all``)."""
    from .adam import spec as S

    out: dict[str, tuple[str, str, str]] = {}
    for i, step in enumerate(spec.steps):
        where = spec.line_of("steps", i)
        dump = step.model_dump(exclude_none=True, by_alias=True, exclude_defaults=True)
        method = describe_step(step.derive, {k: v for k, v in dump.items() if k != "derive"}) + f" (spec {where})"
        if isinstance(step, S.Start):
            out["*"] = ("Predecessor", f"{step.from_}", "")
        elif isinstance(step, S.Merge):
            if step.vars == "all":
                listed = (others or {}).get(step.from_, [])
                pairs = [(v, v) for v in listed if v not in step.by and v not in step.except_]
            else:
                pairs = step.vars.items() if isinstance(step.vars, dict) else [(v, v) for v in step.vars]
            for new, old in pairs:
                out[new] = ("Predecessor", f"{step.from_}.{old}", "") if not step.order and not step.filter else \
                    ("Derived", "", method)
        elif isinstance(step, S.Copy):
            for new, old in step.vars.items():
                pred = out.get(old, out.get("*", ("Derived", "", "")))
                out[new] = ("Predecessor", f"{pred[1].split('.')[0]}.{old}", "") if pred[0] == "Predecessor" else \
                    ("Derived", "", method)
        elif isinstance(step, S.Assign):
            for new in step.vars:
                out[new] = ("Assigned", "", "")
        else:
            for new in _step_outputs(step):
                out[new] = ("Derived", "", method)
    start = out.pop("*", None)
    resolved = {}
    for var in spec.variable_names():
        if var in out:
            resolved[var] = out[var]
        elif start:
            resolved[var] = ("Predecessor", f"{start[1]}.{var}", "")
    return resolved


def _plain_value(value) -> str:
    if isinstance(value, dict):
        if "derive" in value or "field" in value or "var" in value or isinstance(value.get("when"), list):
            from .lineage import _describe
            return _describe(value)
        return ", ".join(f"{k} = {_plain_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_plain_value(v) for v in value)
    return str(value)


def describe_step(derive: str, params: dict) -> str:
    """An ADaM step as a sentence a reviewer reads in define.xml (not the spec's JSON).

    >>> describe_step("baseline", {"by": ["USUBJID", "PARAMCD"], "flag": "ABLFL"})
    'Derivation baseline: by USUBJID, PARAMCD; flag ABLFL.'
    """
    parts = [f"{k.replace('_', ' ')} {_plain_value(v)}" for k, v in params.items()]
    return f"Derivation {derive.replace('_', ' ')}" + (": " + "; ".join(parts) if parts else "") + "."


def _step_outputs(step) -> list[str]:
    from .adam import spec as S

    if isinstance(step, S.DateStep):
        p = step.prefix
        names = [f"{p}DT", f"{p}DTF"] + ([f"{p}DTM", f"{p}TMF"] if step.time else [])
        return [step.names.get(n, n) for n in names if step.names.get(n, n)]
    if isinstance(step, S.RelativeDay):
        return list(step.vars)
    if isinstance(step, S.Baseline):
        return ["ABLFL", "BASE", "BASEC", "BNRIND", "CHG", "PCHG"]
    if isinstance(step, S.Windows):
        return ["AVISIT", "AVISITN", "ANL01FL"]
    if isinstance(step, S.Anrind):
        return ["ANRIND"]
    if isinstance(step, S.Trtemfl):
        return ["TRTEMFL"]
    if isinstance(step, S.Chg):
        return ["CHG"]
    if isinstance(step, S.BasetypeRecords):
        return [step.new]
    if isinstance(step, S.Pchg):
        return ["PCHG"]
    if isinstance(step, S.Summary):
        return [*step.analysis, *step.assign]
    if isinstance(step, S.ExtremeRecords):
        return list(step.assign)
    if isinstance(step, S.ExtremeEvent):
        return list(step.new)
    if isinstance(step, S.CaseWhen):
        return list(dict.fromkeys([*(v for c in step.cases for v in c.set), *step.else_]))
    if isinstance(step, S.MergeJoined):
        return list(step.vars)
    if isinstance(step, S.Duration):
        return [step.new, *([step.unit_var] if step.unit_var else [])]
    if isinstance(step, S.Restrict):
        return list(dict.fromkeys(n for inner in step.steps for n in _step_outputs(inner)))
    if isinstance(step, (S.ParamComputed, S.Tte)):
        return ["AVAL", "AVALC", "PARAMCD", "PARAM"] + (["CNSR", "EVNTDESC", "CNSDTDSC", "ADT", "STARTDT", "SRCDOM",
                                                          "SRCVAR"] if isinstance(step, S.Tte) else [])
    new = getattr(step, "new", None)
    numeric = getattr(step, "numeric", None)
    return [n for n in (new, numeric) if n]


@lru_cache(maxsize=None)
def _schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(DEFINE_XSD)))


def validate_define(path: Path) -> None:
    """Validate against the Define-XML 2.1 schema; the first error names element and reason."""
    schema = _schema()
    doc = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True))
    if not schema.validate(doc):
        err = schema.error_log[0]
        raise ConversionError(f"define.xml is not valid Define-XML 2.1: {err.message}",
                              source=f"{path.name}:{err.line}")


def build_define(metas: list[DatasetMeta], study: StudyConfig, standard: tuple[str, str], created: str,
                 ct: Terminology | None = None) -> bytes:
    """The Define-XML 2.1 document (bytes) for one folder's datasets, built with odmlib."""
    import odmlib.define_2_1.model as D

    ct = ct if ct is not None else load_terminology()
    sid = study.studyid
    kind = "SDTM" if standard[0] == "SDTMIG" else "ADAM"

    def text(content):
        d = D.Description()
        d.TranslatedText.append(D.TranslatedText(_content=content, lang="en"))
        return d

    odm = D.ODM(FileOID=f"DEF.{sid}.{kind}", AsOfDateTime=created, CreationDateTime=created, ODMVersion="1.3.2",
                FileType="Snapshot", Originator="cdisc_convert", SourceSystem="cdisc_convert",
                SourceSystemVersion=__version__, Context="Submission")
    st = D.Study(OID=f"ST.{sid}")
    st.GlobalVariables = D.GlobalVariables(StudyName=D.StudyName(_content=sid),
                                           StudyDescription=D.StudyDescription(_content=str(study.study.get("title", sid))),
                                           ProtocolName=D.ProtocolName(_content=sid))
    mdv = D.MetaDataVersion(OID=f"MDV.{sid}.{kind}", Name=f"{sid} {kind} define", DefineVersion="2.1.0",
                            Description=f"Define-XML of the {kind} datasets of study {sid}, generated by cdisc_convert")
    stds = D.Standards()
    stds.Standard.append(D.Standard(OID="STD.IG", Name=standard[0], Type="IG", Version=standard[1], Status="Final"))
    ct_oids = {}
    for package, date in ct.packages.items():  # the CT releases in use (--ct or the bundled ones)
        publishing = package.split()[0]
        if kind == "SDTM" and publishing != "SDTM":
            continue
        ct_oids[package] = f"STD.CT.{publishing.upper()}.{date}"
        stds.Standard.append(D.Standard(OID=ct_oids[package], Name="CDISC/NCI", Type="CT", PublishingSet=publishing,
                                        Version=date, Status="Final"))
    mdv.Standards = stds
    acrf = next((d for d in study.documents if d.type == "acrf"), None)
    if acrf is not None:
        mdv.AnnotatedCRF = D.AnnotatedCRF(DocumentRef=D.DocumentRef(leafID=f"LF.{acrf.id}"))
    supplemental = [d for d in study.documents if d.type != "acrf"]
    if supplemental:
        mdv.SupplementalDoc = D.SupplementalDoc()
        for doc in supplemental:
            _add_document_ref(mdv.SupplementalDoc, D.DocumentRef(leafID=f"LF.{doc.id}"))

    used_codelists: dict[str, set[str]] = {}
    decodes: dict[str, dict[str, str]] = {}
    methods: dict[str, str] = {}
    comments: dict[str, str] = {}
    where_clauses: list = []
    where_oids: set[str] = set()
    value_lists: list = []
    item_defs: list = []

    def origin_of(var: VarMeta):
        source = var.origin_source or {"Collected": "Investigator", "Derived": "Sponsor", "Assigned": "Sponsor",
                                        "Protocol": "Sponsor"}.get(var.origin, "")
        o = D.Origin(Type=var.origin, **({"Source": source} if source else {}))
        if var.origin_text:
            o.Description = text(var.origin_text)
        if var.origin == "Collected" and acrf is not None and var.pages != ():
            ref = D.DocumentRef(leafID=f"LF.{acrf.id}")
            if var.pages:  # the generated aCRF: the pages where the variable's annotations are
                ref.PDFPageRef.append(D.PDFPageRef(PageRefs=" ".join(map(str, var.pages)), Type="PhysicalRef"))
            o.DocumentRef.append(ref)
        return o

    def item_def(oid: str, var: VarMeta, dataset: str, values: pd.Series | None):
        it = D.ItemDef(OID=oid, Name=var.name, DataType=var.datatype, SASFieldName=var.name,
                       **({"Length": var.length} if var.length and var.datatype in ("text", "integer", "float") else {}),
                       **({"SignificantDigits": var.digits} if var.digits is not None else {}),
                       **({"DisplayFormat": var.display_format} if var.display_format else {}))
        it.Description = text(var.label)
        present = {v for v in as_text(pd.Series(pd.unique(values))) if v != ""} \
            if values is not None and var.codelist else set()  # only a codelist needs the terms that occur
        if var.codelist and present:  # a codelist lists the terms that occur; none occur, no codelist
            it.CodeListRef = D.CodeListRef(CodeListOID=f"CL.{var.codelist}")
            used_codelists.setdefault(var.codelist, set()).update(present)
        it.Origin.append(origin_of(var))
        if var.comment:
            comments[f"COM.{oid}"] = var.comment
            it.CommentOID = f"COM.{oid}"
        return it

    for meta in metas:
        ds = meta.name
        igd = D.ItemGroupDef(OID=f"IG.{ds}", Name=ds, Repeating="Yes" if meta.repeating else "No",
                             IsReferenceData="Yes" if meta.reference else "No", SASDatasetName=ds,
                             Purpose=meta.purpose, Structure=meta.structure or "One record per record",
                             ArchiveLocationID=f"LF.{ds}", StandardOID="STD.IG",
                             **({"Domain": meta.domain} if meta.domain else {}))
        igd.Description = text(meta.label)
        if meta.comment:
            comments[f"COM.IG.{ds}"] = meta.comment
            igd.CommentOID = f"COM.IG.{ds}"
        for order, var in enumerate(meta.variables, start=1):
            oid = f"IT.{ds}.{var.name}"
            ref = D.ItemRef(ItemOID=oid, Mandatory="Yes" if var.mandatory else "No", OrderNumber=order,
                            **({"KeySequence": meta.keys.index(var.name) + 1} if var.name in meta.keys else {}),
                            **({"Role": var.role} if var.role else {}))
            if var.origin == "Derived" and var.method:
                methods[f"MT.{ds}.{var.name}"] = var.method
                ref.MethodOID = f"MT.{ds}.{var.name}"
            igd.ItemRef.append(ref)
            values = _values_of(meta, var.name)
            it = item_def(oid, var, ds, values)
            decodes.update({var.codelist: meta.codelist_decodes[var.name]} if var.name in meta.codelist_decodes
                           and var.codelist else {})
            if var.name in meta.value_lists:
                where_var, items = meta.value_lists[var.name]
                vl = D.ValueListDef(OID=f"VL.{ds}.{var.name}")
                for k, (value, vvar) in enumerate(items, start=1):
                    wc_oid = f"WC.{ds}.{where_var}.{_oid_part(value)}"
                    if wc_oid not in where_oids:  # one where clause serves every variable's VLM
                        where_oids.add(wc_oid)
                        wc = D.WhereClauseDef(OID=wc_oid)
                        rc = D.RangeCheck(Comparator="EQ", SoftHard="Soft", ItemOID=f"IT.{ds}.{where_var}")
                        rc.CheckValue.append(D.CheckValue(_content=value))
                        wc.RangeCheck.append(rc)
                        where_clauses.append(wc)
                    vl_oid = f"IT.{ds}.{var.name}.{_oid_part(value)}"
                    vref = D.ItemRef(ItemOID=vl_oid, OrderNumber=k, Mandatory="No")
                    vref.WhereClauseRef.append(D.WhereClauseRef(WhereClauseOID=wc_oid))
                    if vvar.method:
                        methods[f"MT.{vl_oid}"] = vvar.method
                        vref.MethodOID = f"MT.{vl_oid}"
                    vl.ItemRef.append(vref)
                    item_defs.append(item_def(vl_oid, vvar, ds, meta.vlm_values.get((var.name, value))))
                value_lists.append(vl)
                it.ValueListRef = D.ValueListRef(ValueListOID=f"VL.{ds}.{var.name}")
            item_defs.append(it)
        igd.Class = D.Class(Name=meta.cls)
        if meta.subclass:
            igd.Class.SubClass.append(D.SubClass(Name=meta.subclass))
        igd.leaf = D.leaf(ID=f"LF.{ds}", href=f"{ds.lower()}.xpt", title=D.title(_content=f"{ds.lower()}.xpt"))
        mdv.ItemGroupDef.append(igd)
    for vl in value_lists:
        mdv.ValueListDef.append(vl)
    for wc in where_clauses:
        mdv.WhereClauseDef.append(wc)
    for it in item_defs:
        mdv.ItemDef.append(it)
    for cl_name in sorted(used_codelists):
        codelist = ct.get(cl_name)
        mdv.CodeList.append(_codelist(D, cl_name, sorted(used_codelists[cl_name]), codelist,
                                      decodes.get(cl_name if not cl_name.startswith("PARAMCD_") else cl_name, {})
                                      or decodes.get("PARAMCD_" + cl_name[8:], {}), text,
                                      ct_oids.get(codelist.package, next(iter(ct_oids.values()), ""))
                                      if codelist is not None else ""))
    for oid in sorted(methods):
        m = D.MethodDef(OID=oid, Name=f"Algorithm to derive {oid[3:]}", Type="Computation")
        m.Description = text(methods[oid])
        mdv.MethodDef.append(m)
    for oid in sorted(comments):
        c = D.CommentDef(OID=oid)
        c.Description = text(comments[oid])
        mdv.CommentDef.append(c)
    for doc in study.documents:
        mdv.leaf.append(D.leaf(ID=f"LF.{doc.id}", href=doc.href, title=D.title(_content=doc.title)))
    st.MetaDataVersion = mdv
    odm.Study = st
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "define.xml"
        odm.write_xml(str(path))
        tree = etree.parse(str(path), etree.XMLParser(remove_blank_text=True))
    # one element per line, so that a changed label is a one-line diff; the stylesheet is
    # referenced (as reviewers' tools expect) and define.html is rendered beside it
    body = etree.tostring(tree.getroot(), pretty_print=True, encoding="utf-8")
    return (b'<?xml version="1.0" encoding="UTF-8"?>\n'
            b'<?xml-stylesheet type="text/xsl" href="define2-1.xsl"?>\n' + body)


def _add_document_ref(holder, ref) -> None:
    """odmlib models SupplementalDoc's DocumentRef as one object or as a list, by version."""
    if isinstance(getattr(holder, "DocumentRef", None), list):
        holder.DocumentRef.append(ref)
    else:
        holder.DocumentRef = ref


def _values_of(meta: DatasetMeta, var: str):
    return None if meta.data is None else meta.data.get(var)


def _oid_part(value: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in value)


def _codelist(D, name: str, values: list[str], codelist, decodes: dict[str, str], text, standard_oid: str = ""):
    """A CodeList restricted to the values that occur; NCI codes as Alias; values outside the CDISC
    terms flagged ExtendedValue; an external dictionary (ISO 3166) as ExternalCodeList."""
    if codelist is not None and codelist.dictionary:
        cl = D.CodeList(OID=f"CL.{name}", Name=codelist.label or name, DataType="text")
        cl.ExternalCodeList = D.ExternalCodeList(Dictionary=codelist.dictionary)
        return cl
    cdisc = bool(codelist and codelist.source == "CDISC")
    label = codelist.label if codelist else name
    cl = D.CodeList(OID=f"CL.{name}", Name=label if not name.startswith("PARAMCD_") else f"Parameter Codes ({name[8:]})",
                    DataType="text", **({"StandardOID": standard_oid} if cdisc and standard_oid else {}),
                    **({"IsNonStandard": "Yes"} if not cdisc else {}))
    known = set(codelist.terms) if codelist else set()
    decodes = {**(codelist.decodes if codelist else {}), **decodes}
    decoded = any(decodes.get(v) for v in values)  # one kind of item per codelist (the schema's rule)
    for order, value in enumerate(values, start=1):
        extended = bool(cdisc and codelist.extensible and value not in known)
        if decoded:
            item = D.CodeListItem(CodedValue=value, OrderNumber=order, **({"ExtendedValue": "Yes"} if extended else {}))
            dec = D.Decode()
            dec.TranslatedText.append(D.TranslatedText(_content=decodes.get(value) or value, lang="en"))
            item.Decode = dec
            cl.CodeListItem.append(item)
        else:
            item = D.EnumeratedItem(CodedValue=value, OrderNumber=order, **({"ExtendedValue": "Yes"} if extended else {}))
            cl.EnumeratedItem.append(item)
        term_code = codelist.term_codes.get(value) if codelist is not None else None
        if term_code and not extended:
            item.Alias.append(D.Alias(Context="nci:ExtCodeID", Name=term_code))
    if cdisc and codelist.code.startswith("C"):
        cl.Alias.append(D.Alias(Context="nci:ExtCodeID", Name=codelist.code))
    return cl


def render_html(define_path: Path, html_path: Path, stylesheet: Path | None = None) -> None:
    """define.html through XSLT: the project's own template, or the stylesheet the user passes."""
    xsl = etree.XSLT(etree.parse(str(stylesheet or DEFAULT_XSL),
                                 etree.XMLParser(resolve_entities=False, no_network=True)))
    result = xsl(etree.parse(str(define_path), etree.XMLParser(resolve_entities=False, no_network=True)))
    html_path.write_bytes(etree.tostring(result, method="html", pretty_print=True, encoding="utf-8", doctype="<!DOCTYPE html>"))


def write_define(folder: Path, metas: list[DatasetMeta], written: dict[str, Written], study: StudyConfig,
                 standard: tuple[str, str], created: str, stylesheet: Path | None = None,
                 ct: Terminology | None = None) -> Path:
    """Build, write, validate and render ``folder/define.xml`` (+ ``define.html``)."""
    for meta in metas:
        meta.data = written[meta.name].data
    path = folder / "define.xml"
    path.write_bytes(build_define(metas, study, standard, created, ct))
    validate_define(path)
    render_html(path, folder / "define.html", stylesheet)
    # define.xml names define2-1.xsl: it goes beside it, so a browser opening define.xml renders it
    (folder / "define2-1.xsl").write_bytes(Path(stylesheet or DEFAULT_XSL).read_bytes())
    return path

