"""The leaderboard's HTML site without a browser: record pages, the statistics card, the code diff, the
history chart's data, words for failures, and the generator's hygiene (determinism, stale pages, imports).

tests/test_tools_browser.py loads the same site in chromium."""

from __future__ import annotations

import ast
import datetime as dt
import html
import io
import json
import re
import sys
import urllib.parse
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from helpers.logfactory import DEFAULT_SOURCE, write_record
from helpers.site_records import OFFICIAL, ONE_GPU, write_site_records
from tools.cli import main
from tools.common import progress
from tools.judge.records import discover
from tools.judge.verify import Verdict, comparison, verify_records
from tools.site import board, card, plots
from tools.site.check import check
from tools.site.leaderboard import build, build_tables, write

TRACK = "track_1_short"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("site")
    records = write_site_records(root)
    out = root / "leaderboard"
    files = build(records, out, known_shards={})
    write(files, out)
    return records, out, files


def _page(files: dict[str, bytes], name: str) -> str:
    return files[f"pages/{TRACK}/{board.unique_slugs([name])[name]}.html"].decode()


def _text(page: str, element_id: str) -> str:
    """The text of the element with ``element_id`` (tags dropped, entities decoded, spaces collapsed)."""
    m = re.search(rf'<(\w+)[^>]* id="{element_id}"[^>]*>(.*?)</\1>', page, re.S)
    assert m, f"no element #{element_id}"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", m.group(2))).split())


def _verdicts(records: Path) -> dict[str, Verdict]:
    return {v.record.name: v for v in verify_records(discover(records), known_shards={})}


# --- pages, links ------------------------------------------------------------------------------------


def test_every_row_links_its_page_and_every_link_resolves(site: tuple[Path, Path, dict[str, bytes]]) -> None:
    _, out, files = site
    index = files["index.html"].decode()
    pages = sorted(k for k in files if k.startswith("pages/"))
    assert len(pages) == 5
    for page in pages:
        assert f'href="{page}"' in index, page
    checked = 0
    for name in ["index.html", *pages]:
        folder = (out / name).parent
        for link in re.findall(r'href="([^"]+)"', files[name].decode()):
            if link.startswith(("data:", "#")):
                continue
            target = urllib.parse.unquote(html.unescape(link).split("#")[0])
            assert (folder / target).exists(), f"{name}: dead link {link}"
            checked += 1
    assert checked > 40


def test_regeneration_is_byte_identical_and_check_sees_a_stale_page(
    site: tuple[Path, Path, dict[str, bytes]], tmp_path: Path
) -> None:
    records, out, files = site
    assert build(records, out, known_shards={}) == files
    ok, lines = check(records, out)  # Delta fails `target`, so check fails, but the leaderboard is current
    assert not any("FAIL leaderboard" in ln for ln in lines), lines
    page = out / "pages" / TRACK / "2026-08-01-alpha.html"
    original = page.read_bytes()
    try:
        page.write_bytes(original.replace(b"Ada Lovelace", b"Someone Else"))
        ok, lines = check(records, out)
        assert any("2026-08-01-alpha.html: differs from a fresh regeneration" in ln for ln in lines)
    finally:
        page.write_bytes(original)


def test_stale_pages_are_removed_only_when_the_generator_made_them(tmp_path: Path) -> None:
    records = tmp_path / "records"
    write_record(records, "2026-08-01_First")
    gone = write_record(records, "2026-08-02_Gone")
    out = tmp_path / "leaderboard"
    write(build(records, out, known_shards={}), out)
    stale = out / "pages" / TRACK / "2026-08-02-gone.html"
    assert stale.is_file()
    hand_made = out / "pages" / TRACK / "notes.html"
    hand_made.write_text("<p>mine</p>")
    for f in sorted(gone.iterdir()):
        f.unlink()
    gone.rmdir()
    write(build(records, out, known_shards={}), out)
    assert not stale.exists() and hand_made.read_text() == "<p>mine</p>"


# --- the statistics card ----------------------------------------------------------------------------


