"""Trial design and subject-level special-purpose domains built from the study config.

TS, TA, TE and TV come straight from ``study.yaml``; SE is derived per subject from the
element start rules and DM's reference dates; SV from the visits found in the mapped domains.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..spec import StudyConfig
from ..text import as_text
from . import derive


DERIVED_TS = {"SSTDTC": "Study Start Date", "SENDTC": "Study End Date", "ACTSUB": "Actual Number of Subjects",
              "FCNTRY": "Planned Country of Investigational Sites", "DOSE": "Dose per Administration",
              "DOSU": "Dose Units"}


def trial_summary(study: StudyConfig, dm: pd.DataFrame | None = None) -> pd.DataFrame:
    """TS: one record per parameter, TSSEQ counting repeats of a parameter. Parameters the data
    settles are derived unless study.yaml gives them: SSTDTC (earliest informed consent, else first
    reference start), SENDTC (latest end of participation), ACTSUB (subjects assigned to an arm),
    FCNTRY (each country in DM); and each arm's planned DOSE (and DOSU) grouped by TSGRPID = ARMCD.

    >>> from cdisc_convert.spec import load_study_config; from pathlib import Path
    >>> study = load_study_config(Path("mappings/nct05948982/study.yaml"))
    >>> dm = pd.DataFrame({"RFICDTC": ["2024-01-02", "2023-12-30"], "RFSTDTC": ["2024-01-10", "2024-01-08"],
    ...                    "RFPENDTC": ["2024-06-01", "2024-07-15T10:00"], "ARMCD": ["LOW", ""], "COUNTRY": ["CHN"] * 2})
    >>> ts = trial_summary(study, dm).set_index("TSPARMCD")
    >>> ts.loc[["PLANSUB", "SSTDTC", "SENDTC", "ACTSUB", "FCNTRY"], "TSVAL"].tolist()
    ['18', '2023-12-30', '2024-07-15', '1', 'CHN']
    """
    rows = [{"TSPARMCD": str(p["parmcd"]), "TSPARM": str(p["parm"]), "TSVAL": str(p["val"]),
             "TSGRPID": str(p.get("grpid", ""))} for p in study.trial_summary]
    given = {r["TSPARMCD"] for r in rows}

    def add(parmcd: str, value, group: str = "") -> None:
        if value not in ("", None):
            rows.append({"TSPARMCD": parmcd, "TSPARM": DERIVED_TS[parmcd], "TSVAL": str(value), "TSGRPID": group})

    if dm is not None and len(dm):
        def dates(var):
            return sorted(d[:10] for d in dm.get(var, pd.Series(dtype=object)).fillna("").astype(str) if d)
        consent, start, end = dates("RFICDTC"), dates("RFSTDTC"), dates("RFPENDTC")
        derived = {"SSTDTC": (consent or start or [""])[0], "SENDTC": (end or [""])[-1],
                   "ACTSUB": int((dm.get("ARMCD", pd.Series("", index=dm.index)).fillna("") != "").sum())}
        for parmcd, value in derived.items():
            if parmcd not in given:
                add(parmcd, value)
        if "FCNTRY" not in given:
            for country in sorted(set(dm.get("COUNTRY", pd.Series(dtype=object)).fillna("")) - {""}):
                add("FCNTRY", country)
    if "DOSE" not in given:
        for arm in study.arms:
            for dose in arm.doses:
                add("DOSE", f"{dose:g}", arm.armcd)
            if arm.dose_unit:
                add("DOSU", arm.dose_unit, arm.armcd)
    ts = pd.DataFrame(rows, columns=["TSPARMCD", "TSPARM", "TSVAL", "TSGRPID"])
    ts.insert(0, "DOMAIN", "TS")
    ts.insert(0, "STUDYID", study.studyid)
    ts["TSSEQ"] = (ts.groupby("TSPARMCD").cumcount() + 1).astype(float)
    if (ts["TSGRPID"] == "").all():
        ts = ts.drop(columns="TSGRPID")
    return ts


def related_records(study: StudyConfig, domains: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """RELREC at dataset level: one record per domain of each declared relationship (USUBJID and
    IDVARVAL empty, RELTYPE ONE or MANY), for domains that were written with their link variable.
    A relationship whose domains are not all there is left out."""
    rows = []
    for rel in study.relationships:
        if all(link.domain in domains and link.idvar in domains[link.domain].columns for link in rel.link):
            rows += [{"STUDYID": study.studyid, "RDOMAIN": link.domain, "USUBJID": "", "IDVAR": link.idvar,
                      "IDVARVAL": "", "RELTYPE": link.reltype, "RELID": rel.relid} for link in rel.link]
    return pd.DataFrame(rows, columns=["STUDYID", "RDOMAIN", "USUBJID", "IDVAR", "IDVARVAL", "RELTYPE", "RELID"])


def trial_elements(study: StudyConfig) -> pd.DataFrame:
    """TE: one record per element with its start and end rules."""
    return pd.DataFrame([{"STUDYID": study.studyid, "DOMAIN": "TE", "ETCD": e.etcd, "ELEMENT": e.element,
                          "TESTRL": e.testrl, "TEENRL": e.teenrl, "TEDUR": e.tedur} for e in study.elements])


def trial_arms(study: StudyConfig) -> pd.DataFrame:
    """TA: every arm runs through the same elements in order (dose escalation, no branches)."""
    rows = []
    for arm in study.arms:
        for order, e in enumerate(study.elements, start=1):
            rows.append({"STUDYID": study.studyid, "DOMAIN": "TA", "ARMCD": arm.armcd, "ARM": arm.arm,
                         "TAETORD": float(order), "ETCD": e.etcd, "ELEMENT": e.element, "TABRANCH": "",
                         "TATRANS": "", "EPOCH": e.epoch})
    return pd.DataFrame(rows)


def trial_visits(study: StudyConfig) -> pd.DataFrame:
    """TV: planned visits with their windows as start/end rules (same for every arm)."""
    return pd.DataFrame([{
        "STUDYID": study.studyid, "DOMAIN": "TV", "VISITNUM": float(v.visitnum), "VISIT": v.visit,
        "VISITDY": float(v.day), "ARMCD": "", "ARM": "",
        "TVSTRL": f"Study day {v.window[0]} (planned day {v.day}; window day {v.window[0]} to {v.window[1]})",
        "TVENRL": f"Study day {v.window[1]}",
    } for v in study.visits])


def subject_elements(dm: pd.DataFrame, study: StudyConfig) -> pd.DataFrame:
    """SE: each subject's elements; an element starts where its rule says (a DM date plus an
    offset) and ends where the next one starts, or at the end of participation (RFPENDTC).
    Elements that would start after the end of participation are not entered.

    >>> from cdisc_convert.spec import load_study_config; from pathlib import Path
    >>> study = load_study_config(Path("mappings/nct05948982/study.yaml"))
    >>> dm = pd.DataFrame({"STUDYID": ["S"], "USUBJID": ["S-1"], "RFICDTC": ["2024-01-02"],
    ...     "RFXSTDTC": ["2024-01-10T10:00"], "RFXENDTC": ["2024-03-06T10:00"], "RFPENDTC": ["2024-03-20"]})
    >>> subject_elements(dm, study)[["ETCD", "SESTDTC", "SEENDTC"]].values.tolist()
    [['SCRN', '2024-01-02', '2024-01-10T10:00'], ['TRT', '2024-01-10T10:00', '2024-03-20']]
    """
    def column(name: str) -> list[str]:
        return as_text(dm[name]).tolist() if name in dm.columns else [""] * len(dm)

    element_starts = []  # per element, every subject's start (dates computed per column, not per subject)
    for e in study.elements:
        start = pd.Series(column(e.start), index=dm.index, dtype=object)
        if e.start_offset_days:
            date = derive.dtc_date(start)
            shifted = (date + pd.Timedelta(days=e.start_offset_days)).dt.strftime("%Y-%m-%d")
            start = shifted.where(date.notna() & (start != ""), "").astype(object)
        element_starts.append(start.tolist())
    rows = []
    for i, (studyid, usubjid, end_all) in enumerate(zip(column("STUDYID"), column("USUBJID"), column("RFPENDTC"))):
        starts = [(order, e, element_starts[order - 1][i]) for order, e in enumerate(study.elements, start=1)]
        starts = [s for s in starts if s[2] and (not end_all or s[2][:10] <= end_all[:10])]
        for k, (order, e, start) in enumerate(starts):
            end = starts[k + 1][2] if k + 1 < len(starts) else end_all
            rows.append({"STUDYID": studyid, "DOMAIN": "SE", "USUBJID": usubjid, "ETCD": e.etcd,
                         "ELEMENT": e.element, "TAETORD": float(order), "EPOCH": e.epoch, "SESTDTC": start,
                         "SEENDTC": end})
    se = pd.DataFrame(rows, columns=["STUDYID", "DOMAIN", "USUBJID", "ETCD", "ELEMENT", "TAETORD", "EPOCH",
                                     "SESTDTC", "SEENDTC"])
    return se


def subject_visits(domains: dict[str, pd.DataFrame], visits_by_num: dict[float, int]) -> pd.DataFrame:
    """SV: one record per subject and visit found in any mapped domain, spanning the earliest to
    the latest collection date of that visit; unscheduled visits get SVUPDES.

    >>> lb = pd.DataFrame({"STUDYID": ["S"] * 3, "USUBJID": ["1"] * 3, "VISITNUM": [3.0, 3.0, 6.01],
    ...                    "VISIT": ["DAY 1", "DAY 1", "UNSCHEDULED 6.01"], "LBDTC": ["2024-01-02T08:00", "2024-01-02", "2024-01-12"]})
    >>> subject_visits({"LB": lb}, {3.0: 1})[["VISITNUM", "SVSTDTC", "SVENDTC", "SVUPDES"]].values.tolist()
    [[3.0, '2024-01-02', '2024-01-02', ''], [6.01, '2024-01-12', '2024-01-12', 'Unscheduled visit']]
    """
    parts = []
    for name, frame in domains.items():
        dtc = next((c for c in (f"{name}DTC", f"{name}STDTC") if c in frame.columns), None)
        if dtc is None or "VISITNUM" not in frame.columns or frame["VISITNUM"].isna().all():
            continue
        visit = frame["VISIT"] if "VISIT" in frame.columns else pd.Series("", index=frame.index)
        part = frame[["STUDYID", "USUBJID", "VISITNUM"]].assign(VISIT=visit, _date=frame[dtc].fillna("").str.slice(0, 10))
        parts.append(part[(part["_date"].str.len() == 10) & part["VISITNUM"].notna()])
    if not parts:
        return pd.DataFrame()
    allv = pd.concat(parts, ignore_index=True)
    # earliest and latest date as integer ranks of the sorted distinct dates (a string min/max is slow)
    rank, dates = pd.factorize(allv["_date"], sort=True)
    sv = allv.assign(_date=rank).groupby(["STUDYID", "USUBJID", "VISITNUM", "VISIT"], as_index=False).agg(
        SVSTDTC=("_date", "min"), SVENDTC=("_date", "max"))
    dates = np.asarray(dates, dtype=object)
    sv["SVSTDTC"], sv["SVENDTC"] = dates[sv["SVSTDTC"].to_numpy()], dates[sv["SVENDTC"].to_numpy()]
    sv.insert(1, "DOMAIN", "SV")
    sv["SVUPDES"] = ["" if v in visits_by_num else "Unscheduled visit" for v in sv["VISITNUM"]]
    return sv.sort_values(["USUBJID", "VISITNUM"], kind="stable").reset_index(drop=True)
