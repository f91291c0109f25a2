"""Controlled terminology: the bundled CDISC CT packages, other releases a user names with
``--ct``, external dictionaries and a study's own terminology (``terminology.yaml``).

A CT package is read from the compact JSON the product ships (``cdisc_convert/standards/ct``),
an NCI EVS tab-delimited ``.txt`` or a CDISC Library ``.csv`` (the same eight columns). Each
package replaces the bundled package of its kind (SDTM CT, ADaM CT); the others stay.

A study's ``terminology.yaml`` declares sponsor codelists (``terms:``), extensions of extensible
CDISC codelists (``extend:``) and collected values to recode (``collected:``)::

    codelists:
      LBTESTCD:
        extend:
          - {term: CD3, decode: CD3 Lymphocytes}   # a sponsor test code (ExtendedValue="Yes")
      AEREL:
        name: Causality                            # a sponsor codelist
        terms: [NOT RELATED, RELATED]
      SEX:
        collected: {Unk: U}                        # collected value -> term

Example:
    >>> ct = load_terminology()
    >>> ct["SEX"].code, ct["SEX"].extensible, ct["SEX"].terms
    ('C66731', False, ['F', 'INTERSEX', 'M', 'U'])
    >>> ct["SEX"].recode(["Female", "m", "Unknown", "F", "Other"])
    ['F', 'M', 'U', 'F', 'Other']
    >>> ct.version, ct["COUNTRY"].dictionary
    ('SDTM CT 2025-03-28; ADaM CT 2025-03-28', 'ISO 3166-1 alpha-3')
"""
from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Optional, Union

import orjson
import pandas as pd
from pydantic import BaseModel, ConfigDict

from ..errors import ConversionError

BUNDLED = Path(__file__).resolve().parent.parent / "standards" / "ct"
STUDY_TERMINOLOGY = "terminology.yaml"
EVS_COLUMNS = ["Code", "Codelist Code", "Codelist Extensible (Yes/No)", "Codelist Name", "CDISC Submission Value"]
ISO3166 = "ISO 3166-1 alpha-3"


@dataclass(frozen=True)
class Codelist:
    name: str  # short name (codelist submission value), e.g. SEX
    code: str  # NCI code, e.g. C66731
    extensible: bool
    terms: list[str] = field(default_factory=list)
    source: str = "CDISC"  # CDISC, sponsor, or an external dictionary's name
    label: str = ""
    term_codes: dict = field(default_factory=dict, compare=False, hash=False)  # term -> NCI code
    synonyms: dict = field(default_factory=dict, compare=False, hash=False)  # UPPER synonym or term -> term
    extended: tuple = ()  # sponsor extensions the study declares
    decodes: dict = field(default_factory=dict, compare=False, hash=False)  # term -> decode (study)
    collected: dict = field(default_factory=dict, compare=False, hash=False)  # UPPER collected value -> term
    dictionary: str = ""  # external dictionary (Define-XML ExternalCodeList), e.g. ISO 3166-1 alpha-3
    package: str = ""  # SDTM CT, ADaM CT, or the study's terminology file

    @property
    def allowed(self) -> set[str]:
        """Terms plus the study's declared extensions."""
        return set(self.terms) | set(self.extended)

    def recode(self, values) -> list:
        """Collected text -> term: a term as is; else the term whose submission value or CDISC
        synonym matches case-insensitively; else the study's ``collected`` value; else unchanged."""
        allowed = self.allowed
        out = []
        for v in values:
            s = "" if v is None else str(v)
            if s in allowed or s == "":
                out.append(s)
                continue
            key = s.strip().upper()
            out.append(self.collected.get(key) or self.synonyms.get(key) or s)
        return out

    def recode_series(self, values: pd.Series) -> pd.Series:
        """:meth:`recode` over a column, once per distinct value (text repeats a lot)."""
        text = values.fillna("").astype(str)
        distinct = pd.unique(text)
        recoded = dict(zip(distinct, self.recode(distinct)))
        return text if all(k == v for k, v in recoded.items()) else text.map(recoded)


class Terminology(dict):
    """Codelists by short name, with where they came from and the CT versions in use."""

    def __init__(self, codelists: dict[str, Codelist], packages: dict[str, str], source: str, study_file: str = ""):
        super().__init__(codelists)
        self.packages = packages  # package name (SDTM CT, ADaM CT) -> release date
        self.source = source
        self.study_file = study_file

    @property
    def version(self) -> str:
        return "; ".join(f"{p} {d}" for p, d in self.packages.items())

    def date(self, package: str = "SDTM CT") -> str:
        return self.packages.get(package) or next(iter(self.packages.values()), "")

    @property
    def declares_extensions(self) -> bool:
        return bool(self.study_file)


