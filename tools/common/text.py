"""Strings from input, made safe to print, to write into Markdown and CSV.

A folder name, a log's line or a README's description is chosen by whoever opened the pull request:
printed raw, a newline in it starts a line of its own (``::error::...`` is a command to GitHub
Actions' log), an escape sequence recolours or clears the terminal; written raw into Markdown, it is
HTML and links on the leaderboard's page; into a CSV cell, ``=...`` is a formula to a spreadsheet.
"""

from __future__ import annotations

_ESCAPED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# What starts Markdown or HTML inline (emphasis, code, links and images, tags, entities, table cells,
# strikethrough, GitHub's $math$, a heading's closing #s); a backslash makes each literal (CommonMark).
_MARKDOWN_SPECIAL = frozenset("\\`*[]<>|~&$#")
# A spreadsheet reads a cell that starts with one of these as a formula (OWASP: CSV injection).
_FORMULA_START = frozenset("=+-@\t\r\n")


def printable(value: object) -> str:
    """``value`` as one line of printable text: control, format and separator characters (newlines,
    escape sequences, bidirectional overrides, U+2028) become ``\\n``, ``\\x1b``, ``\\u202e``, ...;
    letters of every script stay as they are."""
    text = str(value)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ch in _ESCAPED:
            out.append(_ESCAPED[ch])
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def markdown_text(value: object) -> str:
    """``value`` as literal Markdown text on one line (a table cell, a heading, link text): the characters
    that start Markdown or HTML backslash-escaped, ``_`` too where it could start emphasis (not inside a
    word: ``2026-08-01_Name`` stays readable), whitespace runs collapsed to one space."""
    text = printable(" ".join(str(value).split()))
    out = []
    for i, ch in enumerate(text):
        inside_word = ch == "_" and 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
        out.append("\\" + ch if ch in _MARKDOWN_SPECIAL or (ch == "_" and not inside_word) else ch)
    return "".join(out)


def csv_cell(value: str) -> str:
    """A text cell that no spreadsheet runs as a formula: a leading ``=``, ``+``, ``-``, ``@``, tab or
    newline (after any spaces) is preceded by an apostrophe, which spreadsheets show as text."""
    return "'" + value if value.lstrip(" ")[:1] in _FORMULA_START else value
