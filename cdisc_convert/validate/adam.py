"""ADaM conformance checks: structure (ADSL one record per subject, keys, required variables by
class), ADSL (treatment dates, population flags, treatment variables one-to-one), BDS (parameter
and visit pairs, baseline, change, study day, AVAL/AVALC), OCCDS (treatment emergence, start
before end), TTE (CNSR, AVAL, dates, descriptions), ADSL variables copied into other datasets and
lineage back to SDTM. One function per rule of ``validation/rules.yaml`` (ids there, with the
CDISC ADaM Conformance Rules v5.0 ids they implement); each is vectorised over whole datasets.

ADaM dates are SAS numbers here (days since 1960-01-01), as the writers store them and the
readers give them back, so they compare as numbers.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..metadata import adam_variable, load_adamig
from ..text import as_text, column_codes, combine_codes, distinct_per_group, on_unique, row_codes
from .checks import FINDING, Context, findings

POPULATION_FLAGS = ("SAFFL", "ITTFL", "FASFL", "PPROTFL", "COMPLFL", "RANDFL", "ENRLFL")
RECORD_FLAGS = re.compile(r"^(ABLFL|ONTRTFL|TRTEMFL|PREFL|FUPFL|LVOTFL|ANL\d\dFL|AOCC\w*FL|\w*RFL|\w*PFL)$")


def adam_class(name: str, frame: pd.DataFrame) -> str:
    """ADSL, TTE, BDS, OCCDS or OTHER, from the dataset's name and variables."""
    if name == "ADSL":
        return "ADSL"
    if "PARAMCD" in frame.columns:
        return "TTE" if "CNSR" in frame.columns else "BDS"
    if any(c.endswith(("DECOD", "TERM")) for c in frame.columns):
        return "OCCDS"
    return "OTHER"


def _adam(ctx: Context):
    if ctx.kind != "ADAM":
        return
    for name, frame in ctx.datasets.items():
        yield name, frame, adam_class(name, frame)


def _dataset_finding(rule, dataset, variable, message) -> pd.DataFrame:
    return pd.DataFrame([{"rule": rule["id"], "severity": rule["severity"], "dataset": dataset, "variable": variable,
                          "record": 0, "usubjid": "", "value": "", "message": message, "days_out": np.nan}],
                        columns=FINDING)


def _text(frame, var) -> pd.Series:
    return as_text(frame[var])


def _num(frame, var) -> pd.Series:
    return pd.to_numeric(frame[var], errors="coerce").astype(float)


def adsl_one_record_per_subject(ctx, rule):
    """ADSL has one record per USUBJID (ADAMCR-0054), and exists (ADAMCR-0001)."""
    if ctx.kind != "ADAM":
        return []
    adsl = ctx.datasets.get("ADSL")
    if adsl is None:
        return [_dataset_finding(rule, "ADSL", "", "the ADaM folder has no ADSL")]
    dup = adsl["USUBJID"].duplicated(keep=False) if "USUBJID" in adsl.columns else pd.Series(False, index=adsl.index)
    return [findings(rule, "ADSL", adsl, dup, "USUBJID", "more than one ADSL record for the subject")]


def adam_keys_unique(ctx, rule):
    """No two records share the dataset's keys (define.xml KeySequence, else the spec's keys)."""
    out = []
    for name, frame, _ in _adam(ctx):
        keys = [k for k in ctx.adam_keys.get(name, []) if k in frame.columns]
        if not keys:
            continue
        dup = frame.duplicated(keys, keep=False)
        out.append(findings(rule, name, frame, dup, keys[-1], "another record has the same keys (" +
                            ", ".join(keys) + ")"))
    return out


REQUIRED_BY_CLASS = {"TTE": ("PARAM", "PARAMCD", "AVAL", "CNSR", "STARTDT", "ADT")}


