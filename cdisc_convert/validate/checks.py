"""The validator's check functions: one per rule of ``validation/rules.yaml``, each vectorised
over whole datasets, each returning findings (a DataFrame with the columns of :data:`FINDING`).
"""
from __future__ import annotations

import re
from pathlib import Path
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..at_rest import FramesAtRest
from ..metadata import VALUE_LEVEL_CODELISTS, Codelist, Sdtmig
from ..sdtm.derive import dtc_date, parse_result
from ..text import as_text, on_unique

FINDING = ["rule", "severity", "dataset", "variable", "record", "usubjid", "value", "message", "days_out"]
ISO8601 = re.compile(r"^\d{4}(-\d{2}(-\d{2}(T\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?)?)?)?$")
UNIT_VARS = ("ORRESU", "STRESU", "DOSU")
_NO_FINDINGS = pd.DataFrame(columns=FINDING)


@dataclass
class Context:
    datasets: dict[str, pd.DataFrame]
    kind: str  # SDTM or ADAM
    ct: dict[str, Codelist]
    md: Sdtmig
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    widths: dict[str, dict[str, int]] = field(default_factory=dict)
    define: "DefineFacts | None" = None
    windows: pd.DataFrame | None = None  # VISITNUM, VISIT, VISITDY, low, high
    adam_windows: dict[str, list] = field(default_factory=dict)
    reference: dict[str, pd.DataFrame] = field(default_factory=dict)  # DM/TA/SE from the SDTM folder (ADaM runs)
    spec_codelists: dict[tuple[str, str], str] = field(default_factory=dict)  # (dataset, variable) -> codelist
    adam_keys: dict[str, list[str]] = field(default_factory=dict)  # ADaM dataset -> keys (define.xml, else spec)
    trtemfl_windows: dict[str, int] = field(default_factory=dict)  # ADaM dataset -> days after last dose (spec)
    folder: "Path | None" = None  # the folder validated (its lineage/ for ADaM)

    def domain(self, name: str, columns: list[str] | None = None) -> pd.DataFrame | None:
        """A dataset validated, else one of the reference (SDTM for ADaM); of a reference held at
        rest (:class:`~cdisc_convert.at_rest.FramesAtRest`), ``columns`` makes only those."""
        found = self.datasets.get(name)
        if found is not None:
            return found
        if columns is not None and isinstance(self.reference, FramesAtRest) and name in self.reference:
            return self.reference.columns_of(name, columns)
        return self.reference.get(name)


@dataclass
class DefineFacts:
    """What define.xml says: datasets, variables (label, length), codelist bindings, extended values."""

    datasets: dict[str, str]
    variables: dict[tuple[str, str], tuple[str, int | None]]
    codelist_of: dict[tuple[str, str], str]
    codelist_terms: dict[str, set[str]]
    extended: dict[str, set[str]]
    roles: dict[tuple[str, str], str] = field(default_factory=dict)
    datatypes: dict[tuple[str, str], str] = field(default_factory=dict)
    standard: str = ""  # the IG the define.xml declares (SDTMIG, ADaMIG)
    keys: dict[str, list[str]] = field(default_factory=dict)  # dataset -> key variables (ItemRef KeySequence)


def findings(rule: dict, dataset: str, frame: pd.DataFrame, mask: pd.Series, variable: str, message,
             value: pd.Series | None = None, days_out: pd.Series | None = None) -> pd.DataFrame:
    """Findings for the rows of ``frame`` where ``mask`` holds (record = 1-based row number)."""
    # most calls find nothing (the example: 497 of 501): numpy's any, and a copy of an empty
    # frame (a twentieth of building one), keep that case cheap
    flags = mask.to_numpy() if mask.dtype == bool else mask.fillna(False).astype(bool).to_numpy()
    if not flags.any():
        return _NO_FINDINGS.copy()
    rows = frame.index[flags]
    values = as_text((value if value is not None else frame[variable]).loc[rows]) if (value is not None or
                                                                                       variable in frame) else ""
    # a callable message is built for the flagged rows only (a million records rarely yield many findings)
    text = message if isinstance(message, str) else message(rows) if callable(message) else message.loc[rows].to_numpy()
    return pd.DataFrame({
        "rule": rule["id"], "severity": rule["severity"], "dataset": dataset, "variable": variable,
        "record": (rows.to_numpy() + 1).astype(int), "usubjid": as_text(frame.loc[rows, "USUBJID"]).to_numpy()
        if "USUBJID" in frame.columns else "", "value": np.asarray(values), "message": text,
        "days_out": days_out.loc[rows].to_numpy() if days_out is not None else np.nan,
    })


