"""The SDTM spec engine: source forms + domain specs -> SDTM datasets with lineage.

One path for the data:
1. :func:`screen_rows` removes screen failures and empty pages (each listed with its reason);
2. :func:`map_domain_records` turns each domain's source rows into records (joins, filters,
   findings transposition, record-level rules, standard results);
3. :func:`derive_subject_level` adds what needs other domains: DM reference dates, SE, then
   VISIT/VISITNUM, --DY, EPOCH and baseline flags in every domain;
4. :func:`finalize_domain` sorts by the domain keys, assigns --SEQ and builds SUPP--.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConversionError
from ..memory import concat_records
from ..metadata import Codelist, Sdtmig, load_sdtmig
from ..text import as_text, char_lengths, factorize
from ..spec import DomainSpec, Rule, Source, StudyConfig, load_domain_spec
from . import derive
from .rules import RuleContext, evaluate_condition, evaluate_rule

LINEAGE_COLUMNS = ["__src", "__field", "__form"]
TEST_ATTRIBUTES = ["testcd", "test", "cat", "scat", "spec", "method", "obj", "result", "unit", "stdunit", "low",
                   "high", "codelist"]


@dataclass
class Excluded:
    form: str
    source: str
    reason: str


@dataclass
class MappedDomain:
    """A domain's records (output variables plus lineage columns) and its spec."""

    spec: DomainSpec
    data: pd.DataFrame
    supp: pd.DataFrame | None = None

    @property
    def name(self) -> str:
        return self.spec.domain


@dataclass
class Conversion:
    """Everything one run produced: datasets, exclusions and reported deviations."""

    domains: dict[str, MappedDomain] = field(default_factory=dict)
    excluded: list[Excluded] = field(default_factory=list)
    deviations: list[dict] = field(default_factory=list)
    used_sources: set[str] = field(default_factory=set)
    # per dataset: record ids + EDC form/row/field; per EDC row: the datasets it fed (built as each
    # domain's dataset is made, so that the working frame can be freed)
    lineage: dict[str, pd.DataFrame] = field(default_factory=dict)
    record_sources: dict[str, set[str]] = field(default_factory=dict)


def check_spec(spec: DomainSpec, md: Sdtmig) -> None:
    """A spec maps an SDTMIG domain (or a custom X*/Y*/Z* domain of a named class) and only
    variables the IG lists for it or the SDTM model allows for its class; anything else is an
    error naming the spec line (non-standard variables belong in ``supp:``)."""
    if not md.known(spec.domain):
        raise ConversionError(f"unknown domain {spec.domain}: not an SDTMIG {md.version} domain; custom domains "
                              f"start with X, Y or Z and name their class", spec=spec.line_of("domain"),
                              dataset=spec.domain)
    if spec.domain.startswith(("X", "Y", "Z")) and spec.domain not in md.domains and not spec.class_:
        raise ConversionError(f"custom domain {spec.domain} needs 'class:' (Interventions, Events, Findings or "
                              f"Findings About)", spec=spec.line_of("domain"), dataset=spec.domain)
    try:
        meta = md.domain(spec.domain, spec.class_)
    except ConversionError as exc:
        raise ConversionError(exc.message, spec=spec.line_of("class"), dataset=spec.domain) from None
    places = [(("variables", n), n) for n in spec.variables]
    places += [(("sources", i, "variables", n), n) for i, s in enumerate(spec.sources) for n in s.variables]
    places += [(("metadata", n), n) for n in spec.metadata]
    for where, name in places:
        if md.allowed_variable(spec.domain, name, spec.class_) is None:
            cls = meta.ig_class or "its"
            raise ConversionError(f"variable {name} is not a {spec.domain} variable in SDTMIG {md.version} and the "
                                  f"SDTM model does not allow it for the {cls} class; map it as a supplemental "
                                  f"qualifier (supp:)", spec=spec.line_of(*where), dataset=spec.domain, field=name)


