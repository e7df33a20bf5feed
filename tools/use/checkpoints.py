"""Trained models on disk: read a checkpoint or an export folder into a `train_gpt.GPT`, and export checkpoints.

Two kinds of folder hold a model (docs/sampling-and-evaluation.md):

- a **checkpoint**, e.g. ``checkpoints/<run_id>/step_000500/``, written by train_scale.py with
  torch.distributed.checkpoint (DCP): ``.metadata`` and ``*.distcp`` files, then ``config.json``, written by
  rank 0 last (``"format": "speedrun-checkpoint-v1"``), so that its presence marks a complete save. The DCP
  state has the top-level keys ``model`` (exactly the keys of ``GPT(args).state_dict()``, as plain tensors or
  as FSDP2 DTensor shards), ``optim`` and ``train``; only ``model`` is read here, resharded by DCP into full
  tensors in one process without a process group.
- an **export**, written by ``python -m tools export`` or at the end of a run with ``SPEEDRUN_EXPORT`` (both
  trainers): ``model.safetensors`` (the full GPT state dict in the
  dtypes it was trained in) and ``config.json`` (the same schema, ``"format": "speedrun-export-v1"``). It has
  no optimizer state and needs neither DCP nor the trainer's process layout to read.

This module imports torch (and train_gpt.py) at module level: the CLI commands import it inside ``run``.
Every user mistake (a wrong path, an incomplete save, a checkpoint of another trainer version, a corrupt
file) raises ``ModelFolderError``, one paragraph naming the folder and the fix.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT_FORMAT = "speedrun-checkpoint-v1"
EXPORT_FORMAT = "speedrun-export-v1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_KEY = "model"  # the DCP state's top-level key of the model's state dict
RETIRED_FIELDS = frozenset({"data_path", "parallelism", "checkpoint_every", "checkpoint_keep"})


class ModelFolderError(ValueError):
    """A folder that cannot give a model; the message names it and says what to do."""


def repo_module(name: str) -> ModuleType:
    """A module of the repository outside this package (train_gpt, data.hub), imported by name at run time.

    By name rather than statically: these are the trainer script and the data scripts, not part of this typed
    package (mypy checks tools/ alone), and the repository root may not be on sys.path when tools is imported.
    """
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module(name)


def trainer() -> ModuleType:
    """train_gpt.py, the one-file trainer (importing it has no side effects): the model's single definition."""
    return repo_module("train_gpt")


@dataclass
class LoadedModel:
    model: Any  # train_gpt.GPT, in eval mode, on the requested device
    args: Any  # train_gpt.Hyperparameters of the run
    config: dict[str, Any]  # the folder's config.json
    path: Path
    kind: str  # "checkpoint" or "export"

    def describe(self) -> str:
        step = self.config.get("step")
        run_id = self.config.get("run_id")
        preset = self.config.get("preset")
        return (
            f"{self.kind} {self.path} (preset {preset}, run {run_id}, step {step}, "
            f"{sum(p.numel() for p in self.model.parameters()):,} parameters)"
        )


# ----------------------------------------------------------------------------------------------- config.json


def _complete_checkpoints_below(folder: Path) -> list[Path]:
    return sorted(p.parent for p in folder.glob(f"*/{CONFIG_NAME}"))


