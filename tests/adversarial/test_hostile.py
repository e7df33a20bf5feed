"""The tools themselves under attack: symbolic links, YAML bombs, names that are code, values that break plots.

Every file of a pull request's records/ and leaderboard/ is chosen by its author. Each test builds a record
with tests/helpers/logfactory.py, plants one hostile thing in it and checks that the tools refuse it or treat it as
text, never follow it, run it, crash on it or write outside their folder.
"""

from __future__ import annotations

import io
import math
import re
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers.logfactory import front_matter, make_log, write_record
from tools.cli import main
from tools.common.text import csv_cell, is_hidden, markdown_text, printable, visible
from tools.judge.records import read_front_matter
from tools.site.check import check
from tools.site.leaderboard import build, write

TRACK = "track_1_short"


def _board(tmp_path: Path) -> tuple[Path, Path]:
    records = tmp_path / "records"
    write_record(records, "2026-08-01_First", step_ms=60.0)
    write_record(records, "2026-08-02_Second", step_ms=50.0)
    out = tmp_path / "leaderboard"
    assert main(["leaderboard", "--records", str(records), "--out", str(out)]) == 0
    return records, out


# --- symbolic links -------------------------------------------------------------------------


def test_a_link_in_the_leaderboard_folder_deletes_and_writes_nothing_outside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plots/ link to a folder of the machine once had its *.svg deleted as stale plots, and a README.md link
    was written through."""
    records, out = _board(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.svg").write_text("<svg>someone's file</svg>")
    (outside / "notes.md").write_text("someone's notes\n")
    plots = out / "plots"
    for p in sorted(plots.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    plots.rmdir()
    plots.symlink_to(outside)
    (out / "README.md").unlink()
    (out / "README.md").symlink_to(outside / "notes.md")
    capsys.readouterr()
    assert main(["leaderboard", "--records", str(records), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "2 symbolic link(s) under" in err and "may hold no symbolic links" in err
    assert (outside / "victim.svg").read_text() == "<svg>someone's file</svg>"
    assert (outside / "notes.md").read_text() == "someone's notes\n"
    assert main(["check", "--records", str(records), "--leaderboard", str(out)]) == 2


def test_a_linked_subfolder_of_a_record_is_refused_not_walked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record's subfolders are walked for supporting logs: a link to / never ended."""
    records, out = _board(tmp_path)
    record = records / TRACK / "2026-08-02_Second"
    (record / "extras").symlink_to("/")
    for argv in (
        ["verify", str(record)],
        ["verify", str(records)],
        ["leaderboard", "--records", str(records), "--out", str(out)],
        ["check", "--records", str(records), "--leaderboard", str(out)],
    ):
        t0 = time.process_time()  # CPU time: the bound holds however busy the machine is
        assert main(argv) == 2, argv
        assert f"{record / 'extras'}" in capsys.readouterr().err and time.process_time() - t0 < 30