def load_specs(study_dir: Path) -> list[DomainSpec]:
    """Every ``*.yaml`` in the study folder except ``study.yaml`` and ``terminology.yaml``, in file-name order."""
    from ..metadata.ct import STUDY_TERMINOLOGY

    specs = [load_domain_spec(p) for p in sorted(study_dir.glob("*.yaml")) if p.name not in ("study.yaml",
                                                                                               STUDY_TERMINOLOGY)]
    seen: dict[str, str] = {}
    md = load_sdtmig()
    for s in specs:
        check_spec(s, md)
        if s.domain in seen:
            raise ConversionError(f"domain {s.domain} is specified twice (also in {seen[s.domain]})", spec=f"{s.file}:1")
        seen[s.domain] = s.file
    return specs


def screen_rows(forms: dict[str, pd.DataFrame], study: StudyConfig) -> tuple[dict[str, pd.DataFrame], list[Excluded]]:
    """Drop screen-failure subjects and empty pages from every form, saying why for each row.

    A page is empty when every field but the keys (site, subject, folder, repeat) is blank.
    """
    edc = study.edc
    keys = {edc.site_field, edc.subject_field, edc.folder_field, edc.repeat_field, "__src"}
    failed: set[str] = set()
    if edc.screen_failure is not None and edc.screen_failure_form:
        form = forms.get(edc.screen_failure_form)
        if form is None:
            raise ConversionError(f"screen-failure form {edc.screen_failure_form} is not in the EDC export",
                                  spec=f"{study.file}:{study.lines.get('edc.screen_failure_form', 1)}")
        ctx = RuleContext(form, pd.DataFrame(index=form.index), study.constants, {}, "study", edc.screen_failure_form,
                          lambda *p: f"{study.file}:{study.lines.get('edc.screen_failure', 1)}")
        failed = set(form.loc[evaluate_condition(edc.screen_failure, ctx, ()), edc.subject_field])
    kept, excluded = {}, []
    for name, frame in forms.items():
        if edc.subject_field not in frame.columns:
            raise ConversionError(f"form {name} has no subject key column '{edc.subject_field}'",
                                  source=str(frame["__src"].iloc[0]).split(":")[0] if len(frame) else name)
        is_failure = frame[edc.subject_field].isin(failed)
        data_cols = [c for c in frame.columns if c not in keys]
        is_empty = ~is_failure & (frame[data_cols].fillna("").astype(str) == "").all(axis=1) if data_cols else \
            pd.Series(False, index=frame.index)
        excluded += [Excluded(name, s, "screen failure") for s in frame.loc[is_failure, "__src"]]
        excluded += [Excluded(name, s, "empty page") for s in frame.loc[is_empty, "__src"]]
        kept[name] = frame[~is_failure & ~is_empty].reset_index(drop=True)
    return kept, excluded


def _join(rows: pd.DataFrame, source: Source, forms: dict[str, pd.DataFrame], spec: DomainSpec, i: int) -> pd.DataFrame:
    for j, join in enumerate(source.join):
        where = ("sources", i, "join", j)
        other = forms.get(join.form)
        if other is None:
            raise ConversionError(f"joined form {join.form} is not in the EDC export", spec=spec.line_of(*where, "form"),
                                  dataset=spec.domain)
        missing = [c for c in [*join.on, *join.fields] if c not in other.columns] + \
                  [c for c in join.on if c not in rows.columns]
        if missing:
            raise ConversionError(f"missing source column '{missing[0]}' for join with {join.form}",
                                  spec=spec.line_of(*where), dataset=spec.domain, field=missing[0])
        right = other
        if join.filter is not None:  # only the joined form's rows where the condition holds
            jctx = RuleContext(other, pd.DataFrame(index=other.index), {}, {}, spec.domain, join.form,
                               spec.line_of)
            right = other[evaluate_condition(join.filter, jctx, (*where, "filter"))]
        if join.pick:  # one row per key: the first or last by the order fields (then source order)
            missing = [c for c in join.order if c not in right.columns]
            if missing:
                raise ConversionError(f"missing source column '{missing[0]}' for join order with {join.form}",
                                      spec=spec.line_of(*where, "order"), dataset=spec.domain, field=missing[0])
            ordered = right.assign(__pos=np.arange(len(right)))
            ordered = ordered.sort_values([*join.order, "__pos"], kind="stable") if join.order else ordered
            right = ordered.drop_duplicates(join.on, keep="first" if join.pick == "first" else "last")
        right = right[[*join.on, *join.fields, "__src"]].rename(columns={"__src": "__joined_src"})
        dup = right.duplicated(join.on, keep=False)
        if dup.any():
            raise ConversionError(f"join with {join.form} on {', '.join(join.on)} is not unique",
                                  source=str(right.loc[dup, "__joined_src"].iloc[0]), spec=spec.line_of(*where),
                                  dataset=spec.domain)
        overlap = [c for c in join.fields if c in rows.columns]
        rows = rows.drop(columns=overlap).merge(right, on=join.on, how="left", sort=False)
        rows["__src"] = rows["__src"] + np.where(rows["__joined_src"].notna(), " + " + rows["__joined_src"].fillna(""), "")
        rows = rows.drop(columns="__joined_src")
        rows[join.fields] = rows[join.fields].fillna("")
    return rows