def adam_required(ctx, rule):
    """Variables ADaMIG 1.3 requires for the dataset's class (ADSL: ADAMCR-0047/0049-0052/0055/
    0071/0072; all: 0088/0089; BDS: 0194/0195/0198; TTE: 0373/0374; OCCDS: ADaM OCCDS Req)."""
    out = []
    ig = load_adamig()
    for name, frame, cls in _adam(ctx):
        structure = {"ADSL": "ADSL", "BDS": "BDS", "TTE": "BDS", "OCCDS": "ADAE"}.get(cls)
        if structure is None:
            continue
        required = [v.name.replace("xx", "01") for v in ig.get(structure, {}).values() if v.core.startswith("Req")]
        required += [v for v in REQUIRED_BY_CLASS.get(cls, ()) if v not in required]
        if cls == "OCCDS":  # ADaM OCCDS names the AE variables; another event domain has its own prefix
            prefix = next((c[:2] for c in frame.columns if c.endswith("DECOD")), "AE")
            required = [v.replace("AE", prefix, 1) if v.startswith("AE") else v for v in required]
            required = [v for v in required if v != f"{prefix}SER" or prefix == "AE"]
        if cls in ("BDS", "TTE") and "AVAL" not in frame.columns and "AVALC" not in frame.columns:
            out.append(_dataset_finding(rule, name, "AVAL", "neither AVAL nor AVALC is present"))
        for var in required:
            if var not in frame.columns:
                out.append(_dataset_finding(rule, name, var, f"{var} is required in a {cls} dataset and missing"))
    return out


def adam_flag_values(ctx, rule):
    """Flags hold Y/N/null (ADAMCR-0005); ADSL population flags Y or N, never null (0019-0025);
    record-level flags Y or null (ABLFL 0176, ANLzzFL 0178, TRTEMFL 0269, ONTRTFL 0363, AOCCzzFL 0272 ...)."""
    out = []
    for name, frame, cls in _adam(ctx):
        for col in frame.columns:
            if not col.endswith("FL") or frame[col].dtype.kind in "fiu":
                continue
            text = _text(frame, col)
            if name == "ADSL" and col in POPULATION_FLAGS:
                bad, allowed = ~text.isin(["Y", "N"]), "Y or N (a population flag is never null)"
            elif cls != "ADSL" and RECORD_FLAGS.match(col):
                bad, allowed = ~text.isin(["Y", ""]), "Y or null"
            else:
                bad, allowed = ~text.isin(["Y", "N", ""]), "Y, N or null"
            out.append(findings(rule, name, frame, bad, col, f"{col} must be {allowed}"))
    return out


PERIOD_PAIRS = (("TRTSDT", "TRTEDT"), ("TRTSDTM", "TRTEDTM"), ("ASTDT", "AENDT"), ("ASTDTM", "AENDTM"),
                ("STARTDT", "ENDDT"))


def adam_start_after_end(ctx, rule):
    """A start after its end on the same record: TRTSDT/TRTEDT, TRxxSDT/TRxxEDT, APxxSDT/APxxEDT
    (ADAMCR-0121/0122), ASTDT/AENDT (0361), ASTDTM/AENDTM (0362)."""
    out = []
    for name, frame, _ in _adam(ctx):
        pairs = list(PERIOD_PAIRS)
        pairs += [(c, c[:-3] + "EDT") for c in frame.columns if re.fullmatch(r"(TR|AP)\d\dSDT", c)]
        for start, end in pairs:
            if start in frame.columns and end in frame.columns:
                s, e = _num(frame, start), _num(frame, end)
                out.append(findings(rule, name, frame, s.notna() & e.notna() & (s > e), start,
                                    f"{start} is after {end}"))
    return out


def _dosed(ex: pd.DataFrame) -> pd.DataFrame:
    """EX records of a dose: EXDOSE above 0, or a placebo (admiral's treatment-date condition)."""
    if "EXDOSE" not in ex.columns:
        return ex
    dose = pd.to_numeric(ex["EXDOSE"], errors="coerce")
    placebo = as_text(ex["EXTRT"]).str.upper().str.contains("PLACEBO") if "EXTRT" in ex.columns else False
    return ex[(dose > 0) | ((dose == 0) & placebo)]


def _sas_days(dtc: pd.Series) -> pd.Series:
    """Complete ISO 8601 dates as SAS day numbers (partial dates: missing)."""
    text = as_text(dtc).str.slice(0, 10)
    dates = pd.to_datetime(text.where(text.str.len() == 10), format="%Y-%m-%d", errors="coerce")
    return (dates - pd.Timestamp("1960-01-01")).dt.days.astype(float)


