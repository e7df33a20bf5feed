"""Every data writer's shards read by the loaders the trainer really uses: train_gpt.plan_shards with
TrainWindows (training, the record's order) and TokenWindows (validation, one stream), cross-checked against
data/shards.py's reader, and the trainer refusing what check.py refuses. Then the record's data order itself,
pinned as numbers on shards of FineWeb's size."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

import train_gpt
from conftest import REPO_ROOT
from data import synthetic
from data.shards import ShardWriter, read_tokens, write_shard
from helpers.data_fakehub import fill_hf_cache, shard_bytes

CPU = train_gpt.torch.device("cpu")


@pytest.fixture(scope="module")
def writers(tmp_path_factory):
    """{writer: (folder, vocab size)}: shards from synthetic.py, the packing ShardWriter of data/fineweb.py, the
    files data/cached_fineweb10B.py installs (from a Hugging Face cache, offline), and write_shard at the uint16
    edges."""
    root = tmp_path_factory.mktemp("shards")
    argv = ["--out", str(root / "syn"), "--train-shards", "2", "--shard-tokens", "5000", "--val-tokens", "3000"]
    assert synthetic.main(argv) == 0
    rng = np.random.default_rng(0)
    writer = ShardWriter(root / "packed", "p", vocab_size=50257, shard_tokens=7000, val_tokens=3000)
    writer.add(np.concatenate([np.r_[50256, rng.integers(0, 50256, rng.integers(1, 400))] for _ in range(80)]))
    writer.close()
    names = ["fineweb_val_000000.bin", "fineweb_train_000001.bin", "fineweb_train_000002.bin"]
    fill_hf_cache(root / "hub", "kjj0/fineweb10B-gpt2", {n: shard_bytes(i, 4096) for i, n in enumerate(names)})
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_CACHE=str(root / "hub"), HF_HOME=str(root / "hf_home"), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "data/cached_fineweb10B.py", "2", "--out", str(root / "cached")]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    edges = np.array([65535, 0, 1, 65534, 65535, 256, 50256] * 40, dtype=np.uint16)
    write_shard(root / "edges" / "e_val_000000.bin", edges, vocab_size=65536)
    write_shard(root / "edges" / "e_train_000001.bin", edges[::-1].copy(), vocab_size=65536)
    return {
        "synthetic": (root / "syn", 512),
        "fineweb": (root / "packed", 50257),
        "cached_fineweb10B": (root / "cached", 50257),
        "edges": (root / "edges", 65536),
    }


@pytest.mark.parametrize("writer", ["synthetic", "fineweb", "cached_fineweb10B", "edges"])
def test_the_trainers_loaders_read_every_writers_tokens(writers, writer):
    """Validation windows are the val stream's consecutive slices; a step's windows lie in one train shard at
    step x batch (the record's order); the data line hashes the files as they are."""
    folder, vocab = writers[writer]
    args = train_gpt.dataclasses.replace(
        train_gpt.PRESETS["smoke"], vocab_size=vocab, train_seq_len=16, val_seq_len=16, windows_per_step=2
    )
    val = np.concatenate([np.asarray(read_tokens(p)) for p in sorted(folder.glob("*_val_*.bin"))])
    n_val = (len(val) - 1) // 32 * 32  # whole val steps of 2 windows x 16 tokens
    val_args = train_gpt.dataclasses.replace(args, val_tokens=n_val)
    val_shards = train_gpt.plan_shards(val_args, str(folder), "val", n_val + 1)
    windows = train_gpt.TokenWindows(val_shards, 16, n_val + 1, CPU)
    for j in range(n_val // 16):
        inputs, targets = windows[j]
        assert np.array_equal(inputs.numpy(), val[j * 16 : (j + 1) * 16].astype(np.int32)), (writer, j)
        assert np.array_equal(targets.numpy(), val[j * 16 + 1 : (j + 1) * 16 + 1]), (writer, j)
    paths = sorted(folder.glob("*_train_*.bin"))
    steps = sum(train_gpt.steps_in_shard(len(read_tokens(p)), 32) for p in paths)
    train_args = train_gpt.dataclasses.replace(args, num_iterations=steps)
    shards = train_gpt.plan_shards(train_args, str(folder), "train")
    assert [s.path for s in shards] == paths
    train = train_gpt.TrainWindows(shards, 16, 2, CPU)
    step = 0
    for path in paths:
        tokens = np.asarray(read_tokens(path))
        for k in range(train_gpt.steps_in_shard(len(tokens), 32)):
            for j in range(2):
                inputs, targets = train[step, j]
                at = k * 32 + j * 16
                assert np.array_equal(inputs.numpy(), tokens[at : at + 16].astype(np.int32)), (writer, step, j)
                assert np.array_equal(targets.numpy(), tokens[at + 1 : at + 17]), (writer, step, j)
            step += 1
    assert step == steps
    described = train_gpt.describe_data(val_shards + shards, args, str(folder))
    for shard, entry in zip(val_shards + shards, described["shards"], strict=True):
        assert entry["sha256"] == hashlib.sha256(shard.path.read_bytes()).hexdigest()
        assert entry["tokens"] == len(read_tokens(shard.path))


def test_the_trainer_refuses_broken_shards(writers, tmp_path):
    good = sorted(writers["synthetic"][0].glob("*_train_*.bin"))[0].read_bytes()
    for name, content in {"truncated": good[:-2], "bad_magic": b"\0\0\0\0" + good[4:], "no_header": good[:100]}.items():
        folder = tmp_path / name
        folder.mkdir()
        path = folder / f"{name}_train_000001.bin"
        path.write_bytes(content)
        with pytest.raises(train_gpt.ShardError) as err:
            train_gpt.plan_shards(train_gpt.PRESETS["smoke"], str(folder), "train")
        assert str(path) in str(err.value), err.value


# ----------------------------------------------------------------------------------------------- the record's data order
# Shards of FineWeb's size (100,000,000 tokens) whose bodies are sparse: the files take no disk and no time to
# write. Only the regions a test reads hold tokens, a pattern that says which shard and offset they came from.

SHARD_TOKENS = 100_000_000
L = 64 * 1024  # tokens per window (train_seq_len)


def pattern(shard: int, start: int, n: int) -> np.ndarray:
    """The tokens written at [start, start + n) of train shard number `shard`: unique enough to tell places apart."""
    pos = np.arange(start, start + n, dtype=np.int64)
    return ((pos * 31 + shard * 7919) % 50000).astype("<u2")


def sparse_shards(folder, count: int, regions: dict[int, list[tuple[int, int]]]) -> None:
    """fineweb_train_000001.bin .. count, each of 100M tokens (header and size), with `pattern` written in the given
    (start, length) regions of the given shard numbers and zeros (holes) elsewhere."""
    folder.mkdir(exist_ok=True)
    for shard in range(1, count + 1):
        header = np.zeros(256, dtype="<i4")
        header[:3] = 20240520, 1, SHARD_TOKENS
        with open(folder / f"fineweb_train_{shard:06d}.bin", "wb") as f:
            f.write(header.tobytes())
            for start, n in regions.get(shard, []):
                f.seek(1024 + 2 * start)
                f.write(pattern(shard, start, n).tobytes())
            f.truncate(1024 + 2 * SHARD_TOKENS)


def plan_train(args: train_gpt.Hyperparameters, folder) -> list:
    """The train shards a run of `args` reads from `folder`."""
    return train_gpt.plan_shards(args, str(folder), "train")


def reads(windows: train_gpt.TrainWindows, args, step: int, world_size: int) -> list[list[tuple[str, int]]]:
    """(shard file, offset) of each window that each rank trains on at `step`."""
    ranks = []
    for r in range(world_size):
        d = train_gpt.Dist(r, world_size, 0, train_gpt.torch.device("cpu"))
        places = [windows.locate(step, j) for j in train_gpt.windows_of_rank(args, d)]
        ranks.append([(windows.shards[i].path.name, offset) for i, offset in places])
    return ranks


def test_short_reads_the_records_windows_on_8_and_on_1_process(tmp_path) -> None:
    """The 2025-01-16 record's loader (records/011625_Sub3Min in KellerJordan/modded-nanogpt): each step's global
    batch of 8 x 64 Ki tokens (+1) comes from ONE shard; a shard's rest that cannot hold the next batch is never
    read. On 100M-token shards: 190 steps per shard, 385,280 tokens skipped, step 190 at the second shard's token 0,
    the last token read (step 1392) number 733,030,144 of the train tokens counted across shards."""
    B = 8 * L
    regions = {1: [(0, B + 1), (189 * B, B + 1)], 2: [(0, B + 1)], 8: [(62 * B, B + 1)]}
    sparse_shards(tmp_path / "data", 9, regions)
    args = train_gpt.PRESETS["short"]
    shards = plan_train(args, tmp_path / "data")
    assert [s.path.name for s in shards] == [f"fineweb_train_{i:06d}.bin" for i in range(1, 9)]  # not the 9th
    windows = train_gpt.TrainWindows(shards, args.train_seq_len, args.windows_per_step, train_gpt.torch.device("cpu"))
    expected = {  # step: (shard, offset of window 0); window r starts r x 65,536 tokens later
        0: ("fineweb_train_000001.bin", 0),
        189: ("fineweb_train_000001.bin", 99_090_432),
        190: ("fineweb_train_000002.bin", 0),
        1392: ("fineweb_train_000008.bin", 32_505_856),
    }
    for step, (name, base) in expected.items():
        assert reads(windows, args, step, 8) == [[(name, base + r * 65_536)] for r in range(8)]
        assert reads(windows, args, step, 1) == [[(name, base + j * 65_536) for j in range(8)]]  # the same windows
        shard = int(name[-10:-4])
        for j in range(8):  # and the tokens are those of that place: inputs, then targets one token on
            inputs, targets = windows[step, j]
            offset = base + j * L
            assert inputs.dtype == train_gpt.torch.int32 and targets.dtype == train_gpt.torch.int64
            assert np.array_equal(inputs.numpy(), pattern(shard, offset, L))
            assert np.array_equal(targets.numpy(), pattern(shard, offset + 1, L))
    # over the whole run: 190 steps per shard; in each, tokens from 99,614,720 on are never an input (385,280)
    last_read = {}
    for step in range(1393):
        i, offset = windows.locate(step, 7)
        last_read[i] = max(last_read.get(i, 0), offset + L)  # window 7's last target
        assert windows.locate(step, 0) == (step // 190, step % 190 * B)
    assert [last_read[i] for i in range(7)] == [99_614_720] * 7 and SHARD_TOKENS - 99_614_720 == 385_280
    assert 7 * SHARD_TOKENS + last_read[7] == 733_030_144
    with pytest.raises(IndexError, match="steps 0..1519"):  # 8 shards feed 1,520 steps, no more
        windows.locate(1520, 0)


def test_a_shard_without_room_for_a_step_and_too_few_shards(tmp_path) -> None:
    """The record's test, `pos + batch + 1 >= tokens` moves on: a shard needs batch + 2 tokens for one step."""
    assert [train_gpt.steps_in_shard(n, 100) for n in (0, 1, 101, 102, 201, 202, 302)] == [0, 0, 0, 1, 1, 2, 3]
    sparse_shards(tmp_path / "data", 7, {})
    with pytest.raises(train_gpt.SpeedrunError) as err:
        plan_train(train_gpt.PRESETS["short"], tmp_path / "data")
    message = str(err.value)
    assert "(7, 700,000,000 tokens) hold 1,330 steps of 524,289 tokens (shard tails skipped)" in message
    assert "this run needs 1,393" in message and "cached_fineweb10B.py" in message
    # a shard too short for a single step is passed over: steps go on in the next one (8 windows of 128: 1,024)
    folder = tmp_path / "small"
    for i, tokens in enumerate([2000, 300, 2500]):  # 1 step, none, 2 steps
        write_shard(folder / f"s_train_{i:06d}.bin", np.r_[511, np.arange(1, tokens) % 500], vocab_size=512)
    args = train_gpt.dataclasses.replace(train_gpt.PRESETS["smoke"], train_seq_len=128, num_iterations=3)
    shards = plan_train(args, folder)
    windows = train_gpt.TrainWindows(shards, 128, 8, train_gpt.torch.device("cpu"))
    assert [windows.locate(s, 0) for s in range(3)] == [(0, 0), (2, 0), (2, 1024)]
    assert windows[2, 7][1].tolist() == (np.arange(1024 + 7 * 128 + 1, 2 * 1024 + 1) % 500).tolist()


def test_medium_preset_is_its_public_record(tmp_path) -> None:
    """The medium preset against the public record it follows: the 2025-02-14 medium record of modded-nanogpt
    (27.5 min, final val loss 2.9193), log records/track_2_medium/2025-02-14_GPT2MediumOptCoeffs/
    1baa66b2-bff7-4850-aced-d63885ffb4b6.txt, whose code is in the log. Each fact's source there:
    - Hyperparameters: num_iterations = 7050, cooldown_frac = 0.4, train_seq_len = 64*1024,
      val_seq_len = 4*64*1024, val_tokens = 10485760, val_loss_every = 125;
    - get_lr: 1 while step / 7050 < 1 - 0.4, then (1 - x) / 0.4: linear decay to 0 (not 0.1 as in the short one);
    - distributed_data_generator(train_files, world_size * train_seq_len, ...) on 8 GPUs (it asserts
      world_size == 8): 8 windows of 64 Ki per step, the short record's loader (one shard per step);
    - validation: val_tokens // (8 x val_seq_len) = 5 steps of 8 windows from the val shard's start;
    - GPT(num_layers=16, num_heads=8, model_dim=1024), layer 7 without attention, long windows on 0, 4, 11, 15;
    - Adam lrs 0.1/1024**0.5, 0.3, 0.015; Muon lr 0.025, weight decay 0.01 (its default), momentum 0.85 -> 0.95
      over 300 steps; lm_head FP8 with x_s=0.5, w_s=2**-9, grad_s=2**-19 (divisors: our scales x2, x512, x2^19).
    Its Newton-Schulz coefficients (five tuned triples) are not carried over; the preset keeps the short one's."""
    m = train_gpt.PRESETS["medium"]
    assert (m.num_iterations, m.cooldown_frac, m.lr_final_frac, m.val_loss_every) == (7050, 0.4, 0.0, 125)
    assert (m.train_seq_len, m.windows_per_step, m.val_seq_len, m.val_tokens) == (65536, 8, 262144, 10_485_760)
    assert m.val_tokens // (m.windows_per_step * m.val_seq_len) == 5
    assert (m.num_layers, m.num_heads, m.head_dim, m.model_dim, m.attention_pattern) == (
        16,
        8,
        128,
        1024,
        "LSSSLSS-SSSLSSSL",
    )
    assert (m.adam_lr_head, m.adam_lr_embed, m.adam_lr_scalar) == (0.1 / 1024**0.5, 0.3, 0.015)
    assert (m.muon_lr, m.muon_weight_decay, m.muon_momentum_start, m.muon_momentum, m.muon_momentum_warmup_steps) == (
        0.025,
        0.01,
        0.85,
        0.95,
        300,
    )
    assert (m.fp8_head, m.fp8_x_scale, m.fp8_w_scale, m.fp8_grad_scale) == (True, 2.0, 512.0, 2.0**19)
    # the schedule, as numbers: constant through step 4230 (x = 0.6 exactly), then down to 1/2820 at step 7049
    got = [train_gpt.lr_factor(s, m) for s in (0, 4229, 4230, 4231, 5640, 7049)]
    assert got[:3] == [1.0, 1.0, 1.0] and got[3:] == pytest.approx([0.999645, 0.5, 0.000355], abs=5e-7)
    assert [train_gpt.window_blocks(s, m) for s in (0, 3525, 7050)] == [1, 7, 14]  # 128 -> 1792 tokens
    # the data order: 190 steps per 100M-token shard, so the run reads 38 train shards (37 read as one stream)
    sparse_shards(tmp_path / "data", 39, {38: [(19 * 8 * L, 8 * L + 1)]})
    args = m
    shards = plan_train(args, tmp_path / "data")
    assert len(shards) == 38 and shards[-1].path.name == "fineweb_train_000038.bin"
    windows = train_gpt.TrainWindows(shards, args.train_seq_len, args.windows_per_step, train_gpt.torch.device("cpu"))
    assert reads(windows, args, 7030, 8) == [[("fineweb_train_000038.bin", r * 65_536)] for r in range(8)]
    assert reads(windows, args, 7049, 1) == [[("fineweb_train_000038.bin", 9_961_472 + j * 65_536) for j in range(8)]]
    inputs, targets = windows[7049, 7]
    assert np.array_equal(targets.numpy(), pattern(38, 9_961_472 + 7 * L + 1, L))
    assert 37 * SHARD_TOKENS + 9_961_472 + 8 * L == 3_710_485_760  # the last token the run reads
    sparse_shards(tmp_path / "few", 37, {})  # what the stream order needed: one short, and the fix says how many
    with pytest.raises(
        train_gpt.SpeedrunError, match=r"hold 7,030 steps .* this run needs 7,050.*cached_fineweb10B.py 38"
    ):
        plan_train(m, tmp_path / "few")
