"""``python -m tools export``: a checkpoint's weights as safetensors plus a JSON config, without optimizer state.

    python -m tools export --checkpoint checkpoints/<run_id>/step_001393 --out exports/<name>

writes ``<out>/model.safetensors`` (the GPT's full state dict, in the dtypes it was trained in) and then
``<out>/config.json`` (the checkpoint's config with ``"format": "speedrun-export-v1"``; written last, so that
its presence marks a complete export). ``sample`` and ``evaluate`` read the folder like a checkpoint, and any
safetensors reader can load the weights (keys as in ``train_gpt.GPT(args).state_dict()``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint folder (step_NNNNNN/) or an export")
    p.add_argument("--out", type=Path, required=True, help="the export folder to write")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out folder")


def run(args: argparse.Namespace) -> int:
    from tools.use.checkpoints import WEIGHTS_NAME, export

    out = export(args.checkpoint, args.out, force=args.force)
    size = (out / WEIGHTS_NAME).stat().st_size
    print(
        f"exported {args.checkpoint} -> {out}/ ({WEIGHTS_NAME}, {size / 2**20:.1f} MiB; config.json)", file=sys.stderr
    )
    return 0
