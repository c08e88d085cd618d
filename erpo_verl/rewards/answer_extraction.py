"""Find the final answer in a model response.

A response states its answer in one of three ways, depending on the prompt it was given:

* the last ``\\boxed{...}`` (or ``\\fbox{...}``), possibly with nested braces (the ``boxed`` prompt format);
* a final ``Answer: ...`` line (the DAPO prompt, our ``answer_line`` format);
* a ``#### ...`` line (GSM8K's own solution format, which models fine-tuned on it keep using).

In ``auto`` mode the marker that appears *last* wins, so ``Answer: \\boxed{5}`` and ``... \\boxed{5}`` both
give ``5`` and a restated ``\\boxed{}`` early in the reasoning does not override a final ``Answer:`` line.

Everything here is linear in the length of the text and never evaluates the response. Callers pass only the
tail of a long response (see :func:`response_tail`), which bounds the work for any input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BOX_COMMAND_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
ANSWER_LINE_RE = re.compile(r"\banswer\b[ \t]*(?:\*\*|__)?[ \t]*:", re.IGNORECASE)
HASH_LINE_RE = re.compile(r"####")
# The first inline-math span of an answer line: "$x$", "\(x\)" or "\[x\]".
INLINE_MATH_RE = re.compile(r"\$\$?([^$]+?)\$\$?|\\\((.+?)\\\)|\\\[(.+?)\\\]")
MINERVA_PREFIX_RE = re.compile(r"^(?:the\s+)?final\s+answer\s+is\s*", re.IGNORECASE)

MARKER_MODES = ("auto", "boxed", "answer_line")


@dataclass(frozen=True)
class ExtractedAnswer:
    """The answer text found in a response, which marker it came from, and where the marker started."""

    text: str
    marker: str  # "boxed", "answer_line" or "hash_line"
    position: int


def sanitize_text(value: object) -> str:
    """Return ``value`` as a valid Unicode string.

    Tokenizer decoding can hand us lone UTF-16 surrogates (from invalid UTF-8 byte sequences), which break
    ``str.encode`` and JSON round trips later on. They are replaced by ``?``; bytes are decoded leniently.
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        value = "" if value is None else str(value)
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", errors="replace").decode("utf-8")


def response_tail(text: str, max_chars: int) -> str:
    """The last ``max_chars`` characters of ``text``: the final answer sits at the end of a response.

    Bounding the parsed length is what makes extraction cost independent of the response length (a 1 MB
    degenerate response costs the same as a 2 KB one).
    """
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    return text[-max_chars:]


def _last_match(pattern: re.Pattern, text: str) -> re.Match | None:
    matches = list(pattern.finditer(text))
    return matches[-1] if matches else None


def _braced_group(text: str, open_index: int) -> str | None:
    """Content of the ``{...}`` group that opens at ``text[open_index]``, or None if it never closes.

    Backslash-escaped braces (``\\{``, ``\\}``) are literal characters in LaTeX and do not open or close
    groups, so ``\\boxed{\\{1, 2\\}}`` yields ``\\{1, 2\\}``.
    """
    depth = 0
    i = open_index
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : i]
        i += 1
    return None


def find_last_boxed(text: str) -> ExtractedAnswer | None:
    """The content of the last ``\\boxed{...}``/``\\fbox{...}`` in ``text``.

    Only the last box counts: if it is unterminated (a response cut off mid-answer) there is no answer, rather
    than falling back to an earlier, possibly intermediate, box. ``\\boxed 5`` (no braces) is accepted too.
    """
    last = _last_match(BOX_COMMAND_RE, text)
    if last is None:
        return None
    i = last.end()
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        content = _braced_group(text, i)
        if content is None:
            return None
        return ExtractedAnswer(content, "boxed", last.start())
    token = re.match(r"[^\s$]+", text[i:])
    if token is None:
        return None
    return ExtractedAnswer(token.group(0), "boxed", last.start())


def _rest_of_line(text: str, start: int) -> str:
    """The text from ``start`` to the end of its line, or the next non-empty line if that is blank."""
    end = text.find("\n", start)
    line = text[start:] if end < 0 else text[start:end]
    if line.strip() or end < 0:
        return line
    for next_line in text[end + 1 :].split("\n", 3)[:3]:
        if next_line.strip():
            return next_line
    return ""


def find_answer_line(text: str) -> ExtractedAnswer | None:
    """The text after the last ``Answer:`` (any case, optionally bold ``**Answer:**``) on its line."""
    last = _last_match(ANSWER_LINE_RE, text)
    if last is None:
        return None
    return ExtractedAnswer(_rest_of_line(text, last.end()), "answer_line", last.start())


def find_hash_line(text: str) -> ExtractedAnswer | None:
    """The text after the last GSM8K-style ``####`` marker on its line."""
    last = _last_match(HASH_LINE_RE, text)
    if last is None:
        return None
    return ExtractedAnswer(_rest_of_line(text, last.end()), "hash_line", last.start())


def clean_answer_text(answer: str) -> str:
    """Strip the decoration around an extracted answer: math delimiters, markdown bold, final punctuation.

    ``Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.`` becomes ``\\frac{1}{2}``: when an
    answer line contains inline math, its first math span is the answer.
    """
    text = answer.strip()
    if not text:
        return ""
    inner_box = find_last_boxed(text)
    if inner_box is not None and inner_box.text.strip():
        text = inner_box.text.strip()
    else:
        math_span = INLINE_MATH_RE.search(text)
        # "The final answer is $5$." -> "5"; but "5 (since $x > 0$)" keeps its leading 5.
        if math_span is not None and not re.search(r"\d", INLINE_MATH_RE.sub("", text)):
            text = next(group for group in math_span.groups() if group is not None).strip()
    text = text.strip().strip("*_").strip()
    text = MINERVA_PREFIX_RE.sub("", text)
    while text and text[-1] in ".;," and not text.endswith("\\" + text[-1]):  # keep "!" (factorials)
        text = text[:-1].rstrip()
    text = text.strip("$").strip()
    return text


def extract_final_answer(text: str, mode: str = "auto") -> ExtractedAnswer | None:
    """The final answer of a response (already tail-truncated and sanitized), or None if it states none.

    ``mode`` restricts the accepted markers: ``"boxed"`` reads only ``\\boxed{}``, ``"answer_line"`` only an
    ``Answer:``/``####`` line, ``"auto"`` (default) takes whichever marker comes last.
    """
    if mode not in MARKER_MODES:
        raise ValueError(f"unknown answer marker mode {mode!r}; expected one of {MARKER_MODES}")
    candidates = []
    if mode in ("auto", "boxed"):
        candidates.append(find_last_boxed(text))
    if mode in ("auto", "answer_line"):
        candidates.append(find_answer_line(text))
        candidates.append(find_hash_line(text))
    found = [c for c in candidates if c is not None]
    if not found:
        return None
    best = max(found, key=lambda c: c.position)
    cleaned = clean_answer_text(best.text)
    if not cleaned:
        return None
    return ExtractedAnswer(cleaned, best.marker, best.position)


def last_boxed_content(text: str) -> str | None:
    """Content of the last complete ``\\boxed{}`` of ``text`` (used to take MATH ground truths from solutions)."""
    found = find_last_boxed(text)
    return None if found is None else found.text
