"""Evaluate spec rules and conditions against a frame of source rows.

``RuleContext`` holds what a rule may look at: the source rows (with test-table attributes
as ``@testcd`` etc.), the output variables built so far, study constants and controlled
terminology. Each evaluation returns a Series aligned to the source rows. Failures raise
:class:`ConversionError` naming the first offending row's source, the field and the spec line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from ..errors import ConversionError
from ..metadata import Codelist
from ..text import as_text
from ..spec import Condition, Rule
from . import derive


@dataclass
class RuleContext:
    rows: pd.DataFrame
    out: pd.DataFrame
    constants: dict
    codelists: dict[str, Codelist]
    domain: str
    form: str
    spec_line: Callable[..., str]
    deviations: list[dict] = field(default_factory=list)
    subject_level: Callable[[Rule, "RuleContext", str], pd.Series] | None = None

    def subset(self, mask: pd.Series) -> "RuleContext":
        """The same context restricted to some rows (index kept), for conditional branches."""
        return RuleContext(self.rows[mask], self.out[mask], self.constants, self.codelists, self.domain, self.form,
                           self.spec_line, self.deviations, self.subject_level)

    def source_file(self) -> str:
        first = self.rows["__src"].iloc[0] if len(self.rows) else self.form
        return str(first).split("#")[0].rsplit(":", 1)[0]

    def fail(self, message: str, mask: pd.Series, field_name: str | None, where: tuple) -> None:
        """Raise for the first row where ``mask`` holds."""
        first = mask[mask].index[0]
        raise ConversionError(message.format(value=self._value_at(first, field_name)),
                              source=str(self.rows.at[first, "__src"]), field=field_name,
                              spec=self.spec_line(*where), dataset=self.domain)

    def _value_at(self, index, field_name):
        if field_name and field_name in self.rows.columns:
            return self.rows.at[index, field_name]
        if field_name and field_name in self.out.columns:
            return self.out.at[index, field_name]
        return ""

    def column(self, name: str, where: tuple) -> pd.Series:
        if name not in self.rows.columns:
            raise ConversionError(f"missing source column '{name}' in form {self.form}", source=self.source_file(),
                                  field=name, spec=self.spec_line(*where), dataset=self.domain)
        return self.rows[name].fillna("").astype(object)


def _text(value) -> str:
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def evaluate_condition(cond: Condition, ctx: RuleContext, where: tuple) -> pd.Series:
    """Boolean Series: which rows meet the condition.

    >>> import pandas as pd
    >>> ctx = RuleContext(pd.DataFrame({"A": ["Yes", "No", ""], "__src": ["f:2", "f:3", "f:4"]}),
    ...                   pd.DataFrame(index=range(3)), {}, {}, "XX", "F", lambda *p: "x.yaml:1")
    >>> evaluate_condition(Condition(field="A", equals="Yes"), ctx, ()).tolist()
    [True, False, False]
    >>> evaluate_condition(Condition.model_validate({"not": {"field": "A", "empty": True}}), ctx, ()).tolist()
    [True, True, False]
    """
    if cond.all is not None:
        result = pd.Series(True, index=ctx.rows.index)
        for i, c in enumerate(cond.all):
            result &= evaluate_condition(c, ctx, (*where, "all", i))
        return result
    if cond.any is not None:
        result = pd.Series(False, index=ctx.rows.index)
        for i, c in enumerate(cond.any):
            result |= evaluate_condition(c, ctx, (*where, "any", i))
        return result
    if cond.not_ is not None:
        return ~evaluate_condition(cond.not_, ctx, (*where, "not"))
    if cond.field is not None:
        values = ctx.column(cond.field, (*where, "field"))
    else:
        if cond.var not in ctx.out.columns:
            raise ConversionError(f"condition uses variable '{cond.var}' before it is assigned",
                                  spec=ctx.spec_line(*where), dataset=ctx.domain, field=cond.var)
        values = ctx.out[cond.var]
    if cond.at_least is not None or cond.at_most is not None:
        number = pd.to_numeric(values, errors="coerce")
        result = number.notna()
        if cond.at_least is not None:
            result &= number >= cond.at_least
        if cond.at_most is not None:
            result &= number <= cond.at_most
        return result
    text = as_text(values)
    if cond.equals is not None:
        return text == _text(cond.equals)
    if cond.not_equals is not None:
        return text != _text(cond.not_equals)
    if cond.in_ is not None:
        return text.isin([_text(v) for v in cond.in_])
    return (text == "") if cond.empty else (text != "")


def evaluate_rule(rule: Rule, ctx: RuleContext, where: tuple) -> pd.Series:
    """Evaluate one rule (kind, then recoding) into a Series aligned with ``ctx.rows``."""
    values = _base_value(rule, ctx, where)
    if rule.pattern is not None:
        values = _extract_pattern(values, rule, ctx, where)
    if rule.upper:
        values = as_text(values).str.upper().astype(object)
    if rule.map is not None:
        values = _apply_map(values, rule, ctx, where)
    if rule.codelist is not None:
        values = _check_codelist(values, rule, ctx, where)
    if rule.type == "num":
        text = as_text(values)
        numbers = pd.to_numeric(text.replace("", None), errors="coerce")
        bad = numbers.isna() & (text != "")
        if bad.any():
            ctx.fail("value '{value}' is not a number", bad, rule.field, where)
        values = numbers.astype(float)
    return values


def _base_value(rule: Rule, ctx: RuleContext, where: tuple) -> pd.Series:
    index = ctx.rows.index
    if rule.field is not None:
        return ctx.column(rule.field, (*where, "field"))
    if rule.value is not None:
        return pd.Series(rule.value if isinstance(rule.value, (int, float)) and not isinstance(rule.value, bool)
                         else _text(rule.value), index=index, dtype=object)
    if rule.constant is not None:
        if rule.constant not in ctx.constants:
            raise ConversionError(f"unknown study constant '{rule.constant}'", spec=ctx.spec_line(*where, "constant"),
                                  dataset=ctx.domain)
        return pd.Series(_text(ctx.constants[rule.constant]), index=index, dtype=object)
    if rule.var is not None:
        if rule.var not in ctx.out.columns:
            raise ConversionError(f"variable '{rule.var}' is used before it is assigned",
                                  spec=ctx.spec_line(*where, "var"), dataset=ctx.domain, field=rule.var)
        return ctx.out[rule.var].copy()
    if rule.test is not None:
        col = f"@{rule.test}"
        if col not in ctx.rows.columns:
            raise ConversionError(f"'test: {rule.test}' needs a source with a test table", dataset=ctx.domain,
                                  spec=ctx.spec_line(*where, "test"))
        return ctx.rows[col].fillna("").astype(object)
    if rule.concat is not None:
        result = pd.Series("", index=index, dtype=object)
        for i, part in enumerate(rule.concat):
            piece = part if isinstance(part, str) else as_text(evaluate_rule(part, ctx, (*where, "concat", i)))
            result = result + piece
        return result
    if rule.date is not None:
        time = ctx.column(rule.time, (*where, "time")) if rule.time else None
        date_text = ctx.column(rule.date, (*where, "date"))
        if rule.formats:  # the field's stated formats, tried in order; then time as usual
            date_text, bad_date = derive.parse_dates(date_text, rule.formats, rule.year_pivot)
            if bad_date.any():
                ctx.fail(f"date '{{value}}' matches none of the formats {', '.join(rule.formats)}", bad_date,
                         rule.date, (*where, "format"))
        iso, bad = derive.iso8601_datetime(date_text, time)
        if bad.any():
            bad_field = rule.date
            if time is not None and not derive.iso8601_date(ctx.rows[rule.date])[1][bad].any():
                bad_field = rule.time
            ctx.fail("unparseable date/time '{value}'", bad, bad_field, (*where, "date"))
        return iso
    if rule.when is not None:
        # each branch is evaluated only on its own rows, so a map in one branch never sees
        # values that another branch handles
        result = pd.Series("", index=index, dtype=object)
        decided = pd.Series(False, index=index)
        for i, case in enumerate(rule.when):
            hit = evaluate_condition(case.if_, ctx, (*where, "when", i, "if")) & ~decided
            if hit.any():
                result = _assign(result, hit, evaluate_rule(case.then, ctx.subset(hit), (*where, "when", i, "then")))
            decided |= hit
        if rule.else_ is not None and (~decided).any():
            result = _assign(result, ~decided, evaluate_rule(rule.else_, ctx.subset(~decided), (*where, "else")))
        return result
    if rule.derive is not None:
        return _derive_record_level(rule, ctx, where)
    raise AssertionError("validated rule has a kind")


def _assign(result: pd.Series, mask: pd.Series, values: pd.Series) -> pd.Series:
    """Put a branch's values into the rows it decided (types settle when the dataset is typed)."""
    result = result.astype(object)
    result[mask] = values.astype(object)
    return result


