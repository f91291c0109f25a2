"""The mapping-spec language: YAML files validated by pydantic models.

A spec is data, never code. Every model forbids unknown keys, so a typo'd key is an error, and
every error names the spec file, line and key. The YAML loader (ruamel.yaml, its C parser when
installed) keeps the line of every node; :func:`load_yaml` returns plain data plus a ``{path: line}``
map. A run reads each spec file once: loads are cached by file content.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.yaml"
    >>> _ = p.write_text("domain: AE\\nsources:\\n  - form: AE\\nvariables:\\n  AETERM: {feild: AETERM}\\n")
    >>> try:
    ...     load_domain_spec(p)
    ... except ConversionError as e:
    ...     print(e.spec, "|", e.message.splitlines()[0])
    x.yaml:5 | spec error at variables.AETERM.feild: Extra inputs are not permitted
"""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.constructor import BaseConstructor
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

from .errors import ConversionError

Scalar = Union[str, int, float, bool]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Condition(Strict):
    """A row condition: on a source field or an output variable; or all/any/not of others."""

    field: Optional[str] = None
    var: Optional[str] = None
    equals: Optional[Scalar] = None
    not_equals: Optional[Scalar] = None
    in_: Optional[list[Scalar]] = Field(None, alias="in")
    empty: Optional[bool] = None
    at_least: Optional[float] = None
    at_most: Optional[float] = None
    all: Optional[list["Condition"]] = None
    any: Optional[list["Condition"]] = None
    not_: Optional["Condition"] = Field(None, alias="not")

    def fields(self) -> set[str]:
        found = {self.field} if self.field else set()
        for c in [*(self.all or []), *(self.any or []), *([self.not_] if self.not_ else [])]:
            found |= c.fields()
        return found

    def variables(self) -> set[str]:
        found = {self.var} if self.var else set()
        for c in [*(self.all or []), *(self.any or []), *([self.not_] if self.not_ else [])]:
            found |= c.variables()
        return found

    @model_validator(mode="after")
    def _one_kind(self):
        combos = [self.all is not None, self.any is not None, self.not_ is not None]
        target = self.field is not None or self.var is not None
        if sum(combos) + target != 1:
            raise ValueError("a condition has exactly one of field, var, all, any, not")
        if target and [self.equals is not None, self.not_equals is not None, self.in_ is not None,
                       self.empty is not None, self.at_least is not None or self.at_most is not None].count(True) != 1:
            raise ValueError("a field/var condition needs exactly one of equals, not_equals, in, empty, "
                             "at_least/at_most")
        return self


DERIVATIONS = {
    # record level: evaluated as rows are mapped
    "age": "record",
    # subject level: need DM, SE or other domains, evaluated after every domain is mapped
    "first_date": "subject", "last_date": "subject", "visit": "subject", "visitnum": "subject",
    "study_day": "subject", "epoch": "subject", "baseline_flag": "subject", "seq": "subject",
    "end_relative_to_reference": "subject", "treatment_emergent": "subject", "has_records": "subject",
    "last_contact": "subject",
}


ORIGIN_OF_KIND = {"field": "Collected", "date": "Collected", "value": "Assigned", "constant": "Assigned",
                  "test": "Assigned", "var": "Derived", "concat": "Derived", "when": "Derived", "derive": "Derived"}


