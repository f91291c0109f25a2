"""Run ADaM specs over SDTM: each step calls one library derivation.

Datasets are derived in spec order; a step that needs a dataset not derived yet pauses its
dataset, and the engine comes back to it later. A paused dataset already offers the variables
its finished steps made: ADSL's baseline MELD needs ADLB, and ADLB needs only ADSL's treatment
dates, which ADSL has before it pauses. A cycle with no progress is an error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from ..errors import ConversionError
from ..spec import Condition
from ..sdtm.rules import RuleContext, evaluate_condition
from ..memory import concat_records, release_freed_memory
from ..text import as_text, joined_by_group, on_distinct, on_unique
from . import derive, scores
from ..expr import ExpressionError, condition as expression_condition, evaluate as evaluate_expression
from ..expr import parse as parse_expression
from .spec import (AddRecords, AdamSpec, Anrind, Assign, Base, Baseline, CaseWhen, Chg, Concat, Copy, Count, DateStep,
                   DropRecords, Duration, ExtremeEvent, ExtremeFlag, ExtremeRecords, Flag, Groups, Merge, MergeJoined,
                   MergeSupp, ParamComputed, Pchg, Recode, BasetypeRecords, RelativeDay, Restrict, Seq, Shift, Start, Summary, Tte,
                   Trtemfl, ValueOf, Windows)

SRC = derive.SRC


class _Waiting(Exception):
    """A step needs a dataset that is not derived yet."""

    def __init__(self, name: str):
        self.name = name


@dataclass
class AdamRun:
    sdtm: dict[str, pd.DataFrame]
    derived: dict[str, pd.DataFrame] = field(default_factory=dict)
    partial: dict[str, pd.DataFrame] = field(default_factory=dict)
    variables: dict[str, list[str]] = field(default_factory=dict)  # ADaM dataset -> the variables its spec outputs

    def get(self, name: str, needs: Iterable[str] = ()) -> pd.DataFrame:
        if name in self.derived:
            return self.derived[name]
        if name in self.sdtm:
            return self.sdtm[name]
        paused = self.partial.get(name)
        if paused is not None and all(c in paused.columns for c in needs) and list(needs):
            return paused
        if name.startswith("SUPP") and name[4:] in self.sdtm:  # no qualifiers (e.g. no AE yet): none to merge
            return pd.DataFrame(columns=["STUDYID", "RDOMAIN", "USUBJID", "IDVAR", "IDVARVAL", "QNAM", "QLABEL",
                                         "QVAL", "QORIG", "QEVAL"], dtype=object)
        raise _Waiting(name)


def with_lineage(domain: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Tag SDTM records with ``DOMAIN.--SEQ=n`` (or the subject for DM) for ADaM lineage."""
    out = frame.copy(deep=False)  # copy-on-write: the SDTM columns are shared, not copied
    seq = f"{domain}SEQ"
    # once per distinct value: "LB.LBSEQ=1" is one object for every subject, not one per record
    # (the working frames and written lineage hold this column: 77 MB of ADQS at 2,000 subjects)
    if seq in out.columns:
        out[SRC] = on_unique(out[seq], lambda u: f"{domain}.{seq}=" + as_text(u))
    elif "USUBJID" in out.columns:
        out[SRC] = on_unique(out["USUBJID"], lambda u: f"{domain}.USUBJID=" + as_text(u))
    return out


def _mask(cond: Condition | str | None, frame: pd.DataFrame, spec: AdamSpec, where: tuple) -> pd.Series:
    if cond is None:
        return pd.Series(True, index=frame.index)
    if isinstance(cond, str):
        return _expression(cond, "condition", frame, spec, where)
    rows = frame if SRC in frame.columns else frame.assign(**{SRC: spec.dataset})
    ctx = RuleContext(rows, frame, {}, {}, spec.dataset, spec.dataset, spec.line_of)
    return evaluate_condition(cond, ctx, where)


def _expression(text: str, kind: str, frame: pd.DataFrame, spec: AdamSpec, where: tuple) -> pd.Series:
    """Evaluate an expression of the spec over ``frame`` (a condition: which records it holds for)."""
    try:
        expr = parse_expression(text, kind)
        missing = sorted(n for n in expr.names if n not in frame.columns)
        if missing:
            raise ConversionError(f"expression '{text}' uses variable {missing[0]}, which the dataset does not have",
                                  dataset=spec.dataset, field=missing[0], spec=spec.line_of(*where))
        if kind == "condition":
            return expression_condition(expr, frame)
        return evaluate_expression(expr, {n: frame[n] for n in expr.names}, frame.index)
    except ExpressionError as exc:
        raise ConversionError(str(exc), dataset=spec.dataset, spec=spec.line_of(*where)) from None


