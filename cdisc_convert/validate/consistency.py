"""Cross-variable and cross-dataset consistency checks: dates against each other and against the
subject's reference dates, flags and their criteria, death across DM/DS/AE, the trial design
(TS completeness, planned doses, EPOCH against SE), natural-key duplicates, and what define.xml
says about roles and data types. One function per rule of ``validation/rules.yaml``; each
returns findings (see :func:`.checks.findings`) and fires once per wrong record.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..sdtm.derive import epoch_of
from ..text import as_text, first_of_code, on_distinct, on_unique, row_codes
from .checks import FINDING, ISO8601, Context, findings, subject_value

TRIAL_DESIGN = ("TA", "TE", "TV", "TI", "TS", "TD", "TM")
SERIOUSNESS = ("AESCAN", "AESCONG", "AESDISAB", "AESDTH", "AESHOSP", "AESLIFE", "AESMIE", "AESOD")


def _subject_datasets(ctx: Context):
    for name, frame in ctx.datasets.items():
        if name not in TRIAL_DESIGN and not name.startswith(("SUPP", "REL")) and "USUBJID" in frame.columns:
            yield name, frame


def _after(start: pd.Series, end: pd.Series) -> pd.Series:
    """Whether ISO 8601 ``start`` is later than ``end``, compared at the precision both have
    (``2024-03`` is not after ``2024-03-05``; ``2024-03-06T10:00`` is after ``2024-03-05``)."""
    pairs = pd.DataFrame({"s": as_text(start), "e": as_text(end)})
    return on_distinct(pairs, lambda d: _after_distinct(d["s"], d["e"])).astype(bool)


def _after_distinct(s: pd.Series, e: pd.Series) -> pd.Series:
    n = np.minimum(s.str.len(), e.str.len())
    out = pd.Series(False, index=s.index)
    # values that are not ISO 8601 are CF0004's finding, not compared here
    both = on_unique(s, lambda u: u.str.match(ISO8601)).astype(bool) & on_unique(e, lambda u: u.str.match(ISO8601)).astype(bool)
    for width in sorted(set(n[both])):
        at = (n == width) & both
        out[at] = s[at].str.slice(0, width) > e[at].str.slice(0, width)
    return out


def start_after_end(ctx, rule):
    """--STDTC after --ENDTC on one record (RFSTDTC after RFENDTC in DM)."""
    out = []
    for name, frame in ctx.datasets.items():
        pairs = [(f"{name}STDTC", f"{name}ENDTC")]
        if name == "DM":
            pairs += [("RFSTDTC", "RFENDTC"), ("RFXSTDTC", "RFXENDTC")]
        for start, end in pairs:
            if start in frame.columns and end in frame.columns:
                out.append(findings(rule, name, frame, _after(frame[start], frame[end]), start,
                                    lambda r, frame=frame, start=start, end=end: (
                                        f"{start} " + as_text(frame[start].loc[r]) + f" is after {end} " +
                                        as_text(frame[end].loc[r])).to_numpy()))
    return out


def after_participation(ctx, rule):
    """A subject's record dated after the end of participation (DM.RFPENDTC); the finding is on
    the record's latest date, plus one on DM.RFPENDTC per subject, since either may be wrong."""
    dm = ctx.domain("DM")
    if dm is None or "RFPENDTC" not in dm.columns or ctx.kind != "SDTM":
        return []
    out, late_subjects = [], {}
    for name, frame in _subject_datasets(ctx):
        if name == "DM":
            continue
        end = subject_value(ctx, frame, "RFPENDTC")
        end = end.fillna("") if end is not None else None
        dates = [c for c in frame.columns if c.endswith(("DTC",)) and c.startswith(name) and
                 frame[c].dtype.kind not in "fiu"]
        if end is None or not dates:
            continue
        late = {c: _after(frame[c], end) for c in dates}
        any_late = pd.Series(False, index=frame.index)
        for col in dates:  # one finding per record: on its first late date variable
            hit = late[col] & ~any_late
            any_late |= late[col]
            out.append(findings(rule, name, frame, hit, col, lambda r, col=col, frame=frame, end=end: (
                f"{col} " + as_text(frame[col].loc[r]) + " is after RFPENDTC " + end.loc[r]).to_numpy()))
        for subject, n in frame.loc[any_late, "USUBJID"].value_counts().items():
            late_subjects[subject] = late_subjects.get(subject, 0) + int(n)
    if late_subjects:
        who = dm["USUBJID"].map(late_subjects)
        out.append(findings(rule, "DM", dm, who.notna(), "RFPENDTC",
                            "RFPENDTC is before " + as_text(who) + " record(s) of the subject"))
    return out