class Rule(Strict):
    """How one variable gets its value. Exactly one of the value kinds is given:

    ``field`` (from a source field), ``value`` (hard-coded), ``constant`` (study constant),
    ``var`` (another output variable), ``test`` (an attribute of the findings test table),
    ``concat`` (parts joined), ``date`` (+ optional ``time``: EDC date text to ISO 8601),
    ``when`` (conditional, with ``else``) or ``derive`` (a library derivation).
    ``map`` and ``codelist`` recode the value; ``type: num`` makes it numeric.
    """

    field: Optional[str] = None
    value: Optional[Scalar] = None
    constant: Optional[str] = None
    var: Optional[str] = None
    test: Optional[str] = None
    concat: Optional[list[Union[str, "Rule"]]] = None
    date: Optional[str] = None
    time: Optional[str] = None
    when: Optional[list["WhenCase"]] = None
    else_: Optional["Rule"] = Field(None, alias="else")
    derive: Optional[str] = None
    # derivation parameters
    of: Optional[str] = None
    domain: Optional[str] = None
    birth: Optional[str] = None
    at: Optional[str] = None
    by: Optional[Union[str, list[str]]] = None
    start: Optional[str] = None
    end: Optional[str] = None
    order: Optional[list[str]] = None  # seq: variables --SEQ follows (within USUBJID)
    where: Optional["Condition"] = None  # first_date/last_date/has_records: only the other domain's records where this holds
    window: Optional[int] = None  # treatment_emergent: days after the last dose still counted
    # dates: formats tried in order (MM/DD/YYYY, DD-MON-YY, YYYY ...); two-digit years from year_pivot on
    format: Optional[Union[str, list[str]]] = None
    year_pivot: Optional[int] = None
    pattern: Optional[str] = None  # regular expression: the value becomes its first group (or the match)
    # recoding
    map: Optional[dict[str, Scalar]] = None
    codelist: Optional[str] = None
    upper: bool = False
    type: Optional[Literal["num", "char"]] = None
    comment: Optional[str] = None  # shown in define.xml as a CommentDef

    @model_validator(mode="after")
    def _one_kind(self):
        kinds = [k for k in ("field", "value", "constant", "var", "test", "concat", "date", "when", "derive")
                 if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"a rule has exactly one of field, value, constant, var, test, concat, date, when, "
                             f"derive (got {', '.join(kinds) or 'none'})")
        if self.derive is not None and self.derive not in DERIVATIONS:
            raise ValueError(f"unknown derivation '{self.derive}' (known: {', '.join(sorted(DERIVATIONS))})")
        needs = {"first_date": ("domain", "of"), "last_date": ("domain", "of"), "has_records": ("domain",),
                 "treatment_emergent": ("of",)}
        missing = [k for k in needs.get(self.derive or "", ()) if getattr(self, k) is None]
        if missing:
            raise ValueError(f"derive: {self.derive} needs {' and '.join(missing)}")
        if self.window is not None and self.derive != "treatment_emergent":
            raise ValueError("'window' goes with derive: treatment_emergent")
        if self.time is not None and self.date is None:
            raise ValueError("'time' needs 'date'")
        if (self.format is not None or self.year_pivot is not None) and self.date is None:
            raise ValueError("'format' and 'year_pivot' go with 'date'")
        for fmt in self.formats or []:
            if "YY" not in fmt.upper():
                raise ValueError(f"date format '{fmt}' has no year (YYYY or YY)")
        if self.pattern is not None:
            import re
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        return self

    @property
    def formats(self) -> list[str] | None:
        return [self.format] if isinstance(self.format, str) else self.format

    @property
    def origin(self) -> str:
        """Define-XML origin type implied by the rule's kind (a field is Collected, ...)."""
        kind = next(k for k in ORIGIN_OF_KIND if getattr(self, k) is not None)
        return ORIGIN_OF_KIND[kind]

    @property
    def own_phase(self) -> str:
        """``subject`` when this rule or a nested one is a subject-level derivation."""
        if self.derive:
            return DERIVATIONS[self.derive]
        return "subject" if any(r.own_phase == "subject" for r in self._nested()) else "record"

    def _nested(self) -> list["Rule"]:
        nested = [c.then for c in self.when or []] + ([self.else_] if self.else_ else [])
        return nested + [p for p in self.concat or [] if isinstance(p, Rule)]

    def fields(self) -> set[str]:
        """Source fields this rule reads."""
        found = {f for f in (self.field, self.date, self.time) if f}
        for case in self.when or []:
            found |= case.if_.fields()
        for rule in self._nested():
            found |= rule.fields()
        return found

    def references(self) -> set[str]:
        """Output variables this rule reads (so it is evaluated after them)."""
        refs = {v for v in (self.var, self.birth, self.at) if v}
        if self.derive == "seq":
            refs |= set(self.order or [])
        refs |= set([self.by] if isinstance(self.by, str) else self.by or [])
        if self.of and self.derive not in ("first_date", "last_date"):
            refs.add(self.of)
        if self.end and self.derive == "treatment_emergent":
            refs.add(self.end)
        for case in self.when or []:
            refs |= case.if_.variables()
        for rule in self._nested():
            refs |= rule.references()
        return refs