def test_statistics_card_shows_the_rows_comparison(site: tuple[Path, Path, dict[str, bytes]]) -> None:
    records, _, files = site
    verdicts = _verdicts(records)
    bravo, charlie = verdicts["2026-08-03_Bravo"], verdicts["2026-08-04_Charlie"]
    page = _page(files, "2026-08-03_Bravo")
    sn = bravo.same_node
    assert sn is not None and sn.time.p_lower is not None and sn.time.t is not None
    assert _text(page, "stat-n") == "3"
    assert f"one-sided p (faster) = {sn.time.p_lower:.3g}" in _text(page, "stat-welch")
    assert f"t = {sn.time.t:+.3f}" in _text(page, "stat-welch")
    assert f"{sn.speedup_pct:.2f} % faster" in _text(page, "stat-welch")
    assert "3 same-node baseline run(s) of 2026-08-01_Alpha" in _text(page, "stat-baseline")
    assert f"p = {bravo.p_value:.3g} (below 0.01)" in _text(page, "stat-target")
    mean = sn.val_loss.candidate.mean
    assert f"mean {mean:.4f}" in _text(page, "stat-loss")
    slowest = max(r.log.train_time_ms for r in bravo.runs) / 1000
    fastest = min(r.log.train_time_ms for r in bravo.baseline_runs) / 1000
    extremes = _text(page, "stat-extremes")
    assert extremes.startswith(f"{slowest:.3f} s") and f"vs {fastest:.3f} s" in extremes
    assert "every run is faster than every baseline run" in extremes
    # Without same-node runs, the card compares with the baseline record: the previous record here.
    c = comparison(bravo, charlie)
    page = _page(files, "2026-08-04_Charlie")
    assert "the 3 run(s) of 2026-08-03_Bravo (the record that held its class before it)" in _text(page, "stat-baseline")
    assert c.time.p_two_sided is not None and f"two-sided p = {c.time.p_two_sided:.3g}" in _text(page, "stat-welch")
    assert "no baseline: the first record of its class" in _text(_page(files, "2026-08-01_Alpha"), "stat-baseline")


def test_a_failed_record_says_why_in_words_on_its_page_and_in_the_table(
    site: tuple[Path, Path, dict[str, bytes]],
) -> None:
    _, _, files = site
    why = _text(_page(files, "2026-08-05_Delta"), "why")
    assert "target : one run: the p-value needs at least 3 runs." in why  # (the rule's name is in bold)
    assert "1 run(s): the p-value needs at least 3" in why  # the verifier's own evidence beneath it
    index = files["index.html"].decode()
    row = re.search(r'<tr class="failed" data-record="2026-08-05_Delta".*?</tr>', index, re.S)
    assert row and 'title="target: one run: the p-value needs at least 3 runs"' in row.group(0)


def test_target_failures_in_words() -> None:
    """The sentence names the cause the numbers show: few runs, a mean above the target, a p-value too high."""

    class V:  # the attributes _target_sentence reads
        def __init__(self, finals: list[float], p: float | None) -> None:
            from tools.judge.records import Record
            from tools.judge.tracks import TRACKS

            self.finals, self.p_value = finals, p
            self.record = Record(Path("r"), "r", TRACKS[TRACK], [], "harness")

    assert board._target_sentence(V([3.27, 3.271], None)) == "2 runs: the p-value needs at least 3 runs"
    assert (
        board._target_sentence(V([3.29, 3.3, 3.31], 0.9)) == "the mean final val loss 3.3000 is above the target 3.28"
    )
    sentence = board._target_sentence(V([3.27, 3.279, 3.275], 0.04))
    assert sentence and sentence.startswith("p = 0.04: 3 runs do not show the mean below 3.28")


# --- the code diff -----------------------------------------------------------------------------------


def test_code_diff_against_the_baseline_record_is_escaped(site: tuple[Path, Path, dict[str, bytes]]) -> None:
    _, _, files = site
    page = _page(files, "2026-08-03_Bravo")
    assert "diff against 2026-08-01_Alpha" in _text(page, "diff")
    assert '<span class="del">-model = torch.compile(torch.nn.Linear(4, 4), dynamic=False)</span>' in page
    assert '<span class="add">+model = torch.compile(torch.nn.Linear(4, 4, bias=False), dynamic=False)</span>' in page
    assert "<script>alert(1)</script>" not in page and "+# &lt;script&gt;alert(1)&lt;/script&gt; is text" in page
    assert "+2 −1 lines" in _text(page, "diff")
    assert "The same code as 2026-08-03_Bravo, byte for byte" in _text(_page(files, "2026-08-04_Charlie"), "diff")