def _baseline_groups(name: str, frame: pd.DataFrame) -> list[str]:
    qualifiers = ("TESTCD", "CAT", "SCAT", "SPEC", "LOC", "LAT", "POS", "METHOD", "TPTNUM", "OBJ")
    return ["USUBJID", *[f"{name}{q}" for q in qualifiers if f"{name}{q}" in frame.columns]]


def baseline_flag_unique(ctx, rule):
    """More than one baseline record (--BLFL / --LOBXFL / ABLFL = Y) for a subject and test."""
    out = []
    for name, frame in ctx.datasets.items():
        flags = [c for c in (f"{name}BLFL", f"{name}LOBXFL", "ABLFL") if c in frame.columns]
        for flag in flags:
            groups = ["USUBJID", "PARAMCD", *[c for c in ("BASETYPE", "ATPTN") if c in frame.columns]] \
                if flag == "ABLFL" else _baseline_groups(name, frame)
            if any(g not in frame.columns for g in groups):
                continue
            is_y = as_text(frame[flag]) == "Y"
            keys = frame.loc[is_y, groups].astype(str)
            dup = pd.Series(False, index=frame.index)
            dup[keys.index] = keys.duplicated(keep=False).to_numpy()
            out.append(findings(rule, name, frame, dup, flag,
                                f"more than one {flag} = Y for the subject and " + "/".join(groups[1:])))
    return out


def ae_seriousness(ctx, rule):
    """AESER = Y with no seriousness criterion = Y (``params: {when: Y}``), or a criterion = Y while
    AESER = N (``when: N``)."""
    ae = ctx.datasets.get("AE")
    criteria = [c for c in SERIOUSNESS if ae is not None and c in ae.columns]
    if ae is None or "AESER" not in ae.columns or not criteria:
        return []
    ser = as_text(ae["AESER"])
    any_y = pd.concat([as_text(ae[c]) == "Y" for c in criteria], axis=1).any(axis=1)
    if rule.get("params", {}).get("when", "Y") == "Y":
        return [findings(rule, "AE", ae, (ser == "Y") & ~any_y, "AESER",
                         "AESER = Y but no seriousness criterion (" + ", ".join(criteria) + ") is Y")]
    return [findings(rule, "AE", ae, (ser == "N") & any_y, "AESER", "AESER = N but a seriousness criterion is Y")]


def death_consistency(ctx, rule):
    """Death recorded the same way everywhere: DM.DTHFL/DTHDTC, a DS record with DSDECOD DEATH,
    AE.AESDTH / AEOUT FATAL."""
    dm = ctx.domain("DM")
    if dm is None or ctx.kind != "SDTM" or "DM" not in ctx.datasets:
        return []
    out = []
    dthfl = as_text(dm["DTHFL"]) if "DTHFL" in dm.columns else pd.Series("", index=dm.index)
    dthdtc = as_text(dm["DTHDTC"]) if "DTHDTC" in dm.columns else pd.Series("", index=dm.index)
    flagged = set(dm.loc[dthfl == "Y", "USUBJID"])
    ds = ctx.datasets.get("DS")
    no_ds = pd.Series(False, index=dm.index)
    if ds is not None and "DSDECOD" in ds.columns:
        ds_death = as_text(ds["DSDECOD"]) == "DEATH"
        no_ds = ~dm["USUBJID"].isin(set(ds.loc[ds_death, "USUBJID"]))
        out.append(findings(rule, "DM", dm, (dthfl == "Y") & no_ds, "DTHFL",
                            "DTHFL = Y but the subject has no DS record with DSDECOD = DEATH"))
        out.append(findings(rule, "DS", ds, ds_death & ~ds["USUBJID"].isin(flagged), "DSDECOD",
                            "DS records a death but DM.DTHFL is not Y"))
    if "DTHDTC" in dm.columns:
        why = pd.Series(np.where(dthfl != "Y", "DTHDTC is given but DTHFL is not Y",
                                 "DTHDTC is given but the subject has no DS record with DSDECOD = DEATH"),
                        index=dm.index)
        out.append(findings(rule, "DM", dm, (dthdtc != "") & ((dthfl != "Y") | no_ds), "DTHDTC", why))
    ae = ctx.datasets.get("AE")
    if ae is not None:
        for var, value in (("AESDTH", "Y"), ("AEOUT", "FATAL")):
            if var in ae.columns:
                out.append(findings(rule, "AE", ae, (as_text(ae[var]) == value) & ~ae["USUBJID"].isin(flagged), var,
                                    f"{var} = {value} but DM.DTHFL is not Y"))
    return out