class WhenCase(Strict):
    if_: Condition = Field(alias="if")
    then: Rule


class Join(Strict):
    """Bring fields of another form onto each row (left join on key fields). Where the other form
    has several rows per key, ``filter`` keeps some and ``pick`` takes the first or last by ``order``."""

    form: str
    on: list[str]
    fields: list[str]
    filter: Optional[Condition] = None
    pick: Optional[Literal["first", "last"]] = None
    order: list[str] = []


class TestDef(Strict):
    """One row of a findings test table: a wide CRF field becomes one long record."""

    testcd: str = Field(max_length=8, pattern=r"^[A-Z_][A-Z0-9_]*$")  # SDTMIG: 8 characters, letters first
    test: str = Field(max_length=40)
    result: str
    unit: Optional[str] = None
    cat: Optional[str] = None
    scat: Optional[str] = None
    spec: Optional[str] = None
    method: Optional[str] = None
    obj: Optional[str] = None
    stdunit: Optional[str] = None
    codelist: Optional[str] = None  # codelist of the result (value-level: --ORRES/--STRESC where --TESTCD is this)
    low: Optional[float] = None
    high: Optional[float] = None


class Source(Strict):
    """A source form, with joins, a row filter, an optional test table and rule overrides."""

    form: str
    join: list[Join] = []
    visit_field: Optional[str] = None  # the column naming the visit (default: the EDC folder field)
    filter: Optional[Condition] = None
    filter_reason: Optional[str] = None
    tests: Optional[list[TestDef]] = None
    empty_results: Literal["not_done", "drop"] = "not_done"  # a test with no result: NOT DONE record, or none
    not_done_reason: Optional["Rule"] = None  # --REASND of the NOT DONE records (a field, or a value)
    variables: dict[str, Rule] = {}


class Conversion(Strict):
    """Unit conversion of a test's results: ``factor`` or a ``formula`` in ``x`` (the result in the
    original unit), rounded to ``decimals`` or ``significant`` digits when given."""

    testcd: str
    from_: str = Field(alias="from")
    to: str
    factor: Optional[float] = None
    formula: Optional[str] = None
    decimals: Optional[int] = None
    significant: Optional[int] = None

    @model_validator(mode="after")
    def _one_way(self):
        if (self.factor is None) == (self.formula is None):
            raise ValueError("a conversion has exactly one of factor, formula")
        if self.formula is not None:
            from .expr import ExpressionError, parse
            try:
                names = parse(self.formula).names
            except ExpressionError as exc:
                raise ValueError(str(exc)) from None
            if set(names) - {"x"}:
                raise ValueError(f"formula may only use x (the result), not {', '.join(sorted(names - {'x'}))}")
        if self.decimals is not None and self.significant is not None:
            raise ValueError("give decimals or significant, not both")
        return self


class SuppDef(Strict):
    qnam: str
    qlabel: str
    rule: Rule
    qorig: str = "CRF"
    qeval: str = ""


class VariableOverride(Strict):
    """Spec-level override of SDTMIG variable metadata."""

    label: Optional[str] = None
    codelist: Optional[str] = None
    origin: Optional[Literal["Collected", "Derived", "Assigned", "Protocol", "Predecessor", "Not Available"]] = None


class DomainSpec(Strict):
    """A whole domain: where records come from and how each variable is made."""

    domain: str
    class_: Optional[str] = Field(None, alias="class")  # a custom domain's (X*, Y*, Z*) observation class
    label: Optional[str] = None
    comment: Optional[str] = None
    sources: list[Source]
    variables: dict[str, Rule]
    conversions: list[Conversion] = []
    supp: list[SuppDef] = []
    metadata: dict[str, VariableOverride] = {}
    file: str = ""
    lines: dict[str, int] = {}

    def phases(self, source: Optional["Source"] = None) -> dict[str, str]:
        """Phase of each variable: ``subject`` if its rule, or a variable it reads, is subject-level."""
        rules = {**self.variables, **(source.variables if source else {})}
        phase = {name: rule.own_phase for name, rule in rules.items()}
        changed = True
        while changed:
            changed = False
            for name, rule in rules.items():
                if phase[name] == "record" and any(phase.get(r) == "subject" for r in rule.references()):
                    phase[name], changed = "subject", True
        return phase

    def line_of(self, *path: Any) -> str:
        """``file:line`` of the closest spec node on ``path``."""
        key = ".".join(str(p) for p in path)
        while key and key not in self.lines:
            key = key.rsplit(".", 1)[0] if "." in key else ""
        return f"{self.file}:{self.lines.get(key, 1)}"