def _synonyms(terms: list[list[str]]) -> dict[str, str]:
    """UPPER submission value or synonym -> term, leaving out synonyms two terms share."""
    seen: dict[str, set[str]] = {}
    for _code, value, synonyms in terms:
        for s in [value, *[x.strip() for x in synonyms.split(";") if x.strip()]]:
            seen.setdefault(s.upper(), set()).add(value)
    return {k: next(iter(v)) for k, v in seen.items() if len(v) == 1}


class _SynonymsOnFirstUse(Mapping):
    """:func:`_synonyms` of a codelist's terms, built the first time it is read: a run recodes
    through a few dozen of the package's 1,200 codelists, and building them all cost a fifth of a
    second on every run."""

    __slots__ = ("_terms", "_built")

    def __init__(self, terms: list[list[str]]):
        self._terms, self._built = terms, None

    def _map(self) -> dict[str, str]:
        if self._built is None:
            self._built, self._terms = _synonyms(self._terms), None
        return self._built

    def __getitem__(self, key: str) -> str:
        return self._map()[key]

    def get(self, key: str, default=None):
        return self._map().get(key, default)

    def __iter__(self):
        return iter(self._map())

    def __len__(self) -> int:
        return len(self._map())


def _codelist(c: dict, package: str) -> Codelist:
    terms = c["terms"]
    return Codelist(c["short"], c["code"], bool(c["extensible"]), [t[1] for t in terms], "CDISC", c["name"],
                    {t[1]: t[0] for t in terms}, _SynonymsOnFirstUse(terms), package=package)


