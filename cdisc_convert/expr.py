"""A small, safe expression language for specs: formulas and conditions are data, parsed into a
tree and evaluated over columns, never passed to ``eval``.

Grammar: numbers, 'text' literals, names (variables, or ``x`` for the value being converted),
``+ - * / **``, unary minus, parentheses, comparisons (``== != < <= > >=``, chained as in
``0 < AVISITN <= 13``), ``in`` / ``not in`` a list of literals, ``and``, ``or``, ``not``, and
the functions ``min max abs round log log10 exp sqrt`` (numbers), ``missing present`` (any
value), ``matches`` (regular expression search) and ``contains`` (text), and for values
``upper lower title strip``, ``replace(X, 'regex', 'text')`` and ``number(X)`` (text read as a
number, missing when it is not one).

Missing values (NaN, NaT, empty text) follow R/SAS three-valued logic: a comparison with a
missing operand is unknown, ``and``/``or``/``not`` propagate it (Kleene), and a filter keeps only
records where the condition is true. ``missing(X)`` and ``present(X)`` are never unknown. Dates
compare with dates or with 'YYYY-MM-DD' literals; date +/- a number moves by days and
date - date is a number of days.

Example:
    >>> f = parse("(x - 32) * 5 / 9")
    >>> sorted(f.names), evaluate(f, {"x": pd.Series([212.0, 98.6])}).round(1).tolist()
    (['x'], [100.0, 37.0])
    >>> evaluate(parse("round(max(a, b) / 2, 1)"), {"a": pd.Series([3.0]), "b": pd.Series([4.25])}).tolist()
    [2.1]
    >>> rows = pd.DataFrame({"AVISITN": [0.0, 4.0, np.nan], "DSDECOD": ["COMPLETED", "", "DEATH"]})
    >>> condition(parse("AVISITN > 0 or DSDECOD in ('DEATH', 'X')", "condition"), rows).tolist()
    [False, True, True]
"""
from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

