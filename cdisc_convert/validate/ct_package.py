"""CDISC Controlled Terminology packages in the NCI EVS tab-delimited format.

Columns: Code, Codelist Code, Codelist Extensible (Yes/No), Codelist Name, CDISC Submission
Value, CDISC Synonym(s), CDISC Definition, NCI Preferred Term. A codelist's own row has an empty
Codelist Code; its submission value is the codelist's short name (e.g. ``SEX``).

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "SDTM Terminology.txt"
    >>> _ = p.write_text("Code\\tCodelist Code\\tCodelist Extensible (Yes/No)\\tCodelist Name\\tCDISC Submission Value\\t"
    ...                  "CDISC Synonym(s)\\tCDISC Definition\\tNCI Preferred Term\\n"
    ...                  "C66731\\t\\tNo\\tSex\\tSEX\\t\\t\\t\\nC16576\\tC66731\\t\\tSex\\tF\\tFemale\\t\\t\\n")
    >>> ct = read_evs_package(p)
    >>> ct["SEX"].terms, ct["SEX"].code, ct["SEX"].extensible
    (['F'], 'C66731', False)
"""
from __future__ import annotations

import csv
from pathlib import Path

from ..errors import ConversionError
from ..metadata import Codelist, load_ct

EVS_COLUMNS = ["Code", "Codelist Code", "Codelist Extensible (Yes/No)", "Codelist Name", "CDISC Submission Value"]


def read_evs_package(path: Path) -> dict[str, Codelist]:
    """Codelists by short name from one NCI EVS ``.txt`` file (or every ``*.txt`` in a folder)."""
    path = Path(path)
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise ConversionError("CT package not found (expected an NCI EVS tab-delimited .txt file or folder)",
                              source=str(path))
    headers: dict[str, dict] = {}
    terms: dict[str, list[str]] = {}
    term_codes: dict[str, dict[str, str]] = {}
    for f in files:
        with f.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            missing = [c for c in EVS_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ConversionError(f"not an NCI EVS CT package: column '{missing[0]}' is missing",
                                      source=f"{f.name}:1")
            for row in reader:
                if not row["Codelist Code"]:
                    headers[row["Code"]] = row
                else:
                    terms.setdefault(row["Codelist Code"], []).append(row["CDISC Submission Value"])
                    term_codes.setdefault(row["Codelist Code"], {})[row["CDISC Submission Value"]] = row["Code"]
    out = {}
    for code, row in headers.items():
        out[row["CDISC Submission Value"]] = Codelist(row["CDISC Submission Value"], code,
                                                      row["Codelist Extensible (Yes/No)"].strip().lower() == "yes",
                                                      terms.get(code, []), "CDISC", row["Codelist Name"],
                                                      term_codes.get(code, {}))
    if not out:
        raise ConversionError("CT package holds no codelists", source=str(path))
    return out


def load_ct_package(path: Path | None, shared_default: Path | None = None) -> tuple[dict[str, Codelist], str]:
    """The CT to validate against: ``--ct PATH``; else the package in ``../shared/standards/ct``
    when present; else the project's own facts. Returns the codelists and where they came from."""
    if path is not None:
        return read_evs_package(Path(path)), str(path)
    if shared_default is not None and shared_default.is_dir() and any(shared_default.rglob("*.txt")):
        sdtm = [p for p in shared_default.rglob("*.txt") if "sdtm" in p.name.lower()] or list(shared_default.rglob("*.txt"))
        merged: dict[str, Codelist] = {}
        for p in sorted(sdtm):
            merged.update(read_evs_package(p))
        return merged, str(shared_default)
    return load_ct(), "cdisc_convert/metadata/ct.yaml"
