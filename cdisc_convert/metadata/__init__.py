"""Standards metadata the product needs at run time: SDTMIG 3.4, ADaMIG 1.3 and CDISC CT.

The facts are the compact copies in ``cdisc_convert/standards/`` generated from the published
CDISC files by ``python3 -m cdisc_convert.standards.build`` (see that module); only the sort
keys (``keys.yaml``), which the published metadata does not carry, are kept by hand.

Any SDTMIG domain is known with every variable (label, type, core, role, order, codelist); a
variable the IG does not list for a domain is allowed when the SDTM model allows it for the
domain's class (the class's variables across the IG's domains, with the domain prefix), and
custom domains (X*, Y*, Z*) take the variables of the class a spec names.

Example:
    >>> md = load_sdtmig()
    >>> md.domain("DM").variable("RFSTDTC").label
    'Subject Reference Start Date/Time'
    >>> md.domain("VS").variable("VSSTRESN").core, md.domain("AE").variable("AELLT").core
    ('Exp', 'Exp')
    >>> md.allowed_variable("VS", "VSLNKID").label, md.allowed_variable("AE", "AEFOO")
    ('Link ID', None)
    >>> md.domain("XR", "Findings").variable("XRTESTCD").role
    'Topic'
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import orjson
from ruamel.yaml import YAML

from ..errors import ConversionError
from .ct import Codelist, Terminology, bundled_ct, load_ct, load_terminology  # noqa: F401  (re-exported)

HERE = Path(__file__).resolve().parent
STANDARDS = HERE.parent / "standards"
GENERAL_CLASSES = ("Interventions", "Events", "Findings", "Findings About")
# Define-XML CT (C103329) spellings of the SDTMIG classes
DEFINE_CLASS = {"Special-Purpose": "SPECIAL PURPOSE", "Interventions": "INTERVENTIONS", "Events": "EVENTS",
                "Findings": "FINDINGS", "Findings About": "FINDINGS ABOUT", "Trial Design": "TRIAL DESIGN",
                "Relationship": "RELATIONSHIP", "Study Reference": "STUDY REFERENCE"}
CLASS_KEYS = {"Interventions": ["STUDYID", "USUBJID", "--TRT", "--STDTC"],
              "Events": ["STUDYID", "USUBJID", "--DECOD", "--TERM", "--STDTC"],
              "Findings": ["STUDYID", "USUBJID", "--TESTCD", "--OBJ", "--SPEC", "VISITNUM", "--TPTREF", "--TPTNUM",
                           "--DTC"],
              "Findings About": ["STUDYID", "USUBJID", "--TESTCD", "--OBJ", "VISITNUM", "--DTC"]}
CUSTOM_PREFIXES = ("X", "Y", "Z")
# Codelists SDTMIG binds by the value of another variable (DS assumptions: DSDECOD takes its term
# from NCOMPLT, PROTMLST or OTHEVENT according to DSCAT).
VALUE_LEVEL_CODELISTS = {("DS", "DSDECOD"): ("DSCAT", {"DISPOSITION EVENT": "NCOMPLT", "PROTOCOL MILESTONE": "PROTMLST",
                                                       "OTHER EVENT": "OTHEVENT"})}
# Variables whose values come from an external dictionary rather than CDISC CT (SDTMIG DM: COUNTRY
# is ISO 3166-1 alpha-3); bound to the dictionary's pseudo-codelist of the same name.
EXTERNAL_BINDINGS = {("DM", "COUNTRY"): "COUNTRY"}


@dataclass(frozen=True)
class VariableMeta:
    name: str
    label: str
    type: str  # "Char" or "Num"
    core: str  # Req, Exp or Perm
    codelist: str  # short name of the (first) codelist the IG binds, "" when none
    order: int
    role: str = ""
    codelists: tuple[str, ...] = ()  # every codelist the IG names (DSDECOD: NCOMPLT, PROTMLST, OTHEVENT)
    described: str = ""  # described value domain (ISO 8601 ..., MedDRA, ISO 3166 ...)
    in_ig: bool = True  # False: allowed by the SDTM model for the class, not listed for the domain


@dataclass(frozen=True)
class DomainMeta:
    name: str
    label: str
    cls: str  # Define-XML spelling (FINDINGS, SPECIAL PURPOSE, ...)
    keys: tuple[str, ...]
    variables: tuple[VariableMeta, ...]
    structure: str = ""
    ig_class: str = ""  # SDTMIG spelling (Findings, Special-Purpose, ...)

    def variable(self, name: str) -> VariableMeta | None:
        return next((v for v in self.variables if v.name == name), None)

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.variables]


@dataclass(eq=False)  # hashed by identity (custom domains are cached per instance)
class Sdtmig:
    version: str
    domains: dict[str, DomainMeta]
    templates: dict[str, list[VariableMeta]] = field(default_factory=dict)  # class -> generic "--" variables

    def known(self, name: str) -> bool:
        return name in self.domains or name.startswith("SUPP") or name.startswith(CUSTOM_PREFIXES)

    def domain(self, name: str, cls: str | None = None) -> DomainMeta:
        """Metadata of a domain; SUPP-- datasets share SUPPQUAL's; a custom domain (X*, Y*, Z*)
        of a general observation class ``cls`` gets that class's variables."""
        if name in self.domains:
            return self.domains[name]
        if name.startswith("SUPP"):
            base = self.domains["SUPPQUAL"]
            return DomainMeta(name, f"Supplemental Qualifiers for {name[4:]}", base.cls, base.keys, base.variables,
                              base.structure, base.ig_class)
        if name.startswith(CUSTOM_PREFIXES) and cls:
            return self._custom(name, _ig_class(cls))
        raise ConversionError(f"unknown domain {name}: not an SDTMIG {self.version} domain (custom domains start "
                              f"with X, Y or Z and name their class)")

    @lru_cache(maxsize=None)
    def _custom(self, name: str, cls: str) -> DomainMeta:
        required = ("STUDYID", "DOMAIN", "USUBJID", f"{name}SEQ")
        variables = tuple(replace(s, order=i + 1, in_ig=False, core="Req" if s.name in required else s.core)
                          for i, s in enumerate(_specific(v, name) for v in self._template(cls)))
        keys = tuple(k.replace("--", name) for k in CLASS_KEYS.get(cls, ["STUDYID", "USUBJID"])
                     if k.replace("--", name) in {v.name for v in variables})
        return DomainMeta(name, name, DEFINE_CLASS.get(cls, cls.upper()), keys, variables, "", cls)

    @lru_cache(maxsize=None)
    def _template(self, cls: str) -> tuple[VariableMeta, ...]:
        if cls not in GENERAL_CLASSES:
            raise ConversionError(f"class '{cls}' is not a general observation class "
                                  f"({', '.join(GENERAL_CLASSES)})")
        merged = list(self.templates[cls])
        if cls == "Findings About":
            names = {v.name for v in merged}
            merged += [v for v in self.templates["Findings"] if v.name not in names]
        names = {v.name for v in merged}
        merged += [v for v in self.templates["*"] if v.name not in names]
        return tuple(merged)

    def allowed_variable(self, domain: str, name: str, cls: str | None = None) -> VariableMeta | None:
        """The variable's metadata when SDTMIG lists it for the domain or the SDTM model allows it
        for the domain's class; None otherwise (it belongs in SUPP--)."""
        meta = self.domain(domain, cls)
        found = meta.variable(name)
        if found is not None or meta.ig_class not in GENERAL_CLASSES:
            return found
        return self._class_variables(domain, meta.ig_class).get(name) if len(name) <= 8 else None

    @lru_cache(maxsize=None)
    def _class_variables(self, domain: str, ig_class: str) -> dict[str, VariableMeta]:
        """Name -> the class template's variable for ``domain`` (its prefix filled in), as a
        variable the model allows but the IG does not list for the domain (asked per variable
        of every dataset: built once per domain)."""
        out: dict[str, VariableMeta] = {}
        for v in self._template(ig_class):
            specific = _specific(v, domain)
            out.setdefault(specific.name, replace(specific, core="Perm", in_ig=False))
        return out

    def place(self, domain: DomainMeta, names: list[str]) -> list[str]:
        """``names`` in the order the domain's variables go: IG order, with a variable the IG does
        not list placed after the IG variable that comes before it in the class template."""
        ig = {n: i for i, n in enumerate(domain.names)}
        template = [_specific(v, domain.name).name for v in
                    (self._template(domain.ig_class) if domain.ig_class in GENERAL_CLASSES else [])]
        rank = {}
        identifiers = [i for i, v in enumerate(domain.variables) if v.role == "Identifier"]
        for name in names:
            if name in ig:
                rank[name] = (ig[name], 0)
                continue
            v = self.allowed_variable(domain.name, name, domain.ig_class)
            if v is not None and v.role == "Identifier" and identifiers:  # identifiers come first
                rank[name] = (max(identifiers), 1 + (template.index(name) if name in template else 0))
            elif name in template:
                before = [ig[t] for t in template[:template.index(name)] if t in ig]
                rank[name] = (max(before) if before else -1, 1 + template.index(name))
            else:
                rank[name] = (len(ig), 0)
        return sorted(names, key=lambda n: rank[n])


