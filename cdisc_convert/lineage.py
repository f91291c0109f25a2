"""Explain an output record: where each of its values came from.

A run writes ``lineage/<dataset>.csv`` (record id -> source rows and field) and
``lineage/rules.json`` (variable -> spec rules with file:line). :func:`explain_record` joins
them with the dataset itself (its Dataset-JSON) into a readable account.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from .errors import ConversionError

AUTO_RESULT_VARS = ("ORRES", "ORRESU", "STRESC", "STRESN", "STRESU", "STNRLO", "STNRHI", "NRIND", "STAT")


def describe_condition(cond: dict) -> str:
    """A spec condition in words: ``{field: X, equals: Y}`` -> ``field X is 'Y'``.

    >>> describe_condition({"any": [{"var": "ARMCD", "empty": False}, {"field": "AGE", "at_least": 18}]})
    'any of (ARMCD is not empty; field AGE at least 18)'
    """
    if "all" in cond or "any" in cond:
        kind = "all" if "all" in cond else "any"
        return f"{kind} of (" + "; ".join(describe_condition(c) for c in cond[kind]) + ")"
    if "not" in cond:
        return f"not ({describe_condition(cond['not'])})"
    subject = f"field {cond['field']}" if "field" in cond else str(cond.get("var", ""))
    if "equals" in cond:
        return f"{subject} is '{cond['equals']}'"
    if "not_equals" in cond:
        return f"{subject} is not '{cond['not_equals']}'"
    if "in" in cond:
        return f"{subject} is one of " + ", ".join(f"'{v}'" for v in cond["in"])
    if "empty" in cond:
        return f"{subject} is {'' if cond['empty'] else 'not '}empty"
    bounds = [f"at least {cond['at_least']}" if "at_least" in cond else "",
              f"at most {cond['at_most']}" if "at_most" in cond else ""]
    return f"{subject} " + " and ".join(b for b in bounds if b)


def _describe(rule: dict) -> str:
    if "field" in rule:
        extra = "".join(f", {k} " + (", ".join(f"'{a}' -> '{b}'" for a, b in rule[k].items()) if k == "map"
                                        else str(rule[k])) for k in ("map", "codelist", "upper") if k in rule)
        return f"field {rule['field']}{extra}"
    if "value" in rule:
        return f"hard-coded '{rule['value']}'"
    if "constant" in rule:
        return f"study constant {rule['constant']}"
    if "var" in rule:
        return f"copied from {rule['var']}"
    if "test" in rule:
        return f"test table attribute '{rule['test']}'"
    if "date" in rule:
        return f"ISO 8601 from date field {rule['date']}" + (f" and time field {rule['time']}" if "time" in rule else "")
    if "concat" in rule:
        return "concatenation of " + " + ".join(p if isinstance(p, str) else _describe(p) for p in rule["concat"])
    if "when" in rule:
        return "conditional (" + "; ".join(f"if {describe_condition(c['if'])} then {_describe(c['then'])}"
                                            for c in rule["when"]) + (f"; else {_describe(rule['else'])}"
                                                                      if "else" in rule else "") + ")"
    if "derive" in rule:
        params = ", ".join(f"{k} {describe_condition(v) if k == 'where' else v}" for k, v in rule.items() if k != "derive")
        return f"derivation {rule['derive']}" + (f" ({params})" if params else "")
    return json.dumps(rule)


def _text(v) -> str:
    return "" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


def _find_record(data_path: Path, dataset: str, keys: dict[str, str]) -> tuple[list[str], int, dict]:
    """Variable names, row number and values of the one Dataset-JSON record ``keys`` identify."""
    doc = json.loads(data_path.read_text())
    names = [c["name"] for c in doc["columns"]]
    unknown = [k for k in keys if k not in names]
    if unknown:
        raise ConversionError(f"{dataset} has no variable {unknown[0]}", dataset=dataset, field=unknown[0])
    hits = [i for i, r in enumerate(doc["rows"]) if all(_text(r[names.index(k)]) == v for k, v in keys.items())]
    if len(hits) != 1:
        raise ConversionError(f"{len(hits)} {dataset} records match {keys}; give keys that identify one record",
                              dataset=dataset)
    return names, hits[0], dict(zip(names, doc["rows"][hits[0]]))


def explain_adam_record(out_dir: Path, dataset: str, keys: dict[str, str]) -> str:
    """An ADaM record: its values, the SDTM records it came from (its lineage), and each of those
    explained back to the EDC rows."""
    data_path = out_dir / "adam" / f"{dataset.lower()}.json"
    lineage_path = out_dir / "adam" / "lineage" / f"{dataset.lower()}.csv"
    names, row, record = _find_record(data_path, dataset, keys)
    with lineage_path.open(newline="") as fh:
        lineage = list(csv.DictReader(fh))  # one row per record, in the dataset's order
    sources = [s for s in lineage[row].get("source", "").split(" + ") if s] if row < len(lineage) else []
    width = max(len(n) for n in names)
    lines = [f"{dataset} " + " ".join(f"{k}={v}" for k, v in keys.items()),
             "  from: " + (", ".join(sources) or "(derived, no SDTM record)")]
    lines += [f"  {n:<{width}} = {_text(record[n])}" for n in names]
    for source in sources:
        domain, _, pairs = source.partition(".")
        sdtm_keys = {"USUBJID": str(record.get("USUBJID", ""))}
        sdtm_keys.update(dict(kv.split("=", 1) for kv in pairs.split() if "=" in kv))
        if (out_dir / "sdtm" / f"{domain.lower()}.json").exists() and (out_dir / "lineage" / f"{domain.lower()}.csv").exists():
            lines.append("")
            lines += ["  " + line for line in explain_record(out_dir, domain, sdtm_keys).splitlines()]
    return "\n".join(lines)


def explain_record(out_dir: Path, dataset: str, keys: dict[str, str]) -> str:
    """Account for every value of the record that ``keys`` (e.g. USUBJID, LBSEQ) identify; an
    ADaM dataset (``adam/<name>.json`` with ``adam/lineage``) is traced through its SDTM records."""
    dataset = dataset.upper()
    if (out_dir / "adam" / f"{dataset.lower()}.json").exists() and \
            (out_dir / "adam" / "lineage" / f"{dataset.lower()}.csv").exists():
        return explain_adam_record(out_dir, dataset, keys)
    data_path = out_dir / "sdtm" / f"{dataset.lower()}.json"
    lineage_path = out_dir / "lineage" / f"{dataset.lower()}.csv"
    if not data_path.exists() or not lineage_path.exists():
        raise ConversionError(f"no dataset {dataset} with lineage in this output folder", source=str(out_dir))
    names, _row, record = _find_record(data_path, dataset, keys)
    text = _text
    with lineage_path.open(newline="") as fh:
        lineage = [row for row in csv.DictReader(fh) if all(row.get(k, v) == v for k, v in keys.items())]
    rules = json.loads((out_dir / "lineage" / "rules.json").read_text()).get(dataset, {})
    source = lineage[0] if lineage else {}
    form = source.get("form", "")
    lines = [f"{dataset} " + " ".join(f"{k}={v}" for k, v in keys.items()),
             f"  source record: {source.get('source', '(derived, no EDC source)')}"
             + (f"  field {source['field']}" if source.get("field") else "")]
    test = next((t for t in rules.get("@tests", []) if t["form"] == form and t["result"] == source.get("field")), None)
    if test:
        lines.append(f"  test table row: {test['spec']} (testcd {test['testcd']}, result field {test['result']}"
                     + (f", unit field {test['unit']}" if test.get("unit") else "") + ")")
    width = max(len(n) for n in names)
    for name in names:
        candidates = rules.get(name, [])
        rule = next((r for r in candidates if r.get("form") == form), None) or \
            next((r for r in candidates if "form" not in r), None)
        if rule:
            how = f"{_describe(rule['rule'])}  [{rule['spec']}]"
        elif test and name.endswith(AUTO_RESULT_VARS) and name[:2] == dataset[:2]:
            how = f"standard results from test table and conversions  [{test['spec']}]"
        else:
            how = "dataset-level derivation (see the engine docs)"
        lines.append(f"  {name:<{width}} = {text(record[name])!s:<24} <- {how}")
    return "\n".join(lines)
