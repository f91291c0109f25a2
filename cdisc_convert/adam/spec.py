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

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field

from ..spec import Condition, Scalar, Strict, _validate


class Start(Strict):
    """Start from the records of an SDTM domain or an ADaM dataset."""

    derive: Literal["start"]
    from_: str = Field(alias="from")
    filter: Optional[Condition] = None


class Merge(Strict):
    """Add variables from another dataset by keys (first/last record per group with ``order``)."""

    derive: Literal["merge"]
    from_: str = Field(alias="from")
    by: list[str]
    vars: Union[dict[str, str], list[str]]
    filter: Optional[Condition] = None
    order: Optional[list[str]] = None
    mode: Literal["first", "last"] = "last"


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
    filter: Optional[Condition] = None


class Copy(Strict):
    """Copy variables: ``{NEW: OLD}``."""

    derive: Literal["copy"]
    vars: dict[str, str]


class Assign(Strict):
    """Set variables to fixed values: ``{NEW: value}``."""

    derive: Literal["assign"]
    vars: dict[str, Scalar]


class Recode(Strict):
    """``new`` from ``var`` through a table of values (unmapped values are an error)."""

    derive: Literal["recode"]
    var: str
    new: str
    values: dict[str, Scalar]


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
    when: Condition


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
    highest: Literal["D", "M"] = "M"
    time: bool = False
    flag: bool = True
    names: dict[str, str] = {}  # rename outputs, e.g. {TRTSDTF: ""} to drop, {ASTTMF: ATMF}


class RelativeDay(Strict):
    derive: Literal["relative_day"]
    reference: str
    vars: dict[str, str]


class Duration(Strict):
    """Days from ``start`` to ``end`` inclusive (end - start + 1)."""

    derive: Literal["duration"]
    start: str
    end: str
    new: str


class ExtremeFlag(Strict):
    derive: Literal["extreme_flag"]
    by: list[str]
    order: list[str]
    new: str
    mode: Literal["first", "last"] = "last"
    filter: Optional[Condition] = None


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
    """Parameters computed from other parameters of the same subject and date."""

    derive: Literal["param"]
    function: Literal["meld", "child_pugh", "child_pugh_class", "rand36", "cldq", "eq5d5l_index"]
    by: list[str] = ["STUDYID", "USUBJID", "ADT"]
    inputs: dict[str, str] = {}  # role -> PARAMCD (e.g. bili: BILI), or item number -> PARAMCD
    paramcd: Optional[str] = None
    param: Optional[str] = None
    keep: list[str] = []


class AddRecords(Strict):
    """Add records of another dataset as (temporary) parameters, e.g. FA ascites for Child-Pugh."""

    derive: Literal["add_records"]
    from_: str = Field(alias="from")
    filter: Optional[Condition] = None
    vars: dict[str, str]
    assign: dict[str, Scalar] = {}
    recode: dict[str, dict[str, Scalar]] = {}


class DropRecords(Strict):
    derive: Literal["drop_records"]
    when: Condition


class TteEvent(Strict):
    from_: str = Field(alias="from")
    date: str
    description: str
    filter: Optional[Condition] = None


class Tte(Strict):
    """A time-to-event parameter: earliest event (CNSR=0) else latest censoring date (CNSR=1)."""

    derive: Literal["tte"]
    paramcd: str
    param: str
    start: str = "TRTSDT"
    events: list[TteEvent]
    censor: list[TteEvent]


Step = Annotated[Union[Start, Merge, MergeSupp, Count, Copy, Assign, Recode, Concat, Flag, Groups, DateStep,
                       RelativeDay, Duration, ExtremeFlag, Baseline, Anrind, Shift, Windows, Trtemfl,
                       ParamComputed, AddRecords, DropRecords, Tte], Field(discriminator="derive")]


class AdamVariable(Strict):
    name: str
    label: Optional[str] = None
    comment: Optional[str] = None


class AdamSpec(Strict):
    dataset: str
    label: str
    structure: str = ""
    class_: str = Field("BASIC DATA STRUCTURE", alias="class")
    subclass: Optional[str] = None
    comment: Optional[str] = None
    keys: list[str]
    steps: list[Step]
    variables: list[Union[str, AdamVariable]]
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


def load_adam_specs(folder: Path) -> list[AdamSpec]:
    """Every ``*.yaml`` in the study's ``adam/`` folder (none: no ADaM)."""
    return [load_adam_spec(p) for p in sorted(folder.glob("*.yaml"))] if folder.is_dir() else []
