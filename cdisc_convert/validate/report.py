"""Validation reports: report.json and report.csv (findings as records), junit.xml (one test
case per rule and dataset) and report.html (one self-contained page: summary by rule and
dataset, a filterable findings table, and a picture of each visit's actual study days against
its window).
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
from lxml import etree

from . import ValidationResult

COLUMNS = ["rule", "severity", "dataset", "variable", "record", "usubjid", "value", "message", "days_out", "status",
           "justification"]


def _records(found: pd.DataFrame) -> list[dict]:
    out = []
    for row in found[COLUMNS].itertuples(index=False):
        rec = dict(zip(COLUMNS, row))
        rec["record"] = int(rec["record"])
        rec["days_out"] = None if rec["days_out"] is None or (isinstance(rec["days_out"], float) and np.isnan(rec["days_out"])) \
            else float(rec["days_out"])
        out.append(rec)
    return out


def summary(result: ValidationResult) -> dict:
    found = result.findings
    active = found[~found["status"].isin(["accepted", "fixed"])] if len(found) else found
    by_rule = active.groupby(["rule", "severity"]).size().reset_index(name="n") if len(active) else pd.DataFrame()
    return {
        "folder": str(result.folder), "kind": result.kind, "ct": result.ct_source,
        "datasets": result.datasets,
        "counts": {s: result.count(s) for s in ("error", "warning", "info")},
        "by_status": found["status"].value_counts().to_dict() if len(found) else {},
        "by_rule": {f"{r.rule}": int(r.n) for r in by_rule.itertuples()} if len(by_rule) else {},
    }


def write_json(result: ValidationResult, path: Path) -> None:
    doc = {"summary": summary(result),
           "rules": [{k: r[k] for k in ("id", "severity", "description", "applies_to", "equivalent") if k in r}
                     for r in result.rules],
           "findings": _records(result.findings)}
    path.write_text(json.dumps(doc, indent=1, sort_keys=False, default=str) + "\n")


def write_csv(result: ValidationResult, path: Path) -> None:
    result.findings[COLUMNS].to_csv(path, index=False, lineterminator="\n")


def write_junit(result: ValidationResult, path: Path) -> None:
    """One testsuite per rule; one testcase per dataset checked; failures list the findings."""
    found = result.findings
    active = found[~found["status"].isin(["accepted", "fixed"])] if len(found) else found
    suites = etree.Element("testsuites", name="cdisc_convert validation")
    for rule in result.rules:
        mine = active[active["rule"] == rule["id"]] if len(active) else active
        suite = etree.SubElement(suites, "testsuite", name=rule["id"], tests=str(len(result.datasets)),
                                 failures=str(mine["dataset"].nunique() if rule["severity"] != "info" and len(mine) else 0))
        for dataset in sorted(result.datasets):
            case = etree.SubElement(suite, "testcase", classname=rule["id"], name=dataset)
            rows = mine[mine["dataset"] == dataset] if len(mine) else mine
            if len(rows) and rule["severity"] != "info":
                failure = etree.SubElement(case, "failure", type=rule["severity"],
                                           message=f"{len(rows)} finding(s): {rule['description']}")
                failure.text = "\n".join(f"record {r.record} {r.variable}={r.value}: {r.message}"
                                         for r in rows.head(200).itertuples())
    path.write_bytes(etree.tostring(suites, pretty_print=True, xml_declaration=True, encoding="utf-8"))


def window_svg(result: ValidationResult) -> str:
    """Each planned visit as a row: its window as a band, the planned day as a tick, every
    subject's actual study day as a dot (red when outside the window)."""
    if result.windows is None or result.visit_days is None or result.visit_days.empty:
        return "<p>No subject visits with planned windows to show.</p>"
    w = result.windows.sort_values("VISITNUM").reset_index(drop=True)
    days = result.visit_days
    lo = min(w["low"].min(), days["day"].min()) - 5
    hi = max(w["high"].max(), days["day"].max()) + 5
    width, row_h, left = 900, 18, 110

    def x(d):
        return left + (float(d) - lo) / (hi - lo) * (width - left - 10)

    parts = [f'<svg id="window-picture" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{row_h * len(w) + 30}" font-family="sans-serif" font-size="11">']
    for i, v in w.iterrows():
        y = 10 + i * row_h
        parts.append(f'<text x="4" y="{y + 11}">{html.escape(v["VISIT"])}</text>')
        parts.append(f'<rect x="{x(v["low"]):.1f}" y="{y + 2}" width="{max(2.0, x(v["high"]) - x(v["low"])):.1f}" '
                     f'height="{row_h - 6}" fill="#cfe0f5"/>')
        parts.append(f'<line x1="{x(v["VISITDY"]):.1f}" x2="{x(v["VISITDY"]):.1f}" y1="{y}" y2="{y + row_h - 2}" '
                     f'stroke="#1b4f9c"/>')
        mine = days[days["VISITNUM"] == v["VISITNUM"]]
        for d in mine["day"].dropna():
            out = d < v["low"] or d > v["high"]
            parts.append(f'<circle cx="{x(d):.1f}" cy="{y + row_h / 2:.1f}" r="{4 if out else 2.5}" '
                         f'fill="{"#d62728" if out else "#333"}" fill-opacity="0.7"><title>day {d:g}</title></circle>')
    axis_y = 10 + len(w) * row_h + 12
    for tick in np.linspace(lo, hi, 9):
        parts.append(f'<text x="{x(tick):.1f}" y="{axis_y}" text-anchor="middle">{tick:.0f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_html(result: ValidationResult, path: Path) -> None:
    s = summary(result)
    found = result.findings
    rule_rows = "".join(
        f"<tr><td>{html.escape(r['id'])}</td><td>{r['severity']}</td><td>{html.escape(r['description'])}</td>"
        f"<td>{s['by_rule'].get(r['id'], 0)}</td></tr>" for r in result.rules)
    by_dataset = found.groupby(["dataset", "severity"]).size().unstack(fill_value=0) if len(found) else pd.DataFrame()
    ds_rows = "".join(f"<tr><td>{html.escape(d)}</td><td>{n}</td>" + "".join(
        f"<td>{int(by_dataset.loc[d, sev]) if d in by_dataset.index and sev in by_dataset.columns else 0}</td>"
        for sev in ("error", "warning", "info")) + "</tr>" for d, n in sorted(result.datasets.items()))
    grouped_rows = ""
    if len(found):
        keys = ["rule", "severity", "dataset", "usubjid", "visit"] if "visit" in found.columns else \
            ["rule", "severity", "dataset", "usubjid"]
        groups = found.groupby(keys, sort=True, dropna=False).agg(
            count=("record", "size"), variables=("variable", lambda v: ", ".join(sorted(set(map(str, v))))),
            message=("message", "first"), records=("record", lambda r: ", ".join(map(str, list(r)[:10]))
                                                   + (" ..." if len(r) > 10 else ""))).reset_index()
        groups = groups.sort_values(["count"], ascending=False, kind="stable").head(5000)
        grouped_rows = "".join(
            "<tr class='sev-{}'>".format(g.severity) + "".join(f"<td>{html.escape(str(getattr(g, k, '')))}</td>" for k in (
                "rule", "severity", "dataset", "usubjid", "visit", "variables", "count", "records", "message")) + "</tr>"
            for g in groups.itertuples())
    shown = found.head(20000)
    finding_rows = "".join(
        "<tr class='sev-{}'>".format(r.severity) + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            r.rule, r.severity, r.dataset, r.variable, r.record, r.usubjid, r.value, r.message, r.status)) + "</tr>"
        for r in shown.itertuples())
    more = f"<p>Showing the first {len(shown)} of {len(found)} findings; all are in report.csv.</p>" \
        if len(found) > len(shown) else ""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Validation report</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #bbb; padding: 3px 6px; font-size: 90%; text-align: left; vertical-align: top; }}
