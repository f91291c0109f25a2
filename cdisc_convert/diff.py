"""Semantic diffs of mapping specs and PROC COMPARE-style comparison of output datasets.

``diff_specs(old, new)``: both sides are loaded as data (folders, or git revisions read with
``git show``), normalised so that lists with an identity (sources by form, tests by result
field, visits by folder, SUPP-- by QNAM ...) become mappings, then compared key by key: key
order and YAML formatting never show up as changes.

``compare_folders(base, new)``: datasets and variables added or removed, attribute changes,
records added or removed by each dataset's keys, and value differences per variable with counts
and first examples (numbers equal within a tolerance).
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import ConversionError
from .metadata import load_sdtmig
from .spec import load_yaml
from .text import as_text

# lists whose items have an identity: list name -> the key (or keys) that names an item
IDENTITY = {"sources": ("form",), "tests": ("result",), "visits": ("folder",), "arms": ("armcd",),
            "elements": ("etcd",), "trial_summary": ("parmcd", "val"), "supp": ("qnam",),
            "conversions": ("testcd", "from"), "join": ("form",), "documents": ("id",), "windows": ("avisit",)}
ADAM_KEYS = {"ADSL": ["USUBJID"], "ADAE": ["USUBJID", "AESEQ"], "ADTTE": ["USUBJID", "PARAMCD"]}
BDS_KEYS = ["USUBJID", "PARAMCD", "ADT", "ADTM", "AVISITN", "LBSEQ", "QSSEQ"]


# ---------------------------------------------------------------- specs

def _normalise(node: Any, parent: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _normalise(v, k) for k, v in node.items()}
    if isinstance(node, list):
        keys = IDENTITY.get(parent)
        items = [_normalise(v) for v in node]
        if keys and all(isinstance(i, dict) and all(k in i for k in keys[:1]) for i in items):
            out: dict[str, Any] = {}
            for i in items:
                name = " / ".join(str(i.get(k, "")) for k in keys if k in i)
                while name in out:
                    name += "'"
                out[name] = i
            return out
        if parent == "steps":  # ADaM steps: position matters, the derivation names the step
            return {f"{n + 1}. {i.get('derive', '?')}" if isinstance(i, dict) else str(n + 1): i
                    for n, i in enumerate(items)}
        return items
    return node


def read_spec_folder(folder: Path) -> dict[str, Any]:
    """``{relative file: normalised data}`` of a study folder's YAML files (adam/ included)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConversionError("spec folder not found", source=str(folder))
    files = sorted([*folder.glob("*.yaml"), *folder.glob("adam/*.yaml")])
    if not files:
        raise ConversionError("no YAML specs in the folder", source=str(folder))
    return {str(p.relative_to(folder)): _normalise(load_yaml(p)[0]) for p in files}


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if proc.returncode:
        raise ConversionError(f"git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}",
                              source=str(repo))
    return proc.stdout


def read_spec_revision(repo: Path, rev: str, study: str) -> dict[str, Any]:
    """The same as :func:`read_spec_folder`, for a git revision, read with ``git show`` only."""
    from ruamel.yaml import YAML

    _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    names = [n for n in _git(repo, "ls-tree", "-r", "--name-only", rev, "--", study).splitlines()
             if n.endswith(".yaml") and ("/edc/" not in n)]
    if not names:
        raise ConversionError(f"no YAML specs under {study} at revision {rev}", source=str(repo))
    out = {}
    for name in sorted(names):
        text = _git(repo, "show", f"{rev}:{name}")
        out[str(Path(name).relative_to(study))] = _normalise(_plain_yaml(YAML(typ="safe").load(text)))
    return out


