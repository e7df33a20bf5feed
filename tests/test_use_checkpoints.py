"""tools/use/checkpoints.py and `python -m tools export`: reading checkpoints and exports, the export round trip,
and one clear paragraph for every broken folder. The FSDP-sharded checkpoints train_scale.py writes are read by the
same tools in tests/test_scale_runs.py (test_the_model_tools_read_what_the_run_saved)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from helpers.use_factory import SMALL, config_for, one_thread, random_gpt, tg, write_checkpoint
from tools.cli import main
from tools.use.checkpoints import EXPORT_FORMAT, ModelFolderError, load_model


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


def window() -> torch.Tensor:
    return torch.tensor(tg.window_blocks(SMALL.num_iterations, SMALL), dtype=torch.int32)


def tokens(T: int = 128, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, SMALL.vocab_size - 1, (T,), generator=g, dtype=torch.int32)
    t[[0, 40, 41, 100]] = SMALL.vocab_size - 1
    return t


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return random_gpt(SMALL, seed=3, bf16_embeddings=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, model: torch.nn.Module) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("run"), model, SMALL)


def test_checkpoint_loads_the_saved_weights_in_their_dtypes(checkpoint: Path, model: torch.nn.Module) -> None:
    loaded = load_model(checkpoint, "cpu", float32=False)
    assert loaded.kind == "checkpoint" and loaded.args == SMALL and loaded.config["step"] == SMALL.num_iterations
    saved, got = model.state_dict(), loaded.model.state_dict()
    assert saved.keys() == got.keys()
    for k in saved:
        assert got[k].dtype == saved[k].dtype, k
        assert torch.equal(got[k], saved[k]), k
    assert got["embed.weight"].dtype == torch.bfloat16  # kept as trained, not converted to the init's fp32
    assert not loaded.model.training
    # the default on CPU computes in float32: same weights, upcast
    f32 = load_model(checkpoint, "cpu").model
    assert all(p.dtype == torch.float32 for p in f32.parameters())
    assert torch.equal(f32.embed.weight, saved["embed.weight"].float())


def test_export_round_trip_gives_identical_logits_and_no_optimizer_state(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # readable as config.json is
    config = json.loads((out / "config.json").read_text())
    assert (
        config["format"] == EXPORT_FORMAT
        and config["hyperparameters"] == json.loads((checkpoint / "config.json").read_text())["hyperparameters"]
    )
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        assert f.get_slice("embed.weight").get_dtype() == "BF16"  # the dtype it was trained in
    assert keys == set(tg.GPT(SMALL).state_dict())  # the model's weights and nothing else: no optimizer state
    assert not any(k.startswith(("optim", "train", "exp_avg")) for k in keys)

    a, b = load_model(checkpoint).model, load_model(out).model
    t = tokens()
    assert torch.equal(a.logits(t, window()), b.logits(t, window()))
    # exporting over a non-empty folder needs --force
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(out), "--out", str(out), "--force"]) == 2  # not onto itself
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--force"]) == 0


def broken(tmp_path: Path, checkpoint: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(checkpoint, folder)
    return folder


def edit_config(folder: Path, **changes: object) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def error_of(path: Path) -> str:
    with pytest.raises(ModelFolderError) as info:
        load_model(path)
    return str(info.value)


def test_weights_with_nan_are_refused_not_evaluated(tmp_path: Path, checkpoint: Path) -> None:
    """Bytes overwritten in an export: the model would print val_loss nan and exit 0; it is refused instead."""
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1000:] = b"\xff" * 1000  # 0xffff... is NaN in bf16 and float32
    weights.write_bytes(bytes(data))
    message = error_of(out)
    assert message.startswith(f"{out}: ") and "hold NaN or infinite values" in message and "export again" in message


def test_clear_errors_for_broken_folders(tmp_path: Path, checkpoint: Path) -> None:
    assert "no such folder" in error_of(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    assert "is a file" in error_of(tmp_path / "file.txt")
    assert "run folder" in error_of(checkpoint.parent) and checkpoint.name in error_of(checkpoint.parent)
    (tmp_path / "empty").mkdir()
    assert "not a checkpoint or export folder" in error_of(tmp_path / "empty")

    incomplete = broken(tmp_path, checkpoint, "incomplete")
    (incomplete / "config.json").unlink()
    assert "the save did not finish" in error_of(incomplete)

    garbled = broken(tmp_path, checkpoint, "garbled")
    (garbled / "config.json").write_text("{not json")
    assert "not readable JSON" in error_of(garbled)

    wrong = broken(tmp_path, checkpoint, "wrong_format")
    edit_config(wrong, format="speedrun-checkpoint-v9")
    assert "'speedrun-checkpoint-v9' is not one this version" in error_of(wrong)

    newer = broken(tmp_path, checkpoint, "newer")
    config = json.loads((newer / "config.json").read_text())
    config["hyperparameters"]["mtp_heads"] = 2
    del config["hyperparameters"]["logit_cap"]
    (newer / "config.json").write_text(json.dumps(config))
    msg = error_of(newer)
    assert "different version of train_gpt.py" in msg and "mtp_heads" in msg and "logit_cap" in msg

    typed = broken(tmp_path, checkpoint, "typed")
    config = json.loads((typed / "config.json").read_text())
    config["hyperparameters"]["num_layers"] = "twelve"
    (typed / "config.json").write_text(json.dumps(config))
    assert "num_layers should be a int" in error_of(typed)

    wider = broken(tmp_path, checkpoint, "wider")
    config = json.loads((wider / "config.json").read_text())
    config["hyperparameters"].update(model_dim=128, head_dim=64)  # the saved tensors are 64 wide
    (wider / "config.json").write_text(json.dumps(config))
    msg = error_of(wider)
    assert (
        "does not match the GPT" in msg
        and "blocks.0.attn.qkv_w has shape [3, 64, 64], the model wants [3, 128, 128]" in msg
    )

    unbuildable = broken(tmp_path, checkpoint, "unbuildable")
    config = json.loads((unbuildable / "config.json").read_text())
    config["hyperparameters"].update(attention_pattern="LS")  # one letter per layer is needed
    (unbuildable / "config.json").write_text(json.dumps(config))
    assert "cannot build a GPT from these hyperparameters" in error_of(unbuildable)

    damaged = broken(tmp_path, checkpoint, "damaged")
    for f in damaged.glob("*.distcp"):
        f.write_bytes(f.read_bytes()[:100])
    assert "reading the model weights from this checkpoint failed" in error_of(damaged)

    no_metadata = broken(tmp_path, checkpoint, "no_metadata")
    (no_metadata / ".metadata").unlink()
    assert "cannot read the DCP metadata" in error_of(no_metadata)


def test_checkpoint_without_a_model_entry(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    folder = tmp_path / "step_000001"
    dcp.save({"weights": {"x": torch.zeros(2)}}, checkpoint_id=str(folder))
    (folder / "config.json").write_text(json.dumps(config_for(SMALL)))
    assert "has no 'model' entry (top-level keys: weights)" in error_of(folder)