def adsl_treatment_dates_match_ex(ctx, rule):
    """ADSL TRTSDT is the subject's first dose date in SDTM EX and TRTEDT the last dose end date
    (EX records with a dose above 0 or placebo; subjects with no complete EX date are not compared)."""
    adsl, ex = ctx.datasets.get("ADSL"), ctx.domain("EX")
    if ctx.kind != "ADAM" or adsl is None or ex is None or "USUBJID" not in ex.columns:
        return []
    dosed = _dosed(ex)
    out = []
    for var, dtc, how in (("TRTSDT", "EXSTDTC", "min"), ("TRTEDT", "EXENDTC", "max")):
        if var not in adsl.columns or dtc not in dosed.columns:
            continue
        days = _sas_days(dosed[dtc])
        expected = days.groupby(dosed["USUBJID"]).agg(how)
        want = adsl["USUBJID"].map(expected)
        got = _num(adsl, var)
        bad = want.notna() & (got.isna() | (got != want))
        first_or_last = "first dose" if how == "min" else "last dose"
        out.append(findings(rule, "ADSL", adsl, bad, var, lambda rows, w=want, v=var, f=first_or_last, d=dtc:
                            [f"{v} differs from the {f} date in EX ({d}: " +
                             str((pd.Timestamp("1960-01-01") + pd.Timedelta(days=x)).date()) + ")" for x in w.loc[rows]]))
    return out


def adsl_population_flags(ctx, rule):
    """SAFFL = Y exactly for subjects with a first dose (TRTSDT); RANDFL = Y needs RANDDT (ADAMCR-0366)."""
    adsl = ctx.datasets.get("ADSL")
    if ctx.kind != "ADAM" or adsl is None:
        return []
    out = []
    if "SAFFL" in adsl.columns and "TRTSDT" in adsl.columns:
        saf, dosed = _text(adsl, "SAFFL") == "Y", _num(adsl, "TRTSDT").notna()
        out.append(findings(rule, "ADSL", adsl, saf & ~dosed, "SAFFL", "SAFFL = Y but the subject has no TRTSDT"))
        out.append(findings(rule, "ADSL", adsl, ~saf & dosed, "SAFFL", "the subject has a TRTSDT but SAFFL is not Y"))
    if "RANDFL" in adsl.columns:
        rand = _text(adsl, "RANDFL") == "Y"
        if "RANDDT" not in adsl.columns:
            if rand.any():
                out.append(_dataset_finding(rule, "ADSL", "RANDDT", "RANDFL = Y for some subjects but RANDDT is absent"))
        else:
            out.append(findings(rule, "ADSL", adsl, rand & _num(adsl, "RANDDT").isna(), "RANDFL",
                                "RANDFL = Y but RANDDT is missing"))
    return out


def _pairs(frame, family: str) -> list[tuple[str, str, list[str]]]:
    """(variable, its numeric/coded partner, extra by-variables) pairs of a family of rules."""
    cols = set(frame.columns)
    out = []
    if family == "treatment":
        for c in sorted(cols):
            m = re.fullmatch(r"TRT(\d\d)([PA])", c)
            if m and f"{c}N" in cols:
                out.append((c, f"{c}N", []))
            if re.fullmatch(r"TR\d\d[PA]G\d", c) and f"{c}N" in cols:
                out.append((c, f"{c}N", []))
        for c in ("TRTP", "TRTA"):
            if c in cols and f"{c}N" in cols:
                out.append((c, f"{c}N", []))
        for c in sorted(cols):
            if re.fullmatch(r"\w+GR\d", c) and f"{c}N" in cols and not c.startswith("TR"):
                out.append((c, f"{c}N", []))
    elif family == "parameter":
        if {"PARAM", "PARAMCD"} <= cols:
            out.append(("PARAM", "PARAMCD", []))
        if {"PARAM", "PARAMN"} <= cols:
            out.append(("PARAM", "PARAMN", []))
        if {"ASEV", "ASEVN"} <= cols:
            out.append(("ASEV", "ASEVN", []))
        if {"AREL", "ARELN"} <= cols:
            out.append(("AREL", "ARELN", []))
    elif family == "timing" and "PARAMCD" in cols:
        for a, b in (("AVISIT", "AVISITN"), ("ATPT", "ATPTN")):
            if a in cols and b in cols:
                out.append((a, b, ["PARAMCD"]))
        for c in sorted(cols):
            if re.fullmatch(r"AVALCAT\d", c) and f"AVALCA{c[-1]}N" in cols:
                out.append((c, f"AVALCA{c[-1]}N", ["PARAMCD"]))
    return out