def transpose_findings(rows: pd.DataFrame, source: Source, spec: DomainSpec, i: int) -> pd.DataFrame:
    """Wide findings rows -> one row per test, with test attributes as ``@testcd`` ... columns.

    ``@orres``/``@orresu`` hold the result and unit; ``__field`` names the result field.
    """
    parts = []
    # the wide result/unit fields live on as @orres/@orresu; copying them per test is waste
    read = {f for rule in [*spec.variables.values(), *source.variables.values(), *(s.rule for s in spec.supp)]
            for f in rule.fields()}
    wide = {f for test in source.tests or [] for f in (test.result, test.unit) if f} - read
    base = rows.drop(columns=[c for c in rows.columns if c in wide])
    tests = list(source.tests or [])
    for t, test in enumerate(tests):
        if test.result not in rows.columns:
            raise ConversionError(f"missing source column '{test.result}' in form {source.form}",
                                  source=_file_of(rows, source.form), field=test.result,
                                  spec=spec.line_of("sources", i, "tests", t, "result"), dataset=spec.domain)
    n, k = len(rows), len(tests)
    # one take in the final order (each source row, then its tests in table order): no per-test
    # copies of the whole row, no concatenation, no sort
    per_row = np.repeat(np.arange(n), k)
    per_test = np.tile(np.arange(k), n)
    row_major = (per_test * n + per_row)  # position in the test-major stack of per-test columns

    def stacked(columns: list) -> pd.Series:
        return pd.concat([pd.Series(c).reset_index(drop=True) for c in columns], ignore_index=True).take(row_major)

    long = base.take(per_row).reset_index(drop=True)
    extra = {}
    for attr in TEST_ATTRIBUTES:
        extra[f"@{attr}"] = pd.Series(["" if getattr(t, attr) is None else getattr(t, attr) for t in tests]
                                      ).take(per_test).to_numpy()
    extra["@orres"] = stacked([rows[t.result] for t in tests]).to_numpy()
    extra["@orresu"] = stacked([rows[t.unit].where(rows[t.result] != "", "") if t.unit is not None and t.unit in rows.columns
                                else np.where(rows[t.result] != "", t.unit or "", "") for t in tests]).to_numpy()
    extra["__field"] = pd.Series([t.result for t in tests]).take(per_test).to_numpy()
    long = long.assign(**extra)  # the same column order as assigning them one by one
    if source.empty_results == "drop":  # a wide page holds only some tests: no record for the others
        long = long[long["@orres"].fillna("").astype(str).str.strip() != ""]
    return long.reset_index(drop=True)


def _file_of(rows: pd.DataFrame, form: str) -> str:
    return str(rows["__src"].iloc[0]).split("#")[0].rsplit(":", 1)[0] if len(rows) else form


