"""tools/judge/upstream.py: the public speedrun's hand-edited record tables, read as an input.

The fixture README (tests/fixtures/public-speedrun/, FIXTURE.md) is the public README at its merge of
2026-04-18; the numbers asserted here were counted from it by hand. Tests over the whole public tree read
a clone of ../shared/public-speedrun's bundle (conftest's public_records) and skip where it is absent.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from tools.judge.upstream import (
    MAX_README_BYTES,
    MAX_ROW_CHARS,
    UpstreamRow,
    find_readme,
    parse_tables,
    read_tables,
    resolve,
)

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "public-speedrun"
README = FIXTURE / "README.md"
RECORDS = FIXTURE / "records"

T1, T2 = "track_1_short", "track_2_medium"
MOVED_LINK = "records/track_2_medium/2025-09-11_SecondInputEmbed/000_592014ec-6781-4f59-b274-c4af68ccfe75.txt"
MOVED_NAME = "000_592014ec-6781-4f59-b274-c4af68ccfe75.txt"
HEADER = "| # | Record time | Description | Date | Log | Contributors |\n| - | - | - | - | - | - |\n"


@pytest.fixture(scope="module")
def rows() -> list[UpstreamRow]:
    return read_tables(README)


def of(rows: list[UpstreamRow], track: str) -> list[UpstreamRow]:
    return [r for r in rows if r.track == track]


def one(rows: list[UpstreamRow], track: str, number: str) -> UpstreamRow:
    found = [r for r in rows if r.track == track and r.number == number]
    assert len(found) == 1, found
    return found[0]


def table(body: str, heading: str = "## World record history") -> str:
    return f"# Title\n\n{heading}\n\n{HEADER}{body}\n"


# --- the fixture README ------------------------------------------------------------------------------------


def test_row_counts_per_track(rows: list[UpstreamRow]) -> None:
    # Track 1: records 1..79, plus two re-timings of #21 (README lines 105-185). Track 2: 1..18 (lines 262-279).
    assert len(of(rows, T1)) == 81
    assert len(of(rows, T2)) == 18
    assert [r.number for r in of(rows, T1)] == [str(n) for n in range(1, 22)] + ["21", "21"] + [
        str(n) for n in range(22, 80)
    ]
    assert [r.number for r in of(rows, T2)] == [str(n) for n in range(1, 19)]
    assert [r.position for r in of(rows, T1)] == list(range(81))
    assert [r.position for r in of(rows, T2)] == list(range(18))
    assert parse_tables(README.read_text()).skipped == ()


def test_the_retiming_rows(rows: list[UpstreamRow]) -> None:
    retimed = [r for r in rows if r.retiming]
    assert [(r.track, r.number, r.time_text, r.date) for r in retimed] == [
        (T1, "21", "2.997 minutes", "2025-02-01"),
        (T1, "21", "3.014 minutes", "2025-05-24"),
    ]
    first, rule_tweak, stable_torch = [r for r in rows if r.track == T1 and r.number == "21"]
    assert not first.retiming and first.contributors == "@leloykun" and first.note == ""
    assert rule_tweak.description == "21st record with new timing"
    assert rule_tweak.log_links == (
        "records/track_1_short/2025-02-01_RuleTweak/eff63a8c-2f7e-4fc5-97ce-7f600dae0bc7.txt",
    )
    # The contributors cell is a remark, not names: it goes to note (its link reduced to its text).
    assert rule_tweak.contributors == ""
    assert rule_tweak.note == "not a new record, just re-timing #21 with the updated rules"
    assert stable_torch.note == "not a new record, just re-timing #21 with latest torch"
    assert stable_torch.time_s == pytest.approx(3.014 * 60)


def test_first_and_last_row_of_track_1(rows: list[UpstreamRow]) -> None:
    assert of(rows, T1)[0] == UpstreamRow(
        track=T1,
        position=0,
        line=105,
        number="1",
        time_text="45 minutes",
        time_s=2700.0,
        description="llm.c baseline",
        description_url="https://github.com/karpathy/llm.c/discussions/481",
        date="2024-05-28",
        log_links=("records/track_1_short/2024-10-13_llmc/main.log",),
        pr_number=None,
        pr_url=None,
        contributors="@karpathy, llm.c contributors",
        retiming=False,
        note="",
    )
    last = of(rows, T1)[-1]
    assert last == UpstreamRow(
        track=T1,
        position=80,
        line=185,
        number="79",
        time_text="1.411 minutes",
        time_s=pytest.approx(1.411 * 60),
        description="Fuse Cross Entropy Fwd/Bwk Kernel, to avoid recalc on softcap sigmoid",
        description_url=None,
        date="2026-04-04",
        log_links=("records/track_1_short/2026-04-4_FuseCEFwdAndBwd/runs/19ad9161-37c0-4985-8dd4-6db4e27f34b4.txt",),
        pr_number=251,
        pr_url="https://github.com/KellerJordan/modded-nanogpt/pull/251",
        contributors="@andrewbriand8",
        retiming=False,
        note="",
    )


def test_first_and_last_row_of_track_2(rows: list[UpstreamRow]) -> None:
    assert of(rows, T2)[0] == UpstreamRow(
        track=T2,
        position=0,
        line=262,
        number="1",
        time_text="5.8 hours",
        time_s=pytest.approx(5.8 * 3600),
        description="llm.c baseline (350M parameters)",
        description_url="https://github.com/karpathy/llm.c/discussions/481",
        date="2024-05-28",
        log_links=("records/track_2_medium/2025-01-18/main.log",),
        pr_number=None,
        pr_url=None,
        contributors="@karpathy, llm.c contributors",
        retiming=False,
        note="",
    )
    assert of(rows, T2)[-1] == UpstreamRow(
        track=T2,
        position=17,
        line=279,
        number="18",
        time_text="17.35 minutes",
        time_s=pytest.approx(17.35 * 60),
        description="Bulk transfer short track features",
        description_url=None,
        date="2025-12-31",
        log_links=(
            "records/track_2_medium/2025-12-31_BulkSmallTrackTransfer/354be270-7d41-44b7-8064-f040923f024f.txt",
        ),
        pr_number=188,
        pr_url="https://github.com/KellerJordan/modded-nanogpt/pull/188",
        contributors="",  # the cell is "-"
        retiming=False,
        note="",
    )


def test_none_and_dash_cells(rows: list[UpstreamRow]) -> None:
    muon = one(rows, T1, "3")  # Log cell "none"
    assert muon.log_links == () and muon.pr_number is None and muon.note == ""
    assert muon.date == "2024-10-04" and muon.contributors == "@kellerjordan0, @jxbz"
    torch210 = one(rows, T1, "66")  # "... | 01/31/26 | - | -"
    assert (torch210.log_links, torch210.contributors, torch210.date) == ((), "", "2026-01-31")
    medium11 = one(rows, T2, "11")  # "... | - | - | -": no date, no log, no contributors
    assert medium11.description == "Upgrade from torch 2.7 to torch==2.10.0.dev20251210+cu126"
    assert (medium11.date, medium11.log_links, medium11.contributors, medium11.note) == (None, (), "", "")
    assert medium11.time_s == pytest.approx(23.45 * 60)
    assert [r.number for r in rows if not r.log_links] == ["3", "66", "11"]


def test_cells_of_other_shapes(rows: list[UpstreamRow]) -> None:
    # A time with a mark, explained by the note above the table.
    marked = one(rows, T2, "6")
    assert (marked.time_text, marked.time_s) == ("25.95 minutes*", pytest.approx(25.95 * 60))
    assert marked.note.startswith("time marked '*': ")
    assert "coordinate_descent_tuning` is turned on after the record 6 (*)" in marked.note
    # Two links in a description: both texts kept, the first target kept.
    two = one(rows, T2, "8")
    assert two.description == "Cubic sliding window size schedule, 2× max window size (24.84 minutes) 24.5min repro"
    assert two.description_url == "https://x.com/jadenj3o/status/1914893086276169754"
    # "[log](path), [PR](url)" with a space, and a PR link with a trailing slash.
    assert one(rows, T2, "10").pr_number == 124
    assert one(rows, T2, "17").pr_url == "https://github.com/KellerJordan/modded-nanogpt/pull/157/"
    assert one(rows, T2, "17").pr_number == 157
    # "&", a link and a trailing space in the contributors cell; no space before a "|".
    assert one(rows, T1, "32").contributors == "@bernard24 & AI system hiverge.ai"
    assert one(rows, T1, "45").description == "Refine skip arch, update exponential decay init"
    assert one(rows, T1, "22").contributors.endswith("@vdlad; The Enigma project")
    # A description without a link, a one-digit day in the path.
    assert one(rows, T1, "24").description_url is None
    assert one(rows, T1, "27").log_links == ("records/track_1_short/2025-07-18_TritonMuon/record.txt",)
    # The folder links of records 14-17.
    assert one(rows, T1, "14").log_links == ("records/track_1_short/2024-12-04_ValueEmbed",)
    assert [r.number for r in of(rows, T1) if r.pr_number is not None] == [str(n) for n in range(27, 80) if n != 66]
    assert [(r.track, r.number) for r in rows if r.date is None] == [(T2, "11")]
    assert all(r.time_s is not None for r in rows)


# --- resolving links ---------------------------------------------------------------------------------------


def test_rows_resolved_at_their_path_in_the_fixture_tree(rows: list[UpstreamRow]) -> None:
    resolved = resolve(rows, RECORDS)
    assert len(resolved) == len(rows) and [r.row for r in resolved] == rows
    found = {(r.row.track, r.row.number, r.row.retiming): r for r in resolved if r.files}
    assert sorted(found) == sorted(
        [
            (T1, "12", False),
            (T1, "19", False),
            (T1, "21", True),  # RuleTweak; StableTorch is not in the fixture
            (T1, "22", False),
            (T1, "69", False),
            (T1, "79", False),
            (T2, "1", False),
            (T2, "2", False),
        ]
    )
    for r in found.values():
        assert r.missing == () and len(r.files) == 1
        assert r.how == (f"{r.row.log_links[0]}: at its path",)
        assert r.files[0] == RECORDS.parent / r.row.log_links[0]
        assert r.folder == RECORDS / r.row.track / r.row.log_links[0].split("/")[2]
    assert found[(T1, "79", False)].folder == RECORDS / T1 / "2026-04-4_FuseCEFwdAndBwd"  # a file in runs/
    assert found[(T2, "1", False)].files[0].name == "main.log"
    for r in resolved:
        if not r.files:
            assert r.missing == r.row.log_links and r.folder is None
            assert all(": missing: " in h for h in r.how), r.how


def test_moved_folder_resolved_by_file_name(rows: list[UpstreamRow], tmp_path: Path) -> None:
    row = one(rows, T2, "10")
    assert row.log_links == (MOVED_LINK,)
    real = tmp_path / "records" / T2 / "2025-09-11_GPT2MediumX01"
    real.mkdir(parents=True)
    log = real / MOVED_NAME
    shutil.copyfile(RECORDS / T2 / "2025-01-18" / "241dd7a7-3d76-4dce-85a4-7df60387f32a.txt", log)
    (r,) = resolve([row], tmp_path / "records")
    assert r.files == (log,) and r.missing == () and r.folder == real
    assert r.how == (
        f"{MOVED_LINK}: by file name: not at its path, the one file of that name under records/track_2_medium is "
        f"records/track_2_medium/2025-09-11_GPT2MediumX01/{MOVED_NAME}",
    )
    # The same name twice under the track folder: not unique, so missing.
    other = tmp_path / "records" / T2 / "2025-09-12_Copy"
    other.mkdir()
    shutil.copyfile(log, other / MOVED_NAME)
    (r,) = resolve([row], tmp_path / "records")
    assert r.files == () and r.missing == (MOVED_LINK,) and "2 files named" in r.how[0]
    # A name only under the other track's folder is not looked for there.
    shutil.rmtree(tmp_path / "records" / T2)
    (tmp_path / "records" / T1 / "x").mkdir(parents=True)
    shutil.copyfile(RECORDS / T2 / "2025-01-18" / "main.log", tmp_path / "records" / T1 / "x" / MOVED_NAME)
    (r,) = resolve([row], tmp_path / "records")
    assert r.files == () and "no track_2_medium folder" in r.how[0], r.how


def test_links_outside_a_track_folder(tmp_path: Path) -> None:
    records = tmp_path / "records"
    (records / T1 / "2025-01-01_Real").mkdir(parents=True)
    (records / T1 / "2025-01-01_Real" / "a.txt").write_text("log\n")
    (records / "loose").mkdir()
    (records / "loose" / "b.txt").write_text("log\n")
    rows = parse_tables(
        table(
            "1 | 2 minutes | a | 01/01/25 | [log](records/track_1_short) | @a\n"
            "2 | 2 minutes | b | 01/01/25 | [log](records/old/a.txt) | @a\n"
            "3 | 2 minutes | c | 01/01/25 | [log](records/loose/b.txt) | @a\n"
            "4 | 2 minutes | d | 01/01/25 | [log](./records/track_1_short/2025-01-01_Real/a.txt#L1) | @a\n"
        )
    ).rows
    track_link, by_name, loose, dotted = resolve(rows, records)
    assert track_link.files == () and "a link to a track folder" in track_link.how[0]
    # A path outside the track folders is only looked for by name, in the row's track folder.
    assert by_name.files == (records / T1 / "2025-01-01_Real" / "a.txt",) and "by file name" in by_name.how[0]
    assert by_name.folder == records / T1 / "2025-01-01_Real"
    assert loose.files == () and "no file named b.txt under records/track_1_short" in loose.how[0]
    assert dotted.files == (records / T1 / "2025-01-01_Real" / "a.txt",) and dotted.how[0].endswith(": at its path")


def test_folder_link(rows: list[UpstreamRow], tmp_path: Path) -> None:
    row = one(rows, T1, "14")
    folder = tmp_path / "records" / T1 / "2024-12-04_ValueEmbed"
    folder.mkdir(parents=True)
    source = RECORDS / T1 / "2024-11-19_FlexAttention" / "8384493d-dba9-4991-b16b-8696953f5e6d.txt"
    names = ["00008ea0-21dd-442a-82ee-d12799249d0f.txt", "123ac41a-8f7b-42a1-853c-5a791dcaa7ae.txt"]
    for name in names:
        shutil.copyfile(source, folder / name)
    (folder / "README.md").write_text("notes\n")
    (folder / "train_gpt2.py").write_text("print()\n")
    (r,) = resolve([row], tmp_path / "records")
    assert r.files == tuple(folder / n for n in names) and r.folder == folder and r.missing == ()
    assert r.how == ("records/track_1_short/2024-12-04_ValueEmbed: a folder link: 2 logs (*.txt) in it",)
    # A folder without logs is missing, not an empty record.
    for name in names:
        (folder / name).unlink()
    (r,) = resolve([row], tmp_path / "records")
    assert r.files == () and r.missing == row.log_links and "no logs" in r.how[0]


def test_links_never_leave_the_records_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    records = tmp_path / "repo" / "records"
    (records / T1 / "2025-01-01_Real").mkdir(parents=True)
    (records / T1 / "2025-01-02_Link").symlink_to(outside, target_is_directory=True)
    text = table(
        "1 | 2 minutes | a | 01/01/25 | [log](records/track_1_short/../../../outside/secret.txt) | @a\n"
        "2 | 2 minutes | b | 01/01/25 | [log](records/track_1_short/2025-01-02_Link/secret.txt) | @a\n"
        "3 | 2 minutes | c | 01/01/25 | [log](records/track_1_short/2025-01-03_Gone/secret.txt) | @a\n"
        "4 | 2 minutes | d | 01/01/25 | [log](../../etc/passwd) | @a\n"
        "5 | 2 minutes | e | 01/01/25 | [log](/etc/passwd) | @a\n"
        "6 | 2 minutes | f | 01/01/25 | [log](records/track_1_short/%2e%2e/%2e%2e/outside/secret.txt) | @a\n"
    )
    rows = list(parse_tables(text).rows)
    assert [r.number for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert rows[3].log_links == () and "the Log cell links ../../etc/passwd, outside records/" in rows[3].note
    assert rows[4].log_links == ()
    dotdot, link, gone, encoded = resolve([*rows[:3], rows[5]], records)
    assert encoded.files == () and "refused" in encoded.how[0]
    assert dotdot.files == () and "refused" in dotdot.how[0]
    assert link.files == () and "refused" in link.how[0] and "symbolic link" in link.how[0]
    # The search by name follows no link either: secret.txt behind the linked folder is not found.
    assert gone.files == () and "no file named secret.txt" in gone.how[0]


# --- hostile READMEs ---------------------------------------------------------------------------------------


def test_huge_readme_is_refused(tmp_path: Path) -> None:
    huge = tmp_path / "README.md"
    huge.write_bytes(README.read_bytes() + b"x" * MAX_README_BYTES)
    with pytest.raises(ValueError, match=r"README\.md: over 1,048,576 bytes.*trim"):
        read_tables(huge)
    with pytest.raises(ValueError, match="not a regular file"):
        read_tables(tmp_path / "absent.md")


def test_malformed_rows_are_skipped_and_reading_goes_on() -> None:
    long_row = "7 | 2 minutes | " + "[x](" * 25_000 + " | 01/01/25 | - | @a"
    body = "\n".join(
        [
            "1 | 3 minutes | first | 01/01/25 | [log](records/track_1_short/a/b.txt) | @a",
            long_row,
            "| | | | | | |",
            "||||||||||||||||",
            "not a row at all",
            "x | 2 minutes | no number | 01/01/25 | - | @b",
            "8 |  | no time | 01/01/25 | - | @b",
            "9 | soon | unreadable time | 13/45/25 | - | Jane \x1b[31mred\x1b[0m",
            "10 | 1 minutes | \u202eevil\u202c [x](javascript:alert(1)) | 02/30/25 | [log](records/track_1_short/c/d.txt)",
            "11",
        ]
    )
    start = time.process_time()  # CPU time: the bound holds however busy the machine is
    parsed = parse_tables(table(body))
    assert time.process_time() - start < 1.0
    assert [r.number for r in parsed.rows] == ["1", "9", "10"]
    lines = {s.line: s.why for s in parsed.skipped}  # the body starts at line 7
    assert sorted(lines) == [8, 9, 10, 11, 12, 13, 16]
    assert f"over {MAX_ROW_CHARS:,}" in lines[8]
    assert all("is not a number" in lines[n] for n in (9, 10, 11, 12))
    assert "time cell is empty" in lines[13] and "time cell is empty" in lines[16]
    nine, ten = parsed.rows[1], parsed.rows[2]
    assert nine.time_s is None and "time 'soon' is not a number" in nine.note
    assert "date '13/45/25' is not MM/DD/YY" in nine.note and nine.date is None
    assert "\x1b" not in nine.note and "\\x1b[31mred" in nine.note  # no @: a remark, made printable
    assert ten.description == "\\u202eevil\\u202c x" and ten.description_url is None  # only http(s) or a path
    assert ten.date is None and ten.contributors == "" and ten.log_links == ("records/track_1_short/c/d.txt",)
    assert all(r.track == T1 for r in parsed.rows)


def test_regexes_are_linear_on_long_cells() -> None:
    # Cells just under the row limit, built to make a backtracking pattern blow up.
    for cell in ("[" * 8000, "[a](" * 2000, "[a](" + "(" * 7990, "](" * 4000, "[x](" + "a(b" * 2600, "1" * 8000):
        row = f"1 | {cell[:8100]} | {cell[:10]} | 01/01/25 | - | @a"
        start = time.process_time()
        parse_tables(table(row[:MAX_ROW_CHARS]))
        assert time.process_time() - start < 0.5, cell[:10]


def test_which_table_is_which_track() -> None:
    medium_links = "1 | 2 minutes | a | 01/01/25 | [log](records/track_2_medium/x/y.txt) | @a\n"
    assert [r.track for r in parse_tables(table(medium_links, "## Results")).rows] == [T2]
    # Links win over the heading; without links the heading decides.
    assert [r.track for r in parse_tables(table(medium_links)).rows] == [T2]
    no_links = "1 | 2 minutes | a | 01/01/25 | - | @a\n"
    assert [r.track for r in parse_tables(table(no_links, "## Speedrun track 2: GPT-2 Medium")).rows] == [T2]
    assert [r.track for r in parse_tables(table(no_links)).rows] == [T1]
    unknown = parse_tables(table(no_links, "## Results"))
    assert unknown.rows == () and "track is neither" in unknown.skipped[0].why
    # Not a record table (no time column), a table in a code fence, no table at all: no rows.
    assert parse_tables("## World record history\n\n| # | Name |\n| - | - |\n1 | x\n").rows == ()
    assert parse_tables("## World record history\n\n```\n" + HEADER + no_links + "```\n").rows == ()
    assert parse_tables("# Nothing here\n\nsome | text\n").rows == ()
    # Two tables of one track continue the positions.
    two = parse_tables(table(no_links) + "\n" + HEADER + no_links.replace("1 |", "2 |"))
    assert [(r.number, r.position) for r in two.rows] == [("1", 0), ("2", 1)]


def test_find_readme(tmp_path: Path) -> None:
    assert find_readme(RECORDS) == README
    assert find_readme(RECORDS / T1) == README  # one track folder: the README two levels up
    (tmp_path / "records").mkdir()
    assert find_readme(tmp_path / "records") is None
    (tmp_path / "README.md").write_text("# A harness\n\nNo tables here.\n")
    assert find_readme(tmp_path / "records") is None
    (tmp_path / "README.md").unlink()
    (tmp_path / "README.md").symlink_to(README)
    assert find_readme(tmp_path / "records") is None


# --- the whole public tree ---------------------------------------------------------------------------------


def test_every_linked_row_of_the_public_tree_resolves(public_records: Path) -> None:
    readme = find_readme(public_records)
    assert readme is not None, f"no README with a record table beside {public_records}"
    rows = read_tables(readme)
    assert {r.track for r in rows} == {T1, T2}
    resolved = resolve(rows, public_records)
    unresolved = [f"{r.row.track} #{r.row.number}: {'; '.join(r.how)}" for r in resolved if r.missing]
    assert unresolved == []
    for r in resolved:
        assert bool(r.files) == bool(r.row.log_links), r
        assert r.folder is not None and r.folder.parent == public_records / r.row.track or not r.files, r
        assert all(f.is_file() and f.resolve().is_relative_to(public_records.resolve()) for f in r.files)
