"""The validator: controlled terminology, visit windows and conformance over any folder of SDTM or
ADaM datasets (XPT or Dataset-JSON), with machine-readable results and an exit code for CI.

``validate_folder(folder, ...)`` loads the datasets, runs every rule of the catalogue
(``validation/rules.yaml``, checks in :mod:`cdisc_convert.validate.checks`), applies accepted
findings and a baseline, and returns a :class:`ValidationResult`; :mod:`.report` writes it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from lxml import etree
from ruamel.yaml import YAML

from ..errors import ConversionError
from ..metadata import Terminology, load_sdtmig, load_terminology
from ..text import as_text
from .checks import CHECKS as _FIELD_CHECKS, FINDING, Context, DefineFacts
from .consistency import CHECKS as _CONSISTENCY_CHECKS
from .adam import CHECKS as _ADAM_CHECKS

CATALOGUE = Path(__file__).parent.parent / "resources" / "rules.yaml"  # validation/rules.yaml, shipped in the package
SEVERITY_RANK = {"info": 0, "warning": 1, "error": 2}
CHECKS = {**_FIELD_CHECKS, **_CONSISTENCY_CHECKS, **_ADAM_CHECKS}
NS = {"odm": "http://www.cdisc.org/ns/odm/v1.3", "def": "http://www.cdisc.org/ns/def/v2.1"}


@dataclass
class ValidationResult:
    folder: Path
    kind: str
    findings: pd.DataFrame
    rules: list[dict]
    datasets: dict[str, int]
    ct_source: str
    windows: pd.DataFrame | None
    visit_days: pd.DataFrame | None  # for the window picture: VISITNUM, VISIT, day

    def count(self, severity: str) -> int:
        active = self.findings[self.findings["status"] != "accepted"] if len(self.findings) else self.findings
        return int((active["severity"] == severity).sum()) if len(active) else 0

    def exit_code(self, fail_on: str | None) -> int:
        if not fail_on or not len(self.findings):
            return 0
        active = self.findings[(self.findings["status"] != "accepted") & (self.findings["status"] != "fixed")]
        worst = active["severity"].map(SEVERITY_RANK).max() if len(active) else -1
        return 1 if worst >= SEVERITY_RANK[fail_on] else 0


def load_catalogue(path: Path = CATALOGUE) -> list[dict]:
    rules = YAML(typ="safe").load(path.read_text())["rules"]
    unknown = [r["check"] for r in rules if r["check"] not in CHECKS]
    if unknown:
        raise ConversionError(f"rule catalogue names an unknown check '{unknown[0]}'", spec=str(path))
    return rules


def load_datasets(folder: Path) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, str]], dict[str, dict[str, int]]]:
    """Datasets (XPT, else Dataset-JSON) of a folder with their variable labels and storage widths."""
    from ..writers import read_xpt

    folder = Path(folder)
    single = folder.is_file() and folder.suffix.lower() in (".xpt", ".json")  # one dataset file
    if not folder.is_dir() and not single:
        raise ConversionError("dataset folder (or .xpt / .json file) not found", source=str(folder))
    frames, labels, widths = {}, {}, {}
    xpts = [folder] if single and folder.suffix.lower() == ".xpt" else \
        [] if single else sorted(folder.glob("*.xpt"))
    for path in xpts:
        xpt = read_xpt(path)
        frames[xpt.name], labels[xpt.name], widths[xpt.name] = xpt.data, xpt.labels, xpt.widths
    if not xpts:
        for path in [folder] if single else sorted(folder.glob("*.json")):
            try:
                doc = json.loads(path.read_text())
                columns = [c["name"] for c in doc["columns"]]
            except (ValueError, KeyError, TypeError) as exc:
                raise ConversionError(f"not a Dataset-JSON file (no {exc} of columns)" if isinstance(exc, KeyError)
                                      else f"unreadable Dataset-JSON file: {exc}", source=path.name) from None
            frame = pd.DataFrame(doc["rows"], columns=columns)
            for c in doc["columns"]:
                if c["dataType"] in ("string", "date", "datetime"):
                    frame[c["name"]] = as_text(frame[c["name"]])
                else:
                    frame[c["name"]] = pd.to_numeric(frame[c["name"]], errors="coerce").astype(float)
            name = doc.get("name", path.stem).upper()
            frames[name], labels[name] = frame, {c["name"]: c.get("label", "") for c in doc["columns"]}
            widths[name] = {c["name"]: c.get("length") for c in doc["columns"] if c.get("length")}
    if not frames:
        raise ConversionError("no datasets (.xpt or Dataset-JSON .json) in the folder", source=str(folder))
    return frames, labels, widths


def read_define_facts(path: Path) -> DefineFacts:
    try:
        doc = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True))
    except (OSError, etree.XMLSyntaxError) as exc:
        raise ConversionError(f"unreadable define.xml: {exc}", source=str(path)) from None
    codelists = {cl.get("OID"): cl for cl in doc.iterfind(".//odm:CodeList", NS)}
    datasets = {g.get("Name"): g.get("OID") for g in doc.iterfind(".//odm:ItemGroupDef", NS)}
    variables, bindings, roles, datatypes, keys = {}, {}, {}, {}, {}
    items = {it.get("OID"): it for it in doc.iterfind(".//odm:ItemDef", NS)}
    for g in doc.iterfind(".//odm:ItemGroupDef", NS):
        for ref in g.iterfind("odm:ItemRef", NS):
            it = items.get(ref.get("ItemOID"))
            if it is None:
                continue
            if ref.get("KeySequence"):
                keys.setdefault(g.get("Name"), []).append((int(ref.get("KeySequence")), it.get("Name")))
            roles[(g.get("Name"), it.get("Name"))] = ref.get("Role") or ""
            datatypes[(g.get("Name"), it.get("Name"))] = it.get("DataType") or ""
            label = it.findtext("odm:Description/odm:TranslatedText", default="", namespaces=NS)
            variables[(g.get("Name"), it.get("Name"))] = (label, int(it.get("Length")) if it.get("Length") and
                                                          it.get("DataType") == "text" else None)
            cref = it.find("odm:CodeListRef", NS)
            if cref is not None:
                bindings[(g.get("Name"), it.get("Name"))] = cref.get("CodeListOID").removeprefix("CL.")
    terms, extended = {}, {}
    for oid, cl in codelists.items():
        items = [*cl.iterfind("odm:CodeListItem", NS), *cl.iterfind("odm:EnumeratedItem", NS)]
        terms[oid.removeprefix("CL.")] = {i.get("CodedValue") for i in items}
        extended[oid.removeprefix("CL.")] = {i.get("CodedValue") for i in items
                                             if i.get(f"{{{NS['def']}}}ExtendedValue") == "Yes"}
    standard = doc.find(".//def:Standard[@Type='IG']", NS)
    return DefineFacts(datasets, variables, bindings, terms, extended, roles, datatypes,
                       standard.get("Name") if standard is not None else "",
                       {name: [v for _, v in sorted(pairs)] for name, pairs in keys.items()})


def planned_windows(tv: pd.DataFrame | None) -> pd.DataFrame | None:
    """Planned visits with their windows from TV: ``window day X to Y`` in TVSTRL, else VISITDY exactly."""
    if tv is None or "VISITNUM" not in tv.columns:
        return None
    rule = as_text(tv.get("TVSTRL", pd.Series("", index=tv.index)))
    found = rule.str.extract(r"window day (-?\d+) to (-?\d+)", flags=re.IGNORECASE).astype(float)
    day = tv["VISITDY"].astype(float) if "VISITDY" in tv.columns else pd.Series(np.nan, index=tv.index)
    return pd.DataFrame({"VISITNUM": tv["VISITNUM"].astype(float), "VISIT": as_text(tv.get("VISIT", "")),
                         "VISITDY": day, "low": found[0].fillna(day), "high": found[1].fillna(day)}) \
        .drop_duplicates("VISITNUM")


def _key(frame: pd.DataFrame) -> pd.Series:
    return (frame["rule"] + "|" + frame["dataset"] + "|" + frame["variable"] + "|" + frame["usubjid"].astype(str) + "|"
            + frame["value"].astype(str) + "|" + frame["record"].astype(str))


def apply_accepted(found: pd.DataFrame, accepted_file: Path | None) -> pd.DataFrame:
    """Accepted findings (rule, dataset, variable, value, justification) are kept but silenced."""
    found = found.assign(status="new", justification="")
    if accepted_file is None:
        return found
    if not Path(accepted_file).exists():
        raise ConversionError("accepted-findings file not found", source=str(accepted_file))
    entries = YAML(typ="safe").load(Path(accepted_file).read_text()) or []
    entries = entries.get("accepted", entries) if isinstance(entries, dict) else entries
    for i, e in enumerate(entries, start=1):
        if not str(e.get("justification", "")).strip():
            raise ConversionError("an accepted finding needs a written justification", source=f"{accepted_file} entry {i}")
        mask = found["rule"] == e["rule"]
        for col in ("dataset", "variable", "value"):
            if e.get(col) not in (None, "*"):
                mask &= found[col].astype(str) == str(e[col])
        found.loc[mask, "status"] = "accepted"
        found.loc[mask, "justification"] = str(e["justification"])
    return found


def apply_baseline(found: pd.DataFrame, baseline: Path | None) -> pd.DataFrame:
    """Mark findings new or persisting against the last report; add the fixed ones."""
    if baseline is None:
        return found
    try:
        last = pd.DataFrame(json.loads(Path(baseline).read_text())["findings"])
    except (OSError, ValueError, KeyError) as exc:
        raise ConversionError(f"unreadable baseline report: {exc}", source=str(baseline)) from None
    if last.empty:
        return found
    last = last[last.get("status", "new") != "fixed"] if "status" in last.columns else last
    now_keys = set(_key(found)) if len(found) else set()
    last_keys = _key(last)
    persisting = _key(found).isin(set(last_keys)) if len(found) else pd.Series(dtype=bool)
    if len(found):
        found.loc[persisting & (found["status"] != "accepted"), "status"] = "persisting"
    fixed = last[~last_keys.isin(now_keys)].assign(status="fixed")
    return pd.concat([found, fixed[[c for c in found.columns if c in fixed.columns]]], ignore_index=True)


def in_memory(datasets) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, str]], dict[str, dict[str, int]]]:
    """Datasets a run has just written (writers.Dataset), in the form :func:`load_datasets` gives."""
    frames = {n: d.data for n, d in datasets.items()}
    labels = {n: dict(d.labels) for n, d in datasets.items()}
    widths = {n: dict(d.text_facts()[1]) for n, d in datasets.items()}  # measured once, by the XPT checks
    return frames, labels, widths


def validate_folder(folder: Path, define: Path | None = None, ct=None, study_dir: Path | None = None,
                    accepted: Path | None = None, baseline: Path | None = None,
                    reference_folder: Path | None = None, preloaded=None, reference_preloaded=None
                    ) -> ValidationResult:
    """Run every rule over the datasets of ``folder`` (or over ``preloaded`` ones written there).

    ``ct``: a :class:`Terminology`, or CT package path(s) to use instead of the bundled release;
    the study's ``terminology.yaml`` (``study_dir``) declares its sponsor codelists and extensions."""
    folder = Path(folder)
    if preloaded is None and (folder / "manifest.json").is_file() and (folder / "sdtm").is_dir():
        folder = folder / "sdtm"  # the output folder of `run`: its SDTM datasets are in sdtm/
    frames, labels, widths = preloaded if preloaded is not None else load_datasets(folder)
    kind = "ADAM" if any(n.startswith("AD") for n in frames) and "DM" not in frames else "SDTM"
    codelists = ct if isinstance(ct, Terminology) else load_terminology(ct, study_dir)
    ct_source = codelists.version + (f" + {codelists.study_file}" if codelists.study_file else "")
    define_path = Path(define) if define else (folder / "define.xml" if (folder / "define.xml").exists() else None)
    facts = read_define_facts(define_path) if define_path else None
    reference = {}
    if reference_folder is not None and reference_preloaded is None and not Path(reference_folder).is_dir():
        raise ConversionError("SDTM folder not found", source=str(reference_folder))
    ref_folder = reference_folder or (folder.parent / "sdtm" if kind == "ADAM" else None)
    if kind == "ADAM" and (reference_preloaded is not None or (ref_folder and ref_folder.is_dir())):
        ref_frames = reference_preloaded[0] if reference_preloaded is not None else load_datasets(ref_folder)[0]
        reference = ref_frames  # DM/TA/TV for dates and windows, EX for treatment dates, all for lineage
    ctx = Context(frames, kind, codelists, load_sdtmig(), labels, widths, facts,
                  planned_windows(frames.get("TV", reference.get("TV"))), reference=reference, folder=folder)
    if study_dir is not None:
        ctx.adam_windows = adam_windows_of(Path(study_dir))
        ctx.spec_codelists = spec_codelists_of(Path(study_dir))
        if kind == "ADAM":
            ctx.adam_keys, ctx.trtemfl_windows = adam_keys_and_windows_of(Path(study_dir))
    if facts is not None and kind == "ADAM":
        ctx.adam_keys.update(facts.keys)
    rules = load_catalogue()
    parts = []
    for rule in rules:
        parts.extend(p for p in CHECKS[rule["check"]](ctx, rule) if len(p))
    found = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=FINDING)
    found = found.sort_values(["dataset", "rule", "record", "variable"], kind="stable").reset_index(drop=True)
    found["record"] = found["record"].astype(int)
    found["visit"] = _visits_of(found, frames)
    found = apply_baseline(apply_accepted(found, accepted), baseline)
    visit_days = _visit_days(ctx)
    return ValidationResult(folder, kind, found, rules, {n: len(f) for n, f in frames.items()}, ct_source,
                            ctx.windows, visit_days)


