"""ADaM specs: a dataset is an ordered list of steps, each naming a library derivation and its
parameters (data, never code), validated by pydantic with file:line errors like SDTM specs.

Example (``mappings/nct05948982/adam/adae.yaml`` is a full one):

    dataset: ADAE
    steps:
      - {derive: start, from: AE}
      - {derive: merge, from: ADSL, by: [USUBJID], vars: [TRTSDT, TRTEDT, TRT01A]}
      - {derive: date, dtc: AESTDTC, prefix: AST, imputation: first}
      - {derive: trtemfl, window: 28}
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, Field, model_validator

from ..errors import ConversionError
from ..expr import ExpressionError, parse
from ..spec import Condition, Scalar, Strict, _validate


def _expression(kind: str):
    def check(text: str) -> str:
        try:
            parse(text, kind)
        except ExpressionError as exc:
            raise ValueError(str(exc)) from None
        return text
    return AfterValidator(check)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a value a dataset can hold (XPT and Dataset-JSON need finite numbers)")
    return value


#: a row filter: a structured condition, or an expression text such as ``"ADT <= TRTSDT and present(AVAL)"``
Filter = Union[Annotated[str, _expression("condition")], Condition]
#: a literal value (``null`` for missing); numbers must be finite
Literal_ = Annotated[Optional[Scalar], AfterValidator(_finite)]


class ValueOf(Strict):
    """A value computed per record: ``{var: X}``, ``{expr: "AVAL * 2"}`` or ``{dtc: AESTDTC}`` (the
    date of an ISO 8601 --DTC, partial dates imputed as ``imputation``/``highest`` say)."""

    var: Optional[str] = None
    expr: Optional[Annotated[str, _expression("value")]] = None
    dtc: Optional[str] = None
    imputation: Literal["first", "last"] = "first"
    highest: Literal["n", "D", "M"] = "M"

    @model_validator(mode="after")
    def _one(self):
        if [self.var, self.expr, self.dtc].count(None) != 2:
            raise ValueError("a value is exactly one of var, expr, dtc")
        return self


Setting = Union[ValueOf, Literal_]


class Start(Strict):
    """Start from the records of an SDTM domain or an ADaM dataset."""

    derive: Literal["start"]
    from_: str = Field(alias="from")
    filter: Optional[Filter] = None


class Merge(Strict):
    """Add variables from another dataset by keys (first/last record per group with ``order``)."""

    derive: Literal["merge"]
    from_: str = Field(alias="from")
    by: list[str]
    vars: Union[dict[str, str], list[str], Literal["all"]]
    except_: list[str] = Field([], alias="except")  # with vars: all, the variables not to add
    filter: Optional[Filter] = None
    order: Optional[list[str]] = None
    mode: Literal["first", "last"] = "last"
    missing: dict[str, Literal_] = {}  # value for records with no match (admiral missing_values)


class MergeSupp(Strict):
    """Add a supplemental qualifier (SUPP--.QVAL of ``qnam``) onto its parent records."""

    derive: Literal["merge_supp"]
    domain: str
    qnam: str
    new: str


class Count(Strict):
    """Number of records per subject in another dataset (e.g. infusions received)."""

    derive: Literal["count"]
    from_: str = Field(alias="from")
    by: list[str] = ["USUBJID"]
    new: str
    filter: Optional[Filter] = None


class Copy(Strict):
    """Copy variables: ``{NEW: OLD}``."""

    derive: Literal["copy"]
    vars: dict[str, str]


class Assign(Strict):
    """Set variables to fixed values: ``{NEW: value}``."""

    derive: Literal["assign"]
    vars: dict[str, Literal_]


class Recode(Strict):
    """``new`` from ``var`` through a table of values; ``null`` in the table gives a missing value.
    A value not in the table is an error unless ``default`` says what it gets."""

    derive: Literal["recode"]
    var: str
    new: str
    values: dict[str, Literal_]
    default: Optional[Setting] = None


class Concat(Strict):
    """Text built from variables and literals: parts are ``{var: X}`` or strings."""

    derive: Literal["concat"]
    new: str
    parts: list[Union[str, dict[str, str]]]
    when_empty: Optional[str] = None  # variable that, when empty, gives the first part only


class Flag(Strict):
    """``new`` = ``Y`` where the condition holds, else empty."""

    derive: Literal["flag"]
    new: str
    when: Filter


class Groups(Strict):
    """Group a numeric variable: the first group whose ``upto`` the value does not exceed."""

    derive: Literal["groups"]
    var: str
    new: str
    groups: list[dict[str, Scalar]]
    numeric: Optional[str] = None


class DateStep(Strict):
    """Numeric date (and datetime) from an ISO 8601 --DTC with partial-date imputation."""

    derive: Literal["date"]
    dtc: str
    prefix: str = "A"
    imputation: Literal["first", "last"] = "first"
    highest: Literal["n", "D", "M"] = "M"  # n: partial dates stay missing
    time: bool = False
    time_imputation: Literal["first", "last"] = "first"  # a missing time: 00:00:00 or 23:59:59
    min_dates: list[str] = []  # imputed no earlier than these dates where the partial date allows them
    max_dates: list[str] = []  # imputed no later than these dates where the partial date allows them
    flag: bool = True
    names: dict[str, str] = {}  # rename outputs, e.g. {TRTSDTF: ""} to drop, {ASTTMF: ATMF}


class RelativeDay(Strict):
    derive: Literal["relative_day"]
    reference: str
    vars: dict[str, str]


class Duration(Strict):
    """Days from ``start`` to ``end``: end - start + 1 (``add_one: false``: end - start); with
    ``unit_var``, that variable gets ``unit`` where the duration is known."""

    derive: Literal["duration"]
    start: str
    end: str
    new: str
    add_one: bool = True
    unit_var: Optional[str] = None
    unit: str = "DAYS"


class ExtremeFlag(Strict):
    """``new`` = ``Y`` on the first or last record per ``by`` group in ``order`` (``desc(X)`` sorts X descending)."""

    derive: Literal["extreme_flag"]
    by: list[str]
    order: list[str]
    new: str
    mode: Literal["first", "last"] = "last"
    filter: Optional[Filter] = None


class Baseline(Strict):
    """ABLFL, then BASE/BASEC/BNRIND copied within ``by``, then CHG and PCHG."""

    derive: Literal["baseline"]
    by: list[str]
    chg: bool = True
    pchg: bool = True


class Anrind(Strict):
    derive: Literal["anrind"]


class Shift(Strict):
    derive: Literal["shift"]
    new: str = "SHIFT1"


class Window(Strict):
    avisitn: float
    avisit: str
    target: int
    low: int
    high: int


class Windows(Strict):
    """AVISIT/AVISITN by study-day windows; ANL01FL on the record nearest the target (then latest)."""

    derive: Literal["windows"]
    by: list[str]
    day: str = "ADY"
    windows: list[Window]
    baseline_visit: Optional[str] = None  # AVISIT given to the baseline record


class Trtemfl(Strict):
    derive: Literal["trtemfl"]
    window: int = 28


class ParamComputed(Strict):
    """Parameters computed from other parameters of the same ``by`` group: a library score
    (``function``) or a ``formula`` over PARAMCDs (``(2 * DIABP + SYSBP) / 3``). ``constant``
    parameters (e.g. HEIGHT) are taken per ``constant_by`` group (the subject), not per date."""

    derive: Literal["param"]
    function: Optional[Literal["meld", "child_pugh", "child_pugh_class", "rand36", "cldq", "eq5d5l_index"]] = None
    formula: Optional[Annotated[str, _expression("number")]] = None
    by: list[str] = ["STUDYID", "USUBJID", "ADT"]
    inputs: dict[str, str] = {}  # role -> PARAMCD (e.g. bili: BILI), or item number -> PARAMCD
    constant: list[str] = []
    constant_by: list[str] = ["USUBJID"]
    filter: Optional[Filter] = None  # which input records count
    paramcd: Optional[str] = None
    param: Optional[str] = None
    keep: list[str] = []
    assign: dict[str, Literal_] = {}

    @model_validator(mode="after")
    def _one_way(self):
        if (self.function is None) == (self.formula is None):
            raise ValueError("a computed parameter has exactly one of function, formula")
        if self.formula is not None and not self.paramcd:
            raise ValueError("a formula parameter needs its paramcd")
        return self


class AddRecords(Strict):
    """Add records of another dataset as (temporary) parameters, e.g. FA ascites for Child-Pugh."""

    derive: Literal["add_records"]
    from_: str = Field(alias="from")
    filter: Optional[Filter] = None
    vars: dict[str, str]
    assign: dict[str, Scalar] = {}
    recode: dict[str, dict[str, Scalar]] = {}


class DropRecords(Strict):
    derive: Literal["drop_records"]
    when: Filter


class TteEvent(Strict):
    from_: str = Field(alias="from")
    date: str
    description: str
    filter: Optional[Filter] = None


class Tte(Strict):
    """A time-to-event parameter: earliest event (CNSR=0) else latest censoring date (CNSR=1)."""

    derive: Literal["tte"]
    paramcd: str
    param: str
    start: str = "TRTSDT"
    events: list[TteEvent]
    censor: list[TteEvent]


class Base(Strict):
    """BASE (or BASEC, BNRIND ...): the value of ``var`` on the ``flag`` record of each ``by`` group."""

    derive: Literal["base"]
    by: list[str]
    var: str = "AVAL"
    new: str = "BASE"
    flag: str = "ABLFL"


class Chg(Strict):
    """CHG = AVAL - BASE."""

    derive: Literal["chg"]


class Pchg(Strict):
    """PCHG = 100 * (AVAL - BASE) / BASE."""

    derive: Literal["pchg"]


class Summary(Strict):
    """Summary records (admiral ``derive_summary_records``): one new record per ``by`` group of the
    records meeting ``filter``, ``analysis`` variables summarised (``{AVAL: mean}``), ``assign``
    set (``{DTYPE: AVERAGE}``). The new records carry only ``by``, analysis and assigned variables."""

    derive: Literal["summary"]
    by: list[str]
    filter: Optional[Filter] = None
    analysis: dict[str, Literal["mean", "median", "min", "max", "sum", "count", "first", "last"]]
    assign: dict[str, Literal_] = {}


class ExtremeRecords(Strict):
    """New records copied from the first or last record per ``by`` group of ``from`` (the dataset
    being derived, or another), e.g. an End of Treatment LOV record (admiral
    ``derive_extreme_records``); ``assign`` sets variables of the new records."""

    derive: Literal["extreme_records"]
    from_: Optional[str] = Field(None, alias="from")  # default: the dataset being derived
    by: list[str]
    order: list[str]
    mode: Literal["first", "last"] = "last"
    filter: Optional[Filter] = None
    assign: dict[str, Setting] = {}


class Event(Strict):
    """One source of ``extreme_event``: records of ``from`` meeting ``filter``, and the values they give."""

    from_: str = Field(alias="from")
    filter: Optional[Filter] = None
    set: dict[str, Setting]


class ExtremeEvent(Strict):
    """First or last event per ``by`` group across several sources (admiral
    ``derive_vars_extreme_event``): each event's records give values (``set``); the candidates are
    ordered by ``order`` then by the event's position in the list, and ``new`` variables are taken
    from the first or last."""

    derive: Literal["extreme_event"]
    by: list[str] = ["STUDYID", "USUBJID"]
    events: list[Event]
    order: list[str]
    mode: Literal["first", "last"] = "last"
    new: list[str]


class Case(Strict):
    """One ``when`` with the values it sets; the first case that holds wins."""

    when: Filter
    set: dict[str, Setting]


class CaseWhen(Strict):
    """Conditional assignment (dplyr ``case_when``, admiral ``derive_vars_cat``): each record gets
    the ``set`` values of the first case that holds, else ``else`` (else missing)."""

    derive: Literal["case"]
    cases: list[Case]
    else_: dict[str, Setting] = Field({}, alias="else")


class MergeJoined(Strict):
    """Variables from the ``from`` record that meets a condition between the two datasets
    (admiral ``derive_vars_joined``): records are paired within ``by``, ``join`` is evaluated on
    each pair (``EXSTDTM <= ASTDTM``), and the first or last pair in ``order`` gives ``vars``."""

    derive: Literal["merge_joined"]
    from_: str = Field(alias="from")
    by: list[str]
    vars: dict[str, str]
    join: Annotated[str, _expression("condition")]
    filter: Optional[Filter] = None
    order: list[str]
    mode: Literal["first", "last"] = "last"


class Seq(Strict):
    """A sequence number (ASEQ): 1, 2, ... per ``by`` group in ``order`` (admiral ``derive_var_obs_number``)."""

    derive: Literal["seq"]
    new: str = "ASEQ"
    by: list[str] = ["STUDYID", "USUBJID"]
    order: list[str]


class Basetype(Strict):
    """One basetype: its name and the records it applies to."""

    name: str
    when: Filter


class BasetypeRecords(Strict):
    """BASETYPE (admiral ``derive_basetype_records``): each record copied once per basetype whose
    ``when`` it meets; records meeting none are kept once with BASETYPE empty."""

    derive: Literal["basetype"]
    basetypes: list[Basetype]
    new: str = "BASETYPE"


class Restrict(Strict):
    """Apply ``steps`` to the records meeting ``where`` only (admiral ``restrict_derivation``); the
    other records pass through unchanged (new variables missing on them)."""

    derive: Literal["restrict"]
    where: Filter
    steps: list["Step"]


Step = Annotated[Union[Start, Merge, MergeSupp, Count, Copy, Assign, Recode, Concat, Flag, Groups, DateStep,
                       RelativeDay, Duration, ExtremeFlag, Baseline, Anrind, Shift, Windows, Trtemfl,
                       ParamComputed, AddRecords, DropRecords, Tte, Base, Chg, Pchg, Summary, ExtremeRecords,
                       ExtremeEvent, CaseWhen, MergeJoined, Seq, BasetypeRecords, Restrict],
                 Field(discriminator="derive")]
Restrict.model_rebuild()


class AdamVariable(Strict):
    name: str
    label: Optional[str] = None
    comment: Optional[str] = None


class VariablesFrom(Strict):
    """``{from: ADSL, except: [...]}`` in ``variables``: every variable of another ADaM spec of the
    study, in its order, except those named and those listed elsewhere (labels carried over)."""

    from_: str = Field(alias="from")
    except_: list[str] = Field([], alias="except")


class AdamSpec(Strict):
    dataset: str
    label: str
    structure: str = ""
    class_: str = Field("BASIC DATA STRUCTURE", alias="class")
    subclass: Optional[str] = None
    comment: Optional[str] = None
    keys: list[str]
    steps: list[Step]
    variables: list[Union[str, AdamVariable, VariablesFrom]]
    file: str = ""
    lines: dict[str, int] = {}

    def line_of(self, *path: Any) -> str:
        key = ".".join(str(p) for p in path)
        while key and key not in self.lines:
            key = key.rsplit(".", 1)[0] if "." in key else ""
        return f"{self.file}:{self.lines.get(key, 1)}"

    def variable_names(self) -> list[str]:
        return [v if isinstance(v, str) else v.name for v in self.variables]


def load_adam_spec(path: Path) -> AdamSpec:
    return _validate(AdamSpec, path)


def expand_variables(specs: list[AdamSpec]) -> list[AdamSpec]:
    """Replace each ``{from: X, except: [...]}`` in ``variables`` by X's variables (labels kept).

    >>> a = AdamSpec.model_validate({"dataset": "ADSL", "label": "S", "keys": [], "steps": [],
    ...     "variables": ["STUDYID", "USUBJID", {"name": "FLAG1", "label": "Flag one"}, "AGE"]})
    >>> b = AdamSpec.model_validate({"dataset": "ADAE", "label": "A", "keys": [], "steps": [],
    ...     "variables": ["STUDYID", "USUBJID", "AETERM", {"from": "ADSL", "except": ["AGE"]}]})
    >>> [v if isinstance(v, str) else (v.name, v.label) for v in expand_variables([a, b])[1].variables]
    ['STUDYID', 'USUBJID', 'AETERM', ('FLAG1', 'Flag one')]
    """
    by_name = {s.dataset: s for s in specs}

    def expand(spec: AdamSpec, seen: tuple) -> list:
        out: list = []
        listed = {v if isinstance(v, str) else v.name for v in spec.variables if not isinstance(v, VariablesFrom)}
        for i, v in enumerate(spec.variables):
            if not isinstance(v, VariablesFrom):
                out.append(v)
                continue
            other = by_name.get(v.from_)
            if other is None or v.from_ in seen:
                why = "is not an ADaM spec of the study" if other is None else "refers back to this dataset"
                raise ConversionError(f"variables from {v.from_}: {v.from_} {why}", dataset=spec.dataset,
                                      spec=spec.line_of("variables", i))
            skip = listed | set(v.except_) | {x if isinstance(x, str) else x.name for x in out}
            for w in expand(other, (*seen, spec.dataset)):
                name = w if isinstance(w, str) else w.name
                if name not in skip:
                    out.append(w)
                    skip.add(name)
        return out

    return [s.model_copy(update={"variables": expand(s, (s.dataset,))}) if
            any(isinstance(v, VariablesFrom) for v in s.variables) else s for s in specs]


def load_adam_specs(folder: Path) -> list[AdamSpec]:
    """Every ``*.yaml`` in the study's ``adam/`` folder (none: no ADaM)."""
    return expand_variables([load_adam_spec(p) for p in sorted(folder.glob("*.yaml"))]) if folder.is_dir() else []
