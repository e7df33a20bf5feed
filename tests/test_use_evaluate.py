"""`python -m tools evaluate`: val loss against a direct computation, HellaSwag scoring on a fixture with a model
whose logits the test controls, packing against scoring alone, and getting the data (cache, Hub, offline)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import constants

from conftest import REPO_ROOT
from data.shards import read_tokens
from helpers.data_fakehub import FakeHub, fill_hf_cache
from helpers.use_factory import (
    SMALL,
    SMOKE,
    WordTokenizer,
    one_thread,
    random_gpt,
    random_tokens,
    write_checkpoint,
    write_shard,
)
from tools.cli import main
from tools.use import hellaswag as hs
from tools.use import tokens as tok
from tools.use.generate import final_window_blocks


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture(scope="module")
def model() -> Any:
    return random_gpt(SMALL, seed=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, model: Any) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("run"), model, SMALL)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    write_shard(folder / "toy_val_000000.bin", random_tokens(700, SMALL.vocab_size, seed=1))
    write_shard(folder / "toy_val_000001.bin", random_tokens(900, SMALL.vocab_size, seed=2))  # windows span both
    write_shard(folder / "toy_train_000001.bin", random_tokens(600, SMALL.vocab_size, seed=3))
    return folder


# ----------------------------------------------------------------------------------------------- val loss


def reference_loss(model: Any, stream: np.ndarray, windows: int, seq_len: int) -> float:
    """Mean over windows of the cross-entropy of GPT.logits on each window, read straight from the token stream."""
    window = torch.tensor(final_window_blocks(SMALL), dtype=torch.int32)
    losses = []
    for j in range(windows):
        chunk = torch.from_numpy(stream[j * seq_len : (j + 1) * seq_len + 1].astype(np.int64))
        losses.append(F.cross_entropy(model.logits(chunk[:-1].int(), window), chunk[1:]).item())
    return sum(losses) / windows


def shard_stream(folder: Path, split: str) -> np.ndarray:
    return np.concatenate([np.asarray(read_tokens(p)) for p in sorted(folder.glob(f"*_{split}_*.bin"))])


def evaluate_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["evaluate", *argv, "--json"]) == 0, capsys.readouterr().err
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def test_val_loss_matches_a_direct_computation(
    checkpoint: Path, shards: Path, model: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    got = evaluate_json(["--checkpoint", str(checkpoint), "--data", str(shards)], capsys)["val_loss"]
    assert got["tokens"] == SMALL.val_tokens and got["windows"] == 8 and got["seq_len"] == 128
    assert got["shards"] == ["toy_val_000000.bin", "toy_val_000001.bin"]
    assert got["val_loss"] == pytest.approx(reference_loss(model, shard_stream(shards, "val"), 8, 128), abs=1e-5)

    got = evaluate_json(
        [
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(shards),
            "--tokens",
            "300",
            "--seq-len",
            "64",
            "--split",
            "train",
        ],
        capsys,
    )["val_loss"]
    assert (got["tokens"], got["windows"], got["split"]) == (256, 4, "train")
    assert got["val_loss"] == pytest.approx(reference_loss(model, shard_stream(shards, "train"), 4, 64), abs=1e-5)

    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(shards)]) == 0
    assert "val_loss " in capsys.readouterr().out


def test_val_loss_errors(tmp_path: Path, checkpoint: Path, shards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["evaluate", "--checkpoint", str(checkpoint)]
    assert main([*base, "--data", str(tmp_path / "none")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main([*base, "--data", str(shards), "--split", "test"]) == 2  # argparse: val or train
    assert main([*base, "--data", str(shards), "--tokens", "100000"]) == 2
    assert "hold 1,600 tokens, fewer than the 99,969 that 781 windows" in capsys.readouterr().err
    assert main([*base, "--data", str(shards), "--seq-len", "100"]) == 2
    assert "multiple of the block size 16" in capsys.readouterr().err
    wide = tmp_path / "wide"
    write_shard(wide / "x_val_000000.bin", random_tokens(2000, 50257, seed=4))
    assert main([*base, "--data", str(wide)]) == 2
    assert "another tokenizer" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- HellaSwag


WORDS = ["Ctx", " so", " right", " wrong", " a", " b", " c", " d", " e", " f", " g"]
VOCAB = 64  # the separator is 63


class BigramModel:
    """Logits that depend only on the current token: logits[t] = table[input[t]], all zero but the pairs set here."""

    def __init__(self, pairs: dict[tuple[str, str], float]) -> None:
        self.args = SimpleNamespace(vocab_size=VOCAB, block_size=16)
        self.table = torch.zeros(VOCAB, VOCAB)
        for (a, b), logit in pairs.items():
            self.table[WORDS.index(a), WORDS.index(b)] = logit
        self.calls: list[int] = []

    def logits(self, input_T: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        self.calls.append(input_T.numel())
        return self.table[input_T.long()]

    def loss(self, prev: str, nxt: str) -> float:
        row = self.table[WORDS.index(prev)]
        return float(torch.logsumexp(row, 0) - row[WORDS.index(nxt)])


def item(ctx: str, endings: list[str], label: int) -> dict[str, Any]:
    return {"ind": 0, "activity_label": "x", "ctx": ctx, "endings": endings, "label": label, "split": "val"}


# Item 0: " right" is one fairly likely token (sum = mean = loss(so, right)); " a b c" is three very likely tokens,
# a larger sum but a smaller mean. acc (sum) picks ending 0, acc_norm (mean) picks ending 1, the label.
# Item 1: " right" after " so" beats everything by both measures; the label says so. Item 2: both measures pick
# ending 3 (" d", very likely) but the label is 0: both wrong.
FIXTURE = [  # endings as in the data: without the leading space that joins them to the context
    item("Ctx so", ["right", "a b c", "wrong", "e"], 1),
    item("Ctx so", ["wrong", "e", "right", "f"], 2),
    item("Ctx", ["e", "f", "g", "d"], 0),
]
PAIRS = {("so", "right"): 6.0, ("so", "a"): 5.5, ("a", "b"): 8.0, ("b", "c"): 8.0, ("Ctx", "d"): 6.0}


def bigram() -> BigramModel:
    return BigramModel({(a if a == "Ctx" else " " + a, " " + b): v for (a, b), v in PAIRS.items()})


def write_jsonl(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return path


def test_hellaswag_scoring_on_the_fixture(tmp_path: Path) -> None:
    fake = bigram()
    right, abc = fake.loss(" so", " right"), [fake.loss(" so", " a"), fake.loss(" a", " b"), fake.loss(" b", " c")]
    assert right < sum(abc) and sum(abc) / 3 < right  # the fixture's premise: acc and acc_norm disagree on item 0

    items = hs.read_items(write_jsonl(tmp_path / "fixture.jsonl", FIXTURE))
    tokenizer = WordTokenizer(WORDS)
    r = hs.score(fake.logits, fake.args, tokenizer, items, pack_tokens=64, device=torch.device("cpu"), window_blocks=1)
    assert r.predictions == [(0, 1), (2, 2), (3, 3)]
    assert (r.items, r.correct, r.correct_norm) == (3, 1, 2)
    assert r.acc == pytest.approx(1 / 3) and r.acc_norm == pytest.approx(2 / 3)
    assert r.losses[0][0] == (pytest.approx(right), 1)
    assert r.losses[0][1] == (pytest.approx(sum(abc)), 3)
    assert fake.calls == [64, 64, 64]  # 12 candidates of one block each, 4 per call


def test_packed_scoring_equals_scoring_each_candidate_alone(model: Any) -> None:
    """Real model, real window rule: a candidate's losses do not depend on what shares its window."""
    words = ["Ctx"] + [f" w{i}" for i in range(1, SMALL.vocab_size - 1)]
    tokenizer = WordTokenizer(words)
    rng = np.random.default_rng(0)

    def words_of(n: int) -> str:  # " wA wB ..."
        return "".join(words[i] for i in rng.integers(1, len(words), n))

    def new_item(label: int) -> hs.Item:
        context = "Ctx" + words_of(int(rng.integers(3, 30)))
        return hs.Item(context, tuple(words_of(int(rng.integers(1, 12))).lstrip() for _ in range(4)), label)

    items = [new_item(0), new_item(1), new_item(3)]
    w = final_window_blocks(SMALL)
    r = hs.score(model.logits, SMALL, tokenizer, items, pack_tokens=128, device=torch.device("cpu"), window_blocks=w)
    window = torch.tensor(w, dtype=torch.int32)
    for c in hs.candidates(items, tokenizer, SMALL.vocab_size - 1):
        padded = c.tokens + [SMALL.vocab_size - 1] * (-len(c.tokens) % SMALL.block_size)
        logits = model.logits(torch.tensor(padded, dtype=torch.int32), window)
        targets = torch.tensor(c.tokens[c.ending_start :])
        alone = F.cross_entropy(logits[c.ending_start - 1 : len(c.tokens) - 1], targets, reduction="sum").item()
        total, count = r.losses[c.item][c.ending]
        assert count == len(targets) and total == pytest.approx(alone, rel=1e-5, abs=1e-5)