def _codelist_bindings(ctx: Context, name: str, frame: pd.DataFrame) -> dict:
    """Variable -> codelist short name, from the specs and define.xml, else the IG metadata (SDTM)
    or conventions (ADaM). A variable the IG binds to several codelists maps to a tuple of them
    (their union applies); one bound by another variable's value to ``(by, {value: codelist})``."""
    out: dict = {v: cl for (d, v), cl in ctx.spec_codelists.items() if d == name and v in frame.columns}
    if ctx.define:
        out.update({v: cl for (d, v), cl in ctx.define.codelist_of.items() if d == name and v in frame.columns})
    for (d, v), value_level in VALUE_LEVEL_CODELISTS.items():  # the IG's value-level binding wins
        if d == name and v in frame.columns and ctx.kind == "SDTM":
            out[v] = value_level
    if ctx.kind == "SDTM" and (name in ctx.md.domains or name.startswith("SUPP")):
        for col in frame.columns:
            v = ctx.md.allowed_variable(name, col)
            if v is None or not v.codelists or col in out:
                continue
            if (name, col) in VALUE_LEVEL_CODELISTS:
                out[col] = VALUE_LEVEL_CODELISTS[(name, col)]
            elif col.endswith(("ORRES", "STRESC")) and name not in ("TS",):
                continue  # result codelists apply by test (value level), declared in the spec's test table
            else:
                out[col] = v.codelist if len(v.codelists) == 1 else tuple(v.codelists)
    if ctx.kind == "ADAM":
        from ..metadata import adam_variable
        for col in frame.columns:
            if col.endswith("FL") and len(col) <= 8:
                out.setdefault(col, "NY")
            meta = adam_variable(col)  # ADaMIG's codelist: DTYPE, *DTF (DATEFL), *TMF (TIMEFL), EOSSTT ...
            if meta is not None and len(meta.codelists) == 1 and meta.codelists[0] in ctx.ct:
                out.setdefault(col, meta.codelists[0])
            for d in ("DM", "AE"):
                vm = ctx.md.domain(d).variable(col)
                if vm and vm.codelist:
                    out.setdefault(col, vm.codelist)
    return out


def _skip_ct(var: str, codelist: str) -> bool:
    # test codes and names are CT0003's; units CT0004's
    return var.endswith(("TESTCD", "TEST")) or codelist in ("LBTESTCD", "LBTEST", "UNIT") or \
        var.endswith(UNIT_VARS) or codelist.startswith("PARAMCD")


def _allowed(ctx: Context, cl_name: str, codelist: Codelist) -> set[str]:
    """Terms of the codelist plus the extensions declared for it: by the study's terminology.yaml
    when it has one (an undeclared extension is then a finding even if define.xml lists it),
    else by define.xml's ExtendedValue items."""
    allowed = codelist.allowed
    if codelist.extensible and ctx.define and not getattr(ctx.ct, "declares_extensions", False):
        allowed = allowed | ctx.define.extended.get(cl_name, set())
    return allowed


def _resolve(ctx: Context, binding) -> tuple[str, Codelist | None, set[str]]:
    """(name, codelist, allowed terms) of a binding to one codelist or a union of several."""
    if isinstance(binding, str):
        codelist = ctx.ct.get(binding)
        return binding, codelist, (_allowed(ctx, binding, codelist) if codelist else set())
    found = [(n, ctx.ct[n]) for n in binding if n in ctx.ct]
    if not found:
        return "/".join(binding), None, set()
    allowed = set().union(*(_allowed(ctx, n, c) for n, c in found))
    merged = Codelist("/".join(n for n, _ in found), "/".join(c.code for _, c in found),
                      any(c.extensible for _, c in found), sorted(allowed))
    return merged.name, merged, allowed