NUMBER_FUNCTIONS = {"min": 2, "max": 2, "abs": 1, "round": 2, "log": 1, "log10": 1, "exp": 1, "sqrt": 1}
TEST_FUNCTIONS = {"missing": 1, "present": 1, "matches": 2, "contains": 2}
TEXT_FUNCTIONS = {"upper": 1, "lower": 1, "title": 1, "strip": 1, "replace": 3, "number": 1}
FUNCTIONS = {**NUMBER_FUNCTIONS, **TEST_FUNCTIONS, **TEXT_FUNCTIONS}
_OPS = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide, ast.Pow: np.power}
_COMPARE = {ast.Eq: "eq", ast.NotEq: "ne", ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge"}


class ExpressionError(ValueError):
    pass


@dataclass(frozen=True)
class Expression:
    text: str
    tree: ast.AST
    names: frozenset


def parse(text: str, kind: str = "number") -> Expression:
    """Parse and check an expression; anything outside the grammar is an :class:`ExpressionError`.

    ``kind`` is ``number`` (arithmetic only: unit conversions, formulas), ``condition`` (must give
    true/false) or ``value`` (anything: a number, a text or a test).
    """
    try:
        tree = ast.parse(str(text).strip(), mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"expression '{text}' is not valid: {exc.msg}") from None
    names: set[str] = set()
    logic = kind != "number"
    allowed = ("numbers, names, + - * / **, parentheses and " + ", ".join(NUMBER_FUNCTIONS)) if not logic else \
        ("numbers, 'text', names, + - * / **, comparisons, in, and/or/not, parentheses and " + ", ".join(FUNCTIONS))

    def fail():
        raise ExpressionError(f"expression '{text}': only {allowed} are allowed")

    def check(node):
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            check(node.left), check(node.right)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            check(node.operand)
        elif isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and \
                not isinstance(node.value, bool):
            pass
        elif logic and isinstance(node, ast.Constant) and isinstance(node.value, str):
            pass
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif logic and isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            check(node.operand)
        elif logic and isinstance(node, ast.BoolOp):
            for v in node.values:
                check(v)
        elif logic and isinstance(node, ast.Compare):
            check(node.left)
            for op, right in zip(node.ops, node.comparators):
                if isinstance(op, (ast.In, ast.NotIn)):
                    if not (isinstance(right, (ast.Tuple, ast.List)) and
                            all(isinstance(e, ast.Constant) and not isinstance(e.value, bool) for e in right.elts)):
                        raise ExpressionError(f"expression '{text}': 'in' takes a list of literals, "
                                              f"e.g. X in ('A', 'B')")
                elif type(op) in _COMPARE:
                    check(right)
                else:
                    fail()
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords and \
                node.func.id in (FUNCTIONS if logic else NUMBER_FUNCTIONS):
            name, want = node.func.id, FUNCTIONS[node.func.id]
            exact = name in ("min", "max") or name in TEST_FUNCTIONS or name in TEXT_FUNCTIONS
            if not (1 <= len(node.args) <= want) or (exact and len(node.args) != want):
                raise ExpressionError(f"expression '{text}': {name}() takes {want} argument(s)")
            if name in ("matches", "contains", "replace"):
                literals = node.args[1:]
                if not all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in literals):
                    raise ExpressionError(f"expression '{text}': {name}() takes 'text' literals after the value")
                pattern = node.args[1]
                if name in ("matches", "replace"):
                    try:
                        re.compile(pattern.value)
                    except re.error as exc:
                        raise ExpressionError(f"expression '{text}': bad regular expression: {exc}") from None
            check(node.args[0])
            if name not in ("matches", "contains", "replace"):
                for a in node.args[1:]:
                    check(a)
        else:
            fail()
    check(tree)
    if kind == "condition" and not _is_test(tree):
        raise ExpressionError(f"expression '{text}' is not a condition (a comparison, in, missing(), present(), "
                              f"matches(), contains(), and/or/not)")
    return Expression(str(text), tree, frozenset(names))


def _is_test(node) -> bool:
    if isinstance(node, (ast.Compare, ast.BoolOp)):
        return True
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return True
    return isinstance(node, ast.Call) and node.func.id in TEST_FUNCTIONS


def _is_text(v) -> bool:
    if isinstance(v, str):
        return True
    return isinstance(v, pd.Series) and (v.dtype == object or pd.api.types.is_string_dtype(v.dtype))


def _is_date(v) -> bool:
    return isinstance(v, pd.Timestamp) or (isinstance(v, pd.Series) and pd.api.types.is_datetime64_any_dtype(v))


def _number(v):
    """Operand of arithmetic: numbers (text read as numbers), dates kept as dates."""
    if _is_date(v):
        return v
    if isinstance(v, pd.Series):
        return pd.to_numeric(v, errors="coerce").astype(float)
    if isinstance(v, str):
        return float(v) if re.fullmatch(r"\s*-?\d+(\.\d*)?\s*", v) else np.nan
    return float(v)


def _arith(op, a, b):
    a, b = _number(a), _number(b)
    if _is_date(a) and not _is_date(b) and op in (ast.Add, ast.Sub):
        days = pd.to_timedelta(b, unit="D")
        return a + days if op is ast.Add else a - days
    if _is_date(b) and not _is_date(a) and op is ast.Add:
        return b + pd.to_timedelta(a, unit="D")
    if _is_date(a) and _is_date(b):
        if op is not ast.Sub:
            raise ExpressionError("dates can only be subtracted from each other")
        delta = a - b
        return delta.dt.total_seconds() / 86400 if isinstance(delta, pd.Series) else delta.total_seconds() / 86400
    if _is_date(a) or _is_date(b):
        raise ExpressionError("only a number of days can be added to or subtracted from a date")
    with np.errstate(divide="ignore", invalid="ignore"):
        return _OPS[op](a, b)


