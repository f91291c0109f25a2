"""Run ADaM specs over SDTM: each step calls one library derivation.

Datasets are derived in spec order; a step that needs a dataset not derived yet pauses its
dataset, and the engine comes back to it later. A paused dataset already offers the variables
its finished steps made: ADSL's baseline MELD needs ADLB, and ADLB needs only ADSL's treatment
dates, which ADSL has before it pauses. A cycle with no progress is an error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

from ..errors import ConversionError
from ..spec import Condition
from ..sdtm.rules import RuleContext, evaluate_condition
from ..text import as_text
from . import derive, scores
from .spec import (AddRecords, AdamSpec, Anrind, Assign, Baseline, Concat, Copy, Count, DateStep, DropRecords,
                   Duration, ExtremeFlag, Flag, Groups, Merge, MergeSupp, ParamComputed, Recode, RelativeDay, Shift,
                   Start, Tte, Trtemfl, Windows)

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
    if seq in out.columns:
        out[SRC] = f"{domain}.{seq}=" + as_text(out[seq])
    elif "USUBJID" in out.columns:
        out[SRC] = f"{domain}.USUBJID=" + as_text(out["USUBJID"])
    return out


def _mask(cond: Condition | None, frame: pd.DataFrame, spec: AdamSpec, where: tuple) -> pd.Series:
    if cond is None:
        return pd.Series(True, index=frame.index)
    rows = frame if SRC in frame.columns else frame.assign(**{SRC: spec.dataset})
    ctx = RuleContext(rows, frame, {}, {}, spec.dataset, spec.dataset, spec.line_of)
    return evaluate_condition(cond, ctx, where)


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
    where = ("steps", i)
    if isinstance(step, Start):
        source = run.get(step.from_)
        base = source if SRC in source.columns else with_lineage(step.from_, source)
        return base[_mask(step.filter, base, spec, where)].reset_index(drop=True)
    if frame is None:
        raise ConversionError("the first step must be 'start'", dataset=spec.dataset, spec=spec.line_of(*where))
    if isinstance(step, Merge):
        wanted = list(step.vars.values() if isinstance(step.vars, dict) else step.vars)
        other = run.get(step.from_, [*step.by, *wanted, *(step.filter.fields() if step.filter else [])])
        _need(frame, step.by, spec, where)
        _need(other, [*step.by, *(step.vars.values() if isinstance(step.vars, dict) else step.vars)], spec, where)
        flt = _mask(step.filter, other, spec, where) if step.filter else None
        try:
            return derive.derive_vars_merged(frame, other, step.by, step.vars, flt, step.order, step.mode)
        except ValueError as exc:
            raise ConversionError(str(exc), dataset=spec.dataset, spec=spec.line_of(*where)) from None
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
        text = as_text(frame[step.var])
        table = {str(k): v for k, v in step.values.items()}
        mapped = text.map(table)
        unmapped = mapped.isna() & (text != "")
        if unmapped.any():
            raise ConversionError(f"value '{text[unmapped].iloc[0]}' of {step.var} has no entry in the recode",
                                  dataset=spec.dataset, field=step.var, spec=spec.line_of(*where, "values"))
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in table.values())
        return frame.assign(**{step.new: mapped.astype(float) if numeric else mapped.fillna("")})
    if isinstance(step, Concat):
        result = pd.Series("", index=frame.index, dtype=object)
        for part in step.parts:
            result = result + (part if isinstance(part, str) else as_text(frame[part["var"]]))
        if step.when_empty:
            first = step.parts[0]
            head = first if isinstance(first, str) else as_text(frame[first["var"]])
            result = result.where(as_text(frame[step.when_empty]) != "", head)
        return frame.assign(**{step.new: result})
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
        out = derive.derive_vars_dt(frame, step.dtc, step.prefix, step.imputation, step.highest, step.flag)
        if step.time:
            dtm = derive.derive_vars_dtm(frame, step.dtc, step.prefix, step.imputation)
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
        days = (frame[step.end] - frame[step.start]).dt.days + 1
        return frame.assign(**{step.new: days.astype(float)})
    if isinstance(step, ExtremeFlag):
        _need(frame, [*step.by, *step.order], spec, where)
        flt = _mask(step.filter, frame, spec, where) if step.filter else None
        return derive.derive_var_extreme_flag(frame, step.by, step.order, step.new, step.mode, flt)
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
        return pd.concat([frame, added], ignore_index=True)
    if isinstance(step, DropRecords):
        return frame[~_mask(step.when, frame, spec, where)].reset_index(drop=True)
    if isinstance(step, ParamComputed):
        return pd.concat([frame, computed_parameters(step, frame, spec, where)], ignore_index=True)
    if isinstance(step, Tte):
        return pd.concat([frame, time_to_event(step, frame, run, spec, where)], ignore_index=True)
    raise AssertionError(type(step))


def computed_parameters(step: ParamComputed, frame: pd.DataFrame, spec: AdamSpec, where: tuple) -> pd.DataFrame:
    """Records of parameters derived from other parameters (MELD, Child-Pugh, questionnaire scores)."""
    by, keep = step.by, step.keep
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
    items = frame[frame["PARAMCD"].isin(step.inputs.values())]
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
    src = items.groupby(by, sort=False)[SRC].agg(" + ".join)
    first = items.drop_duplicates(by).set_index(by)
    long = result.reset_index().melt(id_vars=by, var_name="PARAMCD", value_name="AVAL").dropna(subset=["AVAL"])
    long["PARAM"] = long["PARAMCD"].map(names)
    long[SRC] = pd.MultiIndex.from_frame(long[by]).map(src).values
    for col in keep:
        long[col] = pd.MultiIndex.from_frame(long[by]).map(first[col]).values
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


def derive_adam(specs: list[AdamSpec], sdtm: dict[str, pd.DataFrame], progress=lambda s: None,
                timings: dict[str, float] | None = None) -> dict[str, pd.DataFrame]:
    """Derive every ADaM dataset; returns frames with spec variables (plus lineage columns).
    ``timings`` receives the wall time spent on each dataset's steps."""
    import time

    timings = {} if timings is None else timings
    run = AdamRun(sdtm)
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
                    frame = apply_step(spec.steps[i], frame, run, spec, i)
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
            run.derived[spec.dataset] = frame
            run.partial.pop(spec.dataset, None)  # the paused frame is superseded: free it
            pending.remove(spec)
        if not progressed and pending:
            names = ", ".join(s.dataset for s in pending)
            raise ConversionError(f"ADaM datasets wait on each other in a cycle: {names}",
                                  spec=pending[0].line_of("steps", state[pending[0].dataset][0]))
    return {s.dataset: run.derived[s.dataset] for s in specs}