def test_code_diff_is_capped_and_shows_hidden_characters(tmp_path: Path) -> None:
    records = tmp_path / "records"
    write_record(records, "2026-08-01_Old", step_ms=60.0)
    lines = [f"x{i} = {i}  # \u202e reversed" for i in range(card.MAX_DIFF_LINES + 500)] + ["y = '" + "z" * 5000 + "'"]
    write_record(records, "2026-08-02_Big", step_ms=50.0, source=DEFAULT_SOURCE + "\n".join(lines) + "\n")
    verdicts = verify_records(discover(records), known_shards={})
    row = next(
        r
        for t in build_tables(verdicts, tmp_path / "lb")[TRACK]
        for r in t.rows
        if r.verdict.record.name == "2026-08-02_Big"
    )
    diff = card.code_diff(row.baseline, row.verdict)
    assert diff.added == len(lines) and len(diff.lines) == card.MAX_DIFF_LINES and diff.hidden > 500
    assert all(len(d.text) <= card.MAX_LINE_CHARS for d in diff.lines)
    page = build(records, tmp_path / "lb", known_shards={})[f"pages/{TRACK}/2026-08-02-big.html"].decode()
    assert f"{diff.hidden} more are not" in page
    assert "\u202e" not in page and "\\u202e reversed" in page  # a bidirectional override shows as an escape


def test_code_diff_shows_invisible_characters_and_splits_lines_as_python_does(tmp_path: Path) -> None:
    """Issue 20: a name spelled with a Hangul filler or a variation selector looked like another name (or like
    nothing) in the diff, and a comment holding U+2028 showed as a comment and a line of code Python never runs."""
    records = tmp_path / "records"
    write_record(records, "2026-08-01_Old", step_ms=60.0)
    hidden = [
        "\u3164 = torch.compile",  # a name that is a Hangul filler: an assignment to nothing, as it showed
        "lr\ufe00 = 0.9  # lr and lr+VS1 are two names",
        "x = 1  # note\u2028import os",  # one line for Python: the U+2028 is inside the comment
        "b\u2800 = 2",
    ]
    write_record(records, "2026-08-02_New", step_ms=50.0, source=DEFAULT_SOURCE + "\n".join(hidden) + "\n")
    verdicts = verify_records(discover(records), known_shards={})
    row = next(
        r
        for t in build_tables(verdicts, tmp_path / "lb")[TRACK]
        for r in t.rows
        if r.verdict.record.name == "2026-08-02_New"
    )
    diff = card.code_diff(row.baseline, row.verdict)
    added = [d.text for d in diff.lines if d.kind == "add"]
    assert added == [
        "+\\u3164 = torch.compile",
        "+lr\\ufe00 = 0.9  # lr and lr+VS1 are two names",
        "+x = 1  # note\\u2028import os",
        "+b\\u2800 = 2",
    ], added
    assert diff.added == 4 and diff.hidden_chars == (
        ("\\u2028", "LINE SEPARATOR", 1),
        ("\\u2800", "BRAILLE PATTERN BLANK", 1),
        ("\\u3164", "HANGUL FILLER", 1),
        ("\\ufe00", "VARIATION SELECTOR-1", 1),
    )
    page = build(records, tmp_path / "lb", known_shards={})[f"pages/{TRACK}/2026-08-02-new.html"].decode()
    assert not {"\u3164", "\ufe00", "\u2028", "\u2800"} & set(page)
    assert '<span class="add">+lr\\ufe00 = 0.9' in page
    note = _text(page, "diff-hidden")
    assert "\\u3164 HANGUL FILLER (1×)" in note and "\\ufe00 VARIATION SELECTOR-1 (1×)" in note, note