def _value(setting, frame: pd.DataFrame, spec: AdamSpec, where: tuple) -> pd.Series:
    """A ``set``/``assign`` value per record: a literal (``null``: missing), ``{var}``, ``{expr}``, ``{dtc}``."""
    if isinstance(setting, ValueOf):
        if setting.var is not None:
            _need(frame, [setting.var], spec, where)
            return frame[setting.var]
        if setting.expr is not None:
            return _expression(setting.expr, "value", frame, spec, where)
        _need(frame, [setting.dtc], spec, where)
        return derive.impute_dtc_date(frame[setting.dtc], setting.imputation, setting.highest)[0]
    if setting is None:
        return pd.Series(np.nan, index=frame.index, dtype=object)
    if isinstance(setting, bool):
        setting = "Y" if setting else "N"
    return pd.Series(setting, index=frame.index, dtype=float if isinstance(setting, (int, float)) else object)


def _settle(values: pd.Series) -> pd.Series:
    """A new variable's column: text with ``""`` for missing, else numbers or dates as they are."""
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        non_missing = values.dropna()
        if len(non_missing) and not all(isinstance(v, str) for v in non_missing.iloc[:1000]):
            numeric = pd.to_numeric(values, errors="coerce")
            if numeric.notna().sum() == len(non_missing):
                return numeric.astype(float)
        return values.astype(object).where(values.notna(), "")
    if values.dtype == "boolean":
        return values.astype(object).where(values.notna(), "")
    return values


def _need(frame: pd.DataFrame, columns, spec: AdamSpec, where: tuple) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConversionError(f"step needs variable {missing[0]}, which the dataset does not have",
                              dataset=spec.dataset, field=missing[0], spec=spec.line_of(*where))


def _item_number(code: str) -> int:
    digits = "".join(ch for ch in code if ch.isdigit())
    return int(digits[-2:]) if digits else 0