def map_domain_records(spec: DomainSpec, forms: dict[str, pd.DataFrame], study: StudyConfig,
                       codelists: dict[str, Codelist], md: Sdtmig, run: Conversion) -> pd.DataFrame:
    """Record-level mapping of every source of a domain, concatenated in source order."""
    frames = []
    for i, source in enumerate(spec.sources):
        rows = forms.get(source.form)
        if rows is None:
            raise ConversionError(f"source form {source.form} is not in the EDC export",
                                  spec=spec.line_of("sources", i, "form"), dataset=spec.domain)
        if rows.empty:
            run.deviations.append({"type": "empty-form", "dataset": spec.domain, "form": source.form,
                                   "note": "the form has no rows yet: no records from it",
                                   "spec": spec.line_of("sources", i, "form")})
        rows = rows.copy()
        rows["__own_src"] = rows["__src"]
        rows = _join(rows, source, forms, spec, i)
        rows["__field"] = ""
        rows["__form"] = source.form
        visit_field = source.visit_field or study.edc.folder_field
        if source.visit_field and source.visit_field not in rows.columns:
            raise ConversionError(f"missing source column '{source.visit_field}' (visit_field) in form {source.form}",
                                  spec=spec.line_of("sources", i, "visit_field"), dataset=spec.domain,
                                  field=source.visit_field)
        rows["__folder"] = rows[visit_field] if visit_field in rows.columns else ""
        if source.filter is not None:
            ctx = _context(spec, rows, pd.DataFrame(index=rows.index), study, codelists, source.form, run)
            keep = evaluate_condition(source.filter, ctx, ("sources", i, "filter"))
            reason = f"filter ({spec.domain}): {source.filter_reason or 'excluded by spec filter'}"
            run.excluded += [Excluded(source.form, s, reason) for s in rows.loc[~keep, "__own_src"]]
            rows = rows[keep].reset_index(drop=True)
        if source.tests:
            before = rows["__own_src"]
            rows = transpose_findings(rows, source, spec, i)
            gone = before[~before.isin(set(rows["__own_src"]))]  # pages with no result at all (empty_results: drop)
            run.excluded += [Excluded(source.form, s, f"no result for any test ({spec.domain}: empty_results: drop)")
                             for s in gone]
        out = pd.DataFrame(index=rows.index)
        ctx = _context(spec, rows, out, study, codelists, source.form, run)
        rules = {**spec.variables, **source.variables}
        phases = spec.phases(source)
        for name, rule in rules.items():
            if phases[name] == "record":
                where = ("sources", i, "variables", name) if name in source.variables else ("variables", name)
                out[name] = evaluate_rule(rule, ctx, where)
        for k, supp in enumerate(spec.supp):
            if supp.rule.own_phase == "record" and not any(phases.get(r) == "subject" for r in supp.rule.references()):
                out[f"__supp_{supp.qnam}"] = evaluate_rule(supp.rule, ctx, ("supp", k, "rule"))
        if source.tests:
            _standard_results(spec, rows, out, md, run, codelists)
            stat, reason = f"{spec.domain}STAT", f"{spec.domain}REASND"
            if source.not_done_reason is not None and stat in out.columns:
                not_done = out[stat] == "NOT DONE"
                text = evaluate_rule(source.not_done_reason, ctx, ("sources", i, "not_done_reason"))
                out[reason] = text.where(not_done, "")
        for col in ["__src", "__field", "__form", "__folder", *[c for c in rows.columns if c.startswith("@")]]:
            out[col] = rows[col].values
        out["__source_index"] = i
        frames.append(out)
        # once per source row (a findings row feeds one record per test)
        run.used_sources.update(s for src in pd.unique(rows["__src"].to_numpy(dtype=object)) for s in str(src).split(" + "))
    return concat_records(frames)  # the sources' records, not held twice over


def _context(spec, rows, out, study, codelists, form, run) -> RuleContext:
    return RuleContext(rows, out, study.constants, codelists, spec.domain, form, spec.line_of, run.deviations)