th {{ background: #e8eef6; }}
.sev-error td:nth-child(2) {{ color: #b00; font-weight: bold; }}
.sev-warning td:nth-child(2) {{ color: #a60; }}
#filter {{ width: 30em; padding: 4px; margin-bottom: 6px; }}
</style></head><body>
<h1>Validation report</h1>
<p>{html.escape(s['folder'])} ({s['kind']}); controlled terminology: {html.escape(s['ct'])}.
<strong>{s['counts']['error']}</strong> errors, <strong>{s['counts']['warning']}</strong> warnings,
{s['counts']['info']} notes (accepted and fixed findings not counted).</p>
<h2>By rule</h2>
<table id="rules"><tr><th>Rule</th><th>Severity</th><th>Description</th><th>Findings</th></tr>{rule_rows}</table>
<h2>By dataset</h2>
<table id="datasets"><tr><th>Dataset</th><th>Records</th><th>Errors</th><th>Warnings</th><th>Notes</th></tr>{ds_rows}</table>
<h2>Visit windows</h2>
<p>Each row is a planned visit: the band is its window, the line its planned day, each dot a subject's actual study
day (red: outside the window).</p>
{window_svg(result)}
<h2>Findings grouped by rule, subject and visit</h2>
<p>Findings that repeat (the same rule for one subject at one visit) are one row with their count.</p>
<table id="grouped"><thead><tr><th>Rule</th><th>Severity</th><th>Dataset</th><th>USUBJID</th><th>Visit</th>
<th>Variables</th><th>Count</th><th>Records</th><th>First message</th></tr></thead><tbody>{grouped_rows}</tbody></table>
<h2>Findings</h2>
<input id="filter" placeholder="Filter findings (rule, dataset, subject, text...)" oninput="filterRows()">
{more}
<table id="findings"><thead><tr><th>Rule</th><th>Severity</th><th>Dataset</th><th>Variable</th><th>Record</th>
<th>USUBJID</th><th>Value</th><th>Message</th><th>Status</th></tr></thead><tbody>{finding_rows}</tbody></table>
<script>
function filterRows() {{
  var q = document.getElementById('filter').value.toLowerCase();
  document.querySelectorAll('#findings tbody tr').forEach(function (tr) {{
    tr.style.display = tr.textContent.toLowerCase().indexOf(q) >= 0 ? '' : 'none';
  }});
}}
</script>
</body></html>
"""
    path.write_text(page, encoding="utf-8")


def write_reports(result: ValidationResult, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(result, out_dir / "report.json")
    write_csv(result, out_dir / "report.csv")
    write_junit(result, out_dir / "junit.xml")
    write_html(result, out_dir / "report.html")
    return out_dir