def ct_values(ctx: Context, rule: dict, extensible: bool) -> list[pd.DataFrame]:
    out = []
    for name, frame in ctx.datasets.items():
        for var, binding in _codelist_bindings(ctx, name, frame).items():
            if isinstance(binding, tuple) and len(binding) == 2 and isinstance(binding[1], dict):
                by, by_value = binding  # value level: the codelist depends on another variable's value
                if by not in frame.columns:
                    continue
                by_text = as_text(frame[by])
                groups = [(by_text == value, cl, f" for {by} = {value}") for value, cl in by_value.items()]
            else:
                groups = [(pd.Series(True, index=frame.index), binding, "")]
            text = None
            for where, cl_binding, scope in groups:
                if not where.any():
                    continue
                cl_name, codelist, allowed = _resolve(ctx, cl_binding)
                if codelist is None or codelist.extensible != extensible or not allowed or _skip_ct(var, cl_name):
                    continue
                text = as_text(frame[var]) if text is None else text
                bad = where & (text != "") & ~text.isin(allowed)
                kind = "extensible" if extensible else "non-extensible"
                if codelist.dictionary:
                    message = f"value is not a code of {codelist.dictionary}"
                else:
                    message = (f"value not in {kind} codelist {cl_name} ({codelist.code}){scope}"
                               + (" and not declared as a study extension" if extensible else ""))
                out.append(findings(rule, name, frame, bad, var, message))
    return out


def ct_non_extensible(ctx, rule):
    return ct_values(ctx, rule, extensible=False)


def ct_extensible(ctx, rule):
    return ct_values(ctx, rule, extensible=True)


def ct_test_name_pair(ctx, rule):
    out = []
    for name, frame in ctx.datasets.items():
        code, test = f"{name}TESTCD", f"{name}TEST"
        if code not in frame.columns:
            continue
        codes = as_text(frame[code])
        codelist = ctx.ct.get(f"{name}TESTCD")
        if codelist is not None and codelist.terms:
            allowed = _allowed(ctx, f"{name}TESTCD", codelist)
            bad = (codes != "") & ~codes.isin(allowed) & ~codes.duplicated()  # once per code, not per record
            out.append(findings(rule, name, frame, bad, code,
                                f"{code} is not in codelist {name}TESTCD and not declared as an extended value"))
        if test in frame.columns:
            names = as_text(frame[test])
            pair_of_record = pd.DataFrame({"c": codes, "n": names})
            pairs = pair_of_record.drop_duplicates()  # few distinct pairs
            shared_code = set(pairs.loc[pairs.duplicated("c", keep=False), "c"])
            shared_name = set(pairs.loc[pairs.duplicated("n", keep=False), "n"])
            bad = codes.isin(shared_code) | names.isin(shared_name)
            # with a CT package, a CDISC code and its name carry the same NCI code
            names_cl = ctx.ct.get(f"{name}TEST")
            if codelist is not None and names_cl is not None and codelist.term_codes and names_cl.term_codes:
                name_of = {nci: n for n, nci in names_cl.term_codes.items()}  # NCI code -> the CT's test name
                mismatched = {(c, n) for c, n in zip(pairs["c"], pairs["n"]) if c in codelist.term_codes and
                              name_of.get(codelist.term_codes[c], n) != n}
                if mismatched:
                    bad |= pd.Series(pd.MultiIndex.from_arrays([codes, names]).isin(list(mismatched)), index=frame.index)
            bad &= ~pair_of_record.duplicated()  # once per pair
            out.append(findings(rule, name, frame, bad, code, lambda rows, codes=codes, names=names: (
                "test code and test name do not pair one to one (" + codes.loc[rows] + " / " + names.loc[rows]
                + ")").to_numpy()))
    return out


def ct_units(ctx, rule):
    units = ctx.ct.get("UNIT")
    if units is None or not units.terms:
        return []
    allowed = _allowed(ctx, "UNIT", units)
    out = []
    for name, frame in ctx.datasets.items():
        for var in [c for c in frame.columns if c.startswith(name) and c.endswith(UNIT_VARS)]:
            text = as_text(frame[var])
            out.append(findings(rule, name, frame, (text != "") & ~text.isin(allowed), var,
                                "unit is not a term of the UNIT codelist"))
    return out


def _is_unscheduled(frame: pd.DataFrame, planned: set) -> pd.Series:
    visit = frame["VISIT"] if "VISIT" in frame.columns else pd.Series("", index=frame.index)
    named = on_unique(visit, lambda u: as_text(u).str.upper().str.contains("UNSCHED")).astype(bool)
    return ~frame["VISITNUM"].isin(planned) & (named | (frame["VISITNUM"] % 1 != 0))


