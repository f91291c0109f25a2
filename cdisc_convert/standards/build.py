"""Regenerate the product's compact copy of the CDISC standards from the published files.

Run from the repository root (the published files are read, never needed at run time):

    python3 -m cdisc_convert.standards.build ../shared/standards

It writes, next to this file:

- ``sdtmig-3.4.json``: every SDTMIG v3.4 dataset (class, label, structure) and variable (order,
  label, type, core, role, codelist NCI codes, described value domain, value list);
- ``adamig-1.3.json``: the ADaMIG v1.3 structures ADSL, BDS and TTE, plus ADaM ADAE v1.0 (OCCDS);
- ``ct/sdtm-ct-DATE.json`` and ``ct/adam-ct-DATE.json``: every codelist of the CT packages with its
  NCI code, short name, name, extensibility and terms (NCI code, submission value, synonyms).

Definitions and notes are left out (they are what makes the published files large). Every file is
one JSON object with one dataset, variable or codelist a line, so a new release is a readable diff.
The output depends only on the input files: rerunning gives the same bytes.
tests/test_standards.py compares these files with ../shared/standards entry by entry.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _rows(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return [{k: (v or "").strip() for k, v in row.items()} for row in csv.DictReader(fh, delimiter=delimiter)]


def _codes(text: str) -> list[str]:
    return [c.strip() for c in re.split(r"[;,]", text) if c.strip()]


def sdtmig_from(folder: Path) -> dict:
    """SDTMIG datasets and variables from the CDISC Library CSV export (variables + datasets)."""
    datasets = _rows(next(folder.glob("*sdtmig*datasets*.csv")))
    variables = _rows(next(folder.glob("*sdtmig*variables*.csv")))
    version = datasets[0]["Version"].replace("SDTMIG v", "")
    out = []
    for d in datasets:
        name = d["Dataset Name"]
        vs = sorted((v for v in variables if v["Dataset Name"] == name), key=lambda v: int(v["Variable Order"]))
        out.append({"name": name, "label": d["Dataset Label"], "class": d["Class"], "structure": d["Structure"],
                    "variables": [[v["Variable Name"], v["Variable Label"], v["Type"], v["Core"], v["Role"],
                                   _codes(v["CDISC CT Codelist Code(s)"]), v["Described Value Domain(s)"],
                                   v["Value List"]] for v in vs]})
    return {"standard": "SDTMIG", "version": version,
            "columns": ["name", "label", "type", "core", "role", "codelists", "described", "value_list"],
            "datasets": out}


ADAM_STRUCTURES = {"Subject-Level Analysis Dataset": "ADSL", "Basic Data Structure": "BDS",
                   "Basic Data Structure Time-to-Event": "TTE", "Adverse Event Analysis Dataset": "ADAE"}


def adamig_from(folder: Path) -> dict:
    """ADaMIG structures (ADSL, BDS, TTE) and ADAE (OCCDS) variables from the CDISC Library CSVs."""
    files = sorted(folder.glob("*.csv"))
    ig = next(f for f in files if "adamig" in f.name and "variables" in f.name)
    rows = _rows(ig) + [r for f in files if "adae" in f.name for r in _rows(f)]
    structures: dict[str, list] = {}
    for r in rows:
        name = ADAM_STRUCTURES[r["Data Structure Name"]]
        structures.setdefault(name, []).append(
            [r["Variable Name"], r["Variable Label"], r["Type"], r["Core"], r["Variable Set"],
             _codes(r["CDISC CT Codelist Code(s)"]), r["Described Value Domain(s)"]])
    version = rows[0]["Version"].replace("ADaMIG v", "")
    return {"standard": "ADaMIG", "version": version,
            "columns": ["name", "label", "type", "core", "variable_set", "codelists", "described"],
            "structures": structures}


EVS_COLUMNS = ["Code", "Codelist Code", "Codelist Extensible (Yes/No)", "Codelist Name", "CDISC Submission Value"]


def ct_from(path: Path) -> dict:
    """A CT package (NCI EVS tab-delimited text, or CDISC Library CSV) in the compact form."""
    text_head = path.read_text(encoding="utf-8-sig", errors="replace")[:2000].splitlines()[0]
    delimiter = "\t" if "\t" in text_head else ","
    rows = _rows(path, delimiter)
    if not rows or any(c not in rows[0] for c in EVS_COLUMNS):
        raise ValueError(f"{path.name}: not a CDISC CT package (columns {', '.join(EVS_COLUMNS)} expected)")
    date = ""
    stamp = rows[0].get("Standard and Date", "")
    found = re.findall(r"\d{4}-\d{2}-\d{2}", stamp or path.name)
    if found:
        date = found[-1]
    package = stamp.rsplit(" ", 1)[0] if stamp else ("SDTM CT" if "sdtm" in path.name.lower() else "CT")
    heads = [r for r in rows if not r["Codelist Code"]]
    terms: dict[str, list] = {}
    for r in rows:
        if r["Codelist Code"]:
            terms.setdefault(r["Codelist Code"], []).append([r["Code"], r["CDISC Submission Value"],
                                                             r["CDISC Synonym(s)"]])
    codelists = [{"code": h["Code"], "short": h["CDISC Submission Value"], "name": h["Codelist Name"],
                  "extensible": h["Codelist Extensible (Yes/No)"].lower() == "yes",
                  "terms": sorted(terms.get(h["Code"], []), key=lambda t: t[1])}
                 for h in sorted(heads, key=lambda h: h["CDISC Submission Value"])]
    return {"package": package, "date": date, "codelists": codelists}


def dumps_lines(doc: dict, list_key: str) -> str:
    """JSON with one entry of ``doc[list_key]`` a line (entries of a dict: one key a line)."""
    head = {k: v for k, v in doc.items() if k != list_key}
    body = doc[list_key]
    lines = [json.dumps(head, ensure_ascii=False, sort_keys=True)[:-1] + f', "{list_key}": ']
    if isinstance(body, dict):
        items = [f"{json.dumps(k)}: [\n" + ",\n".join(json.dumps(e, ensure_ascii=False) for e in v) + "]"
                 for k, v in body.items()]
        lines.append("{\n" + ",\n".join(items) + "}}\n")
    else:
        lines.append("[\n" + ",\n".join(json.dumps(e, ensure_ascii=False, sort_keys=True) for e in body) + "]}\n")
    return "".join(lines)


def outputs(shared: Path) -> dict[str, str]:
    """File name (relative to this folder) -> content, built from the published standards."""
    out = {"sdtmig-3.4.json": dumps_lines(sdtmig_from(shared / "sdtmig"), "datasets"),
           "adamig-1.3.json": dumps_lines(adamig_from(shared / "adamig"), "structures")}
    for path in sorted((shared / "ct").iterdir()):
        low = path.name.lower()
        if low.startswith(("sdtm", "adam")) and path.suffix in (".txt", ".csv"):
            ct = ct_from(path)
            out[f"ct/{low.split('_')[0]}-ct-{ct['date']}.json"] = dumps_lines(ct, "codelists")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate cdisc_convert/standards from the published CDISC files")
    parser.add_argument("shared", type=Path, help="folder with sdtmig/, adamig/ and ct/ (e.g. ../shared/standards)")
    args = parser.parse_args(argv)
    if not (args.shared / "sdtmig").is_dir():
        print(f"error: {args.shared}/sdtmig not found", file=sys.stderr)
        return 2
    for name, content in outputs(args.shared).items():
        target = HERE / name
        target.parent.mkdir(exist_ok=True)
        target.write_text(content, encoding="utf-8")
        print(f"wrote {target.relative_to(HERE.parent.parent)} ({len(content):,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
