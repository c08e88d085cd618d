"""A conservative numeric screen that settles clear-cut answer pairs before the symbolic check.

Most pairs that reach the symbolic stage are plainly different (``24\\sqrt{6}`` vs ``23\\sqrt{6}``,
``(668, 60)`` vs ``(60, 668)``) or plainly equal (``\\sqrt{72}`` vs ``6\\sqrt{2}``, ``(x+3)^2`` vs
``x^2+6x+9``), yet each costs sympy tens of milliseconds. This module evaluates both answers numerically with
a small recursive-descent parser over a fixed LaTeX subset - numbers, ``+ - * /``, ``\\cdot``, ``\\times``,
``^``, ``\\frac``, ``\\sqrt``, ``\\pi``, single-letter variables, parentheses and braces - and never calls
``eval``. Expressions with variables are compared at fixed irrational-looking points (two different
rational functions almost never agree at all of them).

It only ever answers when the answer is not in doubt, and says ``None`` (ask sympy) otherwise:

* equal only if the values agree to 1e-12 (relative), no decimal literal is involved (``0.5\\sqrt{3}`` is left
  to sympy), and every intermediate value stays below 1e12 (so float rounding cannot hide a difference);
* different only if the values differ by more than 1e-3 (relative) - well above math-verify's own 6-digit
  rounding - so ``3.14159`` vs ``\\pi`` is left to sympy;
* anything outside the subset (functions, ``e``/``i``, ``\\cup``, ``f(x)``, ``x^23``, bare ``1, 2`` lists,
  a tuple against a set) is left to sympy.

Tuples/intervals are compared element by element with their brackets; ``\\{...\\}`` sets as sets.
"""

from __future__ import annotations

import math
import re

EQUAL_TOLERANCE = 1e-12
DIFFERENT_TOLERANCE = 1e-3
MIN_DIFFERENCE = 1e-9  # below this, a "difference" may be float noise around a true zero (sqrt(2)^2 - 2)
MAX_MAGNITUDE = 1e12
MAX_EXPONENT = 64
MAX_TOKENS = 200
SAMPLE_POINTS = (0.7318237, 1.4142917, -0.4387631)  # per variable, shifted by its position (see _assignments)
RESERVED_LETTERS = frozenset("eiEI")  # Euler's number / imaginary unit: left to sympy

_SINGLE_LETTER_RE = re.compile(r"^[A-Za-z]$")
_TOKEN_RE = re.compile(r"\s*(?:(\d+\.\d*|\.\d+|\d+)|(\\[A-Za-z]+)|([A-Za-z])|(.))")
_COMMANDS = {"\\frac", "\\sqrt", "\\pi", "\\cdot", "\\times", "\\infty"}


class Undecided(Exception):
    """The screen cannot settle this pair; the symbolic check must."""


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens = []
    for match in _TOKEN_RE.finditer(text):
        number, command, letter, other = match.groups()
        if number is not None:
            tokens.append(("num", number))
        elif command is not None:
            if command not in _COMMANDS:
                raise Undecided(command)
            tokens.append(("cmd", command))
        elif letter is not None:
            if letter in RESERVED_LETTERS:
                raise Undecided(letter)
            tokens.append(("var", letter))
        elif other is not None and other.strip():
            if other not in "+-*/^(){}[]":
                raise Undecided(other)
            tokens.append(("op", other))
        if len(tokens) > MAX_TOKENS:
            raise Undecided("too long")
    return tokens