def _plain_yaml(node):
    if isinstance(node, dict):
        return {str(k): _plain_yaml(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain_yaml(v) for v in node]
    return node if node is None or isinstance(node, (bool, int, float)) else str(node)


@dataclass
class SpecChange:
    file: str
    path: list[str]
    kind: str  # added, removed, changed
    old: Any = None
    new: Any = None

    def text(self) -> str:
        where = " / ".join(self.path)
        if self.kind == "changed":
            return f"{self.file}: {where}: {_short(self.old)} -> {_short(self.new)}"
        return f"{self.file}: {where}: {self.kind} {_short(self.new if self.kind == 'added' else self.old)}"


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 160 else text[:157] + "..."


def _diff(old: Any, new: Any, path: list[str], file: str, out: list[SpecChange]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if key not in new:
                out.append(SpecChange(file, [*path, str(key)], "removed", old=old[key]))
            elif key not in old:
                out.append(SpecChange(file, [*path, str(key)], "added", new=new[key]))
            else:
                _diff(old[key], new[key], [*path, str(key)], file, out)
    elif old != new:
        out.append(SpecChange(file, path, "changed", old, new))


def diff_specs(old: dict[str, Any], new: dict[str, Any]) -> list[SpecChange]:
    """Semantic changes from ``old`` to ``new`` (outputs of read_spec_folder/read_spec_revision)."""
    out: list[SpecChange] = []
    for file in sorted(set(old) | set(new)):
        if file not in new:
            out.append(SpecChange(file, [], "removed", old=_title(old[file])))
        elif file not in old:
            out.append(SpecChange(file, [], "added", new=_title(new[file])))
        else:
            _diff(old[file], new[file], [], file, out)
    return out


def _title(spec) -> str:
    return str(spec.get("domain") or spec.get("dataset") or "study config") if isinstance(spec, dict) else "?"


# ---------------------------------------------------------------- datasets

@dataclass
class DatasetCompare:
    name: str
    keys: list[str]
    added_variables: list[str] = field(default_factory=list)
    removed_variables: list[str] = field(default_factory=list)
    attributes: list[dict] = field(default_factory=list)
    records_added: int = 0
    records_removed: int = 0
    added_examples: list[dict] = field(default_factory=list)
    removed_examples: list[dict] = field(default_factory=list)
    values: dict[str, dict] = field(default_factory=dict)  # variable -> {count, examples}
    base_records: int = 0
    new_records: int = 0

    @property
    def equal(self) -> bool:
        return not (self.added_variables or self.removed_variables or self.attributes or self.records_added
                    or self.records_removed or self.values)


@dataclass
class FolderCompare:
    base: str
    new: str
    tolerance: float
    added_datasets: list[str]
    removed_datasets: list[str]
    datasets: list[DatasetCompare]

    @property
    def equal(self) -> bool:
        return not self.added_datasets and not self.removed_datasets and all(d.equal for d in self.datasets)

    def to_json(self) -> dict:
        return {"base": self.base, "new": self.new, "tolerance": self.tolerance, "equal": self.equal,
                "added_datasets": self.added_datasets, "removed_datasets": self.removed_datasets,
                "datasets": [d.__dict__ for d in self.datasets]}


def dataset_keys(name: str, base: pd.DataFrame, new: pd.DataFrame) -> list[str]:
    """The dataset's keys (SDTMIG keys, ADaM conventions), made unique with --SEQ where needed."""
    md = load_sdtmig()
    if name in md.domains or name.startswith("SUPP"):
        keys = list(md.domain(name).keys)
    else:
        keys = ADAM_KEYS.get(name, BDS_KEYS if "PARAMCD" in base.columns else ["USUBJID"])
    keys = [k for k in keys if k in base.columns and k in new.columns]
    seq = f"{name}SEQ"
    for frame in (base, new):
        if keys and frame.duplicated(keys).any() and seq in base.columns and seq in new.columns and seq not in keys:
            keys.append(seq)
    return keys


def _with_occurrence(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    # keys that still repeat are told apart by their order of occurrence (as PROC COMPARE with
    # duplicate BY values)
    return frame.assign(__occ=frame.groupby(keys, dropna=False, sort=False).cumcount() if keys else
                        np.arange(len(frame)))


def compare_datasets(name: str, base: pd.DataFrame, new: pd.DataFrame, labels_base: dict, labels_new: dict,
                     widths_base: dict, widths_new: dict, tolerance: float = 1e-9, examples: int = 5
                     ) -> DatasetCompare:
    keys = dataset_keys(name, base, new)
    result = DatasetCompare(name, keys, base_records=len(base), new_records=len(new))
    result.added_variables = [c for c in new.columns if c not in base.columns]
    result.removed_variables = [c for c in base.columns if c not in new.columns]
    common = [c for c in base.columns if c in new.columns]
    order_base = {c: i for i, c in enumerate(base.columns)}
    order_new = {c: i for i, c in enumerate(new.columns)}
    for col in common:
        for attr, a, b in (("label", labels_base.get(col, ""), labels_new.get(col, "")),
                           ("type", "Num" if base[col].dtype.kind in "fiu" else "Char",
                            "Num" if new[col].dtype.kind in "fiu" else "Char"),
                           ("length", widths_base.get(col), widths_new.get(col)),
                           ("order", order_base[col] + 1, order_new[col] + 1)):
            if a != b:
                result.attributes.append({"variable": col, "attribute": attr, "base": a, "new": b})
    left, right = _with_occurrence(base, keys), _with_occurrence(new, keys)
    on = [*keys, "__occ"]
    merged = left.merge(right, on=on, how="outer", suffixes=("__b", "__n"), indicator=True, sort=False)
    only_new, only_base = merged["_merge"] == "right_only", merged["_merge"] == "left_only"
    result.records_added, result.records_removed = int(only_new.sum()), int(only_base.sum())
    result.added_examples = _key_examples(merged[only_new], keys, examples)
    result.removed_examples = _key_examples(merged[only_base], keys, examples)
    both = merged[merged["_merge"] == "both"]
    for col in [c for c in common if c not in keys]:
        a, b = both[f"{col}__b"], both[f"{col}__n"]
        if a.dtype.kind in "fiu" and b.dtype.kind in "fiu":
            af, bf = a.astype(float), b.astype(float)
            same = (af.isna() & bf.isna()) | (np.abs(af - bf) <= tolerance * np.maximum(1.0, np.abs(af)))
        else:
            same = as_text(a) == as_text(b)
        diff = ~same.fillna(False)
        if diff.any():
            rows = both[diff.to_numpy()].head(examples)
            result.values[col] = {"count": int(diff.sum()), "examples": [
                {"keys": {k: _plain(r[k]) for k in keys}, "base": _plain(r[f"{col}__b"]), "new": _plain(r[f"{col}__n"])}
                for _, r in rows.iterrows()]}
    return result


def _plain(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    return str(value)


def _key_examples(frame: pd.DataFrame, keys: list[str], n: int) -> list[dict]:
    return [{k: _plain(r[k]) for k in keys} for _, r in frame.head(n).iterrows()]


def compare_folders(base: Path, new: Path, tolerance: float = 1e-9) -> FolderCompare:
    from .validate import load_datasets

    b, lb, wb = load_datasets(Path(base))
    n, ln, wn = load_datasets(Path(new))
    common = [d for d in sorted(b) if d in n]
    return FolderCompare(str(base), str(new), tolerance, sorted(set(n) - set(b)), sorted(set(b) - set(n)),
                         [compare_datasets(d, b[d], n[d], lb[d], ln[d], wb[d], wn[d], tolerance) for d in common])


# ---------------------------------------------------------------- rendering

def spec_diff_text(changes: list[SpecChange]) -> list[tuple[str, str]]:
    """Lines with a style (for rich): green added, red removed, yellow changed."""
    if not changes:
        return [("specs are equal", "green")]
    style = {"added": "green", "removed": "red", "changed": "yellow"}
    return [(c.text(), style[c.kind]) for c in changes]


def compare_text(cmp: FolderCompare) -> list[tuple[str, str]]:
    lines = [(f"compare {cmp.base} -> {cmp.new} (numbers equal within relative tolerance {cmp.tolerance:g})", "bold")]
    for d in cmp.added_datasets:
        lines.append((f"dataset {d}: added", "green"))
    for d in cmp.removed_datasets:
        lines.append((f"dataset {d}: removed", "red"))
    for d in cmp.datasets:
        if d.equal:
            continue
        lines.append((f"dataset {d.name} (keys {', '.join(d.keys)}; {d.base_records} -> {d.new_records} records)", "bold"))
        for v in d.added_variables:
            lines.append((f"  variable {v}: added", "green"))
        for v in d.removed_variables:
            lines.append((f"  variable {v}: removed", "red"))
        for a in d.attributes:
            lines.append((f"  {a['variable']} {a['attribute']}: {a['base']} -> {a['new']}", "yellow"))
        if d.records_added:
            lines.append((f"  records added: {d.records_added}, e.g. {d.added_examples[:2]}", "green"))
        if d.records_removed:
            lines.append((f"  records removed: {d.records_removed}, e.g. {d.removed_examples[:2]}", "red"))
        for var, v in d.values.items():
            ex = v["examples"][0]
            lines.append((f"  {var}: {v['count']} value(s) differ, e.g. {ex['keys']}: {ex['base']!r} -> {ex['new']!r}",
                          "yellow"))
    if cmp.equal:
        lines.append(("datasets are equal", "green"))
    return lines


def html_page(title: str, sections: list[tuple[str, list[tuple[str, str]]]]) -> str:
    import html as h

    colour = {"green": "#1a7f37", "red": "#b42318", "yellow": "#8a6100", "bold": "#111"}
    body = "".join(f"<h2>{h.escape(name)}</h2><ul>" + "".join(
        f'<li style="color:{colour.get(style, "#111")}">{h.escape(text)}</li>' for text, style in lines) + "</ul>"
        for name, lines in sections)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{h.escape(title)}</title>"
            f"<style>body{{font-family:sans-serif;margin:1.5em}} li{{font-family:monospace;margin:2px 0}}</style>"
            f"</head><body><h1>{h.escape(title)}</h1>{body}</body></html>\n")