def test_no_diff_without_source_in_the_logs(tmp_path: Path) -> None:
    records = tmp_path / "records"
    write_record(records, "2026-08-01_Old", step_ms=60.0)
    omitted = "# training source omitted from this copy: sha256=" + "ab" * 32 + " lines=600\n"
    write_record(records, "2026-08-02_New", step_ms=50.0, source=omitted)
    page = build(records, tmp_path / "lb", known_shards={})[f"pages/{TRACK}/2026-08-02-new.html"].decode()
    assert "The logs of 2026-08-02_New carry no source code to compare" in _text(page, "diff")


# --- the main page -----------------------------------------------------------------------------------


def test_what_changed_authors_and_software_columns(site: tuple[Path, Path, dict[str, bytes]]) -> None:
    _, _, files = site
    index = files["index.html"].decode()
    row = re.search(r'<tr class="new" data-record="2026-08-03_Bravo".*?</tr>', index, re.S)
    assert row
    cells = [
        " ".join(html.unescape(re.sub(r"<[^>]+>", "", c)).split())
        for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(0), re.S)
    ]
    assert cells[5] == "Drops the bias of the <b>linear</b> layer."  # escaped in the page, text to the reader
    assert cells[6] == "Grace Hopper, Alan Turing"
    assert cells[12] == "2.11.0+cu130 / 13.0"
    assert (
        index.index("<h1>Speedrun leaderboard</h1>")
        < index.index('class="lead"')
        < index.index("CI (python -m tools check)")
    )
    for slug in (f"{TRACK}-8x-nvidia-h100-80gb-hbm3", f"{TRACK}-1x-nvidia-h100-80gb-hbm3", TRACK, "track_2_medium"):
        assert f'href="#{slug}"' in index and f'id="{slug}"' in index  # jump links and their targets


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("2025-01-16_Sub3Min", "Sub 3 min"),
        ("2024-10-20_ScaleUp1B", "Scale up 1B"),
        ("2026-04-22_MuddFormer/this_pr_v3", "Mudd former / this pr v3"),
        ("2026-01-10_FusedLinearReLUSquare", "Fused linear ReLU square"),
        ("2025-09-03_FA3", "FA3"),
        ("2026-01-26-UntieValueEmbeddings", "Untie value embeddings"),
        ("___", "___"),
    ],
)
def test_readable_name(name: str, words: str) -> None:
    assert board.readable_name(name) == words


def test_history_steps_from_each_records_own_date() -> None:
    """Rows reach the chart sorted by time; the staircase is drawn in date order, each level from its own
    record's date to the next one's, the last to the chart's last date; the y-range is the valid records'."""
    P = plots.HistoryPoint
    by_time = [  # how a table orders them: fastest first
        P("2026-05-09_C", "2026-05-09", 2.0, OFFICIAL, "new"),
        P("2026-03-01_B", "2026-03-01", 2.5, OFFICIAL, "new"),
        P("2026-04-01_Slow", "2026-04-01", 2.6, OFFICIAL, "valid"),
        P("2024-12-01_A", "2024-12-01", 3.0, OFFICIAL, "new"),
        P("2024-10-01_Outlier", "2024-10-01", 532.0, OFFICIAL, "failed"),
        P("2026-06-01_Gpu", "2026-06-01", 10.0, ONE_GPU, "new"),
    ]
    h = plots.history(by_time)
    official = next(c for c in h.classes if c.hardware == OFFICIAL)
    assert official.steps == [("2024-12-01", 3.0), ("2026-03-01", 2.5), ("2026-05-09", 2.0), ("2026-06-01", 2.0)]
    assert [p.date for p in official.points] == sorted(p.date for p in official.points)
    assert h.y_range is not None and h.y_range[0] < 2.0 and 10.0 < h.y_range[1] < 20.0  # not stretched to 532
    assert [p.record for p in official.off_scale] == ["2024-10-01_Outlier"]
    assert json.loads(json.dumps(h.to_json()))["classes"][0]["points"][0]["off_scale"] is True
    svg = plots.record_times(TRACK, by_time)
    assert b"1 off the scale, at its edge" in svg and b"$\\mathdefault" not in svg  # ticks as plain numbers