def _missing(v, index) -> pd.Series:
    if isinstance(v, pd.Series):
        miss = v.isna()
        if _is_text(v):
            miss |= v.astype(object).fillna("").astype(str) == ""
        return miss
    return pd.Series(v is None or v == "" or (isinstance(v, float) and np.isnan(v)), index=index)


def _comparable(a, b):
    """Both sides in one type: text with text, dates with dates, else numbers."""
    if _is_date(a) or _is_date(b):
        conv = lambda v: v if _is_date(v) else (pd.to_datetime(v, errors="coerce") if isinstance(v, (str, pd.Series))
                                                   else pd.NaT)
        return conv(a), conv(b)
    if _is_text(a) and _is_text(b):
        text = lambda v: v.astype(object).fillna("").astype(str) if isinstance(v, pd.Series) else v
        return text(a), text(b)
    return _number(a), _number(b)


def _boolean(values, unknown, index) -> pd.Series:
    out = pd.Series(pd.array(np.asarray(values, dtype=bool), dtype="boolean"), index=index)
    if unknown is not None:
        out[np.asarray(unknown, dtype=bool)] = pd.NA
    return out


def evaluate(expr: Expression, values: dict[str, pd.Series | float], index=None) -> pd.Series:
    """Evaluate over columns (aligned Series) or scalars. Arithmetic with a missing input gives a
    missing result; a test gives a nullable boolean Series (unknown where an input is missing)."""
    if index is None:
        index = next((v.index for v in values.values() if isinstance(v, pd.Series)), None)
    if index is None:
        index = pd.RangeIndex(1)

    def name(node):
        if node.id not in values:
            raise ExpressionError(f"expression '{expr.text}' names '{node.id}', which is not available")
        return values[node.id]

    def ev(node):
        if isinstance(node, ast.BinOp):
            return _arith(type(node.op), ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand)
            if isinstance(node.op, ast.Not):
                return ~_as_test(v)
            v = _number(v)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Constant):
            return node.value if isinstance(node.value, str) else float(node.value)
        if isinstance(node, ast.Name):
            return name(node)
        if isinstance(node, ast.BoolOp):
            parts = [_as_test(ev(v)) for v in node.values]
            out = parts[0]
            for p in parts[1:]:
                out = (out & p) if isinstance(node.op, ast.And) else (out | p)
            return out
        if isinstance(node, ast.Compare):
            return compare(node)
        fn = node.func.id
        if fn in TEST_FUNCTIONS:
            v = ev(node.args[0])
            miss = _missing(v, index)
            if fn == "missing":
                return _boolean(miss, None, index)
            if fn == "present":
                return _boolean(~miss, None, index)
            text = v.astype(object).fillna("").astype(str) if isinstance(v, pd.Series) else \
                pd.Series(str(v), index=index)
            pattern = node.args[1].value
            with warnings.catch_warnings():  # groups in a pattern only group here; nothing is extracted
                warnings.simplefilter("ignore", UserWarning)
                hit = text.str.contains(pattern, regex=fn == "matches")
            return _boolean(hit, miss, index)
        if fn in TEXT_FUNCTIONS:
            v = ev(node.args[0])
            text = _series(v, index).astype(object).where(_series(v, index).notna(), "").astype(str)
            if fn == "number":
                return pd.to_numeric(text.str.strip(), errors="coerce").astype(float)
            if fn == "replace":
                out = text.str.replace(node.args[1].value, node.args[2].value, regex=True)
            else:
                out = {"upper": text.str.upper, "lower": text.str.lower, "title": text.str.title,
                       "strip": text.str.strip}[fn]()
            return out.astype(object)
        args = [_number(ev(a)) for a in node.args]
        with np.errstate(divide="ignore", invalid="ignore"):
            if fn in ("min", "max"):
                return (np.fmin if fn == "min" else np.fmax)(args[0], args[1])
            if fn == "round":
                return round_half_up(args[0], int(args[1]) if len(args) > 1 else 0)
            return {"abs": np.abs, "log": np.log, "log10": np.log10, "exp": np.exp, "sqrt": np.sqrt}[fn](args[0])

    def compare(node):
        result, left = None, ev(node.left)
        for op, right_node in zip(node.ops, node.comparators):
            if isinstance(op, (ast.In, ast.NotIn)):
                literals = [e.value for e in right_node.elts]
                miss = _missing(left, index)
                if _is_text(left):
                    hit = _series(left, index).astype(object).fillna("").astype(str).isin([str(v) for v in literals])
                else:
                    hit = _series(_number(left), index).isin([float(v) for v in literals
                                                              if not isinstance(v, str)])
                step = _boolean(hit if isinstance(op, ast.In) else ~hit, miss, index)
                right = None
            else:
                right = ev(right_node)
                a, b = _comparable(left, right)
                miss = _missing(a, index) | _missing(b, index)
                a_, b_ = _series(a, index), b
                with np.errstate(invalid="ignore"):
                    hit = getattr(a_, _COMPARE[type(op)])(b_)
                step = _boolean(hit.fillna(False) if hasattr(hit, "fillna") else hit, miss, index)
            result = step if result is None else (result & step)
            left = right
        return result

    out = ev(expr.tree)
    if isinstance(out, pd.Series) and out.dtype == "boolean":
        return out
    if not isinstance(out, pd.Series):
        if isinstance(out, str):
            return pd.Series(out, index=index, dtype=object)
        if isinstance(out, pd.Timestamp):
            return pd.Series(out, index=index)
        out = pd.Series(out, index=index, dtype=float)
    if out.dtype.kind == "f":
        return out.replace([np.inf, -np.inf], np.nan)
    return out