def test_the_records_folder_itself_may_not_be_a_link(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records, out = _board(tmp_path)
    linked = tmp_path / "linked-records"
    linked.symlink_to(records)
    assert main(["check", "--records", str(linked), "--leaderboard", str(out)]) == 2
    assert "linked-records" in capsys.readouterr().err


def test_stale_plots_are_removed_only_when_the_generator_made_them(tmp_path: Path) -> None:
    records, out = _board(tmp_path)
    mine = sorted((out / "plots" / TRACK).glob("*.svg"))
    hand_made = out / "plots" / TRACK / "my-own-figure.svg"
    hand_made.write_text("<svg>drawn by hand</svg>")
    stale = out / "plots" / TRACK / "2026-07-01-gone.svg"
    stale.write_bytes(mine[0].read_bytes())  # a plot of a record that was removed
    write(build(records, out, known_shards={}), out)
    assert not stale.exists() and hand_made.read_text() == "<svg>drawn by hand</svg>"
    ok, lines = check(records, out)
    assert not ok and any("my-own-figure.svg: not generated from the records" in ln for ln in lines)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # written through temporary files


# --- front matter ---------------------------------------------------------------------------


def test_a_yaml_alias_bomb_is_refused_before_it_is_built(tmp_path: Path) -> None:
    """Nested aliases expand to 9**k nodes: 682 bytes of them took ~70 GB. This one would build ~6,500."""
    readme = tmp_path / "README.md"
    bomb = (
        'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    )
    readme.write_text("---\ntitle: t\n" + bomb + "---\n")
    meta, errors = read_front_matter(readme)
    assert meta is None and errors == [
        "README.md front matter is not valid YAML: YAML anchors and aliases (&name, *name) are not allowed: "
        "write each value out"
    ]
    readme.write_text("---\ntitle: " + "[" * 40 + "]" * 40 + "\n---\n")
    assert "nested more than 8 levels deep" in read_front_matter(readme)[1][0]
    readme.write_text("---\ndescription: " + "x" * 20_000 + "\n---\n")
    assert "front matter is over 16,384 characters" in read_front_matter(readme)[1][0]


def test_a_readme_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_bytes(b"\xef\xbb\xbf" + front_matter().encode())
    meta, errors = read_front_matter(readme)
    assert errors == [] and meta is not None and meta.title == "A test record"


# --- text from records in the leaderboard and on the console ---------------------------------


def test_names_and_values_that_break_plots_are_drawn_as_text(tmp_path: Path) -> None:
    r"""A log named `$\x{y}$.txt` was parsed as TeX math by matplotlib (a crash); a loss of -1.7e308 broke the
    axis. Both are records verify judges (the bad value fails a rule): the leaderboard must still be drawn."""
    records = tmp_path / "records"
    folder = write_record(records, "2026-08-01_Odd")
    first = sorted(folder.glob("*.txt"))[0]
    first.rename(folder / "$\\x{y}$.txt")
    second = sorted(p for p in folder.glob("*.txt") if not p.name.startswith("$"))[0]
    second.write_text(
        second.read_text().replace("val_loss:10.", "val_loss:-1.7e308 ").replace("val_loss:3.2", "val_loss:1e308")
    )
    files = build(records, tmp_path / "leaderboard", known_shards={})
    svg = next(v for k, v in files.items() if k.startswith(f"plots/{TRACK}/"))
    assert b"<svg" in svg


def test_csv_cells_never_start_a_formula(tmp_path: Path) -> None:
    records = tmp_path / "records"
    write_record(
        records,
        "2026-08-01_Formula",
        meta={"title": '=HYPERLINK("http://evil","click")', "description": "+cmd|' /C calc'!A0"},
    )
    files = build(records, tmp_path / "leaderboard", known_shards={})
    df = pd.read_csv(io.BytesIO(files["leaderboard.csv"]))
    row = df[df.record == "2026-08-01_Formula"].iloc[0]
    assert row.title == '\'=HYPERLINK("http://evil","click")' and row.description == "'+cmd|' /C calc'!A0"
    assert math.isfinite(row.mean_time_s)  # numbers stay numbers


def test_readme_markdown_and_html_stay_text_in_the_leaderboard(tmp_path: Path) -> None:
    records = tmp_path / "records"
    evil = '<img src=x onerror="alert(1)"> [click](javascript:alert(1)) ![p](http://x/p.png) `code` $x$ *em*'
    write_record(records, "2026-08-01_Markup", meta={"description": evil})
    md = build(records, tmp_path / "leaderboard", known_shards={})["README.md"].decode()
    row = next(ln for ln in md.splitlines() if "2026-08-01_Markup" in ln)
    cell = row.split(" | ")[5]
    assert (
        cell
        == r'\<img src=x onerror="alert(1)"\> \[click\](javascript:alert(1)) !\[p\](http://x/p.png) \`code\` \$x\$ \*em\*'
    )
    assert not re.search(r"(?<!\\)[<>\[\]`$*]", cell)  # every character that starts Markdown or HTML is escaped


def test_names_with_newlines_print_as_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder or log name with a newline once wrote its own lines into CI's log (`::error::...` is a GitHub
    Actions command there); escape sequences recoloured the terminal."""
    records = tmp_path / "records"
    bad = "2026-08-01_X\n::error::pwned\x1b[2J"
    folder = write_record(records, bad)
    (folder / "run\n::warning::x.txt").write_text(make_log())
    out = tmp_path / "leaderboard"
    outputs = []
    for argv in (
        ["verify", str(folder)],
        ["verify", str(records)],
        ["check", "--records", str(records), "--leaderboard", str(out)],
        ["parse", str(folder / "run\n::warning::x.txt")],
        ["compare", str(folder), str(folder)],
        ["verify", str(tmp_path / "nope\n::error::x")],
    ):
        main(argv)
        captured = capsys.readouterr()
        outputs.append(captured.out + captured.err)
    text = "\n".join(outputs)
    assert "::error::pwned" in text and "\\n::error::pwned\\x1b[2J" in text  # named, escaped
    assert not [ln for ln in text.splitlines() if ln.startswith(("::", "\x1b"))]
    assert "\x1b" not in text


def test_text_helpers() -> None:
    assert printable("a\nb\r\t\x1b\u202e\u2028\U000e0001 é Н") == "a\\nb\\r\\t\\x1b\\u202e\\u2028\\U000e0001 é Н"
    assert printable("plain text") == "plain text"
    assert markdown_text("2026-08-01_Foo_Bar | _x_ <b>\n&amp;\x1b") == r"2026-08-01_Foo_Bar \| \_x\_ \<b\> \&amp;\\x1b"
    assert [csv_cell(x) for x in ("=1", "+1", "-1", "@SUM(A1)", "\t=1", "  =1", "ok", "")] == [
        "'=1",
        "'+1",
        "'-1",
        "'@SUM(A1)",
        "'\t=1",
        "'  =1",
        "ok",
        "",
    ]


# Characters str.isprintable() accepts that render as nothing or as a blank (issue 20): Hangul fillers (letters, so
# Python takes them for names), the variation selectors, the combining grapheme joiner, the braille blank.
BLANKS = "\u3164\u115f\u1160\uffa0\ufe00\ufe0f\U000e0100\U000e01ef\u034f\u17b4\u180b\u2800\U00016fe4"


def test_characters_that_render_as_nothing_are_escaped_wherever_text_is_shown() -> None:
    assert all(ch.isprintable() for ch in BLANKS)  # what the old printable() trusted
    assert all(is_hidden(ch) for ch in BLANKS)
    escaped = [printable(ch) for ch in BLANKS]
    assert escaped == [
        "\\u3164",
        "\\u115f",
        "\\u1160",
        "\\uffa0",
        "\\ufe00",
        "\\ufe0f",
        "\\U000e0100",
        "\\U000e01ef",
        "\\u034f",
        "\\u17b4",
        "\\u180b",
        "\\u2800",
        "\\U00016fe4",
    ]
    # a name that differs from another by an invisible letter shows the difference, in a line and in Markdown
    assert printable("2026-08-01_Fast\u3164") == "2026-08-01_Fast\\u3164"
    assert markdown_text("lr\ufe00 = 1") == r"lr\\ufe00 = 1"  # the escape's backslash escaped: Markdown shows \ufe00
    # a page keeps tabs and newlines (a block of code), letters of every script and emoji, and escapes the rest
    assert visible("\tx = 1\n# é Н σ ≈ 😀") == "\tx = 1\n# é Н σ ≈ 😀"
    assert visible("ㅤ = 1\u200b\u2028") == "\\u3164 = 1\\u200b\\u2028"
    assert visible("a\tb", keep="") == "a\\tb"


def test_a_folder_nested_a_thousand_deep_is_walked_not_recursed(tmp_path: Path) -> None:
    """notes/d/d/.../d (1,000 deep, as git can store) overflowed the recursion of os.walk and Path.rglob
    (Python 3.11): verify, check and leaderboard died with a RecursionError."""
    records = tmp_path / "records"
    folder = write_record(records, "2026-08-01_Deep")
    levels = [folder / "notes"]
    for _ in range(1000):  # one level at a time: Path.mkdir(parents=True) recurses too
        levels.append(levels[-1] / "d")
    for level in levels:
        level.mkdir()
    (levels[-1] / "note.txt").write_text("a note, never judged\n")
    out = tmp_path / "leaderboard"
    try:
        assert main(["verify", str(folder)]) == 0
        assert main(["leaderboard", "--records", str(records), "--out", str(out)]) == 0
        assert check(records, out)[0]
    finally:  # deepest first: shutil.rmtree, which cleans tmp_path, recurses as well
        (levels[-1] / "note.txt").unlink()
        for level in reversed(levels):
            level.rmdir()
