"""The generated leaderboard: contents, links that resolve, deterministic bytes, and `check`."""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import urllib.parse
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import REPO_ROOT
from helpers.logfactory import H100, LogSpec, write_log, write_record
from tools.cli import main
from tools.judge.records import discover
from tools.judge.verify import verify_records
from tools.site.check import check
from tools.site.leaderboard import CSV_COLUMNS, build, build_tables, unique_slugs, write

_MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HREF = re.compile(r'href="([^"]+)"')


def make_records(root: Path) -> Path:
    records = root / "records"
    records.mkdir(parents=True)
    (records / "README.md").write_text("# rules\n")
    write_record(records, "2026-08-01_First", step_ms=60.0)
    write_record(
        records,
        "2026-08-03_Second",
        step_ms=50.0,
        meta={"baseline": "2026-08-01_First", "description": "Pipes | and <b>tags</b> stay text"},
    )
    write_record(records, "2026-08-04_Slower", step_ms=55.0)
    write_record(records, "2026-08-05_TwoRuns", runs=2, step_ms=40.0)
    write_record(records, "2026-08-06_OneGpu", runs=3, num_gpus=1, step_ms=400.0, meta={"hardware": f"1x {H100}"})
    return records


def assert_links_resolve(out: Path, files: dict[str, bytes]) -> int:
    n = 0
    for name, pattern in (("README.md", _MD_LINK), ("index.html", _HREF)):
        for link in pattern.findall(files[name].decode()):
            if link.startswith(("data:", "#", "http")):
                continue
            target = urllib.parse.unquote(link.replace("&amp;", "&"))
            assert (out / target).exists(), f"{name}: dead link {link}"
            n += 1
    return n


