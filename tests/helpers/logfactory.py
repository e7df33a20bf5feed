"""Build record logs and record folders in this repository's format (docs/log-format.md), for tests.

This is how the tools' tests get logs of our own form without a training run: source section, ``=``*100,
environment block (Python/PyTorch lines, nvidia-smi table, ``host:``, ``config:`` and ``data:`` JSON),
``=``*100, metric lines. Every field can be changed so a test can break exactly one rule.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEP = "=" * 100
H100 = "NVIDIA H100 80GB HBM3"
DEFAULT_SOURCE = '''"""train_gpt.py stand-in for tests."""
import torch

model = torch.compile(torch.nn.Linear(4, 4), dynamic=False)
print("training")
'''


def shard(name: str, split: str, tokens: int = 100_000_000) -> dict[str, Any]:
    return {"name": name, "split": split, "tokens": tokens, "sha256": hashlib.sha256(name.encode()).hexdigest()}


DEFAULT_SHARDS = [shard("fineweb_val_000000.bin", "val")] + [
    shard(f"fineweb_train_{i:06d}.bin", "train") for i in range(1, 9)
]
PRESET_OF = {"track_1_short": "short", "track_2_medium": "medium", "smoke": "smoke", "scale": "1.5b"}
TARGET_OF = {"track_1_short": 3.28, "track_2_medium": 2.92, "smoke": None, "scale": None}


SMI_TIME = "Sat Jan 10 23:36:12 2026"  # nvidia-smi's first line: when the run started (local time)
HOST_ID = "5e1f0c2a9d3b4e67"  # a `host:` line's host_id: 16 hex digits of a salted machine-id hash


def fake_gpu_uuids(count: int, node: int = 0) -> list[str]:
    """`count` GPU UUIDs in nvidia-smi -L's form, distinct per (node, index)."""
    return [f"GPU-{uuid.UUID(int=(node << 32) + i + 1)}" for i in range(count)]


def nvidia_smi(num_gpus: int, gpu: str = H100, when: str = SMI_TIME) -> str:
    rows = []
    for i in range(num_gpus):
        rows += [
            f"|   {i}  {gpu:<28}  On  |   00000000:{0x18 + i:02X}:00.0 Off |                    0 |",
            "| N/A   30C    P0            116W /  700W |    1183MiB /  81559MiB |      0%      Default |",
            "|                                         |                        |             Disabled |",
            "+-----------------------------------------+------------------------+----------------------+",
        ]
    return "\n".join(
        [
            f"{when}       ",
            "+-----------------------------------------------------------------------------------------+",
            "| NVIDIA-SMI 580.159.04             Driver Version: 580.159.04     CUDA Version: 13.0     |",
            "|-----------------------------------------+------------------------+----------------------+",
            "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |",
            "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |",
            "|                                         |                        |               MIG M. |",
            "|=========================================+========================+======================|",
            *rows,
            "",
            "+-----------------------------------------------------------------------------------------+",
            "| Processes:                                                                              |",
            "|  GPU   GI   CI              PID   Type   Process name                        GPU Memory |",
            "|=========================================================================================|",
            "+-----------------------------------------------------------------------------------------+",
        ]
    )


@dataclass
class LogSpec:
    """Everything a test may change about one run's log."""

    track: str = "track_1_short"
    seed: int = 0
    run_id: str = ""
    source: str = DEFAULT_SOURCE
    num_gpus: int = 8
    gpu: str = H100
    smi: bool = True  # False: "nvidia-smi: not available"
    smi_time: str = SMI_TIME  # the timestamp nvidia-smi prints, in C's asctime format
    total_steps: int = 100
    val_every: int = 25
    start_loss: float = 10.83
    final_loss: float = 3.27
    step_ms: float = 57.0
    k: int = 0  # untimed warm-up steps in step_avg = train_time / (step - k)
    stop_at: int | None = None  # stop the log early (an incomplete run)
    config: dict[str, Any] = field(default_factory=dict)  # keys to override in the config line
    drop_config_keys: tuple[str, ...] = ()
    shards: list[dict[str, Any]] | None = None
    include_config: bool = True
    include_data: bool = True
    include_host: bool = True  # the `host:` line (logs written before it existed have none)
    host_id: str = HOST_ID
    gpu_uuids: list[str] | None = None  # None: one fake UUID per GPU nvidia-smi lists (none without nvidia-smi)
    host: str | None = None  # a node's host_id: sets host_id, and the UUIDs default to host_uuids(host, num_gpus)

    def __post_init__(self) -> None:
        if not self.run_id:
            self.run_id = str(uuid.UUID(int=random.Random(f"{self.seed}-{self.track}").getrandbits(128)))