class VisitDef(Strict):
    visitnum: float
    visit: str
    folder: str  # the visit as the EDC names it (folder, or the visit column's value; case is ignored)
    day: int
    window: tuple[int, int]
    aliases: list[str] = []  # other EDC names of the same visit


class ElementDef(Strict):
    etcd: str
    element: str
    epoch: str
    start: str
    start_offset_days: int = 0
    testrl: str
    teenrl: str = ""
    tedur: str = ""


class UnscheduledDef(Strict):
    """How the EDC names unscheduled visits: a regular expression whose first group is the
    VISITNUM (``Unscheduled 3.1`` -> 3.1), and the VISIT text made of it."""

    pattern: str
    visit: str = "UNSCHEDULED {visitnum}"

    @model_validator(mode="after")
    def _one_group(self):
        import re
        try:
            groups = re.compile(self.pattern).groups
        except re.error as exc:
            raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        if groups < 1:
            raise ValueError("pattern needs a group that captures the VISITNUM, e.g. '^Unscheduled (\\d+\\.\\d+)$'")
        if "{visitnum}" not in self.visit:
            raise ValueError("visit needs '{visitnum}'")
        return self


class ArmDef(Strict):
    armcd: str
    arm: str
    dose: Optional[Union[float, list[float]]] = None  # planned dose(s) per administration (TS DOSE by TSGRPID)
    dose_unit: Optional[str] = None  # TS DOSU

    @property
    def doses(self) -> list[float]:
        return [] if self.dose is None else [self.dose] if isinstance(self.dose, (int, float)) else list(self.dose)


class RelationshipLink(Strict):
    domain: str
    idvar: str
    reltype: Literal["ONE", "MANY"]


class RelationshipDef(Strict):
    """A dataset-level RELREC relationship: records of these domains relate where their ``idvar``
    values match (e.g. AE.AELNKID = FA.FALNKID)."""

    relid: str = Field(max_length=200)
    link: list[RelationshipLink] = Field(min_length=2)


class EdcConfig(Strict):
    path: str = "edc"
    format: Literal["csv", "odm", "sas"] = "csv"
    encoding: str = "utf-8"
    odm_file: Optional[str] = None
    subject_field: str = "SUBJECT"
    site_field: str = "SITEID"
    folder_field: str = "FOLDER"
    repeat_field: str = "FORMREPEAT"
    screen_failure: Optional[Condition] = None
    screen_failure_form: Optional[str] = None
    forms: Optional[list[str]] = None  # read only these files (e.g. dm_raw.csv); default every file
    ignore: list[str] = []  # file patterns that are not forms (e.g. "*_ct.csv")
    # the CRF design of a CSV export (question text, choices, units): a data dictionary CSV, not a form
    data_dictionary: Optional[str] = None

    @property
    def not_forms(self) -> list[str]:
        """File patterns of the EDC folder that are not forms."""
        return [*self.ignore, *([self.data_dictionary] if self.data_dictionary else [])]


class DocumentDef(Strict):
    """A document define.xml links to (annotated CRF, reviewer's guide), relative to the output."""

    id: str
    title: str
    href: str
    type: Literal["acrf", "supplemental"] = "supplemental"


class StudyConfig(Strict):
    study: dict[str, Scalar]
    documents: list[DocumentDef] = []
    edc: EdcConfig
    constants: dict[str, Scalar] = {}
    arms: list[ArmDef]
    visits: list[VisitDef]
    unscheduled: Optional[UnscheduledDef] = None
    elements: list[ElementDef]
    trial_summary: list[dict[str, Scalar]] = []
    relationships: list[RelationshipDef] = []
    file: str = ""
    lines: dict[str, int] = {}

    @property
    def studyid(self) -> str:
        return str(self.constants.get("STUDYID", self.study.get("studyid", "")))