def test_the_pages_chart_data_is_the_records_dates_and_times(site: tuple[Path, Path, dict[str, bytes]]) -> None:
    records, _, files = site
    index = files["index.html"].decode()
    data = json.loads(
        re.search(
            r'<script type="application/json" class="history" data-track="track_1_short">(.*?)</script>', index, re.S
        ).group(1)
    )
    official = next(c for c in data["classes"] if c["hardware"] == OFFICIAL)
    v = _verdicts(records)
    minutes = {n: v[n].mean_train_time_ms / 60_000 for n in v}
    assert official["steps"] == [
        ["2026-08-01", pytest.approx(minutes["2026-08-01_Alpha"], abs=1e-6)],
        ["2026-08-03", pytest.approx(minutes["2026-08-03_Bravo"], abs=1e-6)],
        ["2026-08-06", pytest.approx(minutes["2026-08-03_Bravo"], abs=1e-6)],  # Bravo holds the class to the last date
    ]
    assert [(p["record"], p["status"]) for p in official["points"]] == [
        ("2026-08-01_Alpha", "new"),
        ("2026-08-03_Bravo", "new"),
        ("2026-08-04_Charlie", "valid"),
        ("2026-08-05_Delta", "failed"),
    ]
    assert all(dt.date.fromisoformat(p["date"]).isoformat() == p["record"][:10] for p in official["points"])


def test_plot_legends_stay_readable_with_many_runs_and_records(tmp_path: Path) -> None:
    """The per-run legend vanished above 12 runs; the class overview's two-line title was clipped."""
    records = tmp_path / "records"
    write_record(records, "2026-08-01_Many", runs=14, step_ms=60.0)
    for day in range(2, 16):
        write_record(records, f"2026-08-{day:02d}_R{day}", step_ms=60.0 - day)
    files = build(records, tmp_path / "lb", known_shards={})
    svg = files[f"plots/{TRACK}/2026-08-01-many.svg"]
    assert b"2026-08-01_Many: 14 run(s)" in svg  # one legend line for the runs, whatever their number
    overview = files[f"plots/{TRACK}-8x-nvidia-h100-80gb-hbm3-val-loss.svg"]
    assert b"record date (oldest to newest)" in overview and b"2026-08-15" in overview  # a colour bar of dates
    assert b"\\n" not in overview


# --- the generator's hygiene ------------------------------------------------------------------------