class _Evaluator:
    """Recursive descent over the token list; ``values`` maps variable letters to numbers."""

    def __init__(self, tokens: list[tuple[str, str]], values: dict[str, float]):
        self.tokens = tokens
        self.position = 0
        self.values = values

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, kind: str | None = None, text: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (kind and token[0] != kind) or (text and token[1] != text):
            raise Undecided(f"expected {text or kind}")
        self.position += 1
        return token

    @staticmethod
    def checked(value) -> float:
        if isinstance(value, complex) or math.isnan(value) or math.isinf(value) or abs(value) > MAX_MAGNITUDE:
            raise Undecided("value out of range")
        return value

    def evaluate(self) -> float:
        value = self.expression()
        if self.peek() is not None:
            raise Undecided("trailing tokens")
        return value

    def expression(self) -> float:
        value = self.term()
        while (token := self.peek()) is not None and token in (("op", "+"), ("op", "-")):
            self.take()
            right = self.term()
            value = self.checked(value + right if token[1] == "+" else value - right)
        return value

    def term(self) -> float:
        value = self.signed()
        while (token := self.peek()) is not None:
            if token in (("op", "*"), ("cmd", "\\cdot"), ("cmd", "\\times")):
                self.take()
                value = self.checked(value * self.signed())
            elif token == ("op", "/"):
                self.take()
                divisor = self.power()
                if divisor == 0:
                    raise Undecided("division by zero")
                value = self.checked(value / divisor)
                if self._starts_factor(self.peek()):  # "1/2x": (1/2)x or 1/(2x)? ambiguous
                    raise Undecided("implicit product after /")
            elif self._starts_factor(token):
                value = self.checked(value * self.power())  # implicit multiplication: 2\sqrt{3}, 3x, (x+1)(x-1)
            else:
                break
        return value

    @staticmethod
    def _starts_factor(token) -> bool:
        return token is not None and (
            token[0] in ("num", "var")
            or token in (("op", "("), ("op", "{"), ("cmd", "\\frac"), ("cmd", "\\sqrt"), ("cmd", "\\pi"))
        )

    def signed(self) -> float:
        token = self.peek()
        if token in (("op", "-"), ("op", "+")):
            self.take()
            value = self.signed()
            return -value if token[1] == "-" else value
        return self.power()

    def power(self) -> float:
        base = self.atom()
        if self.peek() == ("op", "^"):
            self.take()
            token = self.peek()
            if token is not None and token[0] == "num":
                if len(token[1]) != 1:  # x^23 is x^{2}3 in TeX; do not guess
                    raise Undecided("unbraced multi-digit exponent")
                self.take()
                exponent = float(token[1])
            elif token is not None and token[0] == "var":
                self.take()
                exponent = self.values[token[1]]
            elif token == ("op", "{"):
                exponent = self.group()
            else:
                raise Undecided("bad exponent")
            if abs(exponent) > MAX_EXPONENT:
                raise Undecided("exponent too large")
            if base == 0 and exponent <= 0:
                raise Undecided("0 to a non-positive power")
            if base < 0 and exponent != int(exponent):
                raise Undecided("negative base, fractional exponent")
            try:
                return self.checked(base**exponent)
            except OverflowError:
                raise Undecided("overflow") from None
        return base

    def group(self) -> float:
        self.take("op", "{")
        value = self.expression()
        self.take("op", "}")
        return value

    def atom(self) -> float:
        token = self.peek()
        if token is None:
            raise Undecided("unexpected end")
        kind, text = token
        if kind == "num":
            self.take()
            return self.checked(float(text))
        if kind == "var":
            self.take()
            following = self.peek()
            if following == ("op", "("):  # f(x): a function call or a product? leave it to sympy
                raise Undecided("letter before parenthesis")
            return self.values[text]
        if token == ("op", "("):
            self.take()
            value = self.expression()
            self.take("op", ")")
            return value
        if token == ("op", "{"):
            return self.group()
        if token == ("cmd", "\\pi"):
            self.take()
            return math.pi
        if token == ("cmd", "\\frac"):
            self.take()
            numerator, denominator = self.group_or_digit(), self.group_or_digit()
            if denominator == 0:
                raise Undecided("division by zero")
            return self.checked(numerator / denominator)
        if token == ("cmd", "\\sqrt"):
            self.take()
            index = 2.0
            if self.peek() == ("op", "["):
                self.take()
                index = self.expression()
                self.take("op", "]")
                if index != int(index) or not 2 <= index <= MAX_EXPONENT:
                    raise Undecided("bad root index")
            radicand = self.group_or_digit()
            if radicand < 0:  # sympy takes the principal (complex) root of a negative number: let it decide
                raise Undecided("root of a negative number")
            return self.checked(radicand ** (1.0 / index))
        raise Undecided(f"unexpected {text}")

    def group_or_digit(self) -> float:
        token = self.peek()
        if token == ("op", "{"):
            return self.group()
        if token is not None and token[0] == "num" and len(token[1]) == 1:
            self.take()
            return float(token[1])
        if token is not None and token[0] == "var":
            self.take()
            return self.values[token[1]]
        raise Undecided("expected a group")


def _variables(tokens) -> frozenset[str]:
    return frozenset(text for kind, text in tokens if kind == "var")


