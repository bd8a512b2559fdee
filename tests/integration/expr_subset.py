"""A small evaluator of the expr-lang subset Argo Rollouts conditions use, for machines without Go.

Literals (double-quoted strings, numbers, ``true``/``false``/``nil``), the variable ``result``,
member access (``result.verdict``), indexing (``result[0]``), comparisons (``== != < <= > >=``),
``!``/``not``, ``&&``/``and``, ``||``/``or`` and parentheses, with expr-lang's precedence. Anything
else is a :class:`SyntaxError`, never a guess. The tests check it against expr-lang itself
(``expr_lang/main.go``) wherever Go is installed.

>>> evaluate('result == "promote"', "promote"), evaluate('result.verdict != "hold"', {"verdict": 1})
(True, True)
>>> evaluate('result[0] >= 0.95 && !(result[0] > 1)', [0.97])
True
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from typing import Any

__all__ = ["evaluate"]

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<operator>==|!=|<=|>=|&&|\|\||[<>!().\[\]])
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _tokens(text: str) -> list[tuple[str, str]]:
    found, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None:
            raise SyntaxError(f"unexpected {text[position:]!r}")
        kind = match.lastgroup
        assert kind is not None
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


class _Parser:
    def __init__(self, text: str, result: Any) -> None:
        self.tokens = _tokens(text)
        self.position = 0
        self.result = result

    def peek(self) -> str | None:
        return self.tokens[self.position][1] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.position >= len(self.tokens):
            raise SyntaxError("unexpected end")
        token = self.tokens[self.position]
        if expected is not None and token[1] != expected:
            raise SyntaxError(f"expected {expected!r}, got {token[1]!r}")
        self.position += 1
        return token

    def parse(self) -> Any:
        value = self.disjunction()
        if self.position != len(self.tokens):
            raise SyntaxError(f"unexpected {self.peek()!r}")
        return value

    def disjunction(self) -> Any:
        value = self.conjunction()
        while self.peek() in ("||", "or"):
            self.take()
            right = self.conjunction()
            value = bool(value) or bool(right)
        return value

    def conjunction(self) -> Any:
        value = self.comparison()
        while self.peek() in ("&&", "and"):
            self.take()
            right = self.comparison()
            value = bool(value) and bool(right)
        return value

    def comparison(self) -> Any:
        value = self.unary()
        while self.peek() in _COMPARISONS:
            symbol = self.take()[1]
            value = _COMPARISONS[symbol](value, self.unary())
        return value

    def unary(self) -> Any:
        if self.peek() in ("!", "not"):
            self.take()
            return not self.unary()
        return self.postfix()

    def postfix(self) -> Any:
        value = self.primary()
        while self.peek() in (".", "["):
            if self.take()[1] == ".":
                value = value[self.take()[1]]
            else:
                value = value[int(self.disjunction())]
                self.take("]")
        return value

    def primary(self) -> Any:
        kind, text = self.take()
        if kind == "string":
            return json.loads(text)
        if kind == "number":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if text == "(":
            value = self.disjunction()
            self.take(")")
            return value
        constants = {"true": True, "false": False, "nil": None, "result": self.result}
        if kind == "name" and text in constants:
            return constants[text]
        raise SyntaxError(f"unsupported {text!r}")


def evaluate(condition: str, result: Any) -> bool:
    """The condition's value for ``result``; it must be a boolean, as ``expr.AsBool()`` demands."""
    value = _Parser(condition, result).parse()
    if not isinstance(value, bool):
        raise TypeError(f"{condition!r} is not a boolean expression")
    return value