def apply_step(step, frame: pd.DataFrame | None, run: AdamRun, spec: AdamSpec, i: int) -> pd.DataFrame:
    """Apply one spec step to the dataset being built (``frame`` is None before ``start``)."""
    where = ("steps", i) if isinstance(i, int) else i

    def get(name: str, needs: Iterable[str] = ()) -> pd.DataFrame:
        if name == spec.dataset:  # the dataset being derived, as it stands
            if frame is None:
                raise ConversionError(f"{name} has no records before its 'start' step", dataset=spec.dataset,
                                      spec=spec.line_of(*where))
            return frame
        return run.get(name, needs)

    if isinstance(step, Start):
        source = run.get(step.from_)
        base = source if SRC in source.columns else with_lineage(step.from_, source)
        return base[_mask(step.filter, base, spec, where)].reset_index(drop=True)
    if frame is None:
        raise ConversionError("the first step must be 'start'", dataset=spec.dataset, spec=spec.line_of(*where))
    if isinstance(step, Merge):
        if step.vars == "all":  # an ADaM dataset's output variables (not its working ones), or every SDTM one
            other = get(step.from_)
            skip = {*step.by, *step.except_, SRC}
            listed = run.variables.get(step.from_)
            new_vars = [c for c in (listed if listed is not None else other.columns) if c not in skip and c in other]
        else:
            new_vars = step.vars
            wanted = list(step.vars.values() if isinstance(step.vars, dict) else step.vars)
            other = get(step.from_, [*step.by, *wanted, *(step.filter.fields() if isinstance(step.filter, Condition)
                                                          else [])])
        _need(frame, step.by, spec, where)
        _need(other, [*step.by, *(new_vars.values() if isinstance(new_vars, dict) else new_vars)], spec, where)
        flt = _mask(step.filter, other, spec, where) if step.filter else None
        try:
            out = derive.derive_vars_merged(frame, other, step.by, new_vars, flt, step.order, step.mode)
        except ValueError as exc:
            raise ConversionError(str(exc), dataset=spec.dataset, spec=spec.line_of(*where)) from None
        if step.missing:
            # a record matched when a record of ``from`` meeting the filter has its keys (order only picks which)
            keys = (other[flt] if flt is not None else other)[step.by].drop_duplicates().assign(_hit=True)
            matched = frame[step.by].merge(keys, on=step.by, how="left")["_hit"].notna().to_numpy()
            for var, value in step.missing.items():
                out[var] = _settle(out[var].where(matched, value) if var in out.columns else
                                   pd.Series(np.where(matched, np.nan, value), index=out.index))
        return out
    if isinstance(step, MergeSupp):
        supp = run.get(f"SUPP{step.domain}")
        rows = supp[supp["QNAM"] == step.qnam]
        idvar = rows["IDVAR"].iloc[0] if len(rows) else f"{step.domain}SEQ"
        key = rows.assign(**{idvar: pd.to_numeric(rows["IDVARVAL"], errors="coerce")})[["USUBJID", idvar, "QVAL"]]
        out = frame.drop(columns=[step.new], errors="ignore").merge(key.rename(columns={"QVAL": step.new}),
                                                                    on=["USUBJID", idvar], how="left", sort=False)
        out[step.new] = out[step.new].fillna("")
        return out
    if isinstance(step, Count):
        other = run.get(step.from_)
        counted = other[_mask(step.filter, other, spec, where)].groupby(step.by).size().rename(step.new)
        out = frame.drop(columns=[step.new], errors="ignore").merge(counted.reset_index(), on=step.by, how="left")
        out[step.new] = out[step.new].fillna(0).astype(float)
        return out
    if isinstance(step, Copy):
        _need(frame, step.vars.values(), spec, where)
        return frame.assign(**{new: frame[old] for new, old in step.vars.items()})
    if isinstance(step, Assign):
        return frame.assign(**{new: value for new, value in step.vars.items()})
    if isinstance(step, Recode):
        _need(frame, [step.var], spec, where)
        return frame.assign(**{step.new: _recode(step, frame, spec, where)})
    if isinstance(step, Concat):
        def concat(values: pd.DataFrame) -> pd.Series:
            result = pd.Series("", index=values.index, dtype=object)
            for part in step.parts:
                result = result + (part if isinstance(part, str) else as_text(values[part["var"]]))
            if step.when_empty:
                first = step.parts[0]
                head = first if isinstance(first, str) else as_text(values[first["var"]])
                result = result.where(as_text(values[step.when_empty]) != "", head)
            return result
        used = list(dict.fromkeys([*(p["var"] for p in step.parts if not isinstance(p, str)),
                                   *([step.when_empty] if step.when_empty else [])]))
        # once per distinct combination: a PARAM per test and unit, not a new string per record
        return frame.assign(**{step.new: on_distinct(frame[used], concat) if used else concat(frame)})
    if isinstance(step, Flag):
        return frame.assign(**{step.new: np.where(_mask(step.when, frame, spec, (*where, "when")), "Y", "")})
    if isinstance(step, Groups):
        _need(frame, [step.var], spec, where)
        value = pd.to_numeric(frame[step.var], errors="coerce")
        labels = pd.Series("", index=frame.index, dtype=object)
        numbers = pd.Series(np.nan, index=frame.index)
        done = value.isna()
        for n, g in enumerate(step.groups, start=1):
            hit = ~done & (value <= float(g["upto"]) if "upto" in g else ~done)
            labels[hit], numbers[hit] = str(g["value"]), float(n)
            done |= hit
        out = frame.assign(**{step.new: labels})
        return out.assign(**{step.numeric: numbers}) if step.numeric else out
    if isinstance(step, DateStep):
        _need(frame, [step.dtc], spec, where)
        _need(frame, [*step.min_dates, *step.max_dates], spec, where)
        out = derive.derive_vars_dt(frame, step.dtc, step.prefix, step.imputation, step.highest, step.flag,
                                    step.min_dates, step.max_dates)
        if step.time:
            dtm = derive.derive_vars_dtm(frame, step.dtc, step.prefix, step.imputation, step.time_imputation,
                                         step.highest, step.min_dates, step.max_dates)
            out[f"{step.prefix}DTM"] = dtm[f"{step.prefix}DTM"]
            out[f"{step.prefix}TMF"] = dtm[f"{step.prefix}TMF"]
        for old, new in step.names.items():
            if old in out.columns:
                out = out.drop(columns=old) if not new else out.rename(columns={old: new})
        return out
    if isinstance(step, RelativeDay):
        _need(frame, [step.reference, *step.vars.values()], spec, where)
        return derive.derive_vars_dy(frame, step.reference, step.vars)
    if isinstance(step, Duration):
        _need(frame, [step.start, step.end], spec, where)
        out = derive.derive_vars_duration(frame, step.new, step.start, step.end, step.add_one)
        if step.unit_var:
            out[step.unit_var] = np.where(out[step.new].notna(), step.unit, "")
        return out
    if isinstance(step, ExtremeFlag):
        order, ascending = _sort_keys(step.order)
        _need(frame, [*step.by, *order], spec, where)
        flt = _mask(step.filter, frame, spec, where) if step.filter else None
        return derive.derive_var_extreme_flag(frame, step.by, order, step.new, step.mode, flt, ascending)
    if isinstance(step, Baseline):
        _need(frame, [*step.by, "AVAL", "ADT", "TRTSDT"], spec, where)
        timed = "ADTM" in frame.columns and "TRTSDTM" in frame.columns
        out = derive.derive_var_ablfl(frame, step.by, value_c="AVALC" if "AVALC" in frame.columns else None,
                                      datetime="ADTM" if timed else None, reference_dtm="TRTSDTM" if timed else None)
        out = derive.derive_var_base(out, step.by, "AVAL", "BASE")
        if "AVALC" in out.columns:
            out = derive.derive_var_base(out, step.by, "AVALC", "BASEC")
            out["BASEC"] = out["BASEC"].fillna("")
        if "ANRIND" in out.columns:
            out = derive.derive_var_base(out, step.by, "ANRIND", "BNRIND")
            out["BNRIND"] = out["BNRIND"].fillna("")
        if step.chg:
            out = derive.derive_var_chg(out)
        if step.pchg:
            out = derive.derive_var_pchg(out)
        return out
    if isinstance(step, Anrind):
        _need(frame, ["AVAL", "ANRLO", "ANRHI"], spec, where)
        return derive.derive_var_anrind(frame)
    if isinstance(step, Shift):
        _need(frame, ["BNRIND", "ANRIND"], spec, where)
        return derive.derive_var_shift(frame, new_var=step.new)
    if isinstance(step, Windows):
        _need(frame, [*step.by, step.day], spec, where)
        windows = [derive.AnalysisWindow(w.avisitn, w.avisit, w.target, w.low, w.high) for w in step.windows]
        out = derive.derive_vars_analysis_window(frame, windows, step.by, step.day)
        if step.baseline_visit and "ABLFL" in out.columns:
            is_base = out["ABLFL"] == "Y"
            out.loc[is_base, "AVISIT"], out.loc[is_base, "AVISITN"] = step.baseline_visit, 0.0
            out.loc[is_base, "ANL01FL"] = "Y"
        return out
    if isinstance(step, Trtemfl):
        _need(frame, ["ASTDT", "AENDT", "TRTSDT", "TRTEDT"], spec, where)
        return derive.derive_var_trtemfl(frame, end_window=step.window)
    added = added_records(step, frame, run, spec, i)
    if added is not None:
        return append_records([frame, added[0]], added[1])
    if isinstance(step, DropRecords):
        return frame[~_mask(step.when, frame, spec, where)].reset_index(drop=True)
    if isinstance(step, Base):
        _need(frame, [*step.by, step.var, step.flag], spec, where)
        out = derive.derive_var_base(frame, step.by, step.var, step.new, step.flag)
        return out.assign(**{step.new: _settle(out[step.new])})
    if isinstance(step, Chg):
        _need(frame, ["AVAL", "BASE"], spec, where)
        return derive.derive_var_chg(frame)
    if isinstance(step, Pchg):
        _need(frame, ["AVAL", "BASE"], spec, where)
        return derive.derive_var_pchg(frame)
    if isinstance(step, ExtremeEvent):
        return extreme_event(step, frame, get, spec, where)
    if isinstance(step, CaseWhen):
        return case_when(step, frame, spec, where)
    if isinstance(step, MergeJoined):
        other = get(step.from_)
        _need(frame, step.by, spec, where)
        _need(other, [*step.by, *step.vars.values()], spec, where)
        add = other[_mask(step.filter, other, spec, where)] if step.filter else other
        test = lambda pairs: _mask(step.join, pairs, spec, (*where, "join"))
        try:
            out = derive.derive_vars_joined(frame, add, step.by, step.vars, test, step.order, step.mode)
        except ValueError as exc:
            raise ConversionError(str(exc), dataset=spec.dataset, spec=spec.line_of(*where)) from None
        return out.assign(**{v: _settle(out[v]) for v in step.vars})
    if isinstance(step, Seq):
        _need(frame, [*step.by, *step.order], spec, where)
        return derive.derive_var_obs_number(frame, step.by, step.order, step.new)
    if isinstance(step, BasetypeRecords):
        basetypes = [(b.name, _mask(b.when, frame, spec, (*where, "basetypes", k, "when")))
                     for k, b in enumerate(step.basetypes)]
        return derive.derive_basetype_records(frame, basetypes, step.new)
    if isinstance(step, Restrict):
        return restrict(step, frame, run, spec, where)
    raise AssertionError(type(step))