def visit_in_tv(ctx, rule):
    if ctx.windows is None or ctx.kind != "SDTM":
        return []
    tv = ctx.windows.set_index("VISITNUM")["VISIT"]
    out = []
    for name, frame in ctx.datasets.items():
        if name in ("TV",) or "VISITNUM" not in frame.columns or frame["VISITNUM"].isna().all():
            continue
        has = frame["VISITNUM"].notna()
        expected = frame["VISITNUM"].map(tv)
        visit = as_text(frame["VISIT"]) if "VISIT" in frame.columns else expected.fillna("")
        wrong_name = has & expected.notna() & (visit != expected)
        unknown = has & expected.isna() & ~_is_unscheduled(frame, set(tv.index))
        out.append(findings(rule, name, frame, wrong_name | unknown, "VISIT", lambda r, frame=frame, visit=visit: (
            "VISITNUM " + as_text(frame["VISITNUM"].loc[r]) + " / VISIT " + visit.loc[r] + " is not a planned visit in TV"
        ).to_numpy(), value=visit))
    return out


def _dy_and_dtc(name: str, frame: pd.DataFrame) -> tuple[str | None, str | None]:
    for dy, dtc in ((f"{name}DY", f"{name}DTC"), (f"{name}STDY", f"{name}STDTC"), ("SVSTDY", "SVSTDTC")):
        if dy in frame.columns:
            return dy, dtc if dtc in frame.columns else None
    return None, None


def _dates(values: pd.Series) -> pd.Series:
    """Complete dates of ISO 8601 values, parsed once per distinct value (dates repeat a lot)."""
    return on_unique(values, dtc_date).astype("datetime64[ns]")


def _study_day(values: pd.Series, reference: pd.Series) -> pd.Series:
    delta = (_dates(values) - _dates(reference)).dt.days
    return delta.where(delta < 0, delta + 1).astype(float)


def subject_value(ctx, frame, var: str) -> pd.Series | None:
    """Each record's subject's DM value of ``var`` (RFSTDTC, RFPENDTC ...); None without DM or it."""
    dm = ctx.domain("DM")
    if dm is None or var not in dm.columns or "USUBJID" not in frame.columns:
        return None
    return frame["USUBJID"].map(dm.drop_duplicates("USUBJID").set_index("USUBJID")[var])


def _reference_start(ctx, frame):
    return subject_value(ctx, frame, "RFSTDTC")


def visit_window(ctx, rule):
    if ctx.windows is None or ctx.kind != "SDTM":
        return []
    win = ctx.windows.set_index("VISITNUM")
    out = []
    for name, frame in ctx.datasets.items():
        if name in ("TV", "SV") or "VISITNUM" not in frame.columns:
            continue
        dy, dtc = _dy_and_dtc(name, frame)
        if dy is None:
            continue
        day = frame[dy].astype(float)
        ref = _reference_start(ctx, frame)
        if dtc and ref is not None:  # the day the date says; an inconsistent --DY is CF0006's finding
            from_date = _study_day(frame[dtc], ref)
            day = from_date.where(from_date.notna(), day)
        low, high = frame["VISITNUM"].map(win["low"]), frame["VISITNUM"].map(win["high"])
        below, above = day < low, day > high
        days_out = (low - day).where(below, (day - high).where(above, 0))

        def message(r, day=day, low=low, high=high, days_out=days_out, frame=frame):
            visit = as_text(frame["VISIT"].loc[r]) if "VISIT" in frame.columns else ""
            return ("study day " + as_text(day.loc[r]) + " is outside the window of " + visit + " (" +
                    as_text(low.loc[r]) + " to " + as_text(high.loc[r]) + "): " + as_text(days_out.loc[r]) +
                    " day(s) out").to_numpy()
        out.append(findings(rule, name, frame, below | above, dy, message, value=day, days_out=days_out))
    return out


def unplanned_visit(ctx, rule):
    sv = ctx.datasets.get("SV")
    if sv is None or ctx.windows is None:
        return []
    unplanned = ~sv["VISITNUM"].isin(set(ctx.windows["VISITNUM"]))
    return [findings(rule, "SV", sv, unplanned, "VISITNUM", "unplanned visit " + as_text(sv.get("VISIT", "")))]


