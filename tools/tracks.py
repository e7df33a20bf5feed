"""The tracks of the speedrun, in one place (docs/log-format.md, ../shared/spec/RECIPE.md)."""

from __future__ import annotations

from dataclasses import dataclass

# Validation never changes: the first 10,485,760 tokens of the FineWeb val shard (RULES.md `config`).
RECORD_VAL_TOKENS = 10_485_760
# The official hardware class of the record tracks, as nvidia-smi names the GPU.
OFFICIAL_GPU = "NVIDIA H100 80GB HBM3"
OFFICIAL_GPU_COUNT = 8


@dataclass(frozen=True)
class HardwareClass:
    """A GPU model and how many of them a run used; runs are only ranked against their own class."""

    count: int
    model: str

    @property
    def label(self) -> str:
        return f"{self.count}× {self.model}"

    @classmethod
    def from_label(cls, text: str) -> HardwareClass:
        """Read ``"8× NVIDIA H100 80GB HBM3"`` or ``"8x NVIDIA H100 80GB HBM3"``."""
        head, _, model = text.strip().partition(" ")
        count = head.rstrip("×xX")
        if not count.isdigit() or int(count) < 1 or not model.strip():
            raise ValueError(f"hardware {text!r} is not of the form '8x NVIDIA H100 80GB HBM3' (count, 'x', GPU model)")
        return cls(int(count), " ".join(model.split()))


OFFICIAL_CLASS = HardwareClass(OFFICIAL_GPU_COUNT, OFFICIAL_GPU)


@dataclass(frozen=True)
class Track:
    name: str
    presets: tuple[str, ...]  # the train_gpt.py presets whose runs belong to this track
    target_val_loss: float | None  # None: no target, the run must only show a loss drop (smoke)
    official_hardware: HardwareClass | None
    is_record_track: bool
    description: str


TRACKS: dict[str, Track] = {
    t.name: t
    for t in (
        Track("track_1_short", ("short",), 3.28, OFFICIAL_CLASS, True, "GPT-2 small class (~124M) to 3.28 val loss"),
        Track("track_2_medium", ("medium",), 2.92, OFFICIAL_CLASS, True, "GPT-2 medium class (~350M) to 2.92 val loss"),
        Track("smoke", ("smoke",), None, None, False, "tiny CPU health check on synthetic data; never a record"),
        Track("scale", ("1.5b", "3b", "7b"), None, None, False, "the FSDP2 ladder of 1.5B-7B models; never a record"),
    )
}


def get_track(name: str) -> Track:
    try:
        return TRACKS[name]
    except KeyError:
        raise ValueError(f"unknown track {name!r}: choose one of {', '.join(TRACKS)}") from None