def read_config(path: Path) -> tuple[str, dict[str, Any]]:
    """(kind, config) of a model folder: "checkpoint" or "export", and its parsed config.json."""
    if not path.exists():
        raise ModelFolderError(
            f"{path}: no such folder. Give --checkpoint a checkpoint folder (checkpoints/<run_id>/step_NNNNNN/, "
            f"written by train_scale.py) or an export folder (written by `python -m tools export`, or by a run with "
            f"SPEEDRUN_EXPORT)."
        )
    if not path.is_dir():
        raise ModelFolderError(
            f"{path} is a file, not a model folder. Give the folder that holds {CONFIG_NAME} (a checkpoint's "
            f"step_NNNNNN/ folder, or an export folder)."
        )
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        inside = _complete_checkpoints_below(path)
        if inside:
            names = ", ".join(p.name for p in inside[-3:])
            raise ModelFolderError(
                f"{path} is a run folder, not one checkpoint: it holds {len(inside)} complete checkpoint(s) "
                f"({names}{', ...' if len(inside) > 3 else ''}). Pass one of them, e.g. --checkpoint {inside[-1]}."
            )
        if (path / ".metadata").exists() or any(path.glob("*.distcp")):
            raise ModelFolderError(
                f"{path} holds checkpoint files but no {CONFIG_NAME}: the save did not finish (train_scale.py writes "
                f"{CONFIG_NAME} last, after every rank has written its part), so this checkpoint is incomplete. "
                f"Use an earlier complete checkpoint of the run, and delete this folder."
            )
        if (path / WEIGHTS_NAME).exists():
            raise ModelFolderError(
                f"{path} has {WEIGHTS_NAME} but no {CONFIG_NAME}: the export did not finish ({CONFIG_NAME} is "
                f"written last). Run `python -m tools export` again."
            )
        raise ModelFolderError(
            f"{path} is not a checkpoint or export folder: it has no {CONFIG_NAME}. Checkpoints are the "
            f"step_NNNNNN/ folders under checkpoints/<run_id>/; exports are written by `python -m tools export`."
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFolderError(
            f"{config_path} is not readable JSON ({e}); the folder is damaged. Use another checkpoint of the run."
        ) from None
    if not isinstance(config, dict):
        raise ModelFolderError(f"{config_path} must hold a JSON object; the folder is damaged.")
    fmt = config.get("format")
    kinds = {CHECKPOINT_FORMAT: "checkpoint", EXPORT_FORMAT: "export"}
    if fmt not in kinds:
        raise ModelFolderError(
            f"{config_path}: format {fmt!r} is not one this version of the tools reads ({CHECKPOINT_FORMAT!r} or "
            f"{EXPORT_FORMAT!r}). A folder from another version of the harness needs that version's tools."
        )
    if not isinstance(config.get("hyperparameters"), dict):
        raise ModelFolderError(f"{config_path} has no 'hyperparameters' object; the folder is damaged.")
    return kinds[fmt], config


def hyperparameters(config: dict[str, Any], config_path: Path) -> Any:
    """The run's train_gpt.Hyperparameters, rebuilt from config.json, every field present and of the right type."""
    tg = trainer()
    # fields that train_gpt.py had until it split its run settings (seed, folders, checkpoints) from the recipe:
    # none of them shapes the model, so a folder saved before then still loads
    given = {k: v for k, v in config["hyperparameters"].items() if k not in RETIRED_FIELDS}
    fields = {f.name: f for f in dataclasses.fields(tg.Hyperparameters)}
    unknown = sorted(set(given) - set(fields))
    missing = sorted(set(fields) - set(given))
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"field(s) this train_gpt.py does not have: {', '.join(unknown)}")
        if missing:
            parts.append(f"no value for field(s) this train_gpt.py has: {', '.join(missing)}")
        raise ModelFolderError(
            f"{config_path} was written by a different version of train_gpt.py: its hyperparameters have "
            f"{'; '.join(parts)}. Load it with the train_gpt.py of the run that wrote it (the run's log begins with "
            f"that exact code: copy it into train_gpt.py in a checkout of this repository)."
        )
    defaults = tg.Hyperparameters()
    values: dict[str, Any] = {}
    for name, value in given.items():
        want = type(getattr(defaults, name))
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ModelFolderError(
                f"{config_path}: hyperparameter {name} should be a {want.__name__}, found {value!r}; the file is "
                f"damaged or from another version of train_gpt.py."
            )
        values[name] = value
    return tg.Hyperparameters(**values)


# ----------------------------------------------------------------------------------------------- weights