def _sort_keys(order: list[str]) -> tuple[list[str], list[bool]]:
    """``[desc(ASEVN), ASTDTM]`` -> (names, ascending flags)."""
    names, ascending = [], []
    for key in order:
        k = key.strip()
        descending = k.startswith("desc(") and k.endswith(")")
        names.append(k[5:-1].strip() if descending else k)
        ascending.append(not descending)
    return names, ascending


def added_records(step, frame: pd.DataFrame, run: AdamRun, spec: AdamSpec, i) -> tuple[pd.DataFrame, bool] | None:
    """The records a step adds to the dataset (add_records, param, tte), and whether text
    variables only one side has are empty rather than NaN; None for any other step."""
    where = ("steps", i) if isinstance(i, int) else i
    if isinstance(step, AddRecords):
        other = run.get(step.from_)
        other = other if SRC in other.columns else with_lineage(step.from_, other)
        rows = other[_mask(step.filter, other, spec, where)]
        _need(rows, step.vars.values(), spec, where)
        added = pd.DataFrame({new: rows[old].values for new, old in step.vars.items()})
        added[SRC] = rows[SRC].values
        for var, table in step.recode.items():
            added[var] = as_text(added[var]).map({str(k): v for k, v in table.items()}).fillna(added[var])
        for var, value in step.assign.items():
            added[var] = value
        return added, False
    if isinstance(step, ParamComputed):
        added = computed_parameters(step, frame, spec, where)
        for var, value in step.assign.items():
            added[var] = _settle(_value(value, added, spec, (*where, "assign", var)))
        return added, step.formula is not None
    if isinstance(step, Tte):
        return time_to_event(step, frame, run, spec, where), False
    if isinstance(step, Summary):
        _need(frame, [*step.by, *step.analysis], spec, where)
        flt = _mask(step.filter, frame, spec, where) if step.filter else None
        added = derive.derive_summary_records(frame, step.by, step.analysis, flt)
        for var, value in step.assign.items():
            added[var] = _settle(_value(value, added, spec, (*where, "assign", var)))
        return added, True
    if isinstance(step, ExtremeRecords):
        if step.from_ and step.from_ != spec.dataset:
            source = run.get(step.from_)
        else:  # the dataset being derived, as it stands
            source = frame
        source = source if SRC in source.columns else with_lineage(step.from_, source)
        _need(source, [*step.by, *step.order], spec, where)
        flt = _mask(step.filter, source, spec, where) if step.filter else None
        added = derive.derive_extreme_records(source, step.by, step.order, step.mode, flt)
        for var, value in step.assign.items():
            added[var] = _settle(_value(value, added, spec, (*where, "assign", var)))
        return added, True
    return None