def host_id(name: str) -> str:
    """A stable 16-hex host_id for a node called ``name`` in a test."""
    return hashlib.sha256(f"host-{name}".encode()).hexdigest()[:16]


def host_uuids(host: str, num_gpus: int = 8) -> list[str]:
    """The UUIDs of the GPUs of the node ``host`` (a host_id), as nvidia-smi -L prints them."""
    out = []
    for i in range(num_gpus):
        h = hashlib.sha256(f"{host}-gpu{i}".encode()).hexdigest()
        out.append(f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}")
    return out


def config_for(spec: LogSpec) -> dict[str, Any]:
    ws = spec.num_gpus if spec.smi else 1
    smoke = spec.track == "smoke"
    cfg: dict[str, Any] = {
        "train_seq_len": 2048 if smoke else 65536,
        "num_iterations": spec.total_steps,
        "val_loss_every": spec.val_every,
        "preset": PRESET_OF[spec.track],
        "track": spec.track,
        "world_size": ws,
        "grad_accum_steps": 1 if smoke else 8 // ws if ws <= 8 else 1,
        "seed": spec.seed,
        "run_id": spec.run_id,
        "val_tokens": 65536 if smoke else 10_485_760,
        "target_val_loss": TARGET_OF[spec.track],
        "parallelism": "ddp",
        "device": "cpu" if smoke else "cuda",
        "step_avg_excluded_steps": spec.k,
        "overrides": {},
        # the run settings (train_gpt.RunSettings but the seed): where the run kept things, never what it computed
        "run": {"data_path": "data/synthetic" if smoke else "data/fineweb10B", "log_dir": "logs", "export_dir": None},
    }
    cfg["global_batch_tokens"] = cfg["world_size"] * cfg["grad_accum_steps"] * cfg["train_seq_len"]
    cfg.update(spec.config)
    for key in spec.drop_config_keys:
        cfg.pop(key, None)
    return cfg