@pytest.fixture(scope="module")
def harness_board(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("board")
    records = make_records(root)
    out = root / "leaderboard"
    files = build(records, out, known_shards={})
    write(files, out)
    return records, out, files


def test_tables_ranks_and_classes(harness_board: tuple[Path, Path, dict[str, bytes]]) -> None:
    _, _, files = harness_board
    md = files["README.md"].decode()
    official = md.split(f"### 8× {H100} (official)")[1].split("###")[0]
    rows = [ln for ln in official.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| 1", "| 2", "| 3", "| —"]
    assert "2026-08-03_Second" in rows[0] and "new record" in rows[0] and "-" in rows[0].split(" | ")[2]
    assert "2026-08-04_Slower" in rows[1] and "valid, not faster" in rows[1]
    assert "2026-08-05_TwoRuns" in rows[3] and "failed: target" in rows[3]  # 2 runs: unranked, though fastest
    assert r"Pipes \| and \<b\>tags\</b\> stay text" in rows[0]  # Markdown and HTML from a README stay text
    assert f"### 1× {H100}" in md and "2026-08-06_OneGpu" in md.split(f"### 1× {H100}")[1]
    assert "## track_2_medium" in md and "No records yet" in md.split("## track_2_medium")[1]
    html = files["index.html"].decode()
    assert "<b>tags</b>" not in html and "&lt;b&gt;tags&lt;/b&gt;" in html  # README text is escaped


def test_csv(harness_board: tuple[Path, Path, dict[str, bytes]]) -> None:
    _, _, files = harness_board
    df = pd.read_csv(io.BytesIO(files["leaderboard.csv"]))
    assert list(df.columns) == list(CSV_COLUMNS)
    first = df[df.record == "2026-08-03_Second"].iloc[0]
    assert first["rank"] == 1 and first.previous_record == "2026-08-01_First" and first.delta_vs_previous_s < 0
    assert first.p_value < 0.01 and first.runs == 3 and abs(first.mean_val_loss - 3.27) < 0.01
    assert df[df.record == "2026-08-05_TwoRuns"].iloc[0].failed_rules == "target"


def test_links_resolve_and_plots_exist(harness_board: tuple[Path, Path, dict[str, bytes]]) -> None:
    _, out, files = harness_board
    assert assert_links_resolve(out, files) > 20
    plots = [k for k in files if k.endswith(".svg")]
    # record time by date, one val-loss overview per hardware class, one plot per record
    assert "plots/track_1_short-record-time.svg" in plots and len(plots) == 1 + 2 + 5
    assert all(files[p].lstrip().startswith(b"<?xml") and b"<svg" in files[p] for p in plots)


def test_regeneration_is_byte_identical(harness_board: tuple[Path, Path, dict[str, bytes]]) -> None:
    records, out, files = harness_board
    again = build(records, out, known_shards={})
    assert again == files
    assert b"Date" not in files["plots/track_1_short-record-time.svg"]  # no timestamp in the SVG metadata


def test_check_passes_then_catches_stale_and_extra_files(tmp_path: Path) -> None:
    records = make_records(tmp_path)
    out = tmp_path / "leaderboard"
    assert main(["leaderboard", "--records", str(records), "--out", str(out)]) == 0
    ok, lines = check(records, out)
    assert not ok and any("2026-08-05_TwoRuns" in ln and "INVALID: target" in ln for ln in lines)  # an invalid record
    for f in (records / "track_1_short" / "2026-08-05_TwoRuns").iterdir():
        f.unlink()
    (records / "track_1_short" / "2026-08-05_TwoRuns").rmdir()
    write(build(records, out), out)
    ok, lines = check(records, out)
    assert ok, lines
    write_record(records, "2026-08-07_New", step_ms=45.0)  # added without regenerating
    ok, lines = check(records, out)
    assert not ok and any("README.md: differs from a fresh regeneration" in ln for ln in lines)
    assert any(ln.startswith("fix: run `python -m tools leaderboard") for ln in lines)
    write(build(records, out), out)
    (out / "notes.txt").write_text("hand-made")
    ok, lines = check(records, out)
    assert not ok and any("notes.txt: not generated" in ln for ln in lines)


def test_check_requires_a_readme(tmp_path: Path) -> None:
    records = tmp_path / "records"
    write_log(records / "track_1_short" / "2026-08-01_NoReadme", LogSpec())
    out = tmp_path / "leaderboard"
    write(build(records, out), out)
    ok, lines = check(records, out)
    assert not ok and any("no README.md with front matter" in ln for ln in lines)


def test_check_and_verify_fail_on_what_is_not_a_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown track folder or a stray file was skipped in silence: a record in it was never judged."""
    records = tmp_path / "records"
    write_record(records, "2026-08-01_First")
    (records / "README.md").write_text("# Records\n")
    (records / "track_1_short" / "README.md").write_text("# Track 1\n")
    (records / "track_2_medium").mkdir()
    (records / "track_2_medium" / ".gitkeep").write_text("")
    out = tmp_path / "leaderboard"
    write(build(records, out), out)
    ok, lines = check(records, out)
    assert ok, lines
    assert main(["verify", str(records / "track_1_short")]) == 0
    shutil.copytree(records / "track_1_short" / "2026-08-01_First", records / "track_3_long" / "2026-08-02_Lost")
    (records / "track_1_short" / "stray.txt").write_text("not a record\n")
    (records / "track_1_short" / "2026-08-03_Empty").mkdir()
    (records / "notes.md").write_text("notes\n")
    capsys.readouterr()
    ok, lines = check(records, out)
    report = "\n".join(lines)
    assert not ok
    for name, why in (
        ("track_3_long", "not a track folder"),
        ("stray.txt", "a stray file"),
        ("2026-08-03_Empty", "no README.md and no logs"),
        ("notes.md", "a stray file"),
    ):
        assert any("FAIL structure" in ln and name in ln and why in ln for ln in lines), (name, report)
    assert main(["verify", str(records / "track_1_short")]) == 1  # a track folder: its own entries only
    text = capsys.readouterr().out
    assert "1 of 1 valid; 2 entries are not a record folder (see FAIL lines)" in text
    assert "stray.txt" in text and "track_3_long" not in text
    assert main(["verify", "--json", str(records / "track_1_short")]) == 1
    captured = capsys.readouterr()
    assert "stray.txt" in captured.err and all(json.loads(ln)["valid"] for ln in captured.out.splitlines())


def test_records_whose_names_differ_in_punctuation_get_their_own_plots(tmp_path: Path) -> None:
    """The slug folds '.', '-', '_' and case: Foo.Bar and Foo-Bar once shared (overwrote) one plot file."""
    records = tmp_path / "records"
    write_record(records, "2026-08-10_Foo.Bar", step_ms=60.0)
    write_record(records, "2026-08-10_Foo-Bar", step_ms=59.0)
    write_record(records, "2026-08-11_Plain", step_ms=58.0)
    out = tmp_path / "leaderboard"
    files = build(records, out, known_shards={})
    rows = {
        r.verdict.record.name: r.plot
        for t in build_tables(verify_records(discover(records)), out)["track_1_short"]
        for r in t.rows
    }
    assert len(set(rows.values())) == 3 and all(plot in files for plot in rows.values())
    assert rows["2026-08-11_Plain"] == "plots/track_1_short/2026-08-11-plain.svg"  # no clash: the readable slug
    assert len([k for k in files if k.startswith("plots/track_1_short/")]) == 3


@given(st.lists(st.text(alphabet="aAbB.-_/×1", min_size=1, max_size=6), max_size=12))
def test_unique_slugs_never_share_a_stem(names: list[str]) -> None:
    """Against the obvious requirement: distinct names, distinct stems, also ignoring case (macOS, Windows)."""
    stems = unique_slugs(names)
    assert set(stems) == set(names)
    assert len({s.lower() for s in stems.values()}) == len(stems)
    assert unique_slugs(reversed(names)) == stems  # the order of the records does not matter


def test_unique_slugs_resists_a_name_made_to_match_a_hashed_stem() -> None:
    first = unique_slugs(["2026-08-10_Foo.Bar", "2026-08-10_Foo-Bar"])
    crafted = first["2026-08-10_Foo.Bar"].replace("2026-08-10-foo-bar", "2026-08-10_Foo_Bar")
    stems = unique_slugs(["2026-08-10_Foo.Bar", "2026-08-10_Foo-Bar", crafted])
    assert len(set(stems.values())) == 3


def test_leaderboard_out_that_is_a_file_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = tmp_path / "records"
    write_record(records, "2026-08-01_First")
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    for out in (afile, afile / "sub"):
        assert main(["leaderboard", "--records", str(records), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and str(afile) in err and "Traceback" not in err, err
    assert afile.read_text() == "keep me\n"  # nothing lost


def test_committed_leaderboard_is_up_to_date() -> None:
    """What CI runs: `python -m tools check` on the committed records/ and leaderboard/."""
    ok, lines = check(REPO_ROOT / "records", REPO_ROOT / "leaderboard")
    assert ok, "\n".join(lines)


@pytest.fixture(scope="module")
def public_board(public_records: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    out = tmp_path_factory.mktemp("public") / "leaderboard"
    files = build(public_records, out, known_shards={})
    write(files, out)
    return out, files


def test_the_public_trees_leaderboard(public_board: tuple[Path, dict[str, bytes]]) -> None:
    """The public speedrun's real tree, as the README's "build the public leaderboard" section builds it."""
    out, files = public_board
    df = pd.read_csv(io.BytesIO(files["leaderboard.csv"]))
    official = df[(df.hardware == f"8× {H100}") & (df.track == "track_1_short")]
    best = official[official["rank"] == 1].iloc[0]
    assert best.record == "2026-04-4_FuseCEFwdAndBwd" and 84 < best.mean_time_s < 86
    assert assert_links_resolve(out, files) > 800  # every log is linked, and every link resolves
    # what changed and who: the maintainers' table, for folders without front matter; every record has its page
    sub3 = df[df.record == "2025-01-16_Sub3Min"].iloc[0]
    assert sub3.what_changed.startswith("Merged QKV weights, long-short attention") and sub3.runs == 1
    assert sub3.status == "accepted" and sub3.failed_rules == "target" and "@leloykun" in sub3.authors
    assert all((out / page).is_file() for page in df.page)
    page = html.unescape((out / sub3.page).read_text())
    assert "accepted upstream" in page and "From row #20 of the maintainers' table" in page
    assert "the public speedrun's rules as of 2025-01-17" in page
    # the history chart: the staircase in date order, through the accepted records, the y-range set by the valid
    index = files["index.html"].decode()
    assert 'href="history.html"' in index and "history.html" in files
    data = json.loads(index.split('class="history" data-track="track_1_short">')[1].split("</script>")[0])
    h100 = next(c for c in data["classes"] if c["hardware"] == f"8× {H100}")
    steps = h100["steps"]
    assert [d for d, _ in steps] == sorted(d for d, _ in steps) and len(steps) > 60
    assert {p["status"] for p in h100["points"] if p["holds"]} == {"new", "accepted"}
    table_only = [p for p in h100["points"] if p["status"] == "table"]
    assert sorted(p["record"].split()[0] for p in table_only) == ["#3", "#66"]  # rows with no log
    low, high = data["y_range"]
    assert low < 1.5 and 40 < high < 60  # the llm.c baseline's 45 minutes, from the table, is on it
    off = [p for c in data["classes"] for p in c["points"] if p["off_scale"]]
    assert all(p["status"] not in ("new", "accepted") for p in off)