def _visits_of(found: pd.DataFrame, frames: dict[str, pd.DataFrame]) -> pd.Series:
    """The VISIT (or AVISIT) of each finding's record, for grouping repeated findings."""
    visit = pd.Series("", index=found.index, dtype=object)
    for name, rows in found[found["record"] > 0].groupby("dataset"):
        frame = frames.get(name)
        col = next((c for c in ("VISIT", "AVISIT") if frame is not None and c in frame.columns), None)
        if col is not None:
            at = rows["record"].to_numpy() - 1
            ok = at < len(frame)
            visit[rows.index[ok]] = as_text(frame[col]).to_numpy()[at[ok]]
    return visit


def adam_windows_of(study_dir: Path) -> dict[str, list]:
    """Analysis windows declared in the study's ADaM specs, by dataset."""
    from ..adam.spec import Windows, load_adam_specs

    out = {}
    for spec in load_adam_specs(study_dir / "adam"):
        for step in spec.steps:
            if isinstance(step, Windows):
                out[spec.dataset] = step.windows
    return out


def adam_keys_and_windows_of(study_dir: Path) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Keys of the study's ADaM specs, and the treatment-emergence window of their trtemfl steps."""
    from ..adam.spec import Trtemfl, load_adam_specs

    keys, windows = {}, {}
    for spec in load_adam_specs(study_dir / "adam"):
        keys[spec.dataset] = list(spec.keys)
        for step in spec.steps:
            if isinstance(step, Trtemfl):
                windows[spec.dataset] = step.window
    return keys, windows