def _mismatch(path: Path, what: str, expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> None:
    """Raise a ModelFolderError naming missing, unexpected and reshaped weights, if there are any."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if not (missing or extra or reshaped):
        return
    parts = []
    if missing:
        parts.append(f"no weights for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if extra:
        parts.append(f"weights the model does not have: {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
    for k in reshaped[:5]:
        parts.append(f"{k} has shape {list(found[k])}, the model wants {list(expected[k])}")
    if len(reshaped) > 5:
        parts.append(f"{len(reshaped) - 5} more of other shapes")
    raise ModelFolderError(
        f"{path}: the {what} does not match the GPT its config.json describes: {'; '.join(parts)}. Either it was "
        f"written by a different version of train_gpt.py (use the train_gpt.py of that run: its log begins with the "
        f"code), or its config.json was edited (restore it)."
    )


def _dcp_metadata(path: Path) -> Any:
    from torch.distributed.checkpoint.filesystem import FileSystemReader

    try:
        return FileSystemReader(str(path)).read_metadata()
    except Exception as e:  # a missing, truncated or foreign .metadata file: whatever DCP raises, one paragraph
        raise ModelFolderError(
            f"{path}: cannot read the DCP metadata (.metadata) of this checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else 'no detail'}): the files are incomplete or damaged. "
            f"Use another checkpoint of the run."
        ) from None


def _load_dcp(path: Path, model_sd: dict[str, torch.Tensor]) -> None:
    """Read the checkpoint's "model" entry into model_sd's tensors, in place, in this one process."""
    import logging

    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict_loader import load as dcp_load

    dcp_logger = logging.getLogger("dcp_logger")  # DCP logs every failure with its traceback: we report it ourselves
    previous = dcp_logger.disabled
    dcp_logger.disabled = True
    try:
        with warnings.catch_warnings():
            # "torch.distributed is ... uninitialized, assuming the intent is to load in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            dcp_load({MODEL_KEY: model_sd}, checkpoint_id=str(path))
    except (CheckpointException, Exception) as e:  # CheckpointException derives from BaseException
        first = str(e).strip().splitlines()
        detail = next((ln for ln in reversed(first) if ln.strip()), type(e).__name__)[:300]
        raise ModelFolderError(
            f"{path}: reading the model weights from this checkpoint failed ({type(e).__name__}: {detail}). The "
            f"*.distcp files are incomplete or damaged; use another checkpoint of the run."
        ) from None
    finally:
        dcp_logger.disabled = previous


def _stored_dtypes(path: Path, kind: str, expected: dict[str, tuple[int, ...]]) -> dict[str, torch.dtype]:
    """{state-dict key: dtype as stored}, after checking that the stored names and shapes are the model's."""
    if kind == "checkpoint":
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        metadata = _dcp_metadata(path)
        prefix = MODEL_KEY + "."
        tensors = {
            k[len(prefix) :]: v for k, v in metadata.state_dict_metadata.items() if k.startswith(prefix)
        }  # DCP flattens nested dicts to dotted keys: "model.embed.weight"
        if not tensors:
            raise ModelFolderError(
                f"{path}: this DCP checkpoint has no '{MODEL_KEY}' entry (top-level keys: "
                f"{', '.join(sorted({k.split('.')[0] for k in metadata.state_dict_metadata}))}): it was not written "
                f"by train_gpt.py."
            )
        shapes = {k: tuple(v.size) if isinstance(v, TensorStorageMetadata) else () for k, v in tensors.items()}
        _mismatch(path, "checkpoint", expected, shapes)
        return {k: v.properties.dtype for k, v in tensors.items()}
    from safetensors import SafetensorError, safe_open

    weights = path / WEIGHTS_NAME
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes, dtypes = {}, {}
            for k in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                s = f.get_slice(k)
                shapes[k] = tuple(s.get_shape())
                dtypes[k] = _SAFETENSORS_DTYPES.get(s.get_dtype())
    except (OSError, SafetensorError) as e:
        raise ModelFolderError(
            f"{weights}: not a readable safetensors file ({e}); the export is damaged. Export the checkpoint again."
        ) from None
    _mismatch(path, "export", expected, shapes)
    unknown = sorted(k for k, d in dtypes.items() if d is None)
    if unknown:
        raise ModelFolderError(f"{weights}: unsupported dtype for {', '.join(unknown[:5])}; export again.")
    return {k: d for k, d in dtypes.items() if d is not None}


_SAFETENSORS_DTYPES = {
    "F32": torch.float32,
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
}


def load_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu", float32: bool | None = None
) -> LoadedModel:
    """The GPT stored in a checkpoint or export folder, in eval mode on `device`.

    float32: compute in float32 (every floating weight upcast). The default is True on CPU (bf16 matmuls are slow
    on most CPUs) and False elsewhere, where the weights keep the dtypes they were trained in (bf16 embeddings on
    CUDA, as in training and its validation).
    """
    path = Path(path)
    kind, config = read_config(path)
    args = hyperparameters(config, path / CONFIG_NAME)
    device = torch.device(device)
    if float32 is None:
        float32 = device.type == "cpu"
    tg = trainer()
    try:
        with torch.device(device):
            model = tg.GPT(args)
    except (RuntimeError, ValueError, AssertionError, IndexError) as e:
        raise ModelFolderError(
            f"{path / CONFIG_NAME}: train_gpt.py cannot build a GPT from these hyperparameters ({type(e).__name__}: "
            f"{(str(e).splitlines() or [''])[0][:200]}); the file was edited or comes from another version."
        ) from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    dtypes = _stored_dtypes(path, kind, expected)
    # Give every weight its stored dtype first, so that the file's bytes land unconverted.
    with torch.no_grad():
        for name, p in [*model.named_parameters(), *model.named_buffers()]:
            if name in dtypes and p.dtype != dtypes[name]:
                p.data = p.data.to(dtypes[name])
    state = model.state_dict()  # views of the model's own tensors: loading into them loads the model
    if kind == "checkpoint":
        _load_dcp(path, state)
    else:
        from safetensors.torch import load_file

        loaded = load_file(str(path / WEIGHTS_NAME), device=str(device))
        with torch.no_grad():
            for k, t in state.items():
                t.copy_(loaded[k])
    damaged = [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if damaged:
        raise ModelFolderError(
            f"{path}: {len(damaged)} weight tensor(s) hold NaN or infinite values ({', '.join(damaged[:3])}): the "
            "files are damaged, or the run diverged before it saved; use another checkpoint or export again."
        )
    if float32:
        model.float()
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(model, args, config, path, kind)


# ----------------------------------------------------------------------------------------------- export


def export(source: str | os.PathLike[str], out: str | os.PathLike[str], force: bool = False) -> Path:
    """Write out/model.safetensors (full tensors, stored dtypes) and out/config.json (last). Returns out."""
    from safetensors.torch import save_file

    source, out = Path(source), Path(out)
    loaded = load_model(source, "cpu", float32=False)
    if out.resolve() == source.resolve():
        raise ModelFolderError(f"--out {out} is the folder being exported; choose another folder.")
    if out.exists() and not out.is_dir():
        raise ModelFolderError(f"--out {out} is a file; choose a folder.")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ModelFolderError(f"--out {out} exists and is not empty; choose another folder or pass --force.")
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_NAME).unlink(missing_ok=True)  # an overwritten export is incomplete until the new config is there
    state = {k: v.detach().contiguous() for k, v in loaded.model.state_dict().items()}
    config = dict(loaded.config, format=EXPORT_FORMAT, exported_from=str(source))
    tmp = out / (WEIGHTS_NAME + ".tmp")
    try:
        save_file(state, str(tmp), metadata={"format": "pt", "speedrun": EXPORT_FORMAT})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates the file 0600; an export is for others to read too
        os.replace(tmp, out / WEIGHTS_NAME)
        tmp_config = out / (CONFIG_NAME + ".tmp")
        tmp_config.write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp_config, out / CONFIG_NAME)  # last: its presence marks a complete export
    except OSError as e:
        raise ModelFolderError(
            f"cannot write the export to {out}: {e.strerror or e}; check space and permissions."
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return out


def resolve_device(name: str | None) -> torch.device:
    """--device: "cuda" or "cpu"; by default CUDA when there is a GPU."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelFolderError(
            f"--device {name}: this machine has no CUDA GPU (or this torch build has no CUDA); use --device cpu."
        )
    try:
        return torch.device(name)
    except RuntimeError:
        raise ModelFolderError(f"--device {name!r} is not a device; use cpu or cuda (or cuda:N).") from None