AGE_UNITS = {"YEARS": 1.0, "MONTHS": 12.0, "WEEKS": 52.1775, "DAYS": 365.25, "HOURS": 8766.0}


def age_plausible(ctx, rule):
    """AGE not above 0, above the plausible maximum, or not the age BRTHDTC gives at RFSTDTC."""
    dm = ctx.datasets.get("DM")
    if dm is None or "AGE" not in dm.columns:
        return []
    unit = as_text(dm["AGEU"]) if "AGEU" in dm.columns else pd.Series("YEARS", index=dm.index)
    years = dm["AGE"].astype(float) / unit.map(AGE_UNITS).fillna(1.0)
    most = float(rule.get("params", {}).get("max_years", 120))
    bad = (dm["AGE"].astype(float) <= 0) | (years > most)
    message = pd.Series(f"AGE is not above 0 or above {most:g} years", index=dm.index, dtype=object)
    if "BRTHDTC" in dm.columns and "RFSTDTC" in dm.columns:
        birth, start = as_text(dm["BRTHDTC"]), as_text(dm["RFSTDTC"])
        full = (birth.str.len() >= 10) & (start.str.len() >= 10) & (unit == "YEARS")
        b = pd.to_datetime(birth.where(full).str.slice(0, 10), errors="coerce")
        s = pd.to_datetime(start.where(full).str.slice(0, 10), errors="coerce")
        had_birthday = (s.dt.month > b.dt.month) | ((s.dt.month == b.dt.month) & (s.dt.day >= b.dt.day))
        expected = s.dt.year - b.dt.year - (~had_birthday).astype(int)
        off = full & expected.notna() & ((dm["AGE"].astype(float) - expected).abs() > 1)
        message = message.where(~off, "AGE " + as_text(dm["AGE"]) + " but BRTHDTC and RFSTDTC give " +
                                as_text(expected))
        bad |= off
    return [findings(rule, "DM", dm, bad, "AGE", message)]


def domain_value(ctx, rule):
    """DOMAIN (RDOMAIN in SUPP--) differs from the dataset's name."""
    out = []
    for name, frame in ctx.datasets.items():
        if name.startswith("SUPP") and "RDOMAIN" in frame.columns:
            out.append(findings(rule, name, frame, as_text(frame["RDOMAIN"]) != name[4:], "RDOMAIN",
                                f"RDOMAIN is not {name[4:]}"))
        elif "DOMAIN" in frame.columns and ctx.kind == "SDTM":
            out.append(findings(rule, name, frame, as_text(frame["DOMAIN"]) != name, "DOMAIN", f"DOMAIN is not {name}"))
    return out


def duplicate_records(ctx, rule):
    """Records identical in every variable but --SEQ (a record written twice)."""
    out = []
    for name, frame in ctx.datasets.items():
        seq = next((c for c in (f"{name}SEQ", "ASEQ") if c in frame.columns), None)
        cols = [c for c in frame.columns if c != seq]
        codes, count = row_codes([frame[c] for c in cols])  # not frame.duplicated: one code array per column
        if count == len(frame):
            continue
        first_position = first_of_code(codes, count)
        dup = pd.Series(first_position != np.arange(len(frame)), index=frame.index)
        first = pd.Series(first_position + 1, index=frame.index)  # record number of the first copy
        variable = seq or ("USUBJID" if "USUBJID" in frame.columns else cols[0])
        out.append(findings(rule, name, frame, dup, variable,
                            lambda r, first=first: ("duplicate of record " + as_text(first.loc[r])).to_numpy()))
    return out


def _event_date(name: str, frame: pd.DataFrame) -> str | None:
    for col in (f"{name}STDTC", f"{name}DTC", "SVSTDTC"):
        if col in frame.columns:
            return col
    return None


