"""``python -m tools <command>``: the command line over the library.

Each command lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int`` (0: all good, 1: something failed a check, 2: a usage error). This table is the
only place that lists them: to add a command, write its module, import it below and add one
``Command`` line. A module whose work needs a heavy library (torch, matplotlib) imports it inside
``run``, so that ``python -m tools --help`` and ``import tools`` stay fast and never import torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

from tools.common.text import printable
from tools.judge import compare, history, known_shards, parse, verify
from tools.reproduce import runner as reproduce
from tools.site import check, leaderboard
from tools.use import evaluate, export, sample


@dataclass(frozen=True)
class Command:
    name: str
    module: ModuleType
    help: str


COMMANDS: tuple[Command, ...] = (
    Command("parse", parse, "print the facts of record logs"),
    Command("verify", verify, "apply every rule to records or logs (exit 1 if any is invalid)"),
    Command("leaderboard", leaderboard, "regenerate leaderboard/ from records/"),
    Command("compare", compare, "two records side by side, with Welch's t-test on time and loss"),
    Command("history", history, "the verdicts beside the public speedrun's record tables, row by row"),
    Command("check", check, "what CI runs: verify every record and check leaderboard/ is up to date"),
    Command("known-shards", known_shards, "fill tools/judge/known_shards.json from the Hub's LFS metadata"),
    Command("sample", sample, "generate text from a checkpoint or export (KV cache; temperature, top-k, seed)"),
    Command("evaluate", evaluate, "val loss of a checkpoint on any shard folder, and HellaSwag accuracy"),
    Command("export", export, "a checkpoint's weights as safetensors + config.json, without optimizer state"),
    Command("reproduce", reproduce, "run a record's logs again from their own code, seed and data; judge them"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools",
        description="Speedrun tools: parse record logs, verify records, regenerate the leaderboard; sample from, "
        "evaluate and export trained models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS:
        module = cmd.module
        p = sub.add_parser(cmd.name, help=cmd.help, description=(module.__doc__ or cmd.help).strip().split("\n\n")[0])
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else 2
    try:
        code: int = args._run(args)
        return code
    except ValueError as e:  # bad input from the user: one clear paragraph, no traceback
        print(f"error: {printable(e)}", file=sys.stderr)  # it names paths from input: one printable line
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