def _ig_class(cls: str) -> str:
    wanted = cls.strip().replace("_", " ").upper()
    for ig, define in DEFINE_CLASS.items():
        if wanted in (ig.upper(), define):
            return ig
    return cls


def _generic(name: str, domain: str) -> str:
    return "--" + name[len(domain):] if name.startswith(domain) and len(name) > len(domain) else name


def _specific(v: VariableMeta, domain: str) -> VariableMeta:
    return replace(v, name=domain + v.name[2:]) if v.name.startswith("--") else v


def _templates(domains: dict[str, DomainMeta]) -> dict[str, list[VariableMeta]]:
    """Class -> the class's variables in the order the IG's domains use them ("--" for the prefix);
    ``"*"``: identifiers and timing variables shared by every general observation class."""
    out: dict[str, list[VariableMeta]] = {}
    labels: dict[tuple[str, str], dict[str, int]] = {}
    for d in domains.values():
        if d.ig_class not in GENERAL_CLASSES or len(d.name) != 2:
            continue
        for key in (d.ig_class, "*"):
            order = out.setdefault(key, [])
            names = [v.name for v in order]
            previous = -1
            for v in d.variables:
                if key == "*" and v.role not in ("Identifier", "Timing"):
                    continue
                g = _generic(v.name, d.name)
                count = labels.setdefault((key, g), {})
                count[v.label] = count.get(v.label, 0) + 1
                if g in names:
                    previous = names.index(g)
                    continue
                generic = replace(v, name=g, core="Perm", in_ig=False)
                order.insert(previous + 1, generic)
                names.insert(previous + 1, g)
                previous += 1
    for key, order in out.items():  # the label most domains use (ties: the first seen)
        for i, v in enumerate(order):
            count = labels[(key, v.name)]
            best = max(count, key=lambda label: count[label])
            out[key][i] = replace(v, label=best)
    return out