def epoch_matches_se(ctx, rule):
    """EPOCH is not the epoch of the subject's element (SE) that holds the record's date."""
    se = ctx.domain("SE")
    if se is None or ctx.kind != "SDTM" or not {"USUBJID", "EPOCH", "SESTDTC", "SEENDTC"} <= set(se.columns):
        return []
    out = []
    for name, frame in _subject_datasets(ctx):
        if name == "SE" or "EPOCH" not in frame.columns:
            continue
        date = _event_date(name, frame)
        if date is None:
            continue
        expected = epoch_of(frame, date, se)
        actual = as_text(frame["EPOCH"])
        bad = (expected != "") & (actual != "") & (actual != expected)
        out.append(findings(rule, name, frame, bad, "EPOCH", lambda r, date=date, frame=frame, expected=expected: (
            f"{date} " + as_text(frame[date].loc[r]) + " lies in the subject's " + expected.loc[r] + " element"
        ).to_numpy()))
    return out


def planned_dose(ctx, rule):
    """EXDOSE is not a planned dose of the subject's actual arm (TS DOSE grouped by TSGRPID = ARMCD)."""
    ex, ts, dm = ctx.datasets.get("EX"), ctx.domain("TS"), ctx.domain("DM")
    if ex is None or ts is None or dm is None or "EXDOSE" not in ex.columns or "TSGRPID" not in ts.columns:
        return []
    doses = ts[as_text(ts["TSPARMCD"]) == "DOSE"]
    planned: dict[str, set[float]] = {}
    for arm, value in zip(as_text(doses["TSGRPID"]), as_text(doses["TSVAL"])):
        try:
            planned.setdefault(arm, set()).add(float(value))
        except ValueError:
            continue
    if not planned:
        return []
    arm_var = "ACTARMCD" if "ACTARMCD" in dm.columns else "ARMCD"
    arm = ex["USUBJID"].map(dm.drop_duplicates("USUBJID").set_index("USUBJID")[arm_var]).fillna("")
    dose = ex["EXDOSE"].astype(float)
    known = arm.isin(set(planned)) & dose.notna()
    bad = known & ~pd.Series([d in planned.get(a, set()) for a, d in zip(arm, dose)], index=ex.index)
    return [findings(rule, "EX", ex, bad, "EXDOSE", "EXDOSE " + as_text(dose) + " is not a planned dose of arm " + arm)]


def nrind_consistent(ctx, rule):
    """--NRIND contradicts the standard result and its normal range."""
    out = []
    for name, frame in ctx.datasets.items():
        ind, res, lo, hi = (f"{name}{s}" for s in ("NRIND", "STRESN", "STNRLO", "STNRHI"))
        if ind not in frame.columns or res not in frame.columns:
            continue
        value = frame[res].astype(float)
        low = frame[lo].astype(float) if lo in frame.columns else pd.Series(np.nan, index=frame.index)
        high = frame[hi].astype(float) if hi in frame.columns else pd.Series(np.nan, index=frame.index)
        text = as_text(frame[ind])
        below, above = value < low, value > high
        inside = (low.notna() | high.notna()) & value.notna() & ~below.fillna(False) & ~above.fillna(False)
        bad = ((text == "NORMAL") & (below | above)) | ((text == "LOW") & inside) | \
              ((text == "HIGH") & inside) | ((text == "LOW") & above) | ((text == "HIGH") & below)
        out.append(findings(rule, name, frame, bad, ind, lambda r, ind=ind, res=res, text=text, value=value, low=low,
                            high=high: (f"{ind} " + text.loc[r] + f" but {res} " + as_text(value.loc[r]) + " against "
                                        + as_text(low.loc[r]) + "-" + as_text(high.loc[r])).to_numpy()))
    return out


def ts_parameters(ctx, rule):
    """A trial summary parameter the study type needs is missing from TS (the list is the rule's
    ``params``: parameters for every study and for interventional studies)."""
    ts = ctx.datasets.get("TS")
    if ts is None or ctx.kind != "SDTM" or "TSPARMCD" not in ts.columns:
        return []
    params = rule.get("params", {})
    present = set(as_text(ts["TSPARMCD"]))
    stype = set(as_text(ts.loc[as_text(ts["TSPARMCD"]) == "STYPE", "TSVAL"]))
    needed = list(params.get("all", []))
    if "INTERVENTIONAL" in stype or not stype:
        needed += params.get("interventional", [])
    rows = [{"rule": rule["id"], "severity": rule["severity"], "dataset": "TS", "variable": "TSPARMCD", "record": 0,
             "usubjid": "", "value": p, "message": f"TS has no {p} parameter", "days_out": np.nan}
            for p in dict.fromkeys(needed) if p not in present]
    return [pd.DataFrame(rows, columns=FINDING)] if rows else []