def _assignments(variables: frozenset[str]) -> list[dict[str, float]]:
    ordered = sorted(variables)
    return [{name: point + 0.1093 * position for position, name in enumerate(ordered)} for point in SAMPLE_POINTS]


def _compare_scalars(left: str, right: str) -> bool | None:
    """True/False if two scalar expressions are surely equal/different at all sample points, else None."""
    infinities = {"\\infty": math.inf, "+\\infty": math.inf, "-\\infty": -math.inf}
    if left in infinities or right in infinities:
        return infinities.get(left) == infinities.get(right) if left in infinities and right in infinities else None
    try:
        left_tokens, right_tokens = _tokenize(left), _tokenize(right)
        variables = _variables(left_tokens)
        if variables != _variables(right_tokens):
            return None
        has_decimal = any(kind == "num" and "." in text for kind, text in left_tokens + right_tokens)
        verdicts = set()
        for values in _assignments(variables) if variables else [{}]:
            a = _Evaluator(left_tokens, values).evaluate()
            b = _Evaluator(right_tokens, values).evaluate()
            scale, gap = max(abs(a), abs(b)), abs(a - b)
            if gap <= EQUAL_TOLERANCE * scale and not has_decimal:
                verdicts.add(True)
            elif gap > DIFFERENT_TOLERANCE * scale and gap > MIN_DIFFERENCE:
                return False
            else:
                return None
        return True if verdicts == {True} else None
    except (Undecided, KeyError, RecursionError, ValueError, ZeroDivisionError, OverflowError):
        return None


def _split_top_level(inner: str) -> list[str] | None:
    parts, depth, current = [], 0, []
    i = 0
    while i < len(inner):
        ch = inner[i]
        if inner.startswith("\\{", i) or inner.startswith("\\}", i):
            depth += 1 if inner[i + 1] == "{" else -1
            current.append(inner[i : i + 2])
            i += 2
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if depth < 0:
            return None
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    if depth != 0:
        return None
    parts.append("".join(current))
    return parts if all(part for part in parts) else None


def _structure(text: str):
    """("set", items) for ``\\{a, b\\}``; ("seq", open, close, items) for ``(a, b)``/``[a, b)``; ("scalar", text)
    for a single expression; None for shapes the screen does not handle (bare lists, unions, ...)."""
    if text.startswith("\\{") and text.endswith("\\}"):
        items = _split_top_level(text[2:-2])
        return None if items is None else ("set", items)
    if len(text) >= 2 and text[0] in "([" and text[-1] in ")]":
        items = _split_top_level(text[1:-1])
        if items is not None and len(items) >= 2:
            return ("seq", text[0], text[-1], items)
    items = _split_top_level(text)
    if items is None or len(items) != 1 or "\\cup" in text or "\\cap" in text:
        return None
    return ("scalar", text)


def screen(pred: str, truth: str) -> bool | None:
    """Whether two normalized answers are equal (True), different (False), or not settled here (None)."""
    if _SINGLE_LETTER_RE.match(pred) and _SINGLE_LETTER_RE.match(truth):
        return pred == truth  # choices (A)-(E) after normalization, or two distinct symbols
    left, right = _structure(pred), _structure(truth)
    if left is None or right is None or left[0] != right[0]:
        return None
    if left[0] == "scalar":
        return _compare_scalars(left[1], right[1])
    left_items, right_items = left[-1], right[-1]
    if left[0] == "seq":
        if len(left_items) != len(right_items):
            return None
        verdicts = [_compare_scalars(a, b) for a, b in zip(left_items, right_items)]
        if False in verdicts:
            return False
        if all(verdicts):
            # Same elements, different brackets: [a, b] vs (a, b) are different intervals.
            return left[1:3] == right[1:3]
        return None
    return _compare_sets(left_items, right_items)


def _compare_sets(left_items: list[str], right_items: list[str]) -> bool | None:
    """Sets are equal when each element of either side equals some element of the other (duplicates allowed)."""
    verdicts = {}
    for a in left_items:
        for b in right_items:
            verdict = _compare_scalars(a, b)
            if verdict is None:
                return None
            verdicts[a, b] = verdict
    left_covered = all(any(verdicts[a, b] for b in right_items) for a in left_items)
    right_covered = all(any(verdicts[a, b] for a in left_items) for b in right_items)
    return left_covered and right_covered
