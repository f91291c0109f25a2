"""Standards metadata the product needs at run time: SDTMIG variables and CDISC CT.

The facts live in ``sdtmig.yaml`` and ``ct.yaml`` beside this file (see their headers for the
sources). Specs may override a variable's label, type or length.

Example:
    >>> md = load_sdtmig()
    >>> md.domain("DM").variable("RFSTDTC").label
    'Subject Reference Start Date/Time'
    >>> load_ct()["SEX"].terms[:2]
    ['F', 'M']
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ruamel.yaml import YAML

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class VariableMeta:
    name: str
    label: str
    type: str  # "Char" or "Num"
    core: str
    codelist: str
    order: int


@dataclass(frozen=True)
class DomainMeta:
    name: str
    label: str
    cls: str
    keys: tuple[str, ...]
    variables: tuple[VariableMeta, ...]
    structure: str = ""

    def variable(self, name: str) -> VariableMeta | None:
        return next((v for v in self.variables if v.name == name), None)

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.variables]


@dataclass(frozen=True)
class Codelist:
    name: str
    code: str
    extensible: bool
    terms: list[str] = field(default_factory=list)
    source: str = "CDISC"
    label: str = ""
    term_codes: dict = field(default_factory=dict, compare=False, hash=False)  # term -> NCI code (from EVS)


@dataclass(frozen=True)
class Sdtmig:
    version: str
    domains: dict[str, DomainMeta]

    def domain(self, name: str) -> DomainMeta:
        """Metadata of a domain; SUPP-- datasets share SUPPQUAL's."""
        if name.startswith("SUPP") and name not in self.domains:
            base = self.domains["SUPPQUAL"]
            return DomainMeta(name, f"Supplemental Qualifiers for {name[4:]}", base.cls, base.keys, base.variables,
                              base.structure)
        return self.domains[name]


@lru_cache(maxsize=None)
def load_sdtmig(path: Path = HERE / "sdtmig.yaml") -> Sdtmig:
    raw = YAML(typ="safe").load(path.read_text())
    domains = {}
    for name, d in raw["domains"].items():
        variables = tuple(VariableMeta(v[0], v[1], v[2], v[3], v[4], i + 1) for i, v in enumerate(d["variables"]))
        domains[name] = DomainMeta(name, d["label"], d["class"], tuple(d["keys"]), variables, d.get("structure", ""))
    return Sdtmig(str(raw["version"]), domains)


@lru_cache(maxsize=None)
def load_ct(path: Path = HERE / "ct.yaml") -> dict[str, Codelist]:
    raw = YAML(typ="safe").load(path.read_text())["codelists"]
    return {name: Codelist(name, str(c.get("code", "")), bool(c["extensible"]), [str(t) for t in c["terms"]],
                           c.get("source", "CDISC"), str(c.get("label", name))) for name, c in raw.items()}


@lru_cache(maxsize=None)
def ct_version(path: Path = HERE / "ct.yaml") -> str:
    """The CDISC CT package date the codelist facts were written from."""
    return str(YAML(typ="safe").load(path.read_text()).get("version", ""))