def _derive_record_level(rule: Rule, ctx: RuleContext, where: tuple) -> pd.Series:
    if rule.derive == "age":
        if rule.birth not in ctx.out.columns or rule.at not in ctx.out.columns:
            raise ConversionError("derive: age needs 'birth' and 'at' variables assigned earlier",
                                  spec=ctx.spec_line(*where), dataset=ctx.domain)
        return derive.age_in_years(ctx.out[rule.birth], ctx.out[rule.at])
    if ctx.subject_level is None:
        raise AssertionError(f"subject-level derivation {rule.derive} evaluated in the record phase")
    return ctx.subject_level(rule, ctx, where)


def _extract_pattern(values: pd.Series, rule: Rule, ctx: RuleContext, where: tuple) -> pd.Series:
    """The part of each value a regular expression picks: its first group, or the whole match
    (``^(\\d+)-`` takes the site from ``701-1015``); a non-empty value that does not match is an error."""
    import re

    rx = re.compile(rule.pattern)
    text = as_text(values)
    distinct = pd.unique(text)
    picked = {}
    for v in distinct:
        m = rx.search(v)
        picked[v] = (m.group(1) if m.groups() else m.group(0)) if m else None
    out = text.map(picked)
    missing = out.isna() & (text != "")
    if missing.any():
        ctx.fail(f"value '{{value}}' does not match pattern {rule.pattern}", missing, rule.field, (*where, "pattern"))
    return out.fillna("").astype(object)