def test_reading_items_from_jsonl_and_parquet(tmp_path: Path) -> None:
    from_jsonl = hs.read_items(write_jsonl(tmp_path / "a.jsonl", FIXTURE))
    table = pa.table(
        {
            "ctx": [i["ctx"] for i in FIXTURE],
            "endings": [i["endings"] for i in FIXTURE],
            "label": [str(i["label"]) for i in FIXTURE],  # the Hub's parquet stores labels as strings
        }
    )
    pq.write_table(table, tmp_path / "a.parquet")
    assert hs.read_items(tmp_path / "a.parquet") == from_jsonl
    assert [i.label for i in from_jsonl] == [1, 2, 0]

    cases = {
        "not JSON": "{oops\n",
        "'endings' must be a list of 4 strings": json.dumps(dict(FIXTURE[0], endings=["a"])) + "\n",
        "the test split has no labels": json.dumps(dict(FIXTURE[0], label="")) + "\n",
        "'ctx' must be a non-empty string": json.dumps(dict(FIXTURE[0], ctx=None)) + "\n",
    }
    for expected, text in cases.items():
        (tmp_path / "bad.jsonl").write_text(json.dumps(FIXTURE[0]) + "\n" + text)
        with pytest.raises(ValueError, match=expected) as info:
            hs.read_items(tmp_path / "bad.jsonl")
        assert "bad.jsonl, line 2" in str(info.value)
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match="not a readable HellaSwag parquet file"):
        hs.read_items(tmp_path / "bad.parquet")