@lru_cache(maxsize=None)
def load_sdtmig(path: Path = STANDARDS / "sdtmig-3.4.json") -> Sdtmig:
    raw = orjson.loads(path.read_bytes())  # orjson: the bundled standards load 3x faster
    names_of_codes = {cl.code: cl.name for cl in bundled_ct().values()}
    keys = YAML(typ="safe").load((HERE / "keys.yaml").read_text())
    domains = {}
    for d in raw["datasets"]:
        variables = []
        for i, (name, label, typ, core, role, codes, described, _values) in enumerate(d["variables"], start=1):
            shorts = tuple(names_of_codes.get(c, c) for c in codes)
            if not shorts and (d["name"], name) in EXTERNAL_BINDINGS:
                shorts = (EXTERNAL_BINDINGS[(d["name"], name)],)
            variables.append(VariableMeta(name, label, typ, core, shorts[0] if shorts else "", i, role, shorts,
                                          described))
        names = {v.name for v in variables}
        own = keys.get(d["name"]) or [k.replace("--", d["name"]) for k in CLASS_KEYS.get(d["class"], [])]
        domains[d["name"]] = DomainMeta(d["name"], d["label"], DEFINE_CLASS.get(d["class"], d["class"].upper()),
                                        tuple(k for k in own if k in names), tuple(variables), d["structure"],
                                        d["class"])
    return Sdtmig(str(raw["version"]), domains, _templates(domains))


@dataclass(frozen=True)
class AdamVariableMeta:
    name: str
    label: str
    type: str
    core: str
    structure: str  # ADSL, BDS, TTE, ADAE
    codelists: tuple[str, ...] = ()


@lru_cache(maxsize=None)
def load_adamig(path: Path = STANDARDS / "adamig-1.3.json") -> dict[str, dict[str, AdamVariableMeta]]:
    """ADaMIG structure (ADSL, BDS, TTE, ADAE) -> variable name (or pattern, e.g. TRTxxP) -> metadata."""
    raw = orjson.loads(path.read_bytes())
    names_of_codes = {cl.code: cl.name for cl in bundled_ct().values()}
    return {s: {v[0]: AdamVariableMeta(v[0], v[1], v[2], v[3], s, tuple(names_of_codes.get(c, c) for c in v[5]))
                for v in variables} for s, variables in raw["structures"].items()}


def adamig_version(path: Path = STANDARDS / "adamig-1.3.json") -> str:
    return str(json.loads(path.read_text(encoding="utf-8"))["version"])


ADAM_ORDER = ("ADSL", "BDS", "TTE", "ADAE")


@lru_cache(maxsize=None)
def _adam_patterns() -> list[tuple[re.Pattern, AdamVariableMeta, list[str]]]:
    out = []
    for structure in ADAM_ORDER:
        for name, v in load_adamig().get(structure, {}).items():
            holders = re.findall(r"xx|zz|y|w", name) if re.search("[a-z]", name) else []
            if holders:
                rx = re.sub(r"xx|zz", "([0-9]{2})", re.sub(r"(?<![a-z])[yw](?![a-z])", "([1-9])", name))
                out.append((re.compile(f"^{rx}$"), v, holders))
    return out


@lru_cache(maxsize=None)
def adam_variable(name: str) -> AdamVariableMeta | None:
    """ADaMIG metadata of a variable, matching the IG's patterns (TRT01P is TRTxxP, with the
    label's ``xx`` filled in): ADSL first, then BDS, TTE and ADAE (OCCDS).

    >>> adam_variable("TRT01P").label, adam_variable("AGEGR1N").label, adam_variable("CHG").label
    ('Planned Treatment for Period 01', 'Pooled Age Group 1 (N)', 'Change from Baseline')
    """
    ig = load_adamig()
    for structure in ADAM_ORDER:
        if name in ig.get(structure, {}):
            return ig[structure][name]
    for rx, v, holders in _adam_patterns():
        m = rx.match(name)
        if m:
            label = v.label
            for holder, digits in zip(holders, m.groups()):
                label = re.sub(rf"(?<![A-Za-z]){holder}(?![A-Za-z])", digits, label, count=1)
            return replace(v, name=name, label=label)
    return None
