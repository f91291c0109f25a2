"""ADaM derivation library, in the style of pharmaverse admiral: one vectorised function per
derivation, each a pure function of DataFrames that returns a new frame.

Dates are pandas datetime64 values inside the library; the writer turns them into SAS dates
(days since 1960-01-01) with a DATE9. format.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from ..sdtm.derive import dtc_date
from ..text import joined_by_group, on_distinct, on_unique

SRC = "__src"  # lineage: the SDTM records each ADaM record comes from


def derive_vars_merged(dataset: pd.DataFrame, dataset_add: pd.DataFrame, by_vars: list[str],
                       new_vars: dict[str, str] | list[str], filter_add: pd.Series | None = None,
                       order: list[str] | None = None, mode: str = "last") -> pd.DataFrame:
    """Add variables from ``dataset_add`` by ``by_vars``; with ``order``, the first or last
    record per group is taken, else the groups must be unique.

    ``new_vars`` maps new names to source names (or lists names kept as they are).

    >>> adsl = pd.DataFrame({"USUBJID": ["1", "2"]})
    >>> ex = pd.DataFrame({"USUBJID": ["1", "1"], "EXSTDTC": ["2024-01-02", "2024-01-30"]})
    >>> derive_vars_merged(adsl, ex, ["USUBJID"], {"LASTDOSE": "EXSTDTC"}, order=["EXSTDTC"]).values.tolist()
    [['1', '2024-01-30'], ['2', nan]]
    """
    mapping = dict(new_vars) if isinstance(new_vars, dict) else {v: v for v in new_vars}
    add = dataset_add if filter_add is None else dataset_add[filter_add]
    if order:
        add = add.sort_values(order, kind="stable")
        add = add.groupby(by_vars, sort=False).tail(1) if mode == "last" else add.groupby(by_vars, sort=False).head(1)
    elif add.duplicated(by_vars).any():
        raise ValueError(f"dataset_add is not unique by {by_vars}; give an order and mode")
    right = add[[*by_vars, *mapping.values()]].rename(columns={v: k for k, v in mapping.items()})
    right = right.loc[:, ~right.columns.duplicated()]
    if len(set(mapping.values())) < len(mapping):  # one source column to several new names
        right = add[by_vars].copy()
        for new, old in mapping.items():
            right[new] = add[old].values
    kept = dataset.drop(columns=[c for c in mapping if c in dataset.columns])
    return kept.merge(right, on=by_vars, how="left", sort=False)


def impute_dtc_date(dtc: pd.Series, date_imputation: str = "first", highest_imputation: str = "M"
                    ) -> tuple[pd.Series, pd.Series]:
    """Date part of ISO 8601 --DTC with partial dates imputed, and the imputation flag (--DTF).

    ``date_imputation``: ``first`` (01 / January) or ``last`` (end of month / December).
    ``highest_imputation``: ``n`` imputes nothing (partial dates stay missing, admiral's default),
    ``D`` only a missing day, ``M`` a missing day and month; missing years are never imputed.
    Flags: ``D`` (day imputed), ``M`` (month and day).

    >>> dt, flag = impute_dtc_date(pd.Series(["2024-03-15T10:00", "2024-03", "2024", "", "2023-02"]), "last")
    >>> dt.dt.strftime("%Y-%m-%d").tolist(), flag.tolist()
    (['2024-03-15', '2024-03-31', '2024-12-31', nan, '2023-02-28'], ['', 'D', 'M', '', 'D'])
    """
    text = dtc.fillna("").astype(str).str.slice(0, 10)
    n = text.str.len()
    full = n == 10
    ym = (n == 7) & (highest_imputation in ("D", "M"))
    year = (n == 4) & (highest_imputation == "M")
    if date_imputation == "first":
        padded = text.where(~ym, text + "-01").where(~year, text + "-01-01")
        out = pd.to_datetime(padded.where(full | ym | year), format="%Y-%m-%d", errors="coerce")
    else:
        month_start = pd.to_datetime((text + "-01").where(ym), format="%Y-%m-%d", errors="coerce")
        out = pd.to_datetime(text.where(full), format="%Y-%m-%d", errors="coerce")
        out = out.where(~ym, month_start + pd.offsets.MonthEnd(0))
        out = out.where(~year, pd.to_datetime((text + "-12-31").where(year), format="%Y-%m-%d", errors="coerce"))
    flag = pd.Series(np.select([ym & out.notna(), year & out.notna()], ["D", "M"], ""), index=dtc.index, dtype=object)
    return out, flag


def derive_vars_dt(dataset: pd.DataFrame, dtc: str, new_prefix: str = "A", date_imputation: str = "first",
                   highest_imputation: str = "M", flag: bool = True, min_dates: Iterable[str] = (),
                   max_dates: Iterable[str] = ()) -> pd.DataFrame:
    """``{prefix}DT`` (and ``{prefix}DTF``) from an ISO 8601 --DTC variable, imputing partial dates.

    ``min_dates`` / ``max_dates`` (admiral's): when one of these dates lies within the range the
    partial date allows, the imputed date is not earlier / later than it (an AE that started in
    the month of first dose starts no earlier than the first dose).

    >>> f = derive_vars_dt(pd.DataFrame({"AESTDTC": ["2024-02", "2024-02-09"]}), "AESTDTC", "AST")
    >>> f["ASTDT"].dt.day.tolist(), f["ASTDTF"].tolist()
    ([1, 9], ['D', ''])
    >>> f = pd.DataFrame({"AESTDTC": ["2024-02", "2024-03"], "TRTSDT": pd.to_datetime(["2024-02-10"] * 2)})
    >>> derive_vars_dt(f, "AESTDTC", "AST", min_dates=["TRTSDT"])["ASTDT"].dt.strftime("%m-%d").tolist()
    ['02-10', '03-01']
    """
    out = dataset.copy(deep=False)  # copy-on-write (pandas 3): columns are shared until replaced
    date, imputed = impute_dtc_date(out[dtc], date_imputation, highest_imputation)
    if min_dates or max_dates:
        low = impute_dtc_date(out[dtc], "first", highest_imputation)[0]
        high = impute_dtc_date(out[dtc], "last", highest_imputation)[0]
        for name in min_dates:
            d = pd.to_datetime(out[name]).dt.normalize()
            use = (d > date) & (d >= low) & (d <= high)
            date = date.where(~use, d)
        for name in max_dates:
            d = pd.to_datetime(out[name]).dt.normalize()
            use = (d < date) & (d >= low) & (d <= high)
            date = date.where(~use, d)
    out[f"{new_prefix}DT"] = date
    if flag:
        out[f"{new_prefix}DTF"] = imputed
    return out


def derive_vars_dtm(dataset: pd.DataFrame, dtc: str, new_prefix: str = "A", date_imputation: str = "first",
                    time_imputation: str = "first", highest_imputation: str = "M", min_dates: Iterable[str] = (),
                    max_dates: Iterable[str] = ()) -> pd.DataFrame:
    """``{prefix}DTM``, ``{prefix}DTF`` and ``{prefix}TMF`` (H when hours and minutes were imputed).
    ``time_imputation``: a missing time is 00:00:00 (``first``) or 23:59:59 (``last``, admiral's
    ``time_imputation = "last"``, e.g. the end of the last dose day).

    >>> f = derive_vars_dtm(pd.DataFrame({"EXSTDTC": ["2024-02-09T10:30", "2024-02-09"]}), "EXSTDTC", "AST")
    >>> f["ASTDTM"].dt.strftime("%H:%M").tolist(), f["ASTTMF"].tolist()
    (['10:30', '00:00'], ['', 'H'])
    >>> derive_vars_dtm(pd.DataFrame({"EXENDTC": ["2024-02-09"]}), "EXENDTC", "TRTE",
    ...                 time_imputation="last")["TRTEDTM"].dt.strftime("%H:%M:%S").tolist()
    ['23:59:59']
    """
    out = derive_vars_dt(dataset, dtc, new_prefix, date_imputation, highest_imputation, True, min_dates, max_dates)
    date = out.pop(f"{new_prefix}DT")
    text = out[dtc].fillna("").astype(str)

    def clock_of(u: pd.Series) -> pd.DataFrame:  # once per distinct --DTC: a visit's tests share it
        has = u.str.len() >= 16
        return pd.DataFrame({"clock": pd.to_timedelta((u.str.slice(11, 16) + ":00").where(has), errors="coerce"),
                             "has": has})
    parts = on_unique(text, clock_of)
    has_time, clock = parts["has"].astype(bool), parts["clock"]
    fill = pd.Timedelta(0) if time_imputation == "first" else pd.Timedelta(hours=23, minutes=59, seconds=59)
    out[f"{new_prefix}DTM"] = date + clock.fillna(fill)
    out[f"{new_prefix}TMF"] = np.where(date.notna() & ~has_time, "H", "")
    return out


def derive_vars_dy(dataset: pd.DataFrame, reference_date: str, source_vars: dict[str, str]) -> pd.DataFrame:
    """Relative days (``ADY`` ...) from numeric dates: date - reference + 1 on or after it, no day 0.

    >>> f = pd.DataFrame({"TRTSDT": pd.to_datetime(["2024-01-10"] * 3), "ADT": pd.to_datetime(["2024-01-09", "2024-01-10", None])})
    >>> derive_vars_dy(f, "TRTSDT", {"ADY": "ADT"})["ADY"].tolist()
    [-1.0, 1.0, nan]
    """
    out = dataset.copy(deep=False)  # copy-on-write (pandas 3): columns are shared until replaced
    ref = pd.to_datetime(out[reference_date]).dt.normalize()
    for new, source in source_vars.items():
        delta = (pd.to_datetime(out[source]).dt.normalize() - ref).dt.days
        out[new] = delta.where(delta < 0, delta + 1).astype(float)
    return out


def derive_vars_duration(dataset: pd.DataFrame, new_var: str, start_date: str, end_date: str,
                         add_one: bool = True) -> pd.DataFrame:
    """Duration in days from ``start_date`` to ``end_date``: end - start + 1 (both days counted,
    admiral's default), or end - start with ``add_one=False`` (elapsed days, e.g. last dose to death).

    >>> f = pd.DataFrame({"ASTDT": pd.to_datetime(["2024-01-01", None]), "AENDT": pd.to_datetime(["2024-01-03"] * 2)})
    >>> derive_vars_duration(f, "ADURN", "ASTDT", "AENDT")["ADURN"].tolist()
    [3.0, nan]
    >>> derive_vars_duration(f, "ADURN", "ASTDT", "AENDT", add_one=False)["ADURN"].tolist()
    [2.0, nan]
    """
    days = (pd.to_datetime(dataset[end_date]).dt.normalize() - pd.to_datetime(dataset[start_date]).dt.normalize()).dt.days
    return dataset.assign(**{new_var: (days + (1 if add_one else 0)).astype(float)})


def derive_var_obs_number(dataset: pd.DataFrame, by_vars: list[str], order: list[str], new_var: str = "ASEQ"
                          ) -> pd.DataFrame:
    """1, 2, ... per ``by_vars`` group in ``order``. As dplyr's ``arrange`` (and so admiral) sorts,
    missing values (NaN, NaT, empty text) come last; ties keep input order.

    >>> f = pd.DataFrame({"USUBJID": ["1", "1", "1", "2"], "ADT": [5, 3, 3, 1], "DTYPE": ["", "", "AVERAGE", ""]})
    >>> derive_var_obs_number(f, ["USUBJID"], ["ADT", "DTYPE"])["ASEQ"].tolist()
    [3.0, 2.0, 1.0, 1.0]
    """
    keys = {}
    for i, col in enumerate([*by_vars, *order]):
        values = dataset[col]
        if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
            values = values.astype(object).where(values.astype(object).fillna("").astype(str) != "", np.nan)
        keys[f"_k{i}"] = values
    ordered = pd.DataFrame(keys, index=dataset.index).sort_values(list(keys), kind="stable", na_position="last")
    number = ordered.groupby([f"_k{i}" for i in range(len(by_vars))], sort=False, dropna=False).cumcount() + 1
    return dataset.assign(**{new_var: number.reindex(dataset.index).astype(float)})


def derive_basetype_records(dataset: pd.DataFrame, basetypes: list[tuple[str, pd.Series]],
                            new_var: str = "BASETYPE") -> pd.DataFrame:
    """BASETYPE (admiral ``derive_basetype_records``): each record is copied once for every
    basetype whose condition it meets, with BASETYPE set to that basetype's name; records meeting
    none are kept once with BASETYPE missing. Copies follow the basetypes' order.

    >>> f = pd.DataFrame({"ATPTN": [815.0, np.nan]})
    >>> derive_basetype_records(f, [("LAST: SUPINE", f["ATPTN"] == 815), ("LAST", f["ATPTN"].isna())])["BASETYPE"].tolist()
    ['LAST: SUPINE', 'LAST']
    """
    parts, matched = [], pd.Series(False, index=dataset.index)
    for name, condition in basetypes:
        hit = condition.reindex(dataset.index).fillna(False).astype(bool)
        parts.append(dataset[hit].assign(**{new_var: name}))
        matched |= hit
    parts.append(dataset[~matched].assign(**{new_var: ""}))
    return pd.concat(parts, ignore_index=True)


def derive_summary_records(dataset: pd.DataFrame, by_vars: list[str], analysis: dict[str, str],
                           filter_: pd.Series | None = None) -> pd.DataFrame:
    """Summary records (admiral ``derive_summary_records``): one per ``by_vars`` group of the
    records meeting ``filter_``, each ``analysis`` variable summarised by its function (mean,
    median, min, max, sum, count, first, last; missing values ignored). Returns the new records
    only, with ``by_vars``, the analysis variables and the lineage of the records summarised.

    >>> f = pd.DataFrame({"USUBJID": ["1", "1", "1"], "AVISIT": ["W2", "W2", "W4"], "AVAL": [120.0, 130.0, 110.0],
    ...                   "__src": ["VS.VSSEQ=1", "VS.VSSEQ=2", "VS.VSSEQ=3"]})
    >>> derive_summary_records(f, ["USUBJID", "AVISIT"], {"AVAL": "mean"}).values.tolist()
    [['1', 'W2', 125.0, 'VS.VSSEQ=1 + VS.VSSEQ=2'], ['1', 'W4', 110.0, 'VS.VSSEQ=3']]
    """
    rows = dataset if filter_ is None else dataset[filter_.reindex(dataset.index).fillna(False).astype(bool)]
    grouped = rows.groupby(by_vars, sort=False, dropna=False)
    out = grouped.agg(**{var: (var, fn) for var, fn in analysis.items()})
    if SRC in rows.columns:
        out[SRC] = grouped[SRC].agg(lambda s: " + ".join(v for v in s if isinstance(v, str) and v))
    out = out.reset_index()
    for var, fn in analysis.items():
        if fn == "count":
            out[var] = out[var].astype(float)
    return out


def derive_extreme_records(dataset: pd.DataFrame, by_vars: list[str], order: list[str], mode: str = "last",
                           filter_: pd.Series | None = None) -> pd.DataFrame:
    """Copies of the first or last record per ``by_vars`` group in ``order`` among those meeting
    ``filter_`` (admiral ``derive_extreme_records``, e.g. a last-on-treatment record); the caller
    sets what marks them (AVISIT, DTYPE ...). Returns the new records only.

    >>> f = pd.DataFrame({"USUBJID": ["1", "1", "2"], "ADT": [1, 2, 1], "AVAL": [5.0, 6.0, 7.0]})
    >>> derive_extreme_records(f, ["USUBJID"], ["ADT"])["AVAL"].tolist()
    [6.0, 7.0]
    """
    rows = dataset if filter_ is None else dataset[filter_.reindex(dataset.index).fillna(False).astype(bool)]
    ordered = rows.sort_values(order, kind="stable", na_position="first")
    grouped = ordered.groupby(by_vars, sort=False, dropna=False)
    picked = grouped.tail(1) if mode == "last" else grouped.head(1)
    return picked.sort_values(by_vars, kind="stable").reset_index(drop=True)


def derive_vars_joined(dataset: pd.DataFrame, dataset_add: pd.DataFrame, by_vars: list[str], new_vars: dict[str, str],
                       join_filter: Callable[[pd.DataFrame], pd.Series], order: list[str], mode: str = "last"
                       ) -> pd.DataFrame:
    """Variables from the ``dataset_add`` record that meets a condition between the two records
    (admiral ``derive_vars_joined``): each record is paired with every ``dataset_add`` record of
    its ``by_vars`` group, ``join_filter`` keeps pairs, and the first or last kept pair in
    ``order`` gives ``new_vars`` (``{NEW: ADD_VAR}``). Records without a pair get missing values.
    Variables of ``dataset_add`` that the dataset also has (other than ``by_vars``) are seen under
    their own name from ``dataset_add`` only through ``new_vars``/``order``; keep names distinct.

    >>> ae = pd.DataFrame({"USUBJID": ["1", "1"], "ASTDT": pd.to_datetime(["2024-01-05", "2023-12-01"])})
    >>> ex = pd.DataFrame({"USUBJID": ["1", "1"], "EXSTDT": pd.to_datetime(["2024-01-01", "2024-01-04"]),
    ...                    "EXDOSE": [54.0, 81.0]})
    >>> r = derive_vars_joined(ae, ex, ["USUBJID"], {"DOSEON": "EXDOSE"}, lambda p: p["EXSTDT"] <= p["ASTDT"], ["EXSTDT"])
    >>> r["DOSEON"].tolist()
    [81.0, nan]
    """
    wanted = list(dict.fromkeys([*by_vars, *new_vars.values(), *order]))
    clash = [c for c in wanted if c in dataset.columns and c not in by_vars]
    if clash:
        raise ValueError(f"{clash[0]} is in both datasets; copy it to another name first")
    row = "__joined_row"
    left = dataset.drop(columns=[c for c in new_vars if c in dataset.columns]).assign(**{row: np.arange(len(dataset))})
    add = dataset_add[[c for c in wanted if c in dataset_add.columns]]
    pairs = left.merge(add, on=by_vars, how="inner", sort=False)
    pairs = pairs[join_filter(pairs).to_numpy()]
    pairs = pairs.sort_values([row, *order], kind="stable", na_position="first")
    picked = pairs.groupby(row, sort=False).tail(1) if mode == "last" else pairs.groupby(row, sort=False).head(1)
    out = left.copy(deep=False)
    position = pd.Series(np.arange(len(picked)), index=picked[row].to_numpy())
    at = position.reindex(np.arange(len(dataset))).to_numpy()
    found = ~np.isnan(at)
    for new, old in new_vars.items():
        values = picked[old].reset_index(drop=True)
        column = values.reindex(np.where(found, at, -1).astype(int))
        column.index = dataset.index
        out[new] = column
    return out.drop(columns=row).set_axis(dataset.index)


def derive_var_extreme_flag(dataset: pd.DataFrame, by_vars: list[str], order: list[str], new_var: str,
                            mode: str = "last", filter_: pd.Series | None = None,
                            ascending: list[bool] | None = None) -> pd.DataFrame:
    """Flag (``Y``) the first or last record per group in ``order``; ties keep input order.

    >>> f = pd.DataFrame({"USUBJID": ["1", "1", "1"], "AVAL": [3, 5, 5], "ADT": [1, 2, 3]})
    >>> derive_var_extreme_flag(f, ["USUBJID"], ["AVAL", "ADT"], "WORSTFL")["WORSTFL"].tolist()
    ['', '', 'Y']
    """
    out = dataset.copy(deep=False)  # copy-on-write (pandas 3): columns are shared until replaced
    # only the group and order columns are filtered and sorted: copying every column twice cost
    # ADQS +180 MB at 2,000 subjects
    eligible = out[list(dict.fromkeys([*by_vars, *order]))]
    eligible = eligible if filter_ is None else eligible[filter_.reindex(out.index).fillna(False).astype(bool)]
    ordered = eligible.sort_values(order, ascending=ascending or True, kind="stable", na_position="first")
    grouped = ordered.groupby(by_vars, sort=False, dropna=False)
    picked = grouped.tail(1).index if mode == "last" else grouped.head(1).index
    out[new_var] = ""
    out.loc[picked, new_var] = "Y"
    return out


def derive_var_ablfl(dataset: pd.DataFrame, by_vars: list[str], date: str = "ADT", reference: str = "TRTSDT",
                     value: str = "AVAL", value_c: str | None = "AVALC", datetime: str | None = None,
                     reference_dtm: str | None = None) -> pd.DataFrame:
    """ABLFL: the last record with a non-missing value on or before the first dose, per group.

    With ``datetime``/``reference_dtm`` given and both known, a same-day record counts only if
    it was taken before the dose time. A group with no such record gets no baseline.

    >>> f = pd.DataFrame({"USUBJID": ["1"] * 3 + ["2"], "PARAMCD": ["ALT"] * 4, "AVAL": [30, np.nan, 32, 40],
    ...                   "ADT": pd.to_datetime(["2024-01-01", "2024-01-05", "2024-01-20", "2024-03-01"]),
    ...                   "TRTSDT": pd.to_datetime(["2024-01-05"] * 3 + ["2024-02-01"])})
    >>> derive_var_ablfl(f, ["USUBJID", "PARAMCD"], value_c=None)["ABLFL"].tolist()
    ['Y', '', '', '']
    """
    has_value = dataset[value].notna()
    if value_c and value_c in dataset.columns:
        has_value |= dataset[value_c].fillna("").astype(str) != ""
    on_or_before = dataset[date].notna() & (dataset[date] <= dataset[reference])
    if datetime and reference_dtm:
        timed = dataset[datetime].notna() & dataset[reference_dtm].notna() & (dataset[date] == dataset[reference])
        on_or_before &= ~timed | (dataset[datetime] < dataset[reference_dtm])
    order = [date, *([datetime] if datetime else [])]
    return derive_var_extreme_flag(dataset, by_vars, order, "ABLFL", "last", has_value & on_or_before)


def derive_var_base(dataset: pd.DataFrame, by_vars: list[str], source_var: str = "AVAL", new_var: str = "BASE",
                    flag: str = "ABLFL") -> pd.DataFrame:
    """BASE (or BASEC, BNRIND ...): the baseline record's value copied to every record of its group.

    >>> f = pd.DataFrame({"USUBJID": ["1", "1", "2"], "AVAL": [10.0, 12.0, 7.0], "ABLFL": ["Y", "", ""]})
    >>> derive_var_base(f, ["USUBJID"])["BASE"].tolist()
    [10.0, 10.0, nan]
    """
    base = dataset.loc[dataset[flag] == "Y", [*by_vars, source_var]].drop_duplicates(by_vars)
    # the keys alone are joined (one baseline per group: the rows keep their number and order),
    # then the one new column added: a join of the whole dataset copied every column
    found = dataset[by_vars].merge(base.rename(columns={source_var: new_var}), on=by_vars, how="left", sort=False)
    out = dataset.drop(columns=[new_var]) if new_var in dataset.columns else dataset.copy(deep=False)
    out[new_var] = found[new_var].set_axis(dataset.index)
    return out


def derive_var_chg(dataset: pd.DataFrame) -> pd.DataFrame:
    """CHG = AVAL - BASE (missing when either is missing).

    >>> derive_var_chg(pd.DataFrame({"AVAL": [12.0, np.nan], "BASE": [10.0, 10.0]}))["CHG"].tolist()
    [2.0, nan]
    """
    return dataset.assign(CHG=dataset["AVAL"] - dataset["BASE"])


def derive_var_pchg(dataset: pd.DataFrame) -> pd.DataFrame:
    """PCHG = 100 * (AVAL - BASE) / BASE; missing when BASE is 0 or missing.

    >>> derive_var_pchg(pd.DataFrame({"AVAL": [12.0, 5.0], "BASE": [10.0, 0.0]}))["PCHG"].tolist()
    [20.0, nan]
    """
    base = dataset["BASE"].where(dataset["BASE"] != 0)
    return dataset.assign(PCHG=100 * (dataset["AVAL"] - base) / base)


def derive_var_anrind(dataset: pd.DataFrame, value: str = "AVAL", low: str = "ANRLO", high: str = "ANRHI",
                      new_var: str = "ANRIND") -> pd.DataFrame:
    """ANRIND: LOW / NORMAL / HIGH against the analysis range; empty without a value or range.

    >>> f = pd.DataFrame({"AVAL": [1.0, 5.0, 9.0, np.nan], "ANRLO": [2.0] * 4, "ANRHI": [8.0] * 4})
    >>> derive_var_anrind(f)["ANRIND"].tolist()
    ['LOW', 'NORMAL', 'HIGH', '']
    """
    v, lo, hi = dataset[value], dataset[low], dataset[high]
    known = v.notna() & (lo.notna() | hi.notna())
    which = np.select([known & lo.notna() & (v < lo), known & hi.notna() & (v > hi), known], [0, 1, 2], 3)
    # one str object per indicator (not one per record): a million records cost 8 bytes each
    return dataset.assign(**{new_var: pd.Series(_ANRIND[which], index=dataset.index, dtype=object)})


_ANRIND = np.array(["LOW", "HIGH", "NORMAL", ""], dtype=object)


def derive_var_shift(dataset: pd.DataFrame, from_var: str = "BNRIND", to_var: str = "ANRIND",
                     new_var: str = "SHIFT1") -> pd.DataFrame:
    """SHIFT1: ``"<from> to <to>"`` (e.g. ``NORMAL to HIGH``), empty when either end is missing.

    >>> derive_var_shift(pd.DataFrame({"BNRIND": ["NORMAL", ""], "ANRIND": ["HIGH", "LOW"]}))["SHIFT1"].tolist()
    ['NORMAL to HIGH', '']
    """
    def shift(pairs: pd.DataFrame) -> pd.Series:  # once per distinct pair of indicators
        a, b = pairs[from_var].fillna(""), pairs[to_var].fillna("")
        return pd.Series(np.where((a != "") & (b != ""), a + " to " + b, ""), index=pairs.index, dtype=object)
    return dataset.assign(**{new_var: on_distinct(dataset[[from_var, to_var]], shift)})


@dataclass(frozen=True)
class AnalysisWindow:
    avisitn: float
    avisit: str
    target: int
    low: int
    high: int


def derive_vars_analysis_window(dataset: pd.DataFrame, windows: Iterable[AnalysisWindow], by_vars: list[str],
                                day: str = "ADY", flag: str = "ANL01FL",
                                filter_: pd.Series | None = None) -> pd.DataFrame:
    """AVISIT/AVISITN from study-day windows; ANL01FL marks the one record analysed per window:
    closest to the target day, then the latest (a tie on distance goes to the later record).
    Records outside every window keep an empty AVISIT and no flag.

    >>> w = [AnalysisWindow(12, "WEEK 12", 85, 78, 92)]
    >>> f = pd.DataFrame({"USUBJID": ["1"] * 4, "PARAMCD": ["ALT"] * 4, "ADY": [80.0, 90.0, 95.0, 70.0],
    ...                   "AVAL": [1.0, 2.0, 3.0, 4.0]})
    >>> r = derive_vars_analysis_window(f, w, ["USUBJID", "PARAMCD"])
    >>> r["AVISIT"].tolist(), r["ANL01FL"].tolist()
    (['WEEK 12', 'WEEK 12', '', ''], ['', 'Y', '', ''])
    """
    out = dataset.copy(deep=False)  # copy-on-write (pandas 3): columns are shared until replaced
    out["AVISIT"], out["AVISITN"] = "", np.nan
    dist = pd.Series(np.inf, index=out.index)
    target = pd.Series(np.nan, index=out.index)
    for w in sorted(windows, key=lambda w: w.avisitn):
        inside = out[day].between(w.low, w.high) & (out["AVISIT"] == "")
        out.loc[inside, "AVISIT"] = w.avisit
        out.loc[inside, "AVISITN"] = float(w.avisitn)
        target[inside] = w.target
    dist = (out[day] - target).abs()
    eligible = out["AVISIT"] != ""
    if filter_ is not None:
        eligible &= filter_.reindex(out.index).fillna(False).astype(bool)
    ranked = out.loc[eligible, [*by_vars, "AVISITN"]].assign(_dist=-dist[eligible], _day=out.loc[eligible, day])
    ranked = ranked.sort_values(["_dist", "_day"], kind="stable")
    picked = ranked.groupby([*by_vars, "AVISITN"], sort=False).tail(1).index
    out[flag] = ""
    out.loc[picked, flag] = "Y"
    return out


def derive_var_trtemfl(dataset: pd.DataFrame, start_date: str = "ASTDT", end_date: str = "AENDT",
                       trt_start: str = "TRTSDT", trt_end: str = "TRTEDT", end_window: int = 28) -> pd.DataFrame:
    """TRTEMFL: ``Y`` when the event starts on or after first dose and no later than
    ``end_window`` days after last dose. An event with an unknown start date whose end is on
    or after first dose is counted as emergent (the conservative reading).

    >>> f = pd.DataFrame({"ASTDT": pd.to_datetime(["2024-01-09", "2024-01-10", "2024-03-01", None]),
    ...                   "AENDT": pd.to_datetime([None, None, None, "2024-01-12"]),
    ...                   "TRTSDT": pd.to_datetime(["2024-01-10"] * 4), "TRTEDT": pd.to_datetime(["2024-01-20"] * 4)})
    >>> derive_var_trtemfl(f)["TRTEMFL"].tolist()
    ['', 'Y', '', 'Y']
    """
    start, end = dataset[start_date], dataset[end_date]
    first, last = dataset[trt_start], dataset[trt_end] + pd.Timedelta(days=end_window)
    known = start.notna() & (start >= first) & (start <= last)
    unknown = start.isna() & first.notna() & (end.isna() | (end >= first))
    return dataset.assign(TRTEMFL=np.where(known | unknown, "Y", ""))


def derive_param_computed(dataset: pd.DataFrame, by_vars: list[str], parameters: list[str],
                          compute: Callable[[pd.DataFrame], pd.Series], new_paramcd: str, new_param: str | None,
                          value_var: str = "AVAL", keep: list[str] | None = None,
                          text_parameters: Iterable[str] = (), constant_parameters: Iterable[str] = (),
                          constant_by_vars: list[str] | None = None) -> pd.DataFrame:
    """New parameter records computed from other parameters' records with the same ``by_vars``
    (e.g. subject and date), only where every input parameter is present. ``compute`` gets one
    wide row per group with a column per input parameter and returns AVAL. The lineage column
    lists the input records. ``text_parameters`` are taken from AVALC instead of ``value_var``.

    >>> f = pd.DataFrame({"USUBJID": ["1", "1", "1"], "ADT": [1, 1, 2], "PARAMCD": ["A", "B", "A"],
    ...                   "AVAL": [2.0, 3.0, 4.0], "__src": ["LB.LBSEQ=1", "LB.LBSEQ=2", "LB.LBSEQ=3"]})
    >>> r = derive_param_computed(f, ["USUBJID", "ADT"], ["A", "B"], lambda w: w["A"] * w["B"], "AB", "A times B")
    >>> r[["PARAMCD", "AVAL", "__src"]].values.tolist()
    [['AB', 6.0, 'LB.LBSEQ=1 + LB.LBSEQ=2']]

    ``constant_parameters`` (e.g. HEIGHT for BMI) are measured once: their last non-missing value
    per ``constant_by_vars`` group (the subject) joins every group of the other inputs.

    >>> v = pd.DataFrame({"USUBJID": ["1"] * 3, "ADT": [0, 1, 2], "PARAMCD": ["HEIGHT", "WEIGHT", "WEIGHT"],
    ...                   "AVAL": [200.0, 80.0, 84.0]})
    >>> derive_param_computed(v, ["USUBJID", "ADT"], ["WEIGHT"], lambda w: w["WEIGHT"] / (w["HEIGHT"] / 100) ** 2,
    ...                       "BMI", None, constant_parameters=["HEIGHT"], constant_by_vars=["USUBJID"])["AVAL"].tolist()
    [20.0, 21.0]
    """
    constant = [p for p in constant_parameters]
    if constant:
        others = dataset[~dataset["PARAMCD"].isin(constant)]
        fixed = dataset[dataset["PARAMCD"].isin(constant) & dataset[value_var].notna()]
        fixed = fixed.drop_duplicates([*(constant_by_vars or ["USUBJID"]), "PARAMCD"], keep="last")
        wide_fixed = fixed.pivot(index=constant_by_vars or ["USUBJID"], columns="PARAMCD", values=value_var)
        if any(p not in wide_fixed.columns for p in constant):
            return dataset.iloc[0:0].assign(PARAMCD=pd.Series(dtype=object))
        src_fixed = joined_by_group(fixed, constant_by_vars or ["USUBJID"], SRC, dropna=False) \
            if SRC in fixed.columns else None

        def with_constants(wide: pd.DataFrame) -> pd.DataFrame:
            joined = wide.reset_index().merge(wide_fixed[constant].reset_index(), on=constant_by_vars or ["USUBJID"],
                                              how="inner").set_index(by_vars)
            return joined.dropna(subset=constant)
        result = _param_computed(others, by_vars, [p for p in parameters if p not in constant], compute, new_paramcd,
                                 new_param, value_var, keep, text_parameters, _wide_hook=with_constants)
        if src_fixed is not None and SRC in result.columns and len(result):
            extra = pd.MultiIndex.from_frame(result[constant_by_vars or ["USUBJID"]]) \
                if len(constant_by_vars or ["USUBJID"]) > 1 else result[(constant_by_vars or ["USUBJID"])[0]]
            result[SRC] = src_fixed.reindex(extra).fillna("").to_numpy() + " + " + result[SRC]
        return result
    return _param_computed(dataset, by_vars, parameters, compute, new_paramcd, new_param, value_var, keep,
                           text_parameters)


def _param_computed(dataset, by_vars, parameters, compute, new_paramcd, new_param, value_var="AVAL", keep=None,
                    text_parameters=(), _wide_hook=None) -> pd.DataFrame:
    inputs = dataset[dataset["PARAMCD"].isin(parameters)]
    inputs = inputs.drop_duplicates([*by_vars, "PARAMCD"], keep="last")
    text = set(text_parameters)
    values = inputs[value_var].astype(object).where(~inputs["PARAMCD"].isin(text),
                                                    inputs.get("AVALC", pd.Series("", index=inputs.index)))
    values = values.where(values != "", np.nan)
    wide = inputs.assign(_v=values).pivot(index=by_vars, columns="PARAMCD", values="_v")
    complete = wide.dropna(subset=[p for p in parameters if p in wide.columns])
    if any(p not in wide.columns for p in parameters) or complete.empty:
        return dataset.iloc[0:0].assign(PARAMCD=pd.Series(dtype=object))
    if _wide_hook is not None:
        complete = _wide_hook(complete)
    complete = complete.astype({p: float for p in parameters if p not in text and p in complete.columns})
    values = compute(complete)
    src = joined_by_group(inputs, by_vars, SRC, dropna=False) if SRC in inputs.columns else None
    first = inputs.drop_duplicates(by_vars).set_index(by_vars)
    result = complete.reset_index()[by_vars].copy()
    result.columns.name = None
    for col in keep or []:
        result[col] = first[col].reindex(complete.index).values
    result["PARAMCD"] = new_paramcd
    if new_param is not None:
        result["PARAM"] = new_param
    result[value_var] = values.values.astype(float)
    if src is not None:
        result[SRC] = src.reindex(complete.index).values
    return result


@dataclass(frozen=True)
class TteSource:
    """An event or censoring source: which dataset rows, which date, what to call it."""

    dataset: str
    date: str
    description: str
    censor: int
    filter_: Callable[[pd.DataFrame], pd.Series] | None = None


def derive_param_tte(adsl: pd.DataFrame, sources: dict[str, pd.DataFrame], events: list[TteSource],
                     censors: list[TteSource], start_date: str, paramcd: str, param: str) -> pd.DataFrame:
    """Time to event: the earliest event date if any (CNSR=0), else the latest censoring date
    (CNSR>0, its description also in CNSDTDSC); AVAL in days from ``start_date`` (day of start counts as day 1 of follow-up, so
    AVAL = ADT - STARTDT + 1). Subjects without a start date get no record.

    >>> adsl = pd.DataFrame({"USUBJID": ["1", "2"], "TRTSDT": pd.to_datetime(["2024-01-01"] * 2),
    ...                      "DTHDT": pd.to_datetime(["2024-03-01", None]), "LSTALVDT": pd.to_datetime(["2024-03-01", "2024-06-30"])})
    >>> tte = derive_param_tte(adsl, {"ADSL": adsl}, [TteSource("ADSL", "DTHDT", "DEATH", 0)],
    ...                        [TteSource("ADSL", "LSTALVDT", "LAST KNOWN ALIVE", 1)], "TRTSDT", "OS", "Overall Survival (days)")
    >>> tte[["USUBJID", "AVAL", "CNSR", "EVNTDESC"]].values.tolist()
    [['1', 61.0, 0, 'DEATH'], ['2', 182.0, 1, 'LAST KNOWN ALIVE']]
    """
    def candidates(kind: list[TteSource]) -> pd.DataFrame:
        parts = []
        for s in kind:
            frame = sources[s.dataset]
            if s.filter_ is not None:
                frame = frame[s.filter_(frame)]
            part = frame[["USUBJID", s.date]].rename(columns={s.date: "ADT"}).dropna(subset=["ADT"])
            parts.append(part.assign(CNSR=s.censor, EVNTDESC=s.description, SRCDOM=s.dataset, SRCVAR=s.date))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["USUBJID", "ADT"])

    ev = candidates(events).sort_values(["USUBJID", "ADT"], kind="stable").groupby("USUBJID").head(1)
    cn = candidates(censors).sort_values(["USUBJID", "ADT"], kind="stable").groupby("USUBJID").tail(1)
    cn = cn[~cn["USUBJID"].isin(ev["USUBJID"])]
    chosen = pd.concat([ev, cn], ignore_index=True)
    base = adsl[["USUBJID", start_date]].rename(columns={start_date: "STARTDT"}).dropna(subset=["STARTDT"])
    out = base.merge(chosen, on="USUBJID", how="inner")
    out["AVAL"] = ((out["ADT"] - out["STARTDT"]).dt.days + 1).astype(float)
    out["PARAMCD"], out["PARAM"] = paramcd, param
    out["CNSR"] = out["CNSR"].astype(int)
    out["CNSDTDSC"] = np.where(out["CNSR"] > 0, out["EVNTDESC"], "")
    return out.sort_values("USUBJID", kind="stable").reset_index(drop=True)


def to_date(dtc: pd.Series) -> pd.Series:
    """Complete ISO 8601 dates as datetime64 (partial ones are missing: impute explicitly)."""
    return dtc_date(dtc)