def _standard_results(spec: DomainSpec, rows: pd.DataFrame, out: pd.DataFrame, md: Sdtmig, run: Conversion,
                      codelists: dict | None = None) -> None:
    """Fill --ORRES/--ORRESU, --STRESC/N/U, --STNRLO/HI, --NRIND and --STAT from the test table,
    for the variables the domain has and the spec did not assign itself."""
    d = spec.domain
    names = {n for n in (f"{d}{s}" for s in ("ORRES", "ORRESU", "STRESC", "STRESN", "STRESU", "STNRLO", "STNRHI",
                                              "NRIND", "STAT")) if md.allowed_variable(d, n, spec.class_)}

    def wanted(var):
        return var in names and var not in out.columns

    units = (codelists or {}).get("UNIT")
    if units is not None:  # collected units to UNIT terms by their CDISC synonyms (ng/mL -> ug/L, sec -> s)
        for col in ("@orresu", "@stdunit"):
            rows[col] = units.recode_series(rows[col])

    if wanted(f"{d}ORRES"):
        out[f"{d}ORRES"] = rows["@orres"].values
    if wanted(f"{d}ORRESU"):
        out[f"{d}ORRESU"] = rows["@orresu"].values
    orres = out.get(f"{d}ORRES", rows["@orres"])
    orresu = out.get(f"{d}ORRESU", rows["@orresu"])
    recode_unit = (lambda u: units.recode([u])[0]) if units is not None else (lambda u: u)
    factors = {(c.testcd, recode_unit(c.from_), recode_unit(c.to)):
               derive.unit_converter(c.factor, c.formula, c.decimals, c.significant) for c in spec.conversions}
    std = derive.standard_results(orres, orresu, rows["@testcd"], rows["@stdunit"], factors)
    if std["unconverted"].any():
        bad = std[std["unconverted"]]
        for (testcd, unit), group in rows.loc[bad.index].groupby(["@testcd", "@orresu"], sort=True):
            run.deviations.append({"type": "unit-not-converted", "dataset": d, "test": testcd, "unit": unit,
                                   "records": len(group), "source": str(group["__src"].iloc[0]),
                                   "spec": spec.line_of("conversions")})
    _result_codelists(spec, rows, std, codelists or {}, run)
    for var, col in (("STRESC", "STRESC"), ("STRESN", "STRESN"), ("STRESU", "STRESU")):
        if wanted(f"{d}{var}"):
            out[f"{d}{var}"] = std[col].values
    low = pd.to_numeric(rows["@low"].replace("", None), errors="coerce").astype(float)
    high = pd.to_numeric(rows["@high"].replace("", None), errors="coerce").astype(float)
    has_value = std["STRESN"].notna() | (std["STRESC"] != "")
    # Permissible variables only when there is something to put in them: ranges when the test
    # table gives any, --STAT when some result is missing
    has_ranges = bool(low.notna().any() or high.notna().any())
    if wanted(f"{d}STNRLO") and has_ranges:
        out[f"{d}STNRLO"] = low.where(has_value).values
    if wanted(f"{d}STNRHI") and has_ranges:
        out[f"{d}STNRHI"] = high.where(has_value).values
    if wanted(f"{d}NRIND") and has_ranges:
        out[f"{d}NRIND"] = derive.reference_range_indicator(std["STRESN"], low, high, std["STRESC"]).values
    not_done = orres.fillna("").astype(str) == ""
    if wanted(f"{d}STAT") and not_done.any():
        out[f"{d}STAT"] = np.where(not_done, "NOT DONE", "")


def _result_codelists(spec: DomainSpec, rows: pd.DataFrame, std: pd.DataFrame, codelists: dict,
                      run: Conversion) -> None:
    """Value-level codelists of results (a test's ``codelist:``): --STRESC recoded to the term
    (synonyms, the study's collected values), a value outside a non-extensible list stops the run,
    one outside an extensible list is a reported deviation."""
    if "@codelist" not in rows.columns:
        return
    for name, idx in rows.groupby("@codelist", sort=True).groups.items():
        if not name:
            continue
        codelist = codelists.get(name)
        if codelist is None:
            raise ConversionError(f"unknown codelist '{name}'", spec=spec.line_of("sources"), dataset=spec.domain)
        recoded = codelist.recode_series(std.loc[idx, "STRESC"])
        std.loc[idx, "STRESC"] = recoded.values
        outside = recoded[(recoded != "") & ~recoded.isin(codelist.allowed)]
        if len(outside) and not codelist.extensible:
            first = outside.index[0]
            raise ConversionError(f"result '{outside.iloc[0]}' is not in non-extensible codelist {name} "
                                  f"({codelist.code}) of test {rows.at[first, '@testcd']}",
                                  source=str(rows.at[first, "__src"]), field=str(rows.at[first, "__field"]),
                                  spec=spec.line_of("sources"), dataset=spec.domain)
        for value, count in outside.value_counts().sort_index().items():
            run.deviations.append({"type": "ct-extensible-value", "dataset": spec.domain, "codelist": name,
                                   "value": value, "records": int(count), "spec": spec.line_of("sources")})