def append_records(parts: list[pd.DataFrame], text_empty: bool = False) -> pd.DataFrame:
    """``[frame, added]`` as one frame, the added records after (``parts`` is emptied: handed the
    only reference to the working frame, its columns go as the joined ones are made).
    ``text_empty``: text variables one side does not have are empty, not NaN."""
    frame, added = parts
    fill = [c for c in frame.columns if c not in added.columns and frame[c].dtype == object] + \
        [c for c in added.columns if c not in frame.columns and added[c].dtype == object] if text_empty else []
    del frame, added
    out = concat_records(parts)
    for col in fill:
        out[col] = out[col].fillna("")
    return out


def _recode(step: Recode, frame: pd.DataFrame, spec: AdamSpec, where: tuple) -> pd.Series:
    text = as_text(frame[step.var])
    table = {str(k): v for k, v in step.values.items()}
    known = text.isin(list(table)) | (text == "")
    mapped = text.map(table)
    if not known.all():
        if "default" not in step.model_fields_set:  # default: null is a default (missing)
            raise ConversionError(f"value '{text[~known].iloc[0]}' of {step.var} has no entry in the recode (add it, "
                                  f"or give a default)", dataset=spec.dataset, field=step.var,
                                  spec=spec.line_of(*where, "values"))
        mapped = mapped.where(known, _value(step.default, frame, spec, (*where, "default")))
    present = [v for v in table.values() if v is not None]
    numeric = bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)
    return pd.to_numeric(mapped, errors="coerce").astype(float) if numeric else _settle(mapped)


def case_when(step: CaseWhen, frame: pd.DataFrame, spec: AdamSpec, where: tuple) -> pd.DataFrame:
    """``case``: the first case that holds sets its values; records no case holds for get ``else``."""
    names = list(dict.fromkeys([*(v for c in step.cases for v in c.set), *step.else_]))
    chosen = pd.Series(-1, index=frame.index)
    for k, case in enumerate(step.cases):
        hit = _mask(case.when, frame, spec, (*where, "cases", k, "when")) & (chosen < 0)
        chosen[hit] = k
    out = frame.copy(deep=False)
    for name in names:
        column = pd.Series(np.nan, index=frame.index, dtype=object)
        for k, case in enumerate(step.cases):
            if name in case.set:
                hit = (chosen == k).to_numpy()
                if hit.any():
                    column = column.where(~hit, _value(case.set[name], frame, spec, (*where, "cases", k, "set", name)))
        if name in step.else_:
            rest = (chosen < 0).to_numpy()
            column = column.where(~rest, _value(step.else_[name], frame, spec, (*where, "else", name)))
        out[name] = _settle(column.infer_objects())
    return out


def extreme_event(step: ExtremeEvent, frame: pd.DataFrame, get, spec: AdamSpec, where: tuple) -> pd.DataFrame:
    """``extreme_event``: candidates from every event, first or last per ``by`` group in ``order``."""
    parts = []
    for k, event in enumerate(step.events):
        at = (*where, "events", k)
        source = get(event.from_)
        _need(source, step.by, spec, at)
        rows = source[_mask(event.filter, source, spec, at)] if event.filter else source
        part = rows[step.by].copy()
        for var, value in event.set.items():
            part[var] = _value(value, rows, spec, (*at, "set", var)).to_numpy()
        missing = [v for v in [*step.new, *step.order] if v not in part.columns]
        if missing:
            raise ConversionError(f"event {k + 1} does not set {missing[0]}", dataset=spec.dataset, field=missing[0],
                                  spec=spec.line_of(*at))
        parts.append(part.assign(_event=k))
    candidates = pd.concat(parts, ignore_index=True)
    for var in step.order:  # numbers set by one event and null by another concatenate as objects
        values = candidates[var]
        if values.dtype == object and not values.dropna().map(lambda v: isinstance(v, str)).any():
            candidates[var] = pd.to_numeric(values, errors="coerce")
    try:
        out = derive.derive_vars_merged(frame, candidates, step.by, step.new, None, [*step.order, "_event"], step.mode)
    except ValueError as exc:
        raise ConversionError(str(exc), dataset=spec.dataset, spec=spec.line_of(*where)) from None
    for var in step.new:
        out[var] = _settle(out[var])
    return out