def make_log(spec: LogSpec | None = None, **kw: Any) -> str:
    spec = spec or LogSpec(**kw)
    rng = random.Random(spec.seed)
    env = [
        # The Python judging the log must read its grammar (tools/judge/sourcecheck.py): name the one running the tests.
        f"Running Python {platform.python_version()} (main, Jan 22 2026, 20:57:42) [GCC 13.3.0]",
        "Running PyTorch 2.11.0+cu130 compiled for CUDA 13.0"
        if spec.smi
        else "Running PyTorch 2.13.0+cpu compiled for CPU",
        nvidia_smi(spec.num_gpus, spec.gpu, spec.smi_time) if spec.smi else "nvidia-smi: not available",
    ]
    if spec.include_host:
        if spec.host is not None:  # a named node (same-node tests): its own GPUs
            node, uuids = spec.host, host_uuids(spec.host, spec.num_gpus)
        else:
            node, uuids = spec.host_id, fake_gpu_uuids(spec.num_gpus if spec.smi else 0)
        uuids = spec.gpu_uuids if spec.gpu_uuids is not None else uuids
        env.append("host: " + json.dumps({"host_id": node, "gpu_uuids": uuids}))
    if spec.include_config:
        env.append("config: " + json.dumps(config_for(spec)))
    if spec.include_data:
        shards = spec.shards if spec.shards is not None else DEFAULT_SHARDS
        env.append("data: " + json.dumps({"path": "data/fineweb10B", "vocab_size": 50257, "shards": shards}))
    metrics = []
    t = 0.0
    last = spec.total_steps if spec.stop_at is None else spec.stop_at
    jitter = 1.0 + 0.01 * rng.random()
    # Runs part from the first steps on, as real runs with different seeds do (the near-duplicate test of
    # `distinct-runs`): each run (run_id) has its own noise, drawn apart from the timing's random stream.
    wobble = random.Random(f"loss-{spec.run_id}")

    def loss_at(step: int) -> float:
        frac = step / spec.total_steps
        if step == spec.total_steps:
            noise = 0.002 * (wobble.random() - 0.5)
        else:
            noise = 0.006 * (wobble.random() - 0.5) if step > 0 else 0.0
        return spec.final_loss + (spec.start_loss - spec.final_loss) * math.exp(-6 * frac) * (1 - frac) + noise

    def timing(step: int) -> str:
        avg = t / max(step - spec.k, 1)
        return f"train_time:{t:.0f}ms step_avg:{avg:.2f}ms"

    for step in range(0, last + 1):
        if step > 0:
            t += spec.step_ms * jitter * (1 + 0.05 * rng.random()) if step > spec.k else 0.0
            metrics.append(f"step:{step}/{spec.total_steps} train_loss:{loss_at(step) + 0.05:.4f} {timing(step)}")
        if step % spec.val_every == 0 or step == spec.total_steps:
            metrics.append(f"step:{step}/{spec.total_steps} val_loss:{loss_at(step):.4f} {timing(step)}")
    metrics.append("peak memory allocated: 30220 MiB reserved: 38672 MiB")
    source = spec.source if spec.source.endswith("\n") or not spec.source else spec.source + "\n"
    return source + SEP + "\n" + "\n".join(env) + "\n" + SEP + "\n" + "\n".join(metrics) + "\n"


def write_log(folder: Path, spec: LogSpec | None = None, **kw: Any) -> Path:
    spec = spec or LogSpec(**kw)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.run_id}.txt"
    path.write_text(make_log(spec), encoding="utf-8")
    return path


def front_matter(**fields: Any) -> str:
    meta: dict[str, Any] = {
        "title": "A test record",
        "date": "2026-08-01",
        "authors": ["Test Author"],
        "description": "Makes the test model faster.",
        "baseline": None,
        "systems_only": False,
    }
    meta.update(fields)
    lines = ["---"]
    for key, value in meta.items():
        if value is None:
            continue
        lines.append(f"{key}: {json.dumps(value)}")
    lines += ["---", "", "# What changed", "", "Details.", ""]
    return "\n".join(lines)


def write_record(
    records_root: Path,
    name: str,
    track: str = "track_1_short",
    runs: int = 3,
    meta: dict[str, Any] | None = None,
    **spec_kw: Any,
) -> Path:
    """A record folder ``records_root/<track>/<name>/`` with a README and ``runs`` logs (seeds 1..runs), whose
    run_ids (and so bytes) differ from every other record's: a run counts for one record only."""
    folder = records_root / track / name
    folder.mkdir(parents=True, exist_ok=True)
    fields = {"date": name[:10]} | dict(meta or {})
    (folder / "README.md").write_text(front_matter(**fields), encoding="utf-8")
    base_seed = spec_kw.pop("seed", 1)
    for i in range(runs):
        run_id = str(uuid.UUID(int=random.Random(f"{name}-{base_seed + i}-{track}").getrandbits(128)))
        write_log(folder, LogSpec(track=track, seed=base_seed + i, run_id=run_id, **spec_kw))
    return folder


def write_baseline_runs(record: Path, runs: int = 3, seed: int = 101, **spec_kw: Any) -> list[Path]:
    """``runs`` same-node baseline runs in ``record/baseline/`` (seeds seed..), with run_ids of their own; pass
    the baseline record's ``source`` (its code) and the record's ``host`` (its node)."""
    folder = record / "baseline"
    track = spec_kw.pop("track", "track_1_short")
    paths = []
    for i in range(runs):
        run_id = str(uuid.UUID(int=random.Random(f"baseline-{record.name}-{seed + i}-{track}").getrandbits(128)))
        paths.append(write_log(folder, LogSpec(track=track, seed=seed + i, run_id=run_id, **spec_kw)))
    return paths