def sv_covers_visits(ctx, rule):
    sv = ctx.datasets.get("SV")
    if sv is None or ctx.kind != "SDTM":
        return []
    span = sv.assign(_s=dtc_date(sv["SVSTDTC"]), _e=dtc_date(sv["SVENDTC"]))[["USUBJID", "VISITNUM", "_s", "_e"]]
    span = span.drop_duplicates(["USUBJID", "VISITNUM"])
    out = []
    for name, frame in ctx.datasets.items():
        if name in ("SV", "TV", "SE") or "VISITNUM" not in frame.columns:
            continue
        _dy, dtc = _dy_and_dtc(name, frame)
        if dtc is None:
            continue
        merged = frame[["USUBJID", "VISITNUM"]].reset_index().merge(span, on=["USUBJID", "VISITNUM"], how="left") \
            .set_index("index").reindex(frame.index)
        when = _dates(frame[dtc])
        has = frame["VISITNUM"].notna()
        no_sv = has & merged["_s"].isna() & merged["_e"].isna()
        outside = has & when.notna() & ~no_sv & ((when < merged["_s"]) | (when > merged["_e"]))
        out.append(findings(rule, name, frame, no_sv, "VISITNUM", "visit has no SV record"))
        out.append(findings(rule, name, frame, outside, dtc, "date is outside the SV dates of its visit"))
    return out


def adam_analysis_window(ctx, rule):
    out = []
    for name, windows in ctx.adam_windows.items():
        frame = ctx.datasets.get(name)
        if frame is None or "ADY" not in frame.columns or "AVISITN" not in frame.columns:
            continue
        day = frame["ADY"]
        expected = pd.Series(np.nan, index=frame.index)
        for w in sorted(windows, key=lambda w: w.avisitn):
            expected = expected.where(expected.notna() | ~day.between(w.low, w.high), float(w.avisitn))
        base = frame["ABLFL"] == "Y" if "ABLFL" in frame.columns else pd.Series(False, index=frame.index)
        actual = frame["AVISITN"]
        wrong = ~base & (expected.notna() | actual.notna()) & ~((expected == actual) | (expected.isna() & actual.isna()))
        out.append(findings(rule, name, frame, wrong, "AVISITN", lambda r, day=day, expected=expected, actual=actual: (
            "ADY " + as_text(day.loc[r]) + " belongs to analysis visit " + as_text(expected.loc[r]) +
            ", the record says " + as_text(actual.loc[r])).to_numpy()))
    return out


def _required(ctx: Context, name: str, frame: pd.DataFrame) -> list[str]:
    if ctx.kind == "SDTM":
        if name not in ctx.md.domains and not name.startswith("SUPP"):
            return []
        return [v.name for v in ctx.md.domain(name).variables if v.core == "Req"]
    required = ["STUDYID", "USUBJID"]
    if "PARAMCD" in frame.columns or name in ctx.adam_windows:
        required += ["PARAMCD", "PARAM"]
    return required


def required_present(ctx, rule):
    out = []
    for name, frame in ctx.datasets.items():
        missing = [v for v in _required(ctx, name, frame) if v not in frame.columns]
        for var in missing:
            out.append(pd.DataFrame([{"rule": rule["id"], "severity": rule["severity"], "dataset": name,
                                      "variable": var, "record": 0, "usubjid": "", "value": "",
                                      "message": f"required variable {var} is missing", "days_out": np.nan}]))
    return out


def required_populated(ctx, rule):
    out = []
    for name, frame in ctx.datasets.items():
        for var in [v for v in _required(ctx, name, frame) if v in frame.columns]:
            empty = frame[var].isna() if frame[var].dtype.kind in "fiu" else as_text(frame[var]) == ""
            out.append(findings(rule, name, frame, empty, var, f"required variable {var} is empty"))
    return out


