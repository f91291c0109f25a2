"""SDTM derivations: small, vectorised, pure functions of Series and DataFrames.

One rule per function, each with an example. The spec engine calls them; tests call them
directly with tiny frames that show the rule.
"""
from __future__ import annotations

import re
from datetime import date
from functools import lru_cache

import numpy as np
import pandas as pd

from ..text import as_text, on_distinct, on_unique

MONTHS = {m: i + 1 for i, m in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])}
_EDC_DATE_TEXT = re.compile(r"^(?P<d>UN|UNK|\d{1,2})[ \-/](?P<m>UNK|UN|[A-Za-z]{3})[ \-/](?P<y>\d{4})$", re.ASCII)
_ISO_DATE_TEXT = re.compile(r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2}))?)?$", re.ASCII)
_TIME_TEXT = re.compile(r"^(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2}))?$", re.ASCII)


def iso8601_date(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """EDC date text to ISO 8601 (see :func:`iso8601_date_text`), computed once per distinct value.

    >>> iso, bad = iso8601_date(pd.Series(["08 JAN 2024", "UN FEB 2024", "UN UNK 2023", "", "31 FEB 2024"]))
    >>> iso.tolist(), bad.tolist()
    (['2024-01-08', '2024-02', '2023', '', ''], [False, False, False, False, True])
    """
    both = on_unique(as_text(text), lambda u: _iso_and_bad([iso8601_date_text(v) for v in u.tolist()]))
    return both["iso"].astype(object), both["bad"].astype(bool)


def _iso_and_bad(pairs: list[tuple[str, bool]]) -> pd.DataFrame:
    return pd.DataFrame({"iso": pd.Series([p[0] for p in pairs], dtype=object),
                         "bad": np.array([p[1] for p in pairs], dtype=bool)})


_UNKNOWN_PART = ("UN", "UNK")


def iso8601_date_text(text: str) -> tuple[str, bool]:
    """One EDC date text (``08 JAN 2024``, ``UN JAN 2024``, ``UN UNK 2024`` or ISO) to ISO 8601,
    and whether it is not empty yet could not be read.

    Unknown parts truncate the date (partial precision), as SDTMIG requires; a day without its
    month means nothing. One value at a time: the callers run it once per distinct value, and a
    date repeats on every record of its page, so plain Python beats pandas' string methods here
    (their fixed cost per call dominates the small studies a data manager re-runs on each edit).

    >>> [iso8601_date_text(t) for t in ("8 feb 2024", "UN UNK 2023", "2024-03", "00 JAN 2024", "08 JNA 2024")]
    [('2024-02-08', False), ('2023', False), ('2024-03', False), ('', True), ('', True)]
    """
    text = text.strip()
    if not text:
        return "", False
    edc = _EDC_DATE_TEXT.match(text.upper())
    if edc is not None:
        year = edc["y"]
        if edc["m"] in _UNKNOWN_PART:
            return year, False
        month = MONTHS.get(edc["m"])
        if month is None:  # not a month name
            return "", True
        day = None if edc["d"] in _UNKNOWN_PART else int(edc["d"])
    else:
        iso = _ISO_DATE_TEXT.match(text)
        if iso is None:
            return "", True
        year = iso["y"]
        if iso["m"] is None:
            return year, False
        month, day = int(iso["m"]), None if iso["d"] is None else int(iso["d"])
    if not 1 <= month <= 12:
        return "", True
    if day is None:
        return f"{year}-{month:02d}", False
    try:
        date(int(year), month, day)
    except ValueError:  # 31 FEB, day 00, year 0000
        return "", True
    return f"{year}-{month:02d}-{day:02d}", False


def iso8601_datetime(date_text: pd.Series, time_text: pd.Series | None = None) -> tuple[pd.Series, pd.Series]:
    """Combine EDC date and time text into ISO 8601 ``YYYY-MM-DDThh:mm`` (see :func:`iso8601_datetime_text`).

    >>> iso, bad = iso8601_datetime(pd.Series(["08 JAN 2024", "UN JAN 2024", "09 JAN 2024"]),
    ...                             pd.Series(["9:05", "10:00", "25:00"]))
    >>> iso.tolist(), bad.tolist()
    (['2024-01-08T09:05', '2024-01', ''], [False, False, True])
    """
    if time_text is None:
        return iso8601_date(date_text)
    pairs = pd.DataFrame({"date": as_text(date_text), "time": as_text(time_text).to_numpy()}, index=date_text.index)
    both = on_distinct(pairs, lambda u: _iso_and_bad([iso8601_datetime_text(d, t) for d, t in
                                                      zip(u["date"].tolist(), u["time"].tolist())]))
    return both["iso"].astype(object), both["bad"].astype(bool)


def iso8601_datetime_text(date_text: str, time_text: str) -> tuple[str, bool]:
    """One EDC date and time to ISO 8601, and whether either could not be read. A time is kept
    only with a complete date (ISO 8601 allows no time on a partial date); seconds as collected.

    >>> iso8601_datetime_text("08 JAN 2024", "9:05:30"), iso8601_datetime_text("2024-01", "10:00")
    (('2024-01-08T09:05:30', False), ('2024-01', False))
    >>> iso8601_datetime_text("08 JAN 2024", "24:10")
    ('', True)
    """
    iso, bad = iso8601_date_text(date_text)
    time_text = time_text.strip()
    if not time_text:
        return iso, bad
    parts = _TIME_TEXT.match(time_text)
    if parts is None or not (0 <= int(parts["H"]) <= 23 and 0 <= int(parts["M"]) <= 59):
        return "", True
    if len(iso) == 10:
        iso += f"T{int(parts['H']):02d}:{parts['M']}" + (f":{parts['S']}" if parts["S"] else "")
    return iso, bad


def dtc_date(dtc: pd.Series) -> pd.Series:
    """The calendar date of complete ISO 8601 values; NaT for partial or empty ones.

    >>> dtc_date(pd.Series(["2024-01-08T09:00", "2024-01", ""])).dt.strftime("%Y-%m-%d").tolist()
    ['2024-01-08', nan, nan]
    """
    return on_unique(dtc, _dtc_date_distinct)  # a date repeats on every record of its visit


_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def _dtc_date_distinct(dtc: pd.Series) -> pd.Series:
    """One value at a time in plain Python (pandas' to_datetime costs a millisecond a call, and the
    run calls this for every date variable of every domain), each day text read once a process."""
    days = [_epoch_day(value[:10]) if isinstance(value, str) else _NO_DAY for value in dtc.tolist()]
    return pd.Series(_as_dates(days), index=dtc.index)


_NO_DAY = np.iinfo(np.int64).min  # NaT as a day number
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@lru_cache(maxsize=1 << 16)
def _epoch_day(day: str) -> int:
    """``YYYY-MM-DD`` as days since 1970-01-01; ``_NO_DAY`` for anything else (2024-02-30, month 13)."""
    try:
        return date(int(day[:4]), int(day[5:7]), int(day[8:10])).toordinal() - _EPOCH_ORDINAL \
            if _ISO_DAY.fullmatch(day) else _NO_DAY
    except ValueError:  # 2024-02-30, month 13, year 0000
        return _NO_DAY


def _as_dates(days: list[int]) -> np.ndarray:
    return np.array(days, dtype=np.int64).view("datetime64[D]").astype("datetime64[us]")


def study_day(dtc: pd.Series, reference_dtc: pd.Series) -> pd.Series:
    """--DY: days from the reference start date, counting the reference day as day 1.

    There is no day 0: the day before the reference date is day -1. Partial dates give no day.

    >>> study_day(pd.Series(["2024-01-07", "2024-01-08", "2024-01-09T10:00", "2024-01"]),
    ...           pd.Series(["2024-01-08T09:00"] * 4)).tolist()
    [-1.0, 1.0, 2.0, nan]
    """
    delta = (dtc_date(dtc) - dtc_date(reference_dtc)).dt.days
    return delta.where(delta < 0, delta + 1).astype(float)


def age_in_years(birth_dtc: pd.Series, at_dtc: pd.Series) -> pd.Series:
    """Completed years between birth and a reference date; a birth year alone gives the age
    the subject reaches in that year minus one when month is unknown (conservative floor).

    >>> age_in_years(pd.Series(["1960-05-20", "1960-05", "1960"]), pd.Series(["2024-05-19"] * 3)).tolist()
    [63.0, 64.0, 63.0]
    """
    birth = birth_dtc.fillna("").astype(str)
    at = dtc_date(at_dtc)
    by = pd.to_numeric(birth.str.slice(0, 4), errors="coerce")
    bm = pd.to_numeric(birth.str.slice(5, 7), errors="coerce")
    bd = pd.to_numeric(birth.str.slice(8, 10), errors="coerce")
    years = at.dt.year - by
    # Before the birthday this year: one year less. Unknown day counts as the 1st, unknown
    # month as December 31st, so the age is never overstated.
    month_cmp = bm.fillna(12)
    day_cmp = bd.fillna(pd.Series(np.where(bm.isna(), 31, 1), index=bd.index))
    before = (at.dt.month < month_cmp) | ((at.dt.month == month_cmp) & (at.dt.day < day_cmp))
    return (years - before.astype(int)).where(by.notna() & at.notna()).astype(float)


def parse_result(orres: pd.Series) -> pd.DataFrame:
    """Qualifier and number of each result (see :func:`_parse_result_distinct`), once per distinct value.

    >>> parse_result(pd.Series(["<20", "<20"]))["limit"].tolist()
    [20.0, 20.0]
    """
    return on_unique(as_text(orres), _parse_result_distinct)


def _parse_result_distinct(orres: pd.Series) -> pd.DataFrame:
    """Split original results into a qualifier (``<``, ``>``, ``<=``, ``>=``) and a number.

    ``<20`` keeps its text in --STRESC and gets no --STRESN (a censored value is not a number).

    >>> parse_result(pd.Series(["12.5", "<20", "> 1000", "Negative", ""])).to_dict("list")
    {'qualifier': ['', '<', '>', '', ''], 'number': [12.5, nan, nan, nan, nan], 'limit': [nan, 20.0, 1000.0, nan, nan]}
    """
    text = orres.fillna("").astype(str).str.strip()
    parts = text.str.extract(r"^(?P<q><=|>=|<|>)?\s*(?P<n>[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)$")
    qualifier = parts["q"].fillna("")
    value = pd.to_numeric(parts["n"], errors="coerce").astype(float)
    return pd.DataFrame({"qualifier": qualifier.where(value.notna(), ""),
                         "number": value.where(qualifier == ""),
                         "limit": value.where(qualifier != "")}, index=orres.index)


def format_number(values: pd.Series) -> pd.Series:
    """Numbers as text for --STRESC: no float noise, no trailing zeros.

    >>> format_number(pd.Series([841.32, 3.0, 0.1 + 0.2, np.nan])).tolist()
    ['841.32', '3', '0.3', '']
    """
    return as_text(pd.Series(values, dtype=float))


def standard_results(orres: pd.Series, orresu: pd.Series, testcd: pd.Series, stdunit: pd.Series,
                     factors: dict[tuple[str, str, str], float]) -> pd.DataFrame:
    """--STRESC/--STRESN/--STRESU from original results, converting units by declared factors.

    ``factors`` maps ``(testcd, from unit, to unit)`` to a multiplier or to a function of the
    values (a formula with its rounding, see :func:`unit_converter`). A result already in the
    standard unit is kept; one in another unit with no declared factor is flagged in
    ``unconverted`` (the engine reports it, never guesses).

    >>> out = standard_results(pd.Series(["2.1", "<20", "Negative"]), pd.Series(["mg/dL", "IU/mL", ""]),
    ...                        pd.Series(["BILI", "HBVDNA", "HIVAB"]), pd.Series(["umol/L", "IU/mL", ""]),
    ...                        {("BILI", "mg/dL", "umol/L"): 17.1})
    >>> out[["STRESC", "STRESN", "STRESU"]].values.tolist()
    [['35.91', 35.91, 'umol/L'], ['<20', nan, 'IU/mL'], ['NEGATIVE', nan, '']]
    """
    parsed = parse_result(orres)
    unit = orresu.fillna("").astype(str)
    std = stdunit.fillna("").astype(str)
    std = std.where(std != "", unit)
    # one factor per distinct (test, unit, standard unit), broadcast to the records
    triples = pd.DataFrame({"t": testcd.astype(str).to_numpy(dtype=object), "u": unit.to_numpy(dtype=object),
                            "s": std.to_numpy(dtype=object)}).groupby(["t", "u", "s"], sort=False, dropna=False)
    codes, keys = triples.ngroup().to_numpy(), list(triples.size().index)  # in order of first appearance
    per_key = np.array([1.0 if u == s else (factors.get((t, u, s), np.nan) if not callable(factors.get((t, u, s)))
                                            else np.nan) for t, u, s in keys], dtype=float)
    factor = pd.Series(per_key[codes], index=orres.index, dtype=float)
    converted_number = parsed["number"] * factor
    converted_limit = parsed["limit"] * factor
    for k, key in enumerate(keys):  # formula conversions
        if not callable(factors.get(key)) or key[1] == key[2]:
            continue
        rows = codes == k
        convert = factors[key]
        converted_number[rows] = convert(parsed["number"][rows])
        converted_limit[rows] = convert(parsed["limit"][rows])
        factor[rows] = 0.0  # marks the rows converted (by formula)
    numeric = parsed["number"].notna() | parsed["limit"].notna()
    unconverted = numeric & factor.isna()
    stresn = converted_number.round(6)
    limit = converted_limit.round(6)
    text = orres.fillna("").astype(str).str.strip()
    stresc = format_number(stresn)
    censored = parsed["qualifier"] != ""
    stresc = stresc.where(~censored, parsed["qualifier"] + format_number(limit))
    stresc = stresc.where(numeric, text.str.upper())
    stresc = stresc.where(~unconverted, "")
    stresu = std.where(numeric & ~unconverted, "")
    return pd.DataFrame({"STRESC": stresc, "STRESN": stresn, "STRESU": stresu, "factor": factor,
                         "unconverted": unconverted}, index=orres.index)


def unit_converter(factor: float | None = None, formula: str | None = None, decimals: int | None = None,
                   significant: int | None = None):
    """A unit conversion as a function of the values: ``x * factor`` or a formula in ``x``, rounded
    to ``decimals`` (half away from zero) or ``significant`` digits; a bare factor stays a number.

    >>> f = unit_converter(formula="(x - 32) * 5 / 9", decimals=1)
    >>> f(pd.Series([98.6, 100.4, np.nan])).tolist()
    [37.0, 38.0, nan]
    >>> unit_converter(factor=17.1)
    17.1
    """
    from ..expr import parse, evaluate, round_half_up, round_significant

    if formula is None and decimals is None and significant is None:
        return factor
    expr = parse(formula) if formula is not None else None

    def convert(values: pd.Series) -> pd.Series:
        out = evaluate(expr, {"x": values}) if expr is not None else values.astype(float) * factor
        if decimals is not None:
            out = round_half_up(out, decimals)
        elif significant is not None:
            out = round_significant(out, significant)
        return out
    return convert


def reference_range_indicator(stresn: pd.Series, low: pd.Series, high: pd.Series,
                              stresc: pd.Series | None = None) -> pd.Series:
    """--NRIND: LOW below the lower limit, HIGH above the upper, NORMAL in between.

    A censored result (``<20``) is LOW when its limit is at or below the lower limit of normal.

    >>> reference_range_indicator(pd.Series([5.0, 50.0, 500.0, np.nan, np.nan]), pd.Series([10.0] * 5),
    ...                           pd.Series([100.0] * 5), pd.Series(["5", "50", "500", "<8", ""])).tolist()
    ['LOW', 'NORMAL', 'HIGH', 'LOW', '']
    """
    value = stresn.copy()
    if stresc is not None:
        censored = parse_result(stresc)
        below = censored["qualifier"].str.startswith("<") & (censored["limit"] <= low)
        above = censored["qualifier"].str.startswith(">") & (censored["limit"] >= high)
        value = value.where(~below, -np.inf).where(~above, np.inf)
    out = pd.Series("", index=stresn.index, dtype=object)
    known = value.notna() & (low.notna() | high.notna())
    out[known] = "NORMAL"
    out[known & low.notna() & (value < low)] = "LOW"
    out[known & high.notna() & (value > high)] = "HIGH"
    return out


def baseline_flag(frame: pd.DataFrame, by: list[str], dtc: str, reference_dtc: str, result: str) -> pd.Series:
    """--LOBXFL: ``Y`` on the last record with a result on or before first exposure, per ``by``.

    Comparison uses date and time when both have a time, else the date (a same-day record
    without time counts as before dosing). Subjects with no pre-dose value get no flag.

    >>> f = pd.DataFrame({"USUBJID": ["1", "1", "1", "2"], "LBTESTCD": ["ALT"] * 4,
    ...                   "LBDTC": ["2024-01-01", "2024-01-05T08:00", "2024-01-05T11:00", "2024-02-02"],
    ...                   "RFXSTDTC": ["2024-01-05T10:00"] * 3 + ["2024-02-01"], "LBORRES": ["30", "31", "32", "33"]})
    >>> baseline_flag(f, ["USUBJID", "LBTESTCD"], "LBDTC", "RFXSTDTC", "LBORRES").tolist()
    ['', 'Y', '', '']
    """
    when = frame[dtc].fillna("").astype(str)
    ref = frame[reference_dtc].fillna("").astype(str)
    both_timed = (when.str.len() > 10) & (ref.str.len() > 10)
    before_time = both_timed & (pd.to_datetime(when.where(both_timed), errors="coerce")
                                <= pd.to_datetime(ref.where(both_timed), errors="coerce"))
    before_date = ~both_timed & (dtc_date(when) <= dtc_date(ref))
    eligible = (before_time | before_date) & (frame[result].fillna("").astype(str) != "")
    flags = pd.Series("", index=frame.index, dtype=object)
    if not eligible.any():
        return flags
    candidates = frame.loc[eligible, by].assign(_when=when[eligible]).sort_values([*by, "_when"], kind="stable")
    last = candidates.groupby(by, sort=False, dropna=False).tail(1).index
    flags[last] = "Y"
    return flags


def _not_before(dtc: pd.Series, reference_dtc: pd.Series) -> pd.Series:
    """Whether a date (complete or partial) may be on or after the reference date, compared at the
    date's own precision: ``2014-01`` against ``2014-01-20`` cannot be ruled out, so it counts."""
    when = dtc.fillna("").astype(str).str.slice(0, 10)
    ref = reference_dtc.fillna("").astype(str).str.slice(0, 10)
    width = when.str.len()
    out = pd.Series(False, index=dtc.index)
    for n in (4, 7, 10):
        at = width == n
        out[at] = when[at] >= ref[at].str.slice(0, n)
    return out


def treatment_emergent(start_dtc: pd.Series, end_dtc: pd.Series | None, first_dose_dtc: pd.Series,
                       last_dose_dtc: pd.Series, window: int | None = None) -> pd.Series:
    """Treatment-emergent flag (``AETRTEM`` in SUPPAE, admiral's ``derive_var_trtemfl`` rule):
    ``Y`` when the event starts on or after the first dose and, with a ``window``, no later than
    that many days after the last dose; ``N`` otherwise; empty for a subject never dosed.

    A partial start date counts as emergent when it cannot be ruled out (same month or year as
    the first dose). A missing start date counts as emergent unless the event ended before the
    first dose.

    >>> treatment_emergent(pd.Series(["2024-01-04", "2024-01-05", "2024-01", "", "", "2024-03-01", "2024-01-09"]),
    ...                    pd.Series(["", "", "", "", "2024-01-02", "", ""]),
    ...                    pd.Series(["2024-01-05T10:00"] * 6 + [""]), pd.Series(["2024-02-01"] * 7), window=28).tolist()
    ['N', 'Y', 'Y', 'Y', 'N', 'N', '']
    """
    start = start_dtc.fillna("").astype(str)
    end = end_dtc.fillna("").astype(str) if end_dtc is not None else pd.Series("", index=start.index)
    first = first_dose_dtc.fillna("").astype(str)
    emergent = _not_before(start, first)
    no_start = start.str.len() < 4
    emergent[no_start] = (end[no_start] == "") | _not_before(end[no_start], first[no_start])
    if window is not None:
        limit = dtc_date(last_dose_dtc) + pd.to_timedelta(window, unit="D")
        limit_text = limit.dt.strftime("%Y-%m-%d").fillna("")
        too_late = ~no_start & (limit_text != "") & ~_not_before(limit_text, start)
        emergent &= ~too_late
    out = pd.Series(np.where(emergent, "Y", "N"), index=start.index, dtype=object)
    return out.where(first != "", "")


def last_contact(usubjid: pd.Series, domains: list[pd.DataFrame]) -> pd.Series:
    """The subject's latest date in any domain (every --DTC, --STDTC, --ENDTC): RFPENDTC, the end
    of participation, can then never be earlier than a record of the subject.

    >>> lb = pd.DataFrame({"USUBJID": ["1", "1", "2"], "LBDTC": ["2024-01-05", "2024-03-19T10:00", "2024-02"]})
    >>> ds = pd.DataFrame({"USUBJID": ["1", "2"], "DSSTDTC": ["2024-03-06", "2024-02-10"]})
    >>> last_contact(pd.Series(["1", "2", "3"]), [lb, ds]).tolist()
    ['2024-03-19T10:00', '2024-02-10', '']
    """
    parts = []
    for frame in domains:
        if "USUBJID" not in frame.columns:
            continue
        for col in [c for c in frame.columns if c.endswith("DTC") and not c.startswith(("RF", "__"))
                    and c not in ("DTHDTC", "BRTHDTC")]:
            values = frame[["USUBJID", col]].rename(columns={col: "dtc"})
            parts.append(values[values["dtc"].fillna("").astype(str) != ""])
    if not parts:
        return pd.Series("", index=usubjid.index, dtype=object)
    every = pd.concat(parts, ignore_index=True)
    every["dtc"] = every["dtc"].astype(str)
    latest = every.groupby("USUBJID")["dtc"].max()
    return usubjid.map(latest).fillna("").astype(object)


def has_records(usubjid: pd.Series, subjects_with_records) -> pd.Series:
    """``Y`` when the subject has at least one record in another domain (after any condition), else ``N``
    (e.g. the pilot's SAFETY flag: any exposure record).

    >>> has_records(pd.Series(["1", "2"]), {"1"}).tolist()
    ['Y', 'N']
    """
    return pd.Series(np.where(usubjid.isin(set(subjects_with_records)), "Y", "N"), index=usubjid.index, dtype=object)


def sequence_number(frame: pd.DataFrame, by: str = "USUBJID") -> pd.Series:
    """--SEQ: 1, 2, 3 ... per subject in the frame's (already sorted) order.

    >>> sequence_number(pd.DataFrame({"USUBJID": ["a", "a", "b"]})).tolist()
    [1.0, 2.0, 1.0]
    """
    return (frame.groupby(by, sort=False).cumcount() + 1).astype(float)


def date_span(dtc: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The first and last calendar day an ISO 8601 value may stand for: a complete date is one day,
    ``2024-05`` runs from 1 to 31 May, ``2024`` the whole year.

    >>> lo, hi = date_span(pd.Series(["2024-02-10T08:00", "2024-02", "2024", ""]))
    >>> lo.dt.strftime("%m-%d").tolist(), hi.dt.strftime("%m-%d").tolist()
    (['02-10', '02-01', '01-01', nan], ['02-10', '02-29', '12-31', nan])
    """
    both = on_unique(dtc, _date_span_distinct)  # a date repeats on every record of its visit
    return both["lo"], both["hi"]


_ISO_MONTH, _ISO_YEAR = re.compile(r"\d{4}-\d{2}", re.ASCII), re.compile(r"\d{4}", re.ASCII)


def _date_span_distinct(dtc: pd.Series) -> pd.DataFrame:
    """One value at a time in plain Python, as :func:`_dtc_date_distinct` (pandas' to_datetime and
    its offsets cost a millisecond a call; a run spans the dates of every EPOCH derivation)."""
    spans = [_day_span(value) if isinstance(value, str) else (_NO_DAY, _NO_DAY) for value in dtc.tolist()]
    return pd.DataFrame({"lo": _as_dates([s[0] for s in spans]), "hi": _as_dates([s[1] for s in spans])},
                        index=dtc.index)


@lru_cache(maxsize=1 << 16)
def _day_span(text: str) -> tuple[int, int]:
    """The first and last day (days since 1970-01-01) an ISO 8601 value may stand for."""
    if len(text) >= 10:
        day = _epoch_day(text[:10])
        return day, day
    try:
        if len(text) == 7 and _ISO_MONTH.fullmatch(text):
            year, month = int(text[:4]), int(text[5:])
            following = date(year + month // 12, month % 12 + 1, 1) if 1 <= month <= 12 else None
            if following is not None:
                return date(year, month, 1).toordinal() - _EPOCH_ORDINAL, following.toordinal() - 1 - _EPOCH_ORDINAL
        elif len(text) == 4 and _ISO_YEAR.fullmatch(text):
            return date(int(text), 1, 1).toordinal() - _EPOCH_ORDINAL, date(int(text), 12, 31).toordinal() - _EPOCH_ORDINAL
    except ValueError:  # year 0000
        pass
    return _NO_DAY, _NO_DAY


def epoch_of(frame: pd.DataFrame, dtc: str, elements: pd.DataFrame) -> pd.Series:
    """EPOCH: the epoch of the subject element (SE) whose span holds the record's date.

    An element runs from its start date up to its end date; on a shared day the later element
    wins (the first infusion day belongs to TREATMENT). A partial date gets the epoch when its
    whole span (the month, the year) lies in one epoch, else none.

    >>> se = pd.DataFrame({"USUBJID": ["1", "1"], "EPOCH": ["SCREENING", "TREATMENT"],
    ...                    "SESTDTC": ["2024-01-01", "2024-01-10"], "SEENDTC": ["2024-01-10", "2024-03-01"]})
    >>> f = pd.DataFrame({"USUBJID": ["1"] * 5, "AESTDTC": ["2024-01-09", "2024-01-10", "2024-01", "2024-02", "2025-01-01"]})
    >>> epoch_of(f, "AESTDTC", se).tolist()
    ['SCREENING', 'TREATMENT', '', 'TREATMENT', 'TREATMENT']
    """
    if elements.empty:
        return pd.Series("", index=frame.index, dtype=object)
    spans = _ElementSpans(elements)
    return on_distinct(frame[["USUBJID", dtc]], lambda d: _epoch_of_distinct(d, dtc, spans)).astype(object)


class _ElementSpans:
    """A study's subject elements as numpy arrays, each subject's elements together and in start
    order (equal starts in SE's order), so a date's element is found without a pandas merge."""

    def __init__(self, elements: pd.DataFrame):
        start = dtc_date(elements["SESTDTC"]).to_numpy(dtype="datetime64[us]")
        end = dtc_date(elements["SEENDTC"]).to_numpy(dtype="datetime64[us]")
        codes, self.subjects = pd.factorize(elements["USUBJID"].to_numpy(dtype=object), sort=False)
        order = np.lexsort((np.arange(len(codes)), start, codes))  # NaT starts last: they hold no date
        order = order[codes[order] >= 0]  # an element without a subject holds no one's dates
        codes, start, end = codes[order], start[order], end[order]
        self.epoch = elements["EPOCH"].to_numpy(dtype=object)[order]
        self.start, self.end, self.open = start, end, np.isnat(end)
        self.count = np.bincount(codes, minlength=len(self.subjects))
        self.offset = np.concatenate([[0], np.cumsum(self.count)[:-1]])
        # the subject's last-starting element runs on past its end date
        latest = np.full(len(self.subjects), np.datetime64("NaT"), dtype="datetime64[us]")
        valid = ~np.isnat(start)
        np.maximum.at(latest.view("i8"), codes[valid], start[valid].view("i8"))
        self.last = valid & (start == latest[codes])

    def epoch_at(self, usubjid: pd.Series, when: np.ndarray) -> np.ndarray:
        """The epoch of each (subject, day) pair; "" where no element holds the day."""
        out = np.full(len(usubjid), "", dtype=object)
        if not len(self.subjects):
            return out
        subject = pd.Index(self.subjects).get_indexer(usubjid.to_numpy(dtype=object))
        n = np.where(subject >= 0, self.count[np.clip(subject, 0, None)], 0)
        pair = np.repeat(np.arange(len(usubjid)), n)  # one row per (date, element of its subject)
        if not len(pair):
            return out
        first_of_pair = np.concatenate([[0], np.cumsum(n)[:-1]])
        element = self.offset[subject[pair]] + np.arange(len(pair)) - first_of_pair[pair]
        day = when[pair]
        inside = (day >= self.start[element]) & ((day <= self.end[element]) | self.open[element] | self.last[element])
        pair, element = pair[inside], element[inside]
        latest = np.flatnonzero(np.append(pair[1:] != pair[:-1], True)) if len(pair) else pair
        out[pair[latest]] = self.epoch[element[latest]]
        return out


def _epoch_of_distinct(frame: pd.DataFrame, dtc: str, spans: _ElementSpans) -> pd.Series:
    lo, hi = date_span(frame[dtc])
    first = spans.epoch_at(frame["USUBJID"], lo.to_numpy(dtype="datetime64[us]"))
    last = spans.epoch_at(frame["USUBJID"], hi.to_numpy(dtype="datetime64[us]"))
    return pd.Series(np.where((first == last) & (first != ""), first, ""), index=frame.index, dtype=object)


def visit_of(folder: pd.Series, day: pd.Series, visits: pd.DataFrame, unscheduled=None) -> pd.DataFrame:
    """VISITNUM/VISIT from the EDC folder (or visit column), matched to the planned visits by
    name or alias, case ignored. Unscheduled visits: with a pattern (``unscheduled``: a regular
    expression whose first group is the VISITNUM, and a VISIT template), as the EDC numbers them;
    else folders starting ``UNS`` are placed after the last scheduled visit planned on or before
    their study day (VISITNUM + 0.01, VISIT ``UNSCHEDULED x.01``).

    >>> v = pd.DataFrame({"folder": ["D1", "D7"], "visitnum": [3.0, 6.0], "visit": ["DAY 1", "DAY 7"], "day": [1, 7]})
    >>> visit_of(pd.Series(["D7", "UNS1", "LOG"]), pd.Series([7.0, 12.0, 3.0]), v).values.tolist()
    [[6.0, 'DAY 7'], [6.01, 'UNSCHEDULED 6.01'], [nan, '']]
    >>> from types import SimpleNamespace as NS
    >>> visit_of(pd.Series(["d7", "Unscheduled 3.1"]), pd.Series([7.0, 12.0]), v,
    ...          NS(pattern=r"(?i)^unscheduled (\\d+\\.\\d+)$", visit="UNSCHEDULED {visitnum}")).values.tolist()
    [[6.0, 'DAY 7'], [3.1, 'UNSCHEDULED 3.1']]
    """
    names = {}
    for row in visits.itertuples(index=False):
        for alias in [row.folder, *(getattr(row, "aliases", None) or [])]:
            names[str(alias).strip().upper()] = (float(row.visitnum), row.visit)
    key = on_unique(folder, lambda u: u.fillna("").astype(str).str.strip().str.upper())  # once per folder name
    visitnum = key.map({k: v[0] for k, v in names.items()}).astype(float)
    visit = key.map({k: v[1] for k, v in names.items()}).fillna("").astype(object)
    if unscheduled is not None:
        number = on_unique(folder, lambda u: pd.to_numeric(u.fillna("").astype(str).str.strip()
                                                           .str.extract(unscheduled.pattern)[0], errors="coerce"))
        hit = visitnum.isna() & number.notna()
        visitnum[hit] = number[hit]
        visit[hit] = [unscheduled.visit.format(visitnum=as_text(pd.Series([n])).iloc[0]) for n in number[hit]]
        return pd.DataFrame({"VISITNUM": visitnum, "VISIT": visit}, index=folder.index)
    unscheduled_rows = key.str.startswith("UNS") & day.notna() & visitnum.isna()
    if unscheduled_rows.any():
        planned = visits.sort_values("day")
        pos = np.searchsorted(planned["day"].to_numpy(), day[unscheduled_rows].to_numpy(), side="right") - 1
        base = planned["visitnum"].to_numpy()[np.clip(pos, 0, None)]
        n = np.round(base + 0.01, 2)
        visitnum[unscheduled_rows] = n
        visit[unscheduled_rows] = [f"UNSCHEDULED {x:.2f}" for x in n]
    return pd.DataFrame({"VISITNUM": visitnum, "VISIT": visit}, index=folder.index)


def end_relative_to_reference(endtc: pd.Series, ongoing: pd.Series, reference_end: pd.Series) -> pd.Series:
    """--ENRF: ONGOING when the event had not ended by the end of the reference period.

    >>> end_relative_to_reference(pd.Series(["", "2024-01-02"]), pd.Series(["Y", "N"]), pd.Series(["2024-05-01"] * 2)).tolist()
    ['ONGOING', '']
    """
    open_ended = (endtc.fillna("") == "") & (ongoing.fillna("").astype(str).str.upper().isin(["Y", "YES"]))
    return pd.Series(np.where(open_ended & (reference_end.fillna("") != ""), "ONGOING", ""), index=endtc.index,
                     dtype=object)


DATE_TOKENS = {"YYYY": r"(?P<y>\d{4})", "YY": r"(?P<yy>\d{2})", "MON": r"(?P<mon>[A-Za-z]{3}|UNK|UN)",
               "MM": r"(?P<m>\d{1,2}|UNK|UN)", "DD": r"(?P<d>\d{1,2}|UNK|UN)"}


def date_format_regex(fmt: str) -> str:
    """A date format (``MM/DD/YYYY``, ``DD-MON-YY``, ``YYYY`` ...) as an anchored regular expression;
    any other character is a literal separator.

    >>> date_format_regex("DD-MON-YYYY")
    '^(?P<d>\\\\d{1,2}|UNK|UN)\\\\-(?P<mon>[A-Za-z]{3}|UNK|UN)\\\\-(?P<y>\\\\d{4})$'
    """
    import re

    out, i = "", 0
    while i < len(fmt):
        for token in ("YYYY", "MON", "YY", "MM", "DD"):
            if fmt.startswith(token, i):
                out += DATE_TOKENS[token]
                i += len(token)
                break
        else:
            out += re.escape(fmt[i])
            i += 1
    return f"^{out}$"


def parse_dates(text: pd.Series, formats: list[str], year_pivot: int | None = None) -> tuple[pd.Series, pd.Series]:
    """EDC date text in the stated formats (tried in order) to ISO 8601; unknown parts (UN, UNK,
    or a format without them) keep the date partial; two-digit years fall in the hundred years
    starting at ``year_pivot``. Returns ISO text and a mask of values no format could read.

    >>> iso, bad = parse_dates(pd.Series(["12/26/2013", "2014", "07-Jan-14", "03/UN/2013", "13/45/2013"]),
    ...                        ["MM/DD/YYYY", "YYYY", "DD-MON-YY"], year_pivot=1950)
    >>> iso.tolist(), bad.tolist()
    (['2013-12-26', '2014', '2014-01-07', '2013-03', ''], [False, False, False, False, True])
    """
    both = on_unique(as_text(text), lambda u: pd.DataFrame(dict(zip(("iso", "bad"),
                                                                   _parse_dates_distinct(u, formats, year_pivot)))))
    return both["iso"].astype(object), both["bad"].astype(bool)


def _parse_dates_distinct(text: pd.Series, formats: list[str], year_pivot: int | None) -> tuple[pd.Series, pd.Series]:
    text = text.fillna("").astype(str).str.strip()
    iso = pd.Series("", index=text.index, dtype=object)
    done = text == ""
    bad = pd.Series(False, index=text.index)
    for fmt in formats:
        if done.all():
            break
        parts = text[~done].str.extract(date_format_regex(fmt.upper()), flags=2)  # 2: re.IGNORECASE
        hit = parts.notna().any(axis=1) & parts.get("y", parts.get("yy", pd.Series(dtype=object))).notna()
        if not hit.any():
            continue
        p = parts[hit]
        if "y" in p.columns:
            year = pd.to_numeric(p["y"], errors="coerce")
        else:
            yy = pd.to_numeric(p["yy"], errors="coerce")
            pivot = year_pivot if year_pivot is not None else 1950
            year = pivot // 100 * 100 + yy
            year = year.where(year >= pivot, year + 100)
        if "mon" in p.columns:
            month = p["mon"].str.upper().map(MONTHS).astype(float)
            unknown_m = p["mon"].str.upper().isin(["UN", "UNK"])
        elif "m" in p.columns:
            unknown_m = p["m"].str.upper().isin(["UN", "UNK"])
            month = pd.to_numeric(p["m"].where(~unknown_m), errors="coerce")
        else:
            unknown_m, month = pd.Series(True, index=p.index), pd.Series(np.nan, index=p.index)
        if "d" in p.columns:
            unknown_d = p["d"].str.upper().isin(["UN", "UNK"])
            day = pd.to_numeric(p["d"].where(~unknown_d), errors="coerce")
        else:
            day = pd.Series(np.nan, index=p.index)
        day = day.where(month.notna())
        wrong = (month.notna() & ~month.between(1, 12)) | (~unknown_m & month.isna() & ("mon" in p.columns))
        full = pd.to_datetime(pd.DataFrame({"year": year, "month": month, "day": day}).where(day.notna()),
                              errors="coerce")
        wrong |= day.notna() & full.isna()
        out = year.astype(int).astype(str)
        ym = month.notna() & ~wrong
        out = out.where(~ym, out + "-" + month.fillna(1).astype(int).map("{:02d}".format))
        out = out.where(~(day.notna() & full.notna()), full.dt.strftime("%Y-%m-%d"))
        iso[p.index] = out.where(~wrong, "")
        bad[p.index] = wrong
        done[p.index] = True
    bad |= ~done
    return iso, bad