class StudyIdentity(BaseModel):
    """The part of ``study.yaml`` an ADaM-only run reads (``--adam-only`` works from SDTM, so the
    EDC, arms, visits and elements are neither needed nor checked)."""

    model_config = ConfigDict(extra="ignore")
    study: dict[str, Scalar]
    constants: dict[str, Scalar] = {}
    file: str = ""
    lines: dict[str, int] = {}

    @property
    def studyid(self) -> str:
        return str(self.constants.get("STUDYID", self.study.get("studyid", "")))


def load_yaml(path: Path) -> tuple[Any, dict[str, int]]:
    """Load YAML as plain data plus the 1-based line of every node, keyed by dotted path.

    The document is composed into nodes (which carry their marks) by ruamel's C parser, several
    times faster than its round-trip loader; scalars are typed by the YAML 1.2 safe constructor."""
    path = Path(path)
    yaml = YAML(typ="safe", pure=False)
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise ConversionError(f"YAML syntax error: {getattr(exc, 'problem', exc)}", spec=f"{path.name}:{line}") from exc
    lines: dict[str, int] = {}
    if root is None:
        return None, lines
    return _plain(root, "", lines, yaml.constructor, path.name), lines


def _plain(node: Any, path: str, lines: dict[str, int], construct: BaseConstructor, file: str) -> Any:
    if isinstance(node, MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise ConversionError("YAML merge keys (<<) are not supported in specs; write the keys out",
                                      spec=f"{file}:{key_node.start_mark.line + 1}")
            key = _plain(key_node, "", {}, construct, file)
            key = str(key) if not isinstance(key, str) else key
            if key in out:
                raise ConversionError(f"YAML syntax error: duplicate key '{key}'",
                                      spec=f"{file}:{key_node.start_mark.line + 1}", field=key)
            sub = f"{path}.{key}" if path else key
            lines[sub] = key_node.start_mark.line + 1
            out[key] = _plain(value_node, sub, lines, construct, file)
        return out
    if isinstance(node, SequenceNode):
        out_list = []
        for i, value_node in enumerate(node.value):
            sub = f"{path}.{i}" if path else str(i)
            lines[sub] = value_node.start_mark.line + 1
            out_list.append(_plain(value_node, sub, lines, construct, file))
        return out_list
    value = construct.construct_object(node, deep=True) if isinstance(node, ScalarNode) else node.value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)


_LOADED: dict[tuple[str, str, str], BaseModel] = {}


def _validate(model: type[BaseModel], path: Path):
    """The validated model of a spec file; a file already loaded with the same content is not
    parsed again (the pipeline, define.xml and the validator all read the specs)."""
    path = Path(path)
    raw = path.read_bytes()
    key = (model.__name__, str(path.resolve()), hashlib.sha256(raw).hexdigest())
    if key not in _LOADED:
        _LOADED[key] = _validate_uncached(model, path)
    # callers may adjust their copy; a pickle round trip copies a model in C, twice as fast as deepcopy
    return pickle.loads(pickle.dumps(_LOADED[key], protocol=pickle.HIGHEST_PROTOCOL))


def _validate_uncached(model: type[BaseModel], path: Path):
    data, lines = load_yaml(path)
    if not isinstance(data, dict):
        raise ConversionError("a spec file must hold a mapping", spec=f"{path.name}:1")
    try:
        return model.model_validate({**data, "file": path.name, "lines": lines})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"] if not str(p).startswith(("function-", "union[", "str", "int"))]
        loc = [p for p in loc if p not in ("Rule", "Condition")]
        key = ".".join(loc)
        probe = key
        while probe and probe not in lines:
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ConversionError(f"spec error at {key or '(top)'}: {err['msg']}{more}",
                              spec=f"{path.name}:{lines.get(probe, 1)}", field=loc[-1] if loc else None) from None


def load_domain_spec(path: Path) -> DomainSpec:
    """Load and validate one domain spec file."""
    return _validate(DomainSpec, path)


def load_study_config(path: Path) -> StudyConfig:
    """Load and validate the study config (``study.yaml``)."""
    return _validate(StudyConfig, path)


def load_study_identity(path: Path) -> StudyIdentity:
    """The study's identity and creation date from ``study.yaml`` (for ADaM from SDTM)."""
    return _validate(StudyIdentity, path)
