"""The rules of the speedrun as they changed over time, and which of them judge a record.

The public speedrun's rules (its README) changed over time, and a record is judged by the rules in
force when it landed on the main branch (its ledger time, tools/judge/ledger.py): a 2024 record of one run
was a record then, though a p-value is asked of every record since 2024-12-09. Each change below is
dated by the commit of the public README that made it (committer time, UTC) and quotes its words;
``git log -S'<quote>' -- README.md`` on the public history finds it. A record that is pending (a pull
request) or has no ledger time is judged by the current rules.

What the rules ask (``Rulebook``) is one thing; which checks of this harness bind a record is another:

- a record in this harness's layout (README front matter, logs with config/data lines) is judged by the
  current rules and by every check of records/README.md, which its format makes possible;
- a record in the public layout is judged by the rules of its date: what they ask is a failure, what
  this harness's stricter reading adds (code it cannot read, no host line, a module outside the image) is
  shown as a note, never a verdict (``Rulebook.binding``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

PUBLIC_README = "the public speedrun's README.md (github.com/KellerJordan/modded-nanogpt)"


@dataclass(frozen=True)
class RuleChange:
    """One change of the public rules: what it asks, since when, and where it is written."""

    key: str
    since: dt.datetime  # UTC: the committer time of the README commit that made it
    summary: str
    quote: str  # words of the README that state it (find the commit with `git log -S'<quote>' -- README.md`)
    tracks: frozenset[str] | None = None  # None: every track


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


P_VALUE: Final = "p-value"
NO_COMPILE_FLAGS: Final = "no-compile-flags"
TIMED_WARMUP: Final = "every-step-timed"
MEDIUM_COORDINATE_DESCENT: Final = "medium-coordinate-descent"
SYSTEMS_WAIVER: Final = "systems-waiver"
SAME_HARDWARE: Final = "same-hardware-baseline"

CHANGES: Final[tuple[RuleChange, ...]] = (
    RuleChange(
        P_VALUE,
        _utc("2024-12-09T18:20:30+00:00"),
        "mean val loss at or below the target, with enough runs for a one-sided p < 0.01 (before it, one run "
        "at or below the target made a record)",
        "statistical significance level of p<0.01",
    ),
    RuleChange(
        NO_COMPILE_FLAGS,
        _utc("2025-02-02T00:14:55+00:00"),
        "no extra torch._inductor.config or torch.compile flags (introduced after the 21st record)",
        "Not use any extra `torch._inductor.config`",
    ),
    RuleChange(
        TIMED_WARMUP,
        _utc("2025-02-02T00:14:55+00:00"),
        "every training step is timed; kernels warm up in an explicit untimed section on dummy data (before it, "
        "the first 10 steps were untimed); made with the previous change, after the 21st record",
        "Timing change after record 21",
    ),
    RuleChange(
        MEDIUM_COORDINATE_DESCENT,
        _utc("2025-01-18T00:00:00+00:00"),
        "torch._inductor.config.coordinate_descent_tuning is allowed on the medium track (the README's note of "
        "2025-04-25 says so of the track's records since its 6th, of 2025-03-25; the track began on 2025-01-18)",
        "`torch._inductor.config.coordinate_descent_tuning` is allowed for GPT-2 Medium track",
        frozenset({"track_2_medium"}),
    ),
    RuleChange(
        SYSTEMS_WAIVER,
        _utc("2025-05-25T15:40:40-07:00"),
        "the p-value requirement is waived for submissions that improve speed by systems performance only, "
        "without touching the ML",
        "this requirement is waived",
    ),
    RuleChange(
        SAME_HARDWARE,
        _utc("2025-12-02T01:43:11-08:00"),
        "a new record runs faster than the prior record when baselined on the same hardware",
        "when baselined on the same hardware",
    ),
)
_BY_KEY: Final = {c.key: c for c in CHANGES}


@dataclass(frozen=True)
class Rulebook:
    """The rules that judge one record."""

    as_of: dt.datetime | None  # the record's ledger time; None: the current rules
    track: str
    harness: bool  # the record is in this harness's layout: every check of records/README.md binds it
    in_force: frozenset[str]  # keys of CHANGES in force

    def has(self, key: str) -> bool:
        return key in self.in_force

    @property
    def p_value_required(self) -> bool:
        return self.harness or self.has(P_VALUE)

    @property
    def systems_waiver(self) -> bool:
        return self.harness or self.has(SYSTEMS_WAIVER)

    @property
    def compile_flags_banned(self) -> bool:
        return self.harness or self.has(NO_COMPILE_FLAGS)

    @property
    def coordinate_descent_allowed(self) -> bool:
        return self.has(MEDIUM_COORDINATE_DESCENT)

    @property
    def same_hardware_baseline(self) -> bool:
        return self.harness or self.has(SAME_HARDWARE)

    @property
    def max_untimed_steps(self) -> int:
        """Training steps a run may leave out of its train_time: 10 before the timing change, 0 since."""
        return 0 if self.harness or self.has(TIMED_WARMUP) else 10

    @property
    def timing(self) -> str:
        """Which timing rules a record's time was measured under: times are compared only within one."""
        return TIMED_WARMUP if self.max_untimed_steps == 0 else "first-10-steps-untimed"

    @property
    def name(self) -> str:
        """The rulebook in words, for the record page and the verdict."""
        if self.harness:
            return "this harness's rules (records/README.md), with the public rules of today"
        if self.as_of is None:
            return "the public speedrun's rules of today (the record has not landed)"
        return f"the public speedrun's rules as of {self.as_of.date().isoformat()}, when the record landed"

    def changes(self) -> list[RuleChange]:
        """The changes in force, oldest first, that apply to this track."""
        return [c for c in CHANGES if c.key in self.in_force]

    def binding(self, rule: str, kind: str = "") -> bool:
        """Whether a failure of this harness's check ``rule`` (of ``kind``, where the check tells kinds apart)
        is a verdict for this record, rather than a note. The public layout is bound by what its rules ask:
        the code's flags (once banned), whole and honest runs, the hardware, the target; not by this harness's
        own format (config/data lines, front matter, host lines) nor by code the reader cannot read."""
        if self.harness:
            return True
        if rule == "compile-flags":
            return kind == "flag" and self.compile_flags_banned  # sourcecheck.FLAG
        return rule not in _HARNESS_ONLY


# Checks that exist because this harness's format makes them possible: they never bind a public record.
_HARNESS_ONLY: Final = frozenset({"config", "data", "same-node"})


def rulebook_for(track: str, as_of: dt.datetime | None, harness: bool) -> Rulebook:
    """The rules in force for a record of ``track`` that landed at ``as_of`` (None: pending, today's)."""
    in_force = frozenset(
        c.key for c in CHANGES if (as_of is None or c.since <= as_of) and (c.tracks is None or track in c.tracks)
    )
    return Rulebook(as_of, track, harness, in_force)


def change(key: str) -> RuleChange:
    return _BY_KEY[key]
