"""The tracks of the speedrun, in one place (records/README.md, docs/log-format.md).

Besides the target, each record track carries the bounds a log's numbers must respect before any
statistics are computed on them (the ``plausible`` rule, tools/judge/rules.py). They are floors no honest
run comes near, set from physics and from the public speedrun's ~770 logs, not tight fits:

- ``min_val_loss``: no run of the track's model class ends below it. The best final val loss in the
  public corpus is 2.7297, by a 1B-parameter model trained far longer than a record
  (2024-10-20_ScaleUp1B); GPT-2 small class models there never end below 3.06. 2.0 for track 1 and
  1.8 for track 2 (GPT-2 medium class) are far below anything these models reach.
- ``min_flops_per_token``: training costs at least 6 FLOPs per matrix parameter per token (2 forward,
  4 backward). A model of the track's class has at least 50M (track 1, ~124M class) or 150M (track 2,
  ~350M class) matrix parameters, so a step of B tokens needs B x 6 x that many FLOPs; on n GPUs of
  peak P FLOP/s it cannot take less than ``B * min_flops_per_token / (n * P)``. With the official
  batch (524,288 tokens) on 8x H100 that is 5.0 ms per step for track 1 (train_gpt.py takes ~129 ms).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

# Validation never changes: the first 10,485,760 tokens of the FineWeb val shard (RULES.md `config`).
RECORD_VAL_TOKENS = 10_485_760
# A FineWeb shard holds 100M tokens (data/README.md); the last of a split may hold fewer.
FINEWEB_SHARD_TOKENS = 100_000_000
# The official hardware class of the record tracks, as nvidia-smi names the GPU.
OFFICIAL_GPU = "NVIDIA H100 80GB HBM3"
OFFICIAL_GPU_COUNT = 8

# The highest tensor throughput the datasheet gives for the chip, at any precision and with 2:4
# sparsity (FLOP/s per GPU): a bound no run can beat, not a rate any run reaches. Hopper (H100, H200,
# H800, GH200): 3,958 TFLOP/s sparse FP8 (SXM). Ampere (A100, A800): 1,248 TOPS sparse INT8.
# Matched as a word of the nvidia-smi name; any other GPU gets UNKNOWN_GPU_PEAK_FLOPS.
PEAK_FLOPS: dict[str, float] = {
    "H100": 3.958e15,
    "H200": 3.958e15,
    "H800": 3.958e15,
    "GH200": 3.958e15,
    "A100": 1.248e15,
    "A800": 1.248e15,
}
# Above every GPU announced by 2026 (B200: 18 PFLOP/s sparse FP4; Rubin: 50 PFLOP/s FP4): an unknown
# GPU is never held to a floor it could beat.
UNKNOWN_GPU_PEAK_FLOPS = 100e15
# nvidia-smi's spelling of GPU names that a README may write in another case.
KNOWN_GPU_NAMES = (
    OFFICIAL_GPU,
    "NVIDIA H100 PCIe",
    "NVIDIA H100 NVL",
    "NVIDIA H200",
    "NVIDIA H800",
    "NVIDIA GH200 480GB",
    "NVIDIA A100-SXM4-80GB",
    "NVIDIA A100-SXM4-40GB",
    "NVIDIA A100 80GB PCIe",
    "NVIDIA B200",
)
_KNOWN_BY_FOLDED = {n.casefold(): n for n in KNOWN_GPU_NAMES}


def canonical_gpu_name(name: str) -> str | None:
    """The GPU model as one class names it, or None when it is not ASCII after NFKC normalisation.

    nvidia-smi prints ASCII names. NFKC folds compatibility forms (fullwidth letters) into ASCII; what
    is still not ASCII afterwards (a Cyrillic ``Н`` in ``Н100``, a zero-width space) is a look-alike,
    and would otherwise make a hardware class, and a leaderboard table, of its own. Runs of spaces
    become one space, and a known name is written as nvidia-smi writes it, whatever the case.
    """
    folded = " ".join(unicodedata.normalize("NFKC", name).split())
    if not folded or not folded.isascii() or not folded.isprintable():
        return None
    return _KNOWN_BY_FOLDED.get(folded.casefold(), folded)


def first_non_ascii(name: str) -> str:
    """Evidence for a refused GPU name: its first character that NFKC does not make ASCII."""
    for i, ch in enumerate(name):
        norm = unicodedata.normalize("NFKC", ch)
        if not (norm.isascii() and norm.isprintable()):
            return f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed character')} at offset {i}"
    return "no printable characters"


def peak_flops(model: str) -> float:
    words = set(model.replace("-", " ").upper().split())
    return max((p for key, p in PEAK_FLOPS.items() if key in words), default=UNKNOWN_GPU_PEAK_FLOPS)


@dataclass(frozen=True)
class HardwareClass:
    """A GPU model and how many of them a run used; runs are only ranked against their own class.

    Build it with ``of`` or ``from_label``, which refuse look-alike names (``canonical_gpu_name``).
    """

    count: int
    model: str

    @property
    def label(self) -> str:
        return f"{self.count}× {self.model}"

    @classmethod
    def of(cls, count: int, model: str) -> HardwareClass | None:
        """The class of ``count`` GPUs named ``model``; None when the name is not ASCII after NFKC."""
        name = canonical_gpu_name(model)
        return cls(count, name) if name is not None else None

    @classmethod
    def from_label(cls, text: str) -> HardwareClass:
        """Read ``"8× NVIDIA H100 80GB HBM3"`` or ``"8x NVIDIA H100 80GB HBM3"``."""
        head, _, model = text.strip().partition(" ")
        count = head.rstrip("×xX")
        if not count.isdigit() or int(count) < 1 or not model.strip():
            raise ValueError(f"hardware {text!r} is not of the form '8x NVIDIA H100 80GB HBM3' (count, 'x', GPU model)")
        hc = cls.of(int(count), model)
        if hc is None:
            raise ValueError(
                f"hardware {text!r}: the GPU model is not ASCII after Unicode NFKC normalisation "
                f"({first_non_ascii(model)}); write it as nvidia-smi prints it"
            )
        return hc

    def min_step_ms(self, tokens_per_step: int, flops_per_token: float) -> float:
        """The least time a training step of ``tokens_per_step`` tokens can take on this hardware."""
        return 1000.0 * tokens_per_step * flops_per_token / (self.count * peak_flops(self.model))


OFFICIAL_CLASS = HardwareClass(OFFICIAL_GPU_COUNT, OFFICIAL_GPU)


@dataclass(frozen=True)
class Track:
    name: str
    presets: tuple[str, ...]  # the presets (train_gpt.py's, or train_scale.py's for scale) whose runs belong here
    target_val_loss: float | None  # None: no target, the run must only show a loss drop (smoke)
    official_hardware: HardwareClass | None
    is_record_track: bool
    description: str
    min_val_loss: float | None = None  # a final val loss below this is not a run of the class (see above)
    min_flops_per_token: float | None = None  # training FLOPs per token of the smallest model of the class


TRACKS: dict[str, Track] = {
    t.name: t
    for t in (
        Track(
            "track_1_short",
            ("short",),
            3.28,
            OFFICIAL_CLASS,
            True,
            "GPT-2 small class (~124M) to 3.28 val loss",
            min_val_loss=2.0,
            min_flops_per_token=6 * 50e6,
        ),
        Track(
            "track_2_medium",
            ("medium",),
            2.92,
            OFFICIAL_CLASS,
            True,
            "GPT-2 medium class (~350M) to 2.92 val loss",
            min_val_loss=1.8,
            min_flops_per_token=6 * 150e6,
        ),
        Track("smoke", ("smoke",), None, None, False, "tiny CPU health check on synthetic data; never a record"),
        Track(
            "scale",
            ("1.5b", "3b", "7b", "13b", "70b", "175b", "tiny"),
            None,
            None,
            False,
            "train_scale.py's FSDP2 ladder, 1.5B to 175B (and its CPU model, tiny); never a record",
        ),
    )
}


def get_track(name: str) -> Track:
    try:
        return TRACKS[name]
    except KeyError:
        raise ValueError(f"unknown track {name!r}: choose one of {', '.join(TRACKS)}") from None