def variable_metadata(ctx, rule):
    out = []
    for name, frame in ctx.datasets.items():
        labels = ctx.labels.get(name, {})
        meta = ctx.md.domain(name) if ctx.kind == "SDTM" and (name in ctx.md.domains or name.startswith("SUPP")) else None
        rows = []
        for col in frame.columns:
            label = labels.get(col, "") or ""
            problems = []
            if len(col) > 8:
                problems.append("name longer than 8")
            if len(label) > 40:
                problems.append("label longer than 40")
            if meta is not None:
                vm = ctx.md.allowed_variable(name, col)
                if vm is None and not name.startswith("SUPP"):
                    problems.append(f"not a {name} variable in SDTMIG {ctx.md.version}")
                elif vm is not None:
                    if label and label != vm.label:
                        problems.append(f"label differs from SDTMIG ('{vm.label}')")
                    is_num = frame[col].dtype.kind in "fiu"
                    if (vm.type == "Num") != is_num:
                        problems.append(f"type differs from SDTMIG ({vm.type})")
            width = ctx.widths.get(name, {}).get(col)
            if frame[col].dtype.kind not in "fiu" and (width if width is not None else
                                                        (frame[col].str.len().max() if len(frame) else 0)) > 200:
                problems.append("a value longer than 200")
            if problems:
                rows.append({"rule": rule["id"], "severity": rule["severity"], "dataset": name, "variable": col,
                             "record": 0, "usubjid": "", "value": label, "message": "; ".join(problems),
                             "days_out": np.nan})
        if rows:
            out.append(pd.DataFrame(rows))
    return out


def _dtc_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.endswith("DTC") and frame[c].dtype.kind not in "fiu"]


def iso8601(ctx, rule):
    out = []
    for name, frame in ctx.datasets.items():
        for col in _dtc_columns(frame):
            bad = on_unique(frame[col], _not_iso8601).astype(bool)
            out.append(findings(rule, name, frame, bad, col, "not an ISO 8601 date/time"))
    return out


def _not_iso8601(values: pd.Series) -> pd.Series:
    text = as_text(values)
    bad = (text != "") & ~text.str.match(ISO8601)
    return bad | (~bad & (text.str.len() >= 10) & dtc_date(text).isna())


def seq_unique(ctx, rule):
    out = []
    for name, frame in ctx.datasets.items():
        seq = f"{name}SEQ"
        if seq in frame.columns and "USUBJID" in frame.columns:
            dup = frame.duplicated(["USUBJID", seq], keep=False) & frame[seq].notna()
            out.append(findings(rule, name, frame, dup, seq, f"{seq} is not unique within the subject"))
    return out


def study_day_consistent(ctx, rule):
    out = []
    for name, frame in ctx.datasets.items():
        ref = _reference_start(ctx, frame)
        for dy in [c for c in frame.columns if c.endswith("DY") and c.startswith(name) and c != "VISITDY"]:
            dtc = dy[:-2] + "DTC"
            zero = frame[dy] == 0
            expected = None
            if ref is not None and dtc in frame.columns:
                expected = _study_day(frame[dtc], ref)
                wrong = expected.notna() & frame[dy].notna() & (expected != frame[dy])
            else:
                wrong = pd.Series(False, index=frame.index)

            def msg(r, dy=dy, dtc=dtc, zero=zero, expected=expected, frame=frame):
                message = "" if expected is None else \
                    (f"{dy} " + as_text(frame[dy].loc[r]) + " but " + dtc + " and RFSTDTC give " + as_text(expected.loc[r]))
                return pd.Series(np.where(zero.loc[r], f"{dy} is 0: there is no study day 0", message)).to_numpy()
            out.append(findings(rule, name, frame, zero | wrong, dy, msg))
    return out


def usubjid_in_dm(ctx, rule):
    subjects = ctx.domain("DM") if ctx.kind == "SDTM" else ctx.datasets.get("ADSL")
    if subjects is None:
        subjects = ctx.domain("DM")
    if subjects is None:
        return []
    known = set(subjects["USUBJID"])
    return [findings(rule, name, frame, ~frame["USUBJID"].isin(known) & (as_text(frame["USUBJID"]) != ""), "USUBJID",
                     "USUBJID is not in " + ("DM" if ctx.kind == "SDTM" else "ADSL"))
            for name, frame in ctx.datasets.items() if "USUBJID" in frame.columns and name not in ("DM", "ADSL")]


def stresn_stresc(ctx, rule):
    out = []
    for name, frame in ctx.datasets.items():
        c, n = f"{name}STRESC", f"{name}STRESN"
        if c in frame.columns and n in frame.columns:
            parsed = parse_result(frame[c])["number"]
            num = frame[n].astype(float)
            bad = ~((parsed.isna() & num.isna()) | np.isclose(parsed.fillna(np.inf), num.fillna(-np.inf), rtol=1e-9))
            out.append(findings(rule, name, frame, bad, n, lambda r, frame=frame, n=n, c=c: (
                f"{n} does not equal the number in {c} (" + as_text(frame[c].loc[r]) + ")").to_numpy()))
    return out