def restrict(step: Restrict, frame: pd.DataFrame, run: AdamRun, spec: AdamSpec, where: tuple) -> pd.DataFrame:
    """``restrict``: the nested steps see only the records meeting ``where``; order is kept."""
    mask = _mask(step.where, frame, spec, (*where, "where"))
    order = "__restrict_row"
    numbered = frame.assign(**{order: np.arange(len(frame), dtype=float)})
    part = numbered[mask.to_numpy()].reset_index(drop=True)
    for k, inner in enumerate(step.steps):
        if isinstance(inner, (Start, Restrict)):
            raise ConversionError(f"'{inner.derive}' cannot be restricted", dataset=spec.dataset,
                                  spec=spec.line_of(*where, "steps", k))
        part = apply_step(inner, part, run, spec, (*where, "steps", k))
    out = append_records([numbered[~mask.to_numpy()], part], text_empty=True)
    # records keep their places; records the nested steps added (summaries ...) come last
    out = out.sort_values(order, kind="stable", na_position="last").drop(columns=order).reset_index(drop=True)
    return out


def computed_parameters(step: ParamComputed, frame: pd.DataFrame, spec: AdamSpec, where: tuple) -> pd.DataFrame:
    """Records of parameters derived from other parameters (a formula; MELD, Child-Pugh, questionnaire scores)."""
    by, keep = step.by, step.keep
    if step.filter is not None:
        frame = frame[_mask(step.filter, frame, spec, (*where, "filter"))]
    if step.formula is not None:
        expr = parse_expression(step.formula, "number")
        _need(frame, [*by, "PARAMCD", "AVAL"], spec, where)
        constant = [p for p in step.constant if p in expr.names]
        return derive.derive_param_computed(
            frame, by, sorted(expr.names), lambda w: evaluate_expression(expr, {n: w[n] for n in expr.names}, w.index),
            step.paramcd, step.param, keep=keep, constant_parameters=constant, constant_by_vars=step.constant_by)
    if step.function == "meld":
        p = step.inputs
        return derive.derive_param_computed(
            frame, by, [p["bili"], p["inr"], p["creat"]],
            lambda w: scores.meld_score(w[p["bili"]], w[p["inr"]], w[p["creat"]]),
            step.paramcd or "MELD", step.param or "MELD Score", keep=keep)
    if step.function == "child_pugh":
        p = step.inputs
        return derive.derive_param_computed(
            frame, by, [p["bili"], p["alb"], p["inr"], p["ascites"], p["encephalopathy"]],
            lambda w: scores.child_pugh_points(w[p["bili"]], w[p["alb"]], w[p["inr"]], w[p["ascites"]],
                                               w[p["encephalopathy"]])["CPSCORE"],
            step.paramcd or "CPSCORE", step.param or "Child-Pugh Score", keep=keep,
            text_parameters=[p["ascites"], p["encephalopathy"]])
    if step.function == "child_pugh_class":
        source = frame[frame["PARAMCD"] == step.inputs["score"]]
        out = source.copy(deep=False)
        out["PARAMCD"], out["PARAM"] = step.paramcd or "CPCLASS", step.param or "Child-Pugh Class"
        out["AVALC"] = scores.child_pugh_class(out["AVAL"]).values
        out["AVAL"] = np.nan
        keep_cols = [*by, *keep, "PARAMCD", "PARAM", "AVAL", "AVALC", SRC]
        return out[[c for c in keep_cols if c in out.columns]]
    # questionnaire scores: wide items per subject and date
    # only the columns the scores read: the item records are half of ADQS, every column copied was 150 MB
    read = [c for c in dict.fromkeys([*by, *keep, "PARAMCD", "AVAL", SRC]) if c in frame.columns]
    items = frame.loc[frame["PARAMCD"].isin(step.inputs.values()), read]
    if items.empty:
        return frame.iloc[0:0]
    role_of = {code: role for role, code in step.inputs.items()}
    wide = items.pivot_table(index=by, columns="PARAMCD", values="AVAL", aggfunc="last")
    wide.columns = [int(role_of[c]) if role_of[c].isdigit() else role_of[c] for c in wide.columns]
    if step.function == "rand36":
        result, names = scores.rand36_scales(wide), {k: f"SF-36 {v[0]}" for k, v in scores.RAND36_SCALES.items()}
    elif step.function == "cldq":
        result = scores.cldq_scores(wide)
        names = {**{k: f"CLDQ {v[0]}" for k, v in scores.CLDQ_DOMAINS.items()},
                 "CLDQOVR": "CLDQ Overall Score", "CLDQTOT": "CLDQ Total Score"}
    else:
        result = scores.eq5d5l_index(wide).to_frame(step.paramcd or "EQ5DIDX")
        names = {step.paramcd or "EQ5DIDX": step.param or "EQ-5D-5L Index (England value set)"}
    src = joined_by_group(items, list(by), SRC)
    first = items.drop_duplicates(by).set_index(by)
    long = result.reset_index().melt(id_vars=by, var_name="PARAMCD", value_name="AVAL").dropna(subset=["AVAL"])
    long["PARAM"] = long["PARAMCD"].map(names)
    # the source records and the kept variables of each (by) group: one join, not a lookup per column
    long = long.join(src.rename(SRC), on=by).join(first[list(keep)], on=by)
    return long.reset_index(drop=True)


