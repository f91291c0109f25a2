"""A small, safe arithmetic expression language for specs: formulas are data, parsed into a tree
and evaluated over columns, never passed to ``eval``.

Grammar: numbers, names (variables, or ``x`` for the value being converted), ``+ - * / **``,
unary minus, parentheses, and the functions ``min max abs round log log10 exp sqrt``.

Example:
    >>> f = parse("(x - 32) * 5 / 9")
    >>> sorted(f.names), evaluate(f, {"x": pd.Series([212.0, 98.6])}).round(1).tolist()
    (['x'], [100.0, 37.0])
    >>> evaluate(parse("round(max(a, b) / 2, 1)"), {"a": pd.Series([3.0]), "b": pd.Series([4.25])}).tolist()
    [2.1]
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

import numpy as np
import pandas as pd

FUNCTIONS = {"min": 2, "max": 2, "abs": 1, "round": 2, "log": 1, "log10": 1, "exp": 1, "sqrt": 1}
_OPS = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide, ast.Pow: np.power}


class ExpressionError(ValueError):
    pass


@dataclass(frozen=True)
class Expression:
    text: str
    tree: ast.AST
    names: frozenset


def parse(text: str) -> Expression:
    """Parse and check a formula; anything outside the grammar is an :class:`ExpressionError`."""
    try:
        tree = ast.parse(str(text).strip(), mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"formula '{text}' is not valid: {exc.msg}") from None
    names: set[str] = set()

    def check(node):
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            check(node.left), check(node.right)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            check(node.operand)
        elif isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and \
                not isinstance(node.value, bool):
            pass
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS \
                and not node.keywords:
            want = FUNCTIONS[node.func.id]
            if not (1 <= len(node.args) <= want) or (node.func.id in ("min", "max") and len(node.args) != 2):
                raise ExpressionError(f"formula '{text}': {node.func.id}() takes {want} argument(s)")
            for a in node.args:
                check(a)
        else:
            raise ExpressionError(f"formula '{text}': only numbers, names, + - * / **, parentheses and "
                                  f"{', '.join(FUNCTIONS)} are allowed")
    check(tree)
    return Expression(str(text), tree, frozenset(names))


def evaluate(expr: Expression, values: dict[str, pd.Series | float]) -> pd.Series:
    """Evaluate over columns (aligned Series) or scalars; missing inputs give missing results."""
    def ev(node):
        if isinstance(node, ast.BinOp):
            with np.errstate(divide="ignore", invalid="ignore"):
                return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in values:
                raise ExpressionError(f"formula '{expr.text}' names '{node.id}', which is not available")
            v = values[node.id]
            return pd.to_numeric(v, errors="coerce").astype(float) if isinstance(v, pd.Series) else float(v)
        args = [ev(a) for a in node.args]
        name = node.func.id
        with np.errstate(divide="ignore", invalid="ignore"):
            if name in ("min", "max"):
                return (np.fmin if name == "min" else np.fmax)(args[0], args[1])
            if name == "round":
                return round_half_up(args[0], int(args[1]) if len(args) > 1 else 0)
            return {"abs": np.abs, "log": np.log, "log10": np.log10, "exp": np.exp, "sqrt": np.sqrt}[name](args[0])
    out = ev(expr.tree)
    if not isinstance(out, pd.Series):
        index = next((v.index for v in values.values() if isinstance(v, pd.Series)), None)
        out = pd.Series(out, index=index, dtype=float)
    return out.replace([np.inf, -np.inf], np.nan)


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