def adam_one_to_one(ctx, rule):
    """Pairs that must map one to one (``params: {family: ...}``): treatment (TRTxxP/TRTxxPN
    ADAMCR-0076/0077, TRTxxA/TRTxxAN 0242/0243, TRTP/TRTPN 0092/0093, TRTA/TRTAN 0095/0096,
    groupings 0037/0038), parameter (PARAM/PARAMCD 0141/0142, PARAM/PARAMN 0146/0147, ASEV/ASEVN
    0283/0284, AREL/ARELN 0289/0290), timing within PARAMCD (AVISIT/AVISITN 0109/0110,
    ATPT/ATPTN 0117/0118, AVALCATy/AVALCAyN 0221). Only records with both values count."""
    family = rule.get("params", {}).get("family", "")
    out = []
    for name, frame, _ in _adam(ctx):
        for a, b, by in _pairs(frame, family):
            ta, tb = _text(frame, a), _text(frame, b)
            both = ((ta != "") & (tb != "")).to_numpy()
            # each column factorised once for both directions; not groupby: a code array per key
            codes = {a: column_codes(ta[both]), b: column_codes(tb[both]),
                     **{k: column_codes(_text(frame, k)[both]) for k in by}}
            for x, y in ((a, b), (b, a)):
                group, groups = combine_codes([codes[k] for k in [*by, x]], int(both.sum()))
                bad = pd.Series(False, index=frame.index)
                bad[both] = distinct_per_group(group, groups, codes[y]) > 1
                within = f" within {', '.join(by)}" if by else ""
                out.append(findings(rule, name, frame, bad, y, f"{x} maps to more than one {y}{within}"))
    return out


def adam_copied_from_adsl(ctx, rule):
    """A variable named as an ADSL variable holds ADSL's value for the subject (ADAMCR-0085/0086)."""
    adsl = ctx.datasets.get("ADSL")
    if ctx.kind != "ADAM" or adsl is None or "USUBJID" not in adsl.columns:
        return []
    base = adsl.drop_duplicates("USUBJID").set_index("USUBJID")
    out = []
    for name, frame, cls in _adam(ctx):
        if name == "ADSL" or "USUBJID" not in frame.columns:
            continue
        for col in frame.columns:
            if col in ("STUDYID", "USUBJID") or col not in base.columns:
                continue
            want = frame["USUBJID"].map(base[col])
            known = frame["USUBJID"].isin(base.index)
            if frame[col].dtype.kind in "fiu" or base[col].dtype.kind in "fiu":
                got, exp = _num(frame, col), pd.to_numeric(want, errors="coerce")
                differs = ~((got == exp) | (got.isna() & exp.isna()))
            else:
                differs = _text(frame, col) != as_text(want)
            out.append(findings(rule, name, frame, known & differs, col, f"{col} differs from ADSL.{col} "
                                f"for the subject"))
    return out


def _bds(ctx):
    for name, frame, cls in _adam(ctx):
        if cls in ("BDS", "TTE") and "USUBJID" in frame.columns:
            yield name, frame


def bds_base_constant(ctx, rule):
    """BASE is one value within USUBJID, PARAMCD and BASETYPE, and equals AVAL on the baseline
    record (ADAMCR-0152/0181)."""
    out = []
    for name, frame in _bds(ctx):
        if not {"BASE", "PARAMCD"} <= set(frame.columns):
            continue
        by = ["USUBJID", "PARAMCD", *(["BASETYPE"] if "BASETYPE" in frame.columns else [])]
        base = _num(frame, "BASE")
        present = base.notna().to_numpy()
        group, groups = row_codes([_text(frame, k)[present] for k in by])
        bad = pd.Series(False, index=frame.index)
        bad[present] = distinct_per_group(group, groups, base[present]) > 1
        out.append(findings(rule, name, frame, bad, "BASE", "BASE takes more than one value within " + ", ".join(by)))
        if "ABLFL" in frame.columns and "AVAL" in frame.columns:
            on_base = (_text(frame, "ABLFL") == "Y") & base.notna() & _num(frame, "AVAL").notna()
            out.append(findings(rule, name, frame, on_base & ~np.isclose(base, _num(frame, "AVAL"), rtol=1e-9,
                                                                         atol=1e-9), "BASE",
                                "BASE is not AVAL on the baseline record (ABLFL = Y)"))
    return out