def spec_codelists_of(study_dir: Path) -> dict[tuple[str, str], str]:
    """Codelists the SDTM specs bind variables to (``codelist:`` on a rule, or a metadata override)."""
    from ..sdtm.engine import load_specs

    out = {}
    for spec in load_specs(study_dir):
        for var, rule in spec.variables.items():
            if rule.codelist:
                out[(spec.domain, var)] = rule.codelist
        for var, meta in spec.metadata.items():
            if meta.codelist:
                out[(spec.domain, var)] = meta.codelist
        by_test = {t.testcd: t.codelist for s in spec.sources for t in s.tests or [] if t.codelist}
        if by_test:  # value level: a test's result codelist
            out[(spec.domain, f"{spec.domain}STRESC")] = (f"{spec.domain}TESTCD", by_test)
    return out


def _visit_days(ctx: Context) -> pd.DataFrame | None:
    """Actual study day of every scheduled visit (from SV), for the window picture."""
    sv = ctx.datasets.get("SV")
    if sv is None or ctx.windows is None or "SVSTDY" not in sv.columns:
        return None
    planned = sv[sv["VISITNUM"].isin(set(ctx.windows["VISITNUM"]))]
    return planned[["USUBJID", "VISITNUM", "VISIT", "SVSTDY"]].rename(columns={"SVSTDY": "day"})