def expected_present(ctx, rule):
    """An Expected variable of the implementation guide is not in the dataset."""
    if ctx.kind != "SDTM":
        return []
    rows = []
    for name, frame in ctx.datasets.items():
        if name not in ctx.md.domains:
            continue
        for v in ctx.md.domain(name).variables:
            if v.core == "Exp" and v.name not in frame.columns:
                rows.append({"rule": rule["id"], "severity": rule["severity"], "dataset": name, "variable": v.name,
                             "record": 0, "usubjid": "", "value": "", "message": f"expected variable {v.name} is missing",
                             "days_out": np.nan})
    return [pd.DataFrame(rows, columns=FINDING)] if rows else []


def test_name_length(ctx, rule):
    """--TEST longer than 40 characters or --TESTCD longer than 8 (XPT v5 and SDTMIG limits), once
    per test: the first record of each code with a bad name."""
    out = []
    for name, frame in ctx.datasets.items():
        for var, limit in ((f"{name}TEST", 40), (f"{name}TESTCD", 8), ("QNAM", 8), ("TSPARM", 40), ("PARAMCD", 8)):
            if var not in frame.columns or (name in ("IE", "TI") and var.endswith("TEST")):
                continue
            text = as_text(frame[var])
            long = text.str.len() > limit
            first = long & ~text.duplicated()
            out.append(findings(rule, name, frame, first, var, f"{var} is longer than {limit} characters"))
    return out


def stat_reason(ctx, rule):
    """--STAT = NOT DONE without --REASND, or --REASND given on a record that was done."""
    out = []
    for name, frame in ctx.datasets.items():
        stat, reason = f"{name}STAT", f"{name}REASND"
        if stat not in frame.columns:
            continue
        s = as_text(frame[stat])
        r = as_text(frame[reason]) if reason in frame.columns else pd.Series("", index=frame.index)
        out.append(findings(rule, name, frame, (s == "NOT DONE") & (r == ""), reason if reason in frame.columns else stat,
                            f"{stat} = NOT DONE without a reason in {reason}"))
        out.append(findings(rule, name, frame, (s != "NOT DONE") & (r != ""), reason,
                            f"{reason} is given but {stat} is not NOT DONE"))
    return out


PARTIAL_TYPES = {"date": "partialDate", "datetime": "partialDatetime"}


def define_roles_types(ctx, rule):
    """define.xml: an SDTM ItemRef without Role; a --DTC variable typed date/datetime while it holds
    partial values (Define-XML 2.1: partialDate, partialDatetime or incompleteDatetime)."""
    if ctx.define is None:
        return []
    rows = []
    for name, frame in ctx.datasets.items():
        for col in frame.columns:
            key = (name, col)
            if key not in ctx.define.datatypes:
                continue
            if ctx.kind == "SDTM" and not ctx.define.roles.get(key):
                rows.append((name, col, "ItemRef has no Role"))
            dtype = ctx.define.datatypes[key]
            if col.endswith("DTC") and dtype in PARTIAL_TYPES:
                text = as_text(frame[col])
                full = 10 if dtype == "date" else 16
                if ((text != "") & (text.str.len() < full)).any():
                    rows.append((name, col, f"DataType {dtype} but the variable holds partial values "
                                            f"(use {PARTIAL_TYPES[dtype]})"))
            if frame[col].dtype.kind in "fiu" and dtype == "integer":
                values = frame[col].dropna()
                if len(values) and not (values % 1 == 0).all():
                    rows.append((name, col, "DataType integer but the variable holds fractions"))
    if not rows:
        return []
    return [pd.DataFrame([{"rule": rule["id"], "severity": rule["severity"], "dataset": d, "variable": v, "record": 0,
                           "usubjid": "", "value": "", "message": m, "days_out": np.nan} for d, v, m in rows])]


CHECKS = {
    "start_after_end": start_after_end, "after_participation": after_participation,
    "baseline_flag_unique": baseline_flag_unique, "ae_seriousness": ae_seriousness,
    "death_consistency": death_consistency, "age_plausible": age_plausible, "domain_value": domain_value,
    "duplicate_records": duplicate_records, "epoch_matches_se": epoch_matches_se, "planned_dose": planned_dose,
    "nrind_consistent": nrind_consistent, "ts_parameters": ts_parameters, "expected_present": expected_present,
    "test_name_length": test_name_length, "stat_reason": stat_reason, "define_roles_types": define_roles_types,
}