def bds_change(ctx, rule):
    """CHG = AVAL - BASE (ADAMCR-0223) and PCHG = 100 * (AVAL - BASE) / BASE (ADAMCR-0225), where populated."""
    out = []
    for name, frame in _bds(ctx):
        if not {"AVAL", "BASE"} <= set(frame.columns):
            continue
        aval, base = _num(frame, "AVAL"), _num(frame, "BASE")
        if "CHG" in frame.columns:
            chg = _num(frame, "CHG")
            expected = aval - base
            bad = chg.notna() & (expected.isna() | ~np.isclose(chg, expected, rtol=1e-6, atol=1e-6))
            out.append(findings(rule, name, frame, bad, "CHG", "CHG is not AVAL - BASE"))
        if "PCHG" in frame.columns:
            pchg = _num(frame, "PCHG")
            with np.errstate(divide="ignore", invalid="ignore"):
                expected = 100 * (aval - base) / base.where(base != 0)
            bad = pchg.notna() & (expected.isna() | ~np.isclose(pchg, expected, rtol=1e-6, atol=1e-6))
            out.append(findings(rule, name, frame, bad, "PCHG", "PCHG is not 100 * (AVAL - BASE) / BASE"))
    return out


def adam_study_day(ctx, rule):
    """ADY (ASTDY, AENDY) agrees with its date and TRTSDT: date - TRTSDT + 1 on or after the first
    dose, date - TRTSDT before it; never 0 (ADAMCR-0046)."""
    pairs = (("ADY", "ADT"), ("ASTDY", "ASTDT"), ("AENDY", "AENDT"))
    out = []
    for name, frame, _ in _adam(ctx):
        for dy, dt in pairs:
            if dy not in frame.columns:
                continue
            day = _num(frame, dy)
            out.append(findings(rule, name, frame, day == 0, dy, f"{dy} is 0 (there is no study day 0)"))
            if dt in frame.columns and "TRTSDT" in frame.columns:
                delta = _num(frame, dt) - _num(frame, "TRTSDT")
                expected = delta.where(delta < 0, delta + 1)
                bad = day.notna() & expected.notna() & (day != expected) & (day != 0)
                out.append(findings(rule, name, frame, bad, dy, lambda rows, e=expected, v=dy, d=dt:
                                    [f"{v} should be {x:g} ({d} - TRTSDT, + 1 from the first dose)" for x in e.loc[rows]]))
    return out