def derive_reference_dates(rule: Rule, frame: pd.DataFrame, run: Conversion, spec: DomainSpec, where) -> pd.Series:
    """first_date/last_date: the earliest/latest ``of`` value per subject in another domain
    (RFXSTDTC is the first EXSTDTC, RFXENDTC the last EXENDTC; tests/test_engine.py shows it)."""
    data = _other_domain_rows(rule, run, spec, where)
    if rule.of not in data.columns:
        raise ConversionError(f"derive: {rule.derive} needs {rule.domain}.{rule.of}, which is not mapped",
                              spec=spec.line_of(*where), dataset=spec.domain)
    values = data[["USUBJID", rule.of]]
    values = values[values[rule.of].fillna("") != ""]
    grouped = values.groupby("USUBJID")[rule.of]
    picked = grouped.min() if rule.derive == "first_date" else grouped.max()
    return frame["USUBJID"].map(picked).fillna("").astype(object)


def _dm_column(run: Conversion, frame: pd.DataFrame, var: str) -> pd.Series:
    dm = run.domains["DM"].data.set_index("USUBJID")[var]
    return frame["USUBJID"].map(dm).fillna("")


def _other_domain_rows(rule: Rule, run: Conversion, spec: DomainSpec, where) -> pd.DataFrame:
    """The records of ``rule.domain`` where ``rule.where`` holds (all of them without a condition)."""
    other = run.domains.get(rule.domain)
    if other is None:
        raise ConversionError(f"derive: {rule.derive} needs domain {rule.domain}, which is not mapped",
                              spec=spec.line_of(*where), dataset=spec.domain)
    data = other.data
    if rule.where is not None:
        wctx = RuleContext(data, data, {}, {}, rule.domain, "", spec.line_of)
        data = data[evaluate_condition(rule.where, wctx, (*where, "where"))]
    return data


def _subject_context(mapped: MappedDomain, run: Conversion, study: StudyConfig, codelists, se: pd.DataFrame
                     ) -> RuleContext:
    """A rule context over a mapped domain that can evaluate subject-level derivations (visit, study
    day, epoch, baseline, reference dates, treatment-emergent flag, records in another domain)."""
    spec, frame = mapped.spec, mapped.data
    visits = pd.DataFrame([v.model_dump() for v in study.visits])
    cache: dict[tuple, pd.DataFrame] = {}

    def subject_level(rule: Rule, ctx: RuleContext, where) -> pd.Series:
        kind = rule.derive
        if kind in ("first_date", "last_date"):
            return derive_reference_dates(rule, ctx.out, run, spec, where)
        if kind == "last_contact":
            return derive.last_contact(ctx.out["USUBJID"], [m.data for m in run.domains.values()])
        if kind == "has_records":
            return derive.has_records(ctx.out["USUBJID"], _other_domain_rows(rule, run, spec, where)["USUBJID"])
        _need(rule.of, ctx.out, spec, where)
        if kind == "study_day":
            return derive.study_day(ctx.out[rule.of], _dm_column(run, ctx.out, "RFSTDTC"))
        if kind == "treatment_emergent":
            if rule.end:
                _need(rule.end, ctx.out, spec, where)
            return derive.treatment_emergent(ctx.out[rule.of], ctx.out[rule.end] if rule.end else None,
                                             _dm_column(run, ctx.out, "RFXSTDTC"),
                                             _dm_column(run, ctx.out, "RFXENDTC"), rule.window)
        if kind in ("visit", "visitnum"):
            key = ("visit", rule.of)
            if key not in cache:
                day = derive.study_day(frame[rule.of], _dm_column(run, frame, "RFSTDTC"))
                cache[key] = derive.visit_of(frame["__folder"], day, visits, study.unscheduled)
            return cache[key].loc[ctx.out.index, "VISITNUM" if kind == "visitnum" else "VISIT"]
        if kind == "epoch":
            return derive.epoch_of(ctx.out, rule.of, se)
        if kind == "baseline_flag":
            _need(rule.at, ctx.out, spec, where)
            by = ["USUBJID", *([rule.by] if isinstance(rule.by, str) else rule.by or [])]
            for b in by:
                _need(b, ctx.out, spec, where)
            frame_ = ctx.out.assign(__rfx=_dm_column(run, ctx.out, "RFXSTDTC"))
            return derive.baseline_flag(frame_, by, rule.at, "__rfx", rule.of)
        raise AssertionError(kind)

    rows = frame[[c for c in frame.columns if c.startswith(("__", "@"))]]
    return RuleContext(rows, frame, study.constants, codelists, spec.domain, "", spec.line_of, run.deviations,
                       subject_level)


