"""A small records tree that exercises every part of the leaderboard's site, for its tests.

Track 1, 8× H100: Alpha (the first record), Bravo (new code, with same-node baseline runs of Alpha: a new
record by the same-node rule), Charlie (Bravo's code, slower: valid, not faster), Delta (one run: fails
`target`). Track 1, 1× H100: Echo. Dated out of time order on purpose: Bravo is faster than Alpha, Delta
faster than both, so a chart that followed the rows (sorted by time) would draw its steps backwards.
"""

from __future__ import annotations

from pathlib import Path

from helpers.logfactory import DEFAULT_SOURCE, H100, host_id, write_baseline_runs, write_record

SOURCE_A = DEFAULT_SOURCE
SOURCE_B = DEFAULT_SOURCE.replace("Linear(4, 4)", "Linear(4, 4, bias=False)") + "# <script>alert(1)</script> is text\n"
NODE = host_id("site-node")
OFFICIAL = f"8× {H100}"
ONE_GPU = f"1× {H100}"


def write_site_records(root: Path) -> Path:
    """``root/records`` with the five records above; returns the records folder."""
    records = root / "records"
    records.mkdir(parents=True)
    (records / "README.md").write_text("# Records\n")
    write_record(
        records,
        "2026-08-01_Alpha",
        step_ms=60.0,
        source=SOURCE_A,
        meta={"authors": ["Ada Lovelace"], "description": "The recipe as it stands."},
    )
    bravo = write_record(
        records,
        "2026-08-03_Bravo",
        step_ms=55.0,
        source=SOURCE_B,
        host=NODE,
        meta={
            "baseline": "2026-08-01_Alpha",
            "authors": ["Grace Hopper", "Alan Turing"],
            "description": "Drops the bias of the <b>linear</b> layer.",
        },
    )
    write_baseline_runs(bravo, source=SOURCE_A, host=NODE, step_ms=60.0)
    write_record(records, "2026-08-04_Charlie", step_ms=57.0, source=SOURCE_B, meta={"description": "Slower."})
    write_record(records, "2026-08-05_Delta", runs=1, step_ms=45.0, source=SOURCE_B, meta={"description": "One run."})
    write_record(
        records, "2026-08-06_Echo", num_gpus=1, step_ms=300.0, meta={"hardware": f"1x {H100}", "description": "1 GPU."}
    )
    return records