def _number_text(text: pd.Series) -> pd.Series:
    """The number a text holds (``12``, ``-1.5``, ``2E3``), else missing (``<5``, ``POSITIVE``)."""
    text = text.str.strip()
    return pd.to_numeric(text.where(text.str.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")),
                         errors="coerce").astype(float)


def bds_aval_avalc(ctx, rule):
    """Where AVALC is a number, AVAL is that number (AVAL and AVALC say the same; ADAMCR-0149/0150)."""
    out = []
    for name, frame in _bds(ctx):
        if not {"AVAL", "AVALC"} <= set(frame.columns):
            continue
        as_number = on_unique(_text(frame, "AVALC"), _number_text)  # once per distinct result
        aval = _num(frame, "AVAL")
        bad = as_number.notna() & (aval.isna() | ~np.isclose(aval, as_number, rtol=1e-9, atol=1e-9))
        out.append(findings(rule, name, frame, bad, "AVAL", "AVAL is not the number AVALC holds"))
    return out


def occds_treatment_emergent(ctx, rule):
    """TRTEMFL = Y on an event that starts before the first dose, or later than the last dose
    plus the study's window (the ``trtemfl`` step of the spec when the study is given)."""
    out = []
    for name, frame, cls in _adam(ctx):
        if "TRTEMFL" not in frame.columns or not {"ASTDT", "TRTSDT"} <= set(frame.columns):
            continue
        flag, start, first = _text(frame, "TRTEMFL") == "Y", _num(frame, "ASTDT"), _num(frame, "TRTSDT")
        out.append(findings(rule, name, frame, flag & start.notna() & first.notna() & (start < first), "TRTEMFL",
                            "TRTEMFL = Y but the event starts before the first dose (ASTDT < TRTSDT)"))
        window = ctx.trtemfl_windows.get(name)
        if window is not None and "TRTEDT" in frame.columns:
            last = _num(frame, "TRTEDT") + window
            out.append(findings(rule, name, frame, flag & start.notna() & last.notna() & (start > last), "TRTEMFL",
                                f"TRTEMFL = Y but the event starts more than {window} days after the last dose"))
            out.append(findings(rule, name, frame, ~flag & start.notna() & first.notna() & last.notna() &
                                (start >= first) & (start <= last), "TRTEMFL",
                                f"the event starts on treatment (or within {window} days after) but TRTEMFL is not Y"))
    return out


def adam_subject_in_adsl(ctx, rule):
    """Every USUBJID of an ADaM dataset is in ADSL (ADAMCR-0256)."""
    adsl = ctx.datasets.get("ADSL")
    if ctx.kind != "ADAM" or adsl is None or "USUBJID" not in adsl.columns:
        return []
    known = set(_text(adsl, "USUBJID"))
    return [findings(rule, name, frame, ~_text(frame, "USUBJID").isin(known), "USUBJID", "USUBJID is not in ADSL")
            for name, frame, _ in _adam(ctx) if name != "ADSL" and "USUBJID" in frame.columns]


def tte_censoring(ctx, rule):
    """TTE: CNSR a whole number >= 0 (ADAMCR-0169; ``params: {above_one: true}`` reports codes
    above 1 instead, which ADaM allows for censoring reasons but a study rarely means), AVAL >= 0,
    ADT not before STARTDT, EVNTDESC on events and CNSDTDSC on censored records."""
    part = rule.get("params", {}).get("part", "cnsr")
    out = []
    for name, frame, cls in _adam(ctx):
        if cls != "TTE":
            continue
        cnsr = _num(frame, "CNSR")
        if part == "cnsr":
            out.append(findings(rule, name, frame, cnsr.isna() | (cnsr < 0) | (cnsr % 1 != 0), "CNSR",
                                "CNSR is not 0 (event) or a positive whole number (censored)"))
        elif part == "above_one":
            out.append(findings(rule, name, frame, cnsr > 1, "CNSR",
                                "CNSR above 1: a censoring reason code other than 1 (check it is intended)"))
        elif part == "aval":
            if "AVAL" in frame.columns:
                out.append(findings(rule, name, frame, _num(frame, "AVAL") < 0, "AVAL", "AVAL (time to event) is negative"))
            if {"ADT", "STARTDT"} <= set(frame.columns):
                adt, start = _num(frame, "ADT"), _num(frame, "STARTDT")
                out.append(findings(rule, name, frame, adt.notna() & start.notna() & (adt < start), "ADT",
                                    "ADT is before STARTDT"))
        elif part == "descriptions":
            if "EVNTDESC" in frame.columns:
                out.append(findings(rule, name, frame, (_text(frame, "EVNTDESC") == "") & cnsr.notna(), "EVNTDESC",
                                    "EVNTDESC is empty (say what the event or censoring was)"))
            if "CNSDTDSC" in frame.columns:
                out.append(findings(rule, name, frame, (cnsr > 0) & (_text(frame, "CNSDTDSC") == ""), "CNSDTDSC",
                                    "a censored record has no CNSDTDSC"))
    return out


def adam_date_types(ctx, rule):
    """Variables ending DT, DTM or TM are numeric (ADAMCR-0058/0059/0060)."""
    out = []
    for name, frame, _ in _adam(ctx):
        for col in frame.columns:
            if re.fullmatch(r"\w*(DT|DTM|TM)", col) and not col.endswith(("DTC",)) and frame[col].dtype.kind not in "fiu":
                if col in ("ARELTM",) or (_text(frame, col) == "").all():
                    continue
                if col[:2] in ctx.md.domains and ctx.md.allowed_variable(col[:2], col) is not None:
                    continue  # an SDTM variable carried over (VSELTM is an ISO 8601 duration, text)
                out.append(_dataset_finding(rule, name, col, f"{col} is a date/time variable and must be numeric"))
    return out


def adam_labels(ctx, rule):
    """Labels of ADaMIG variables are the IG's (ADAMCR-0018)."""
    out = []
    for name, frame, _ in _adam(ctx):
        labels = ctx.labels.get(name, {})
        for col in frame.columns:
            meta = adam_variable(col)
            label = labels.get(col, "") or ""
            if meta is not None and label and label.lower() != meta.label.lower():
                out.append(_dataset_finding(rule, name, col, f"label '{label}' differs from ADaMIG's '{meta.label}'"))
    return out


def adam_types(ctx, rule):
    """ADaMIG variables have the IG's type: Num variables numeric, Char variables text."""
    out = []
    for name, frame, _ in _adam(ctx):
        for col in frame.columns:
            meta = adam_variable(col)
            if meta is None or meta.type not in ("Num", "Char") or re.fullmatch(r"\w*(DT|DTM|TM)", col):
                continue  # dates and times are AD0022's
            numeric = frame[col].dtype.kind in "fiub"
            if meta.type == "Num" and not numeric and (_text(frame, col) != "").any():
                out.append(_dataset_finding(rule, name, col, f"{col} is text; ADaMIG defines it as numeric"))
            elif meta.type == "Char" and numeric and frame[col].notna().any():
                out.append(_dataset_finding(rule, name, col, f"{col} is numeric; ADaMIG defines it as text"))
    return out


def _lineage_sources(folder: Path, name: str) -> pd.Series | None:
    path = folder / "lineage" / f"{name.lower()}.csv"
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, usecols=["source"])["source"]
    except ValueError:  # no source column: not a lineage file of ours
        return None


