"""Strings from input, made safe to print, to write into Markdown and CSV.

A folder name, a log's line or a README's description is chosen by whoever opened the pull request:
printed raw, a newline in it starts a line of its own (``::error::...`` is a command to GitHub
Actions' log), an escape sequence recolours or clears the terminal; written raw into Markdown, it is
HTML and links on the leaderboard's page; into a CSV cell, ``=...`` is a formula to a spreadsheet.
"""

from __future__ import annotations

_ESCAPED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Characters str.isprintable() accepts that render as nothing, or as a blank where a reader expects a letter: the
# default-ignorable code points of Unicode (DerivedCoreProperties.txt, Default_Ignorable_Code_Point) that are not
# format characters (Cf, which isprintable() already refuses): the combining grapheme joiner, the Hangul fillers
# (letters: Python takes U+3164 for a name), the Khmer inherent vowels, the Mongolian and the 256 variation
# selectors; and the blank glyphs that are no space: the braille blank, Khitan's filler.
_BLANK_RANGES = (
    (0x034F, 0x034F),  # COMBINING GRAPHEME JOINER
    (0x115F, 0x1160),  # HANGUL CHOSEONG FILLER, HANGUL JUNGSEONG FILLER
    (0x17B4, 0x17B5),  # KHMER VOWEL INHERENT AQ, AA
    (0x180B, 0x180F),  # MONGOLIAN FREE VARIATION SELECTOR ONE..FOUR (and U+180E, a format character)
    (0x2800, 0x2800),  # BRAILLE PATTERN BLANK
    (0x3164, 0x3164),  # HANGUL FILLER
    (0xFE00, 0xFE0F),  # VARIATION SELECTOR-1..16
    (0xFFA0, 0xFFA0),  # HALFWIDTH HANGUL FILLER
    (0x16FE4, 0x16FE4),  # KHITAN SMALL SCRIPT FILLER
    (0xE0100, 0xE01EF),  # VARIATION SELECTOR-17..256
)
_BLANK = frozenset(chr(c) for lo, hi in _BLANK_RANGES for c in range(lo, hi + 1))
# What starts Markdown or HTML inline (emphasis, code, links and images, tags, entities, table cells,
# strikethrough, GitHub's $math$, a heading's closing #s); a backslash makes each literal (CommonMark).
_MARKDOWN_SPECIAL = frozenset("\\`*[]<>|~&$#")
# A spreadsheet reads a cell that starts with one of these as a formula (OWASP: CSV injection).
_FORMULA_START = frozenset("=+-@\t\r\n")


def is_hidden(ch: str) -> bool:
    """True for a character a reader cannot see as itself: control, format, separator, private-use, surrogate and
    unassigned characters (all that ``str.isprintable()`` refuses: newlines, escape sequences, bidirectional
    overrides, zero-width spaces, tag characters, U+2028, every space but U+0020) and the characters that render as
    nothing or as a blank though ``isprintable()`` accepts them (Hangul fillers, variation selectors, the braille
    blank, ...: ``_BLANK``)."""
    return not ch.isprintable() or ch in _BLANK


def escape_char(ch: str) -> str:
    """``\\x1b``, ``\\u3164``, ``\\U000e0100``: the character as a Python escape (``\\n``, ``\\r``, ``\\t`` by name)."""
    if ch in _ESCAPED:
        return _ESCAPED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _all_plain(text: str) -> bool:
    """No hidden character in ``text`` (fast for the common case: printable text with nothing of ``_BLANK``)."""
    return text.isprintable() and (text.isascii() or _BLANK.isdisjoint(text))


def printable(value: object) -> str:
    """``value`` as one line of printable text: control, format and separator characters (newlines,
    escape sequences, bidirectional overrides, U+2028) and the characters that render as nothing or as a blank
    (U+3164 HANGUL FILLER, variation selectors, U+2800 BRAILLE PATTERN BLANK: ``is_hidden``) become ``\\n``,
    ``\\x1b``, ``\\u202e``, ``\\u3164``, ...; letters of every other kind, of every script, stay as they are."""
    text = str(value)
    if _all_plain(text):
        return text
    return "".join(escape_char(ch) if is_hidden(ch) else ch for ch in text)


def visible(text: str, keep: str = "\t\n") -> str:
    """``text`` with every hidden character (``is_hidden``) but those of ``keep`` shown as its escape: what a
    page shows of a line of code or a name, so that two names that differ by an invisible character look
    different, and nothing reorders or blanks out what the reader sees."""
    if _all_plain(text):
        return text
    return "".join(escape_char(ch) if ch not in keep and is_hidden(ch) else ch for ch in text)


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