def read_package(path: Path) -> tuple[str, str, dict[str, Codelist]]:
    """(package name, release date, codelists) of one CT file: compact JSON, NCI EVS .txt or CDISC Library .csv."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        try:
            doc = orjson.loads(path.read_bytes())  # the bundled packages: 3x faster than json
            return doc["package"], doc["date"], {c["short"]: _codelist(c, doc["package"]) for c in doc["codelists"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise ConversionError(f"not a cdisc_convert CT file: {exc}", source=path.name) from None
    from ..standards.build import ct_from

    try:
        doc = ct_from(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConversionError(f"unreadable CT package: {exc}", source=str(path)) from None
    except ValueError as exc:
        raise ConversionError(str(exc).split(": ", 1)[-1], source=f"{path.name}:1") from None
    if not doc["codelists"]:
        raise ConversionError("CT package holds no codelists", source=str(path))
    name = doc["package"]
    if name == "CT" or name == "SDTM CT":
        low = path.name.lower()
        name = "ADaM CT" if "adam" in low else "SEND CT" if "send" in low else "SDTM CT"
    return name, doc["date"] or "unknown", {c["short"]: _codelist(c, name) for c in doc["codelists"]}


def _package_files(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".txt", ".csv", ".json")
                       and "define" not in p.name.lower())
        if files:
            return files
    elif path.is_file():
        return [path]
    raise ConversionError("CT package not found (an NCI EVS .txt, a CDISC Library .csv, or a folder of them)",
                          source=str(path))


@lru_cache(maxsize=None)
def _bundled() -> tuple[dict[str, str], dict[str, Codelist]]:
    packages: dict[str, str] = {}
    codelists: dict[str, Codelist] = {}
    for f in sorted(BUNDLED.glob("*.json")):  # sdtm-ct before adam-ct? sorted: adam first; SDTM wins names
        name, date, cls = read_package(f)
        packages[name] = max(date, packages.get(name, ""))
        for k, v in cls.items():
            if k not in codelists or v.package == "SDTM CT":
                codelists[k] = v
    return dict(sorted(packages.items(), key=lambda kv: kv[0] != "SDTM CT")), codelists


def bundled_ct() -> dict[str, Codelist]:
    """The CT packages shipped in the product (SDTM and ADaM CT, latest release)."""
    return dict(_bundled()[1])


def load_ct() -> dict[str, Codelist]:
    """The bundled CT with external dictionaries (kept for callers that need no study terminology)."""
    return dict(load_terminology())


@lru_cache(maxsize=None)
def iso3166() -> Codelist:
    """ISO 3166-1 alpha-3 country codes (pycountry's ISO data), as an external dictionary."""
    import pycountry

    codes = sorted(c.alpha_3 for c in pycountry.countries)
    names = {c.alpha_3: c.name for c in pycountry.countries}
    synonyms = {**{n.upper(): c for c, n in names.items()}, **{c.alpha_2: c.alpha_3 for c in pycountry.countries}}
    return Codelist("COUNTRY", ISO3166, False, codes, ISO3166, "Country (ISO 3166-1 alpha-3)", {}, synonyms,
                    decodes=names, dictionary=ISO3166, package=ISO3166)


def load_terminology(ct: Union[Path, str, list, tuple, None] = None, study_dir: Path | None = None) -> Terminology:
    """The terminology of a run: bundled CT, packages named by ``ct`` replacing theirs, the
    external dictionaries (COUNTRY), and the study's ``terminology.yaml`` when it has one."""
    packages, codelists = _bundled()
    packages, codelists = dict(packages), dict(codelists)
    source = "bundled"
    paths = [ct] if isinstance(ct, (str, Path)) else list(ct or [])
    if paths:
        given: dict[str, dict[str, Codelist]] = {}
        dates: dict[str, str] = {}
        for p in paths:
            for f in _package_files(Path(p)):
                name, date, cls = read_package(f)
                given.setdefault(name, {}).update(cls)
                dates[name] = max(date, dates.get(name, ""))
        for name, cls in given.items():
            codelists = {k: v for k, v in codelists.items() if v.package != name}
            codelists.update(cls)
            packages[name] = dates[name]
        source = ", ".join(str(p) for p in paths)
    codelists.setdefault("COUNTRY", iso3166())
    study_file = ""
    if study_dir is not None and (Path(study_dir) / STUDY_TERMINOLOGY).is_file():
        path = Path(study_dir) / STUDY_TERMINOLOGY
        codelists = apply_study_terminology(codelists, load_study_terminology(path))
        study_file = path.name
    return Terminology(codelists, dict(sorted(packages.items(), key=lambda kv: kv[0] != "SDTM CT")), source,
                       study_file)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TermDef(_Strict):
    term: str
    decode: Optional[str] = None
    synonyms: list[str] = []


class StudyCodelist(_Strict):
    """One entry of ``terminology.yaml``: a sponsor codelist (``terms``), an extension of an
    extensible CDISC codelist (``extend``), and collected values to recode (``collected``)."""

    name: Optional[str] = None
    extensible: bool = False
    terms: Optional[list[Union[str, TermDef]]] = None
    extend: list[Union[str, TermDef]] = []
    collected: dict[str, str] = {}


class StudyTerminology(_Strict):
    codelists: dict[str, StudyCodelist]
    file: str = ""
    lines: dict[str, int] = {}

    def line_of(self, *path) -> str:
        key = ".".join(str(p) for p in path)
        while key and key not in self.lines:
            key = key.rsplit(".", 1)[0] if "." in key else ""
        return f"{self.file}:{self.lines.get(key, 1)}"


def load_study_terminology(path: Path) -> StudyTerminology:
    from ..spec import _validate

    return _validate(StudyTerminology, Path(path))


def _term(t: Union[str, TermDef]) -> TermDef:
    return TermDef(term=t) if isinstance(t, str) else t


def apply_study_terminology(codelists: dict[str, Codelist], study: StudyTerminology) -> dict[str, Codelist]:
    """The codelists with the study's sponsor codelists, extensions and collected values."""
    out = dict(codelists)
    for name, entry in study.codelists.items():
        base = out.get(name)
        where = study.line_of("codelists", name)
        if entry.terms is not None:
            if base is not None and base.source == "CDISC":
                raise ConversionError(f"{name} is a CDISC codelist ({base.code}); extend it with 'extend:' "
                                      f"instead of redefining its terms", spec=where)
            terms = [_term(t) for t in entry.terms]
            base = Codelist(name, "", entry.extensible, [t.term for t in terms], "sponsor", entry.name or name,
                            synonyms={s.upper(): t.term for t in terms for s in [t.term, *t.synonyms]},
                            decodes={t.term: t.decode for t in terms if t.decode}, package=study.file)
        if base is None:
            raise ConversionError(f"codelist {name} is neither a CDISC codelist nor declared with 'terms:'",
                                  spec=where)
        extensions = [_term(t) for t in entry.extend]
        if extensions:
            if not base.extensible:
                raise ConversionError(f"codelist {name} ({base.code or 'sponsor'}) is not extensible; its terms "
                                      f"cannot be extended", spec=study.line_of("codelists", name, "extend"))
            known = [t.term for t in extensions if t.term in base.terms]
            if known:
                raise ConversionError(f"'{known[0]}' is already a term of {name}; remove it from 'extend:'",
                                      spec=study.line_of("codelists", name, "extend"))
        synonyms = dict(base.synonyms)
        synonyms.update({s.upper(): t.term for t in extensions for s in [t.term, *t.synonyms]})
        collected = {k.strip().upper(): v for k, v in entry.collected.items()}
        allowed = set(base.terms) | {t.term for t in extensions} | set(base.extended)
        bad = [v for v in collected.values() if v not in allowed]
        if bad:
            raise ConversionError(f"collected value recodes to '{bad[0]}', which is not a term of {name} "
                                  f"(declare it under 'extend:')", spec=study.line_of("codelists", name, "collected"))
        out[name] = replace(base, extended=tuple(dict.fromkeys([*base.extended, *(t.term for t in extensions)])),
                            decodes={**base.decodes, **{t.term: t.decode for t in extensions if t.decode}},
                            synonyms=synonyms, collected={**base.collected, **collected})
    return out