def derive_subject_level(mapped: MappedDomain, run: Conversion, study: StudyConfig, codelists, se: pd.DataFrame) -> None:
    """Evaluate the spec's subject-level rules (visit, study day, epoch, baseline, ref dates)."""
    spec, frame = mapped.spec, mapped.data
    ctx = _subject_context(mapped, run, study, codelists, se)
    for i, source in enumerate(spec.sources):
        phases = spec.phases(source)
        for name, rule in source.variables.items():
            if phases[name] == "subject" and rule.derive != "seq":
                part = frame["__source_index"] == i
                values = evaluate_rule(rule, ctx, ("sources", i, "variables", name))
                frame[name] = values.where(part, frame[name]) if name in frame.columns else values.where(part)
    phases = spec.phases()
    for name, rule in spec.variables.items():
        if phases[name] == "subject" and rule.derive != "seq":
            overridden = frame["__source_index"].isin(
                [i for i, s in enumerate(spec.sources) if name in s.variables])
            values = evaluate_rule(rule, ctx, ("variables", name))
            frame[name] = values.where(~overridden, frame[name]) if name in frame.columns else values


def derive_supplemental(mapped: MappedDomain, run: Conversion, study: StudyConfig, codelists, se: pd.DataFrame) -> None:
    """Evaluate the SUPP-- qualifiers that need subject-level facts, once every domain is derived:
    nothing reads a qualifier, so they may look at any domain (DM's SAFETY flag at EX, a completers
    flag at VS visits, AETRTEM at DM's first dose)."""
    spec, frame = mapped.spec, mapped.data
    late = [(k, s) for k, s in enumerate(spec.supp) if f"__supp_{s.qnam}" not in frame.columns]
    if not late or frame.empty:
        return
    ctx = _subject_context(mapped, run, study, codelists, se)
    for k, supp in late:
        frame[f"__supp_{supp.qnam}"] = evaluate_rule(supp.rule, ctx, ("supp", k, "rule"))


def _need(var, out, spec, where):
    if not var or var not in out.columns:
        raise ConversionError(f"derivation needs variable '{var}' assigned earlier", spec=spec.line_of(*where),
                              dataset=spec.domain, field=var)


def finalize_domain(mapped: MappedDomain, md: Sdtmig) -> None:
    """Sort records by the domain keys, assign --SEQ, and split SUPP-- qualifiers out."""
    spec, frame = mapped.spec, mapped.data
    # the transposition's per-test attributes (@unit, @low ...) and the folder served the rules, all
    # evaluated by now: they go before the sort copies the frame (15 of LB's 44 working columns)
    mapped.data = frame = frame.drop(columns=[c for c in frame.columns
                                              if c.startswith("@") or c in ("__folder", "__source_index")])
    meta = md.domain(spec.domain, spec.class_)
    seq_var = next((n for n, r in spec.variables.items() if r.derive == "seq"), None)
    keys = [k for k in meta.keys if k in frame.columns and k != seq_var]
    extra = [c for c in ("VISITNUM", f"{spec.domain}TESTCD", f"{spec.domain}DTC") if c in frame.columns and c not in keys]
    # the sorted copy replaces the frame at once: the unsorted one is not held through what follows
    mapped.data = frame = frame.sort_values([*keys, *extra, "__src", "__field"], kind="stable",
                                            na_position="first").reset_index(drop=True)
    seq_rule = spec.variables.get(seq_var) if seq_var else None
    if seq_rule is not None and seq_rule.order:  # --SEQ follows the stated order within each subject
        missing = [c for c in seq_rule.order if c not in frame.columns]
        if missing:
            raise ConversionError(f"seq order names '{missing[0]}', which the domain does not have",
                                  spec=spec.line_of("variables", seq_var, "order"), dataset=spec.domain)
        mapped.data = frame = frame.sort_values(["USUBJID", *seq_rule.order], kind="stable",
                                                na_position="first").reset_index(drop=True)
    if seq_var:
        frame[seq_var] = derive.sequence_number(frame)
    frame, overflow = split_long_text(frame, meta, seq_var)
    mapped.data = frame
    mapped.supp = build_supp(mapped, seq_var, overflow)


