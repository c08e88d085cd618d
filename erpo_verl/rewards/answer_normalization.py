"""Normalize a LaTeX answer so that notational variants compare equal as strings.

The rules make the cheap string comparison decide most pairs, so the expensive symbolic check
(math-verify/sympy, milliseconds to seconds per pair) runs only for the rest. Each rule removes a difference
that graders of MATH-style benchmarks agree is not a difference:

* ``\\dfrac``/``\\tfrac`` vs ``\\frac``, ``\\left(`` vs ``(``, LaTeX spacing commands and whitespace;
* units and markers that the question already fixes: ``^\\circ``, ``\\%``, ``\\$``, ``\\text{ cm}``;
* ``x = 5`` vs ``5`` (a single variable on the left), ``\\text{(C)}`` vs ``(C)`` vs ``C``;
* ``1,000`` vs ``1000``, ``\\frac12`` vs ``\\frac{1}{2}``, ``\\sqrt2`` vs ``\\sqrt{2}``.

The output is still valid LaTeX (a space is kept where removing it would merge a command with a letter, as
in ``\\pi r``), so it can be handed to math-verify afterwards.

:func:`parse_number` turns plain numbers (integers, decimals, ``a/b``, ``\\frac{a}{b}``) into exact
``Fraction`` values so numeric pairs are decided without sympy.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

MAX_NUMBER_DIGITS = 200  # longer digit strings are not treated as plain numbers (int() of huge strings is slow)

_UNICODE_REPLACEMENTS = {
    "\u2212": "-",  # minus sign
    "\u2013": "-",  # en dash used as minus
    "\u00b0": "",  # degree sign
    "\u221e": "\\infty",
    "\u03c0": "\\pi",
    "\u00a0": " ",
}
_SIZE_COMMANDS_RE = re.compile(
    r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|big|Big|bigg|Bigg|displaystyle)(?![A-Za-z])"
)
_SPACING_RE = re.compile(r"\\(?:[,:;! ]|quad(?![A-Za-z])|qquad(?![A-Za-z]))|~")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![A-Za-z])|\\degree(?![A-Za-z])")
_PERCENT_RE = re.compile(r"\\?%")
_TEXT_WRAPPER_RE = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mbox|boldsymbol|operatorname)\s*\{([^{}]*)\}"
)
_UNIT_WORDS = (
    "units?|square|sq|cubic|cm|mm|km|m|meters?|metres?|centimeters?|kilometers?|inch(?:es)?|in|feet|foot|ft|"
    "yards?|yd|miles?|mi|mph|kg|g|grams?|kilograms?|pounds?|lbs?|ounces?|oz|liters?|litres?|l|ml|"
    "seconds?|sec|s|minutes?|min|hours?|hrs?|h|days?|weeks?|months?|years?|"
    "degrees?|deg|radians?|rad|dollars?|cents?|percent|points?|ways|people|students|times"
)
# A number (or a closing brace) followed by one or more whitespace-separated unit words, e.g. "5 cm^2".
# Whitespace is required so that "2m" (two times m) keeps its variable.
_TRAILING_UNITS_RE = re.compile(rf"^(.*?[0-9}}])(?:\s+(?:{_UNIT_WORDS})\b\.?(?:\^\{{?[23]\}}?)?)+\s*$", re.IGNORECASE)
_LEADING_ASSIGNMENT_RE = re.compile(r"^\s*[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*(?:=|\\in(?![A-Za-z]))\s*")
_WHITESPACE_AFTER_COMMAND_RE = re.compile(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])")
_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_FRAC_SHORTHAND_RE = re.compile(r"\\frac(\d|\{[^{}]*\})(\d|\{[^{}]*\})")
_SQRT_SHORTHAND_RE = re.compile(r"\\sqrt(\d+|[A-Za-z])")
_CHOICE_RE = re.compile(r"^\(?([A-Ea-e])\)?$")
_WORDS_RE = re.compile(r"^[A-Za-z][A-Za-z ]*$")

_INT_RE = re.compile(r"[-+]?\d+")
_DECIMAL_RE = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+)")
_SLASH_FRACTION_RE = re.compile(r"([-+]?\d+)/([-+]?\d+)")
_LATEX_FRACTION_RE = re.compile(r"([-+]?)\\frac\{([-+]?\d+)\}\{([-+]?\d+)\}")


def _unwrap_text_commands(text: str) -> str:
    previous = None
    while previous != text:
        previous = text
        text = _TEXT_WRAPPER_RE.sub(lambda m: m.group(1), text)
    return text


def _collapse_whitespace(text: str) -> str:
    """Remove whitespace, except one space where a command name would otherwise merge with a letter."""
    text = _WHITESPACE_AFTER_COMMAND_RE.sub(lambda m: m.group(1) + "\x00", text)
    text = re.sub(r"\s+", "", text)
    return text.replace("\x00", " ")


@lru_cache(maxsize=65536)
def normalize_answer(answer: str) -> str:
    """Canonical string form of a final answer (see the module docstring for the rules).

    Cached: ground truths repeat for every response of a prompt, and many wrong answers repeat too.
    """
    text = answer
    for old, new in _UNICODE_REPLACEMENTS.items():
        text = text.replace(old, new)
    text = text.replace("\n", " ").strip()
    text = text.replace("\\$", "").replace("$", "")
    if text.startswith("\\[") and text.endswith("\\]") or text.startswith("\\(") and text.endswith("\\)"):
        text = text[2:-2]
    text = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", text)
    text = re.sub(r"\\[dt]binom(?![A-Za-z])", r"\\binom", text)
    text = _SIZE_COMMANDS_RE.sub("", text)
    text = _DEGREE_RE.sub("", text)
    text = _PERCENT_RE.sub("", text)
    text = _SPACING_RE.sub(" ", text)
    text = _unwrap_text_commands(text)
    text = text.replace("{,}", "")
    text = _TRAILING_UNITS_RE.sub(lambda m: m.group(1), text.strip())
    if text.count("=") <= 1:
        text = _LEADING_ASSIGNMENT_RE.sub("", text, count=1)
    if _THOUSANDS_RE.fullmatch(text.strip()):  # "1,000" but not "50, 645" (a list of two answers)
        text = text.replace(",", "")
    text = _collapse_whitespace(text)
    text = _FRAC_SHORTHAND_RE.sub(lambda m: "\\frac" + _braced(m.group(1)) + _braced(m.group(2)), text)
    text = _SQRT_SHORTHAND_RE.sub(lambda m: "\\sqrt{" + m.group(1) + "}", text)
    text = text.rstrip(".")
    if text.startswith("+") and len(text) > 1:
        text = text[1:]
    choice = _CHOICE_RE.match(text)
    if choice is not None:
        return choice.group(1).upper()
    if _WORDS_RE.match(text):
        return text.lower()
    return text


def _braced(token: str) -> str:
    return token if token.startswith("{") else "{" + token + "}"


def parse_number(normalized: str) -> Fraction | None:
    """Exact value of a plain number (``-3``, ``0.25``, ``3/4``, ``\\frac{3}{4}``, ``-\\frac{3}{4}``), else None.

    Expects a :func:`normalize_answer` output. Anything with a symbol, root, power or operator is not a plain
    number and is left to the symbolic check.
    """
    text = normalized
    if not text or sum(ch.isdigit() for ch in text) > MAX_NUMBER_DIGITS:
        return None
    if _INT_RE.fullmatch(text):
        return Fraction(int(text))
    if _DECIMAL_RE.fullmatch(text):
        return Fraction(text.rstrip("."))
    match = _SLASH_FRACTION_RE.fullmatch(text)
    if match is not None:
        numerator, denominator = int(match.group(1)), int(match.group(2))
        return None if denominator == 0 else Fraction(numerator, denominator)
    match = _LATEX_FRACTION_RE.fullmatch(text)
    if match is not None:
        numerator, denominator = int(match.group(2)), int(match.group(3))
        if denominator == 0:
            return None
        value = Fraction(numerator, denominator)
        return -value if match.group(1) == "-" else value
    return None


def decimal_places(normalized: str) -> int:
    """Number of digits after the decimal point of a plain decimal literal (0 for anything else)."""
    if _DECIMAL_RE.fullmatch(normalized) and "." in normalized:
        return len(normalized.split(".", 1)[1])
    return 0


def numbers_match(predicted: Fraction, truth: Fraction, predicted_decimals: int) -> bool:
    """Exact equality, or a decimal prediction with at least 6 places within 1e-6 of a non-integer truth.

    The second rule accepts ``0.333333`` for ``\\frac{1}{3}`` (math-verify's own 6-place rounding), while
    ``0.33`` stays wrong and integer truths (AIME, GSM8K) require the exact integer.
    """
    if predicted == truth:
        return True
    if truth.denominator == 1 or predicted_decimals < 6:
        return False
    return abs(predicted - truth) <= Fraction(1, 10**6)


def format_number(value: Fraction) -> str:
    """Canonical text of an exact number: ``5``, ``-3/4`` (used as the ``pred`` key for majority voting)."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def answer_key(answer: str) -> str:
    """The key under which equal answers are grouped for majority voting: exact numbers share one key."""
    normalized = normalize_answer(answer)
    value = parse_number(normalized)
    return normalized if value is None else format_number(value)