def _apply_map(values: pd.Series, rule: Rule, ctx: RuleContext, where: tuple) -> pd.Series:
    lookup = {str(k).strip().upper(): _text(v) for k, v in rule.map.items()}
    text = as_text(values)
    mapped = text.str.strip().str.upper().map(lookup)
    unmapped = mapped.isna() & (text != "")
    if unmapped.any() and rule.codelist is None:
        ctx.fail("value '{value}' has no entry in the spec's map", unmapped, rule.field, (*where, "map"))
    return mapped.where(~unmapped, text.str.upper()).fillna("").astype(object)


def _check_codelist(values: pd.Series, rule: Rule, ctx: RuleContext, where: tuple) -> pd.Series:
    """Recode collected text to the codelist's terms (CDISC synonyms, the study's collected
    values), then check: outside a non-extensible list stops the run; outside an extensible
    list and not declared by the study is a reported deviation."""
    codelist = ctx.codelists.get(rule.codelist)
    if codelist is None:
        raise ConversionError(f"unknown codelist '{rule.codelist}' (neither in the CT package nor in the study's "
                              f"terminology.yaml)", spec=ctx.spec_line(*where, "codelist"), dataset=ctx.domain)
    if not codelist.terms and not codelist.extended:
        return values  # extensible list kept open here: terms come from the test table
    text = codelist.recode_series(values)
    values = text.astype(object)
    outside = (text != "") & ~text.isin(codelist.allowed)
    if not outside.any():
        return values
    if not codelist.extensible:
        ctx.fail(f"value '{{value}}' is not in non-extensible codelist {codelist.name} ({codelist.code}); "
                 f"add it to the rule's map", outside, rule.field, (*where, "codelist"))
    for value, count in text[outside].value_counts().sort_index().items():
        first = outside[outside & (text == value)].index[0]
        ctx.deviations.append({"type": "ct-extensible-value", "dataset": ctx.domain, "codelist": codelist.name,
                               "value": value, "records": int(count), "source": str(ctx.rows.at[first, "__src"]),
                               "spec": ctx.spec_line(*where, "codelist")})
    return values