def time_to_event(step: Tte, frame: pd.DataFrame, run: AdamRun, spec: AdamSpec, where: tuple) -> pd.DataFrame:
    """One TTE parameter from the event and censoring sources declared in the spec."""
    sources = {"__self": frame}

    def source(e, k, kind):
        name = e.from_
        data = frame if name == spec.dataset else run.get(name)
        _need(data, ["USUBJID", e.date], spec, (*where, kind, k))
        flt = (lambda f, c=e.filter, w=(*where, kind, k): _mask(c, f, spec, w)) if e.filter else None
        sources[name] = data
        return derive.TteSource(name, e.date, e.description, 0 if kind == "events" else 1, flt)

    events = [source(e, k, "events") for k, e in enumerate(step.events)]
    censors = [source(e, k, "censor") for k, e in enumerate(step.censor)]
    adsl = run.get("ADSL")
    tte = derive.derive_param_tte(adsl, sources, events, censors, step.start, step.paramcd, step.param)
    tte[SRC] = tte["SRCDOM"] + "." + tte["SRCVAR"] + " USUBJID=" + tte["USUBJID"]
    return tte


def columns_read_by_others(specs: list[AdamSpec]) -> dict[str, set[str] | None]:
    """For each ADaM dataset another spec reads (merges from, takes events from, starts from): the
    columns it may read, or None for all of them (a ``start`` from it carries every column on).
    Conservative: every name-like word in the reading spec's steps counts, and ``vars: all`` counts
    the dataset's output variables."""
    names = {s.dataset for s in specs}
    output = {s.dataset: set(s.variable_names()) for s in specs}
    read: dict[str, set[str] | None] = {}
    for spec in specs:
        steps = [step.model_dump(by_alias=True) for step in spec.steps]
        words = set(_words(steps))
        sources = {w for w in words if w in names and w != spec.dataset}
        starts = {d["from"] for d in _all_steps(steps) if d.get("derive") == "start" and d.get("from") in sources}
        for name in sources:
            if name in starts or read.get(name, set()) is None:
                read[name] = None
            else:
                read[name] = {*read.get(name, set()), *words, *(output[name] if "all" in words else ())}
    return read


def last_step_naming(spec: AdamSpec) -> dict[str, int]:
    """Each name-like word of the spec's steps -> the index of the last step that names it."""
    last: dict[str, int] = {}
    for i, step in enumerate(spec.steps):
        for word in _words(step.model_dump(by_alias=True)):
            last[word] = i
    return last


def finished_source_columns(spec: AdamSpec, frame: pd.DataFrame, read_by_others: dict[str, set[str] | None],
                            last_named: dict[str, int], done: int, source: set[str]) -> list[str]:
    """Columns a ``start`` from an SDTM domain brought in (``source``) that no step from ``done``
    on will read: named by no later step, not an output variable or key of the spec, nor named
    by a spec that reads this dataset (LBORRES, DOMAIN, and LBTESTCD once PARAMCD is copied from
    it). USUBJID, STUDYID and --SEQ stay: steps join on them without naming them (supplemental
    qualifiers on --SEQ). A step reads no other SDTM name unnamed (what steps read by default are
    ADaM names: AVAL, ADT, ...). Steps that add or drop records copy the working frame, so a
    column carried for nothing costs at every one of them.

    >>> from cdisc_convert.adam.spec import AdamSpec
    >>> spec = AdamSpec.model_validate({"dataset": "ADLB", "label": "L", "keys": ["USUBJID"], "variables": ["USUBJID", "AVAL"],
    ...     "steps": [{"derive": "start", "from": "LB"}, {"derive": "copy", "vars": {"AVAL": "LBSTRESN"}}]})
    >>> f = pd.DataFrame(columns=["STUDYID", "DOMAIN", "USUBJID", "LBSEQ", "LBSTRESN", "LBORRES", "__src", "AVAL"])
    >>> lb, last = set(f.columns) - {"AVAL"}, last_step_naming(spec)
    >>> finished_source_columns(spec, f, {}, last, 1, lb), finished_source_columns(spec, f, {}, last, 2, lb)
    (['DOMAIN', 'LBORRES'], ['DOMAIN', 'LBSTRESN', 'LBORRES'])
    >>> finished_source_columns(spec, f, {"ADLB": {"LBORRES"}}, last, 1, lb)
    ['DOMAIN']
    >>> finished_source_columns(spec, f, {"ADLB": None}, last, 1, lb)  # another spec starts from ADLB: all stay
    []
    """
    domain = spec.steps[0].from_ if spec.steps and isinstance(spec.steps[0], Start) else ""
    others = read_by_others.get(spec.dataset, set())
    if len(domain) != 2 or others is None:
        return []
    kept = {*spec.variable_names(), *spec.keys, *others, "USUBJID", "STUDYID", SRC}
    return [c for c in frame.columns if c in source and not c.endswith("SEQ") and c not in kept
            and last_named.get(c, -1) < done]