def split_text_200(text: str, limit: int = 200) -> list[str]:
    """Split text into pieces of at most ``limit`` characters, between words where possible.

    The space stays at the start of the next piece (SAS drops trailing blanks, not leading
    ones), so joining the pieces gives the text back.

    >>> text = " ".join(["word"] * 90)
    >>> pieces = split_text_200(text)
    >>> [len(p) for p in pieces], "".join(pieces) == text
    ([199, 200, 50], True)
    """
    pieces, rest = [], text
    while len(rest) > limit:
        cut = rest.rfind(" ", 1, limit + 1)
        cut = cut if cut > 0 else limit
        pieces.append(rest[:cut])
        rest = rest[cut:]
    return pieces + [rest]


def split_long_text(frame: pd.DataFrame, meta, seq_var: str | None) -> tuple[pd.DataFrame, list[dict]]:
    """SDTMIG 4.5.3.2: text over 200 characters keeps its first 200 in the variable; the rest
    goes to SUPP-- as QNAM ``<VAR>1``, ``<VAR>2`` ... (only where records have --SEQ to link)."""
    overflow: list[dict] = []
    if not seq_var:
        return frame, overflow
    for var in meta.variables:
        if var.type != "Char" or var.name not in frame.columns:
            continue
        codes, distinct = factorize(frame[var.name])  # each distinct text measured once
        distinct = as_text(pd.Series(distinct, dtype=object)).tolist()
        for i in np.flatnonzero((char_lengths(distinct) > 200)[codes]):
            pieces = split_text_200(distinct[codes[i]])
            frame.iat[i, frame.columns.get_loc(var.name)] = pieces[0]
            for n, piece in enumerate(pieces[1:], start=1):
                overflow.append({"row": i, "QNAM": f"{var.name[:7]}{n}", "QLABEL": f"{var.label[:37]} {n}",
                                 "QVAL": piece})
    return frame, overflow


def build_supp(mapped: MappedDomain, seq_var: str | None, overflow: list[dict] | None = None) -> pd.DataFrame | None:
    """SUPP-- records: one per parent record and non-empty qualifier, keyed by --SEQ."""
    spec, frame = mapped.spec, mapped.data
    parts = []
    if overflow:
        rows = [o["row"] for o in overflow]
        parts.append(pd.DataFrame({
            "STUDYID": frame["STUDYID"].iloc[rows].values, "RDOMAIN": spec.domain,
            "USUBJID": frame["USUBJID"].iloc[rows].values, "IDVAR": seq_var,
            "IDVARVAL": as_text(frame[seq_var].iloc[rows]).tolist(), "QNAM": [o["QNAM"] for o in overflow],
            "QLABEL": [o["QLABEL"] for o in overflow], "QVAL": [o["QVAL"] for o in overflow], "QORIG": "CRF",
            "QEVAL": "", "__src": frame["__src"].iloc[rows].values, "__field": frame["__field"].iloc[rows].values,
            "__form": frame["__form"].iloc[rows].values}))
    for supp in spec.supp:
        col = f"__supp_{supp.qnam}"
        if col not in frame.columns:
            continue
        values = as_text(frame[col])
        has = values != ""
        if not has.any():
            continue
        part = pd.DataFrame({
            "STUDYID": frame.loc[has, "STUDYID"], "RDOMAIN": spec.domain, "USUBJID": frame.loc[has, "USUBJID"],
            "IDVAR": seq_var or "", "IDVARVAL": as_text(frame.loc[has, seq_var]) if seq_var else "",
            "QNAM": supp.qnam, "QLABEL": supp.qlabel, "QVAL": values[has], "QORIG": supp.qorig, "QEVAL": supp.qeval,
            "__src": frame.loc[has, "__src"], "__field": supp.rule.field or "", "__form": frame.loc[has, "__form"],
        })
        parts.append(part)
    if not parts:
        return None
    supp = pd.concat(parts, ignore_index=True)
    supp["__seq_sort"] = pd.to_numeric(supp["IDVARVAL"], errors="coerce")
    return supp.sort_values(["USUBJID", "__seq_sort", "QNAM"], kind="stable").drop(columns="__seq_sort") \
        .reset_index(drop=True)