# above this many (subject, value) cells a group is joined record by record instead of through a table
_LINEAGE_TABLE_CELLS = 50_000_000


def _lineage_missing(ctx, frame: pd.DataFrame, codes: np.ndarray, parsed: list[tuple]) -> np.ndarray:
    """Records whose lineage names an SDTM record that does not exist. ``codes``: each record's
    distinct source; ``parsed``: (source, domain, var, value) of each part of each distinct source.

    A computed parameter's source lists dozens of records, so parts outnumber records tenfold: each
    (domain, --SEQ) is checked through a subjects x values table of the SDTM records that exist,
    then each distinct source's records at once, never one row per part."""
    table = pd.DataFrame(parsed, columns=["u", "domain", "var", "value"])
    table["num"] = pd.to_numeric(table["value"], errors="coerce")  # once per distinct value
    table["g"] = table.groupby(["domain", "var"], sort=False).ngroup()
    subject_codes, subjects = pd.factorize(_text(frame, "USUBJID").to_numpy(dtype=object), use_na_sentinel=False)
    order = np.argsort(codes, kind="stable")  # the records of each distinct source, together
    sorted_codes = codes[order]
    missing = np.zeros(len(frame), dtype=bool)

    def records_of(u: int) -> np.ndarray:
        return order[np.searchsorted(sorted_codes, u, "left"):np.searchsorted(sorted_codes, u, "right")]

    for g, part in table.groupby("g", sort=False):
        domain, var = part["domain"].iloc[0], part["var"].iloc[0]
        sdtm = ctx.domain(domain, columns=["USUBJID", var])
        if sdtm is None or var not in sdtm.columns or "USUBJID" not in sdtm.columns:
            for u in part["u"].unique():
                missing[records_of(u)] = True
            continue
        if var == "USUBJID":  # the subject named exists: a fact of the source alone
            ok = part["value"].isin(set(_text(sdtm, "USUBJID")))
            for u in part.loc[~ok.to_numpy(), "u"].unique():
                missing[records_of(u)] = True
            continue
        value_codes, values = pd.factorize(part["num"], use_na_sentinel=False)
        if len(subjects) * len(values) > _LINEAGE_TABLE_CELLS:
            _lineage_missing_by_join(sdtm, var, part, codes, subject_codes, subjects, missing)
            continue
        s_idx = pd.Index(subjects).get_indexer(_text(sdtm, "USUBJID").to_numpy(dtype=object))
        v_idx = pd.Index(values).get_indexer(_num(sdtm, var).to_numpy())
        found = (s_idx >= 0) & (v_idx >= 0)
        exists = np.zeros((len(subjects), len(values)), dtype=bool)  # subject x value: that SDTM record exists
        exists[s_idx[found], v_idx[found]] = True
        for u, wanted in pd.Series(value_codes, index=part["u"].to_numpy()).groupby(level=0, sort=False):
            rows = records_of(u)
            ok = exists[subject_codes[rows][:, None], wanted.to_numpy()[None, :]].all(axis=1)
            missing[rows[~ok]] = True
    return missing