def test_html_and_leaderboard_do_not_import_each_other() -> None:
    tree = ast.parse((REPO_ROOT / "tools" / "site" / "html.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    assert "tools.site.leaderboard" not in imported and not any(
        isinstance(n, ast.ImportFrom) and n.module == "tools.site" and any(a.name == "leaderboard" for a in n.names)
        for n in ast.walk(tree)
    )


def test_no_tool_points_outside_the_repository() -> None:
    """The repository explains itself: its docs, not a folder beside a checkout, are what tools/ cites."""
    offenders = [
        f"{p.relative_to(REPO_ROOT)}:{i}"
        for p in sorted((REPO_ROOT / "tools").rglob("*"))
        if p.is_file() and p.suffix in (".py", ".j2", ".js", ".css")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if "../shared" in line
    ]
    assert offenders == []


def test_check_verifies_each_record_once(
    site: tuple[Path, Path, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tools.judge.verify

    records, out, _ = site
    judged: list[str] = []
    real = tools.judge.verify.judge
    monkeypatch.setattr(tools.judge.verify, "judge", lambda rec, *a: judged.append(rec.name) or real(rec, *a))
    check(records, out)
    assert sorted(judged) == sorted(r.name for r in discover(records))  # each once: not again for the leaderboard


def test_progress_shows_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert list(progress.progress(range(3), "counting", "things")) == [0, 1, 2]
    assert capsys.readouterr().err == ""  # not a terminal: nothing, however long it takes
    fake = Terminal()
    monkeypatch.setattr(sys, "stderr", fake)
    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    assert list(progress.progress(range(3), "counting", "things")) == [0, 1, 2]
    assert "counting:" in fake.getvalue() and "/3 [" in fake.getvalue()  # a bar, cleared when done (leave=False)


def test_leaderboard_and_compare_keep_stdout_and_stderr_clean(
    site: tuple[Path, Path, dict[str, bytes]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records, _, _ = site
    assert main(["leaderboard", "--records", str(records), "--out", str(tmp_path / "lb")]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.startswith(f"wrote {tmp_path / 'lb'}/README.md")
    assert "5 record pages" in captured.out
    # compare: the record paths as relative to the current folder, however they were given
    monkeypatch.chdir(records.parent)
    a, b = records / TRACK / "2026-08-01_Alpha", (records / TRACK / "2026-08-03_Bravo").resolve()
    assert main(["compare", str(a), str(b)]) == 0
    first = capsys.readouterr().out.splitlines()[0].split()
    assert first[1:] == [f"records/{TRACK}/2026-08-01_Alpha", f"records/{TRACK}/2026-08-03_Bravo"]


def test_ci_installs_the_browser_and_keeps_the_screenshots() -> None:
    """The README's test command runs the browser tests on a fresh machine: .ci/run installs what they need and
    names the folder their screenshots go to; ci.yml uploads that folder, with a pinned action."""
    import yaml

    run = (REPO_ROOT / ".ci" / "run").read_text()
    assert "command -v chromium" in run and "command -v chromedriver" in run
    assert "apt-get install" in run and "chromium chromium-driver" in run
    assert 'export SPEEDRUN_ARTIFACTS="${SPEEDRUN_ARTIFACTS:-$PWD/.ci/artifacts}"' in run
    readme = (REPO_ROOT / "README.md").read_text()
    assert "`chromium`" in readme and "`chromium-driver`" in readme
    assert "--records modded-nanogpt/records" in readme and "../shared" not in readme.split("### The leaderboard")[1]
    assert (REPO_ROOT / "docs" / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    steps = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "ci.yml").read_text())["jobs"]["test"]["steps"]
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    assert re.fullmatch(r"actions/upload-artifact@[0-9a-f]{40}", upload["uses"])
    assert upload["if"] == "always()" and upload["with"]["path"].rstrip("/") == ".ci/artifacts"


def test_plots_are_the_same_bytes_whoever_draws_them(
    site: tuple[Path, Path, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Figures drawn in worker processes (many records) are byte for byte the ones drawn in this one."""
    records, out, files = site
    verdicts = verify_records(discover(records), known_shards={})
    rows = [r for t in build_tables(verdicts, out)[TRACK] for r in t.rows]
    from tools.site.leaderboard import record_figure

    jobs: dict[str, plots.Figure] = {r.plot: (plots.val_curves, (record_figure(r),)) for r in rows}
    monkeypatch.setattr(plots, "_PARALLEL_MIN_FIGURES", 2)
    assert plots.draw_all(jobs, workers=2) == plots.draw_all(jobs, workers=1) == {k: files[k] for k in jobs}


def test_names_descriptions_and_log_names_stay_text_on_every_page(tmp_path: Path) -> None:
    records = tmp_path / "records"
    evil = '</script><script>alert(1)</script><img src=x onerror="alert(2)"> \u202eevil'
    name = "2026-08-01_<img src=x onerror=alert(3)>"
    folder = write_record(records, name, meta={"description": evil, "authors": [evil]})
    sorted(folder.glob("*.txt"))[0].rename(folder / '"><img src=y onerror=alert(4)>.txt')
    files = build(records, tmp_path / "lb", known_shards={})
    pages = {k: v.decode() for k, v in files.items() if k.endswith(".html")}
    assert len(pages) == 2
    for page, text in pages.items():
        assert "<script>alert" not in text and "<img src=" not in text and 'onerror="alert' not in text, page
        assert "\u202e" not in text and "\\u202eevil" in text, page  # shown as an escape, never applied
        for data in re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', text, re.S):
            assert "<" not in data and json.loads(data)  # JSON in the page: "<" written as \u003c
    index = pages["index.html"]
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in index  # the description, as text
    assert html.unescape(re.search(r'data-record="([^"]*)"', index).group(1)) == name  # attributes escaped too


def test_every_rule_has_a_sentence() -> None:
    from tools.judge.rules import RULE_IDS

    assert set(RULE_IDS) - {"faster"} == set(board.RULE_WORDS)  # `faster` decides, it never fails
    assert all(w and w[0].islower() and not w.endswith(".") for w in board.RULE_WORDS.values())