def arm_in_ta(ctx, rule):
    dm, ta = ctx.domain("DM"), ctx.domain("TA")
    if dm is None or ta is None or ctx.kind != "SDTM":
        return []
    arms = set(zip(as_text(ta["ARMCD"]), as_text(ta["ARM"])))
    out = []
    for code, label in (("ARMCD", "ARM"), ("ACTARMCD", "ACTARM")):
        if code in dm.columns and label in dm.columns:
            pair = pd.Series(list(zip(as_text(dm[code]), as_text(dm[label]))), index=dm.index)
            bad = (as_text(dm[code]) != "") & ~pair.isin(arms)
            out.append(findings(rule, "DM", dm, bad, code, f"{code}/{label} is not an arm of TA"))
    return out


def epoch_valid(ctx, rule):
    ta = ctx.domain("TA")
    if ta is None or "EPOCH" not in ta.columns:
        return []
    epochs = set(as_text(ta["EPOCH"]))
    return [findings(rule, name, frame, (as_text(frame["EPOCH"]) != "") & ~as_text(frame["EPOCH"]).isin(epochs),
                     "EPOCH", "EPOCH is not an epoch of TA")
            for name, frame in ctx.datasets.items() if "EPOCH" in frame.columns and name != "TA"]


def supp_parent(ctx, rule):
    out = []
    for name, supp in ctx.datasets.items():
        if not name.startswith("SUPP") or "IDVAR" not in supp.columns:
            continue
        parent = ctx.datasets.get(name[4:])
        ok = pd.Series(False, index=supp.index)
        if parent is not None:
            for idvar, group in supp.groupby(as_text(supp["IDVAR"])):
                if idvar == "":
                    ok[group.index] = group["USUBJID"].isin(set(parent["USUBJID"]))
                elif idvar in parent.columns:
                    keys = set(zip(parent["USUBJID"], as_text(parent[idvar])))
                    ok[group.index] = [k in keys for k in zip(group["USUBJID"], as_text(group["IDVARVAL"]))]
        out.append(findings(rule, name, supp, ~ok, "IDVARVAL",
                            f"no {name[4:]} record has this USUBJID, IDVAR and IDVARVAL"))
    return out


def define_consistent(ctx, rule):
    if ctx.define is None:
        return []
    rows = []
    for name, frame in ctx.datasets.items():
        if name not in ctx.define.datasets:
            rows.append((name, "", "dataset is not in define.xml"))
            continue
        for col in frame.columns:
            fact = ctx.define.variables.get((name, col))
            if fact is None:
                rows.append((name, col, "variable is not in define.xml"))
                continue
            label, length = fact
            if label != (ctx.labels.get(name, {}).get(col) or ""):
                rows.append((name, col, f"define.xml label '{label}' differs from the dataset's"))
            width = ctx.widths.get(name, {}).get(col)
            if length is not None and width is not None and frame[col].dtype.kind not in "fiu" and length != width:
                rows.append((name, col, f"define.xml length {length} differs from the dataset's {width}"))
    if not rows:
        return []
    return [pd.DataFrame([{"rule": rule["id"], "severity": rule["severity"], "dataset": d, "variable": v, "record": 0,
                           "usubjid": "", "value": "", "message": m, "days_out": np.nan} for d, v, m in rows])]


CHECKS = {
    "ct_non_extensible": ct_non_extensible, "ct_extensible": ct_extensible, "ct_test_name_pair": ct_test_name_pair,
    "ct_units": ct_units, "visit_in_tv": visit_in_tv, "visit_window": visit_window,
    "unplanned_visit": unplanned_visit, "sv_covers_visits": sv_covers_visits,
    "adam_analysis_window": adam_analysis_window, "required_present": required_present,
    "required_populated": required_populated, "variable_metadata": variable_metadata, "iso8601": iso8601,
    "seq_unique": seq_unique, "study_day": study_day_consistent, "usubjid_in_dm": usubjid_in_dm,
    "stresn_stresc": stresn_stresc, "arm_in_ta": arm_in_ta, "epoch_valid": epoch_valid, "supp_parent": supp_parent,
    "define_consistent": define_consistent,
}