def parquet_bytes(tmp_path: Path) -> bytes:
    table = pa.table(
        {"ctx": [i["ctx"] for i in FIXTURE], "endings": [i["endings"] for i in FIXTURE], "label": ["1", "2", "0"]}
    )
    pq.write_table(table, tmp_path / "hub.parquet")
    return (tmp_path / "hub.parquet").read_bytes()


def test_fetch_uses_the_hugging_face_cache_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    content = parquet_bytes(tmp_path)
    fill_hf_cache(tmp_path / "hub", hs.REPO_ID, {"data/validation-00000-of-00001.parquet": content})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    path = hs.fetch("val", tmp_path / "hellaswag")
    assert path.read_bytes() == content and len(hs.read_items(path)) == 3


def test_fetch_downloads_from_the_hub_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    content = parquet_bytes(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub(hs.REPO_ID, {"data/validation-00000-of-00001.parquet": content}) as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        path = hs.fetch("val", tmp_path / "hellaswag")
        assert path == tmp_path / "hellaswag" / "hellaswag_val.parquet" and path.read_bytes() == content
        asked = len(hub.requests)
        assert hs.fetch("val", tmp_path / "hellaswag") == path and len(hub.requests) == asked  # no second download
    with FakeHub(hs.REPO_ID, {"data/other.parquet": content}) as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        with pytest.raises(hs.HellaSwagUnavailable, match="none of the files this tool knows"):
            hs.fetch("val", tmp_path / "elsewhere")


@pytest.mark.slow  # launches a Python process
def test_offline_without_data_is_one_paragraph(tmp_path: Path, checkpoint: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), HF_HUB_CACHE=str(tmp_path / "hub"))
    result = subprocess.run(
        [sys.executable, "-m", "tools", "evaluate", "--checkpoint", str(checkpoint), "--hellaswag"]
        + ["--hellaswag-dir", str(tmp_path / "hs")],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    err = result.stderr.strip()
    assert err.startswith("error: could not reach the Hugging Face Hub") and "\n" not in err
    assert "HF_HUB_OFFLINE=1 is set" in err and "--hellaswag-file" in err and str(tmp_path / "hs") in err


def test_hellaswag_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    args = dataclasses.replace(SMOKE, vocab_size=tok.GPT2_VOCAB_SIZE)
    gpt = random_gpt(args, seed=9)
    ckpt = write_checkpoint(tmp_path / "run", gpt, args, optimizer=False)
    fixture = write_jsonl(tmp_path / "fixture.jsonl", FIXTURE)
    tokenizer = WordTokenizer(WORDS)
    monkeypatch.setattr(tok, "load_tokenizer", lambda vocab_size: tokenizer)
    got = evaluate_json(["--checkpoint", str(ckpt), "--hellaswag-file", str(fixture), "--limit", "2"], capsys)
    h = got["hellaswag"]
    assert "val_loss" not in got and h["items"] == 2 and h["source"] == str(fixture)
    r = hs.score(
        gpt.logits, args, tokenizer, hs.read_items(fixture)[:2], 256, torch.device("cpu"), final_window_blocks(args)
    )
    assert (h["acc"], h["acc_norm"]) == (r.acc, r.acc_norm)
    assert main(["evaluate", "--checkpoint", str(ckpt), "--hellaswag-file", str(fixture)]) == 0
    out = capsys.readouterr().out
    assert "acc_norm" in out and "(sum of the ending's log-probs)" in out and "(mean per-token loss)" in out

    small = write_checkpoint(tmp_path / "small", random_gpt(SMOKE), SMOKE)
    monkeypatch.undo()
    assert main(["evaluate", "--checkpoint", str(small), "--hellaswag-file", str(fixture)]) == 2
    assert "no tokenizer" in capsys.readouterr().err
    assert math.isnan(hs.HellaSwagResult().acc)


@pytest.mark.slow  # a 2-process torchrun
def test_evaluate_under_torchrun_equals_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Val loss and HellaSwag with the work shared between 2 processes (gloo), against one process."""
    args = dataclasses.replace(SMOKE, vocab_size=tok.GPT2_VOCAB_SIZE, val_tokens=8 * 256)
    ckpt = write_checkpoint(tmp_path / "run", random_gpt(args, seed=10), args, optimizer=False)
    write_shard(tmp_path / "data" / "x_val_000000.bin", random_tokens(8 * 256 + 1, args.vocab_size, seed=5))
    fixture = write_jsonl(tmp_path / "fixture.jsonl", FIXTURE)
    argv = ["evaluate", "--checkpoint", str(ckpt), "--data", str(tmp_path / "data"), "--hellaswag-file", str(fixture)]
    monkeypatch.setattr(tok, "load_tokenizer", lambda vocab_size: WordTokenizer(WORDS))
    single = evaluate_json(argv[1:], capsys)

    script = tmp_path / "evaluate_ranks.py"
    script.write_text(
        f"""
import sys
sys.path[:0] = [{str(REPO_ROOT / "tests")!r}, {str(REPO_ROOT)!r}]
from helpers.use_factory import WordTokenizer
from tools.use import tokens
from tools.cli import main
tokens.load_tokenizer = lambda vocab_size: WordTokenizer({WORDS!r})  # GPT-2's BPE files are not here
sys.exit(main(sys.argv[1:]))
"""
    )
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
        + [*argv, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stderr
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1  # rank 0 reports
    both = json.loads(lines[0])
    assert both["val_loss"]["val_loss"] == pytest.approx(single["val_loss"]["val_loss"], abs=1e-5)
    assert both["hellaswag"] == single["hellaswag"] and both["hellaswag"]["items"] == 3
