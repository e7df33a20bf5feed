"""Speedrun tools: parse record logs, verify records against the rules, regenerate the leaderboard.

A typed library under a small CLI (``python -m tools --help``). Importing this package does no work
and imports nothing heavy: pandas, scipy and matplotlib are imported inside the functions that need
them. The model commands (``sample``, ``evaluate``, ``export``) import torch and train_gpt.py inside
their ``run``, through tools/use/checkpoints.py, tools/use/generate.py and tools/use/hellaswag.py, which the
record tools never import. A log is untrusted input: parse, verify, leaderboard and check read it as
text and never execute or import it. Only ``reproduce`` runs a log's code, on purpose, in a sandbox
(tools/reproduce/sandbox.py) unless told ``--sandbox none``.
"""

from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