def _lineage_missing_by_join(sdtm, var, part, codes, subject_codes, subjects, missing) -> None:
    """The same check for a group too wide for a table: one row per (record, part), joined."""
    records = pd.DataFrame({"row": np.arange(len(codes)), "u": codes, "s": subject_codes}) \
        .merge(part[["u", "num"]], on="u")
    have = pd.DataFrame({"s": pd.Index(subjects).get_indexer(_text(sdtm, "USUBJID").to_numpy(dtype=object)),
                         "num": _num(sdtm, var).to_numpy()})
    have = have[have["s"] >= 0].drop_duplicates().assign(_hit=True)
    exists = records[["s", "num"]].merge(have, on=["s", "num"], how="left")["_hit"].notna().to_numpy()
    missing[records["row"].to_numpy()[~exists]] = True


def adam_lineage(ctx, rule):
    """Each record's lineage (``lineage/<dataset>.csv`` beside the datasets) names SDTM records that
    exist: ``AE.AESEQ=3`` is the subject's AE record with AESEQ 3, ``DM.USUBJID=x`` a DM subject."""
    if ctx.kind != "ADAM" or ctx.folder is None:
        return []
    out = []
    for name, frame, _ in _adam(ctx):
        sources = _lineage_sources(ctx.folder, name)
        if sources is None or "USUBJID" not in frame.columns:
            continue
        if len(sources) != len(frame):
            out.append(_dataset_finding(rule, name, "", f"lineage/{name.lower()}.csv has {len(sources)} records, "
                                                        f"the dataset {len(frame)}"))
            continue
        # parse each distinct source once ("LB.LBSEQ=5" recurs across subjects), then join back to records
        codes, distinct = pd.factorize(sources, use_na_sentinel=False)
        parsed = []
        for u, src in enumerate(distinct.tolist()):
            for part in str(src).split(" + "):
                head, eq, value = part.partition("=")
                domain, _, var = head.partition(".")
                if eq and not domain.startswith("AD"):  # ADaM sources (ADSL.DTHDT USUBJID=...) stay in ADaM
                    # "AE.AESEQ=3" is a record; "DS.DSSTDTC USUBJID=x" (time to event) a subject's date
                    var, _, by = var.partition(" ")
                    parsed.append((u, domain, by or var, value))
        missing = _lineage_missing(ctx, frame, codes, parsed) if parsed else np.zeros(len(frame), dtype=bool)
        bad = pd.Series(missing, index=frame.index)
        out.append(findings(rule, name, frame, bad, "USUBJID", lambda rows, s=sources: [
            f"lineage names an SDTM record that does not exist: {v}" for v in s.iloc[np.asarray(rows) if
                                                                              isinstance(frame.index, pd.RangeIndex) else
                                                                              frame.index.get_indexer(rows)]]))
    return out


CHECKS = {
    "adsl_one_record_per_subject": adsl_one_record_per_subject, "adam_keys_unique": adam_keys_unique,
    "adam_required": adam_required, "adam_flag_values": adam_flag_values,
    "adam_start_after_end": adam_start_after_end, "adsl_treatment_dates_match_ex": adsl_treatment_dates_match_ex,
    "adsl_population_flags": adsl_population_flags, "adam_one_to_one": adam_one_to_one,
    "adam_copied_from_adsl": adam_copied_from_adsl, "bds_base_constant": bds_base_constant,
    "bds_change": bds_change, "adam_study_day": adam_study_day, "bds_aval_avalc": bds_aval_avalc,
    "occds_treatment_emergent": occds_treatment_emergent, "adam_subject_in_adsl": adam_subject_in_adsl,
    "tte_censoring": tte_censoring, "adam_date_types": adam_date_types, "adam_labels": adam_labels,
    "adam_types": adam_types,
    "adam_lineage": adam_lineage,
}