def _series(v, index) -> pd.Series:
    return v if isinstance(v, pd.Series) else pd.Series([v] * len(index), index=index, dtype=object if
                                                       isinstance(v, str) else None)


def _as_test(v) -> pd.Series:
    if isinstance(v, pd.Series) and v.dtype == "boolean":
        return v
    raise ExpressionError("and/or/not apply to tests (comparisons, in, missing(), present(), matches())")


def condition(expr: Expression, frame: pd.DataFrame) -> pd.Series:
    """Which records of ``frame`` the condition holds for (unknown counts as false)."""
    values = {n: frame[n] for n in expr.names if n in frame.columns}
    out = evaluate(expr, values, frame.index)
    return out.fillna(False).astype(bool)


def round_half_up(values, decimals=0):
    """Round half away from zero (SAS ROUND; numpy's round is half to even).

    >>> round_half_up(pd.Series([0.125, 2.5, -2.5]), 2).tolist(), round_half_up(pd.Series([2.5]), 0).tolist()
    ([0.13, 2.5, -2.5], [3.0])
    """
    scale = 10.0 ** decimals
    v = np.asarray(values, dtype=float) * scale
    rounded = np.sign(v) * np.floor(np.abs(v) + 0.5 + 1e-9)
    out = rounded / scale
    return pd.Series(out, index=values.index) if isinstance(values, pd.Series) else out


def round_significant(values: pd.Series, digits: int) -> pd.Series:
    """Round to ``digits`` significant digits (half away from zero).

    >>> round_significant(pd.Series([123456.0, 0.0012345, 0.0]), 3).tolist()
    [123000.0, 0.00123, 0.0]
    """
    v = pd.to_numeric(values, errors="coerce").astype(float)
    magnitude = np.floor(np.log10(np.abs(v.where(v != 0))))
    decimals = (digits - 1 - magnitude).fillna(0).to_numpy()  # one per value: round_half_up broadcasts
    return pd.Series(round_half_up(v.to_numpy(), decimals), index=v.index, dtype=float)