def _words(value):
    """Every name-like word in the strings of a nested structure of dicts and lists."""
    if isinstance(value, str):
        yield from re.findall(r"[A-Za-z_][A-Za-z0-9_]*", value)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _words(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _words(v)


def _all_steps(steps: list[dict]):
    for step in steps:
        yield step
        yield from _all_steps(step.get("steps") or [])


def derive_adam(specs: list[AdamSpec], sdtm: dict[str, pd.DataFrame], progress=lambda s: None,
                timings: dict[str, float] | None = None,
                finish: Callable[[AdamSpec, pd.DataFrame], object] | None = None) -> dict[str, pd.DataFrame]:
    """Derive every ADaM dataset; returns frames with spec variables (plus lineage columns).
    ``timings`` receives the wall time spent on each dataset's steps.

    ``finish(spec, frame)``: called once per dataset with its derived frame as soon as it is derived,
    so that its working frame goes before the next one grows (finish holds the only reference to
    it); of a dataset other specs read, only the columns they may read are kept for them, and an
    SDTM domain's columns go once no later step names them (:func:`finished_source_columns`). The
    frames are then not returned (an empty dict)."""
    import time

    timings = {} if timings is None else timings
    read_by_others = columns_read_by_others(specs) if finish is not None else {}
    last_named = {s.dataset: last_step_naming(s) for s in specs} if finish is not None else {}
    source_columns: dict[str, set[str]] = {}  # what each dataset's start brought in
    run = AdamRun(sdtm, variables={s.dataset: s.variable_names() for s in specs})
    state = {s.dataset: (0, None) for s in specs}
    pending = list(specs)
    while pending:
        progressed = False
        for spec in list(pending):
            i, frame = state[spec.dataset]
            started = time.perf_counter()
            try:
                while i < len(spec.steps):
                    progress(f"{spec.dataset}: step {i + 1}/{len(spec.steps)} ({spec.steps[i].derive})")
                    added = added_records(spec.steps[i], frame, run, spec, i) \
                        if finish is not None and frame is not None else None
                    if added is not None:  # appended where the working frame has no other reference
                        parts, text_empty = [frame, added[0]], added[1]
                        frame = added = None
                        state[spec.dataset] = (i, None)
                        frame = append_records(parts, text_empty)
                    else:
                        frame = apply_step(spec.steps[i], frame, run, spec, i)
                    if isinstance(spec.steps[i], Start):
                        source_columns[spec.dataset] = set(frame.columns)
                    # without finish, the working frames are returned whole
                    finished = [] if finish is None else finished_source_columns(
                        spec, frame, read_by_others, last_named[spec.dataset], i + 1, source_columns[spec.dataset])
                    if finished:  # what no later step reads goes before the next step copies the frame
                        frame = frame.drop(columns=finished)
                    release_freed_memory()  # the step's old frame: its pages go before the next step grows
                    i += 1
                    state[spec.dataset] = (i, frame)
                    progressed = True
            except _Waiting as wait:
                timings[spec.dataset] = timings.get(spec.dataset, 0.0) + time.perf_counter() - started
                if frame is not None:
                    run.partial[spec.dataset] = frame
                if wait.name not in state:
                    raise ConversionError(f"step uses dataset {wait.name}, which neither SDTM nor the ADaM specs "
                                          f"provide", dataset=spec.dataset, spec=spec.line_of("steps", i)) from None
                continue
            timings[spec.dataset] = timings.get(spec.dataset, 0.0) + time.perf_counter() - started
            run.partial.pop(spec.dataset, None)  # the paused frame is superseded: free it
            pending.remove(spec)
            state[spec.dataset] = (i, None)
            if finish is None:
                run.derived[spec.dataset] = frame
                continue
            if spec.dataset in read_by_others:  # what other specs may read of it stays; the rest goes
                wanted = read_by_others[spec.dataset]
                run.derived[spec.dataset] = frame if wanted is None else \
                    frame[[c for c in frame.columns if c in wanted or c == SRC]]
            handed = [frame]
            frame = None
            finish(spec, handed.pop())  # the only reference: finish can free the working frame before writing
        if not progressed and pending:
            names = ", ".join(s.dataset for s in pending)
            raise ConversionError(f"ADaM datasets wait on each other in a cycle: {names}",
                                  spec=pending[0].line_of("steps", state[pending[0].dataset][0]))
    return {s.dataset: run.derived[s.dataset] for s in specs} if finish is None else {}
