"""tools/use/generate.py and `python -m tools sample`: the KV-cache decoder against GPT.logits, and sampling's
promises (greedy at temperature 0, deterministic for a seed, top-k honoured, never a padding token)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from helpers.use_factory import SMALL, SMOKE, WordTokenizer, one_thread, random_gpt, write_checkpoint
from tools.cli import main
from tools.use import tokens as tok
from tools.use.generate import CachedDecoder, SamplingSettings, final_window_blocks, sample

SEP = SMALL.vocab_size - 1


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


def reference_logits(model: torch.nn.Module, seq: list[int]) -> torch.Tensor:
    """GPT.logits on the sequence padded (with separators, each its own document) to a multiple of block_size."""
    bs = model.args.block_size
    padded = seq + [model.args.vocab_size - 1] * (-len(seq) % bs)
    window = torch.tensor(final_window_blocks(model.args), dtype=torch.int32)
    return model.logits(torch.tensor(padded, dtype=torch.int32), window)[: len(seq)]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return random_gpt(SMALL, seed=1)


def random_sequence(T: int, seed: int, separators: list[int]) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, SEP, (T,), generator=g).tolist()
    seq[0] = SEP
    for p in separators:
        seq[p] = SEP
    return seq


@pytest.mark.parametrize(
    "T, separators, chunks",
    [
        (128, [], [128]),  # longer than the window (3 blocks of 16 = 48 tokens), one chunk
        (128, [37, 38, 90], [1] * 128),  # documents inside, token by token
        (100, [16, 61], [5, 40, 1, 1, 30, 23]),  # not a multiple of the block size, ragged chunks
        (128, [127], [64, 64]),
    ],
)
def test_cached_logits_equal_gpt_logits(
    model: torch.nn.Module, T: int, separators: list[int], chunks: list[int]
) -> None:
    assert T > SMALL.window_final_tokens
    seq = random_sequence(T, seed=T + len(chunks), separators=separators)
    ref = reference_logits(model, seq)
    decoder = CachedDecoder(model, batch=2, max_len=T)
    outs, pos = [], 0
    for c in chunks:
        outs.append(decoder.extend(torch.tensor(seq[pos : pos + c]).repeat(2, 1)))
        pos += c
    got = torch.cat(outs, dim=1)
    assert got.shape == (2, T, ref.size(-1))
    assert ref.std() > 1.0  # the logits really vary: the comparison means something
    for row in got:
        torch.testing.assert_close(row, ref, atol=5e-5, rtol=1e-5)


def test_the_window_matters_so_the_test_above_can_fail(model: torch.nn.Module) -> None:
    seq = random_sequence(128, seed=0, separators=[])
    decoder = CachedDecoder(model, batch=1, max_len=128, window_blocks=final_window_blocks(SMALL) + 2)
    wide = decoder.extend(torch.tensor([seq]))[0]
    assert (wide[64:] - reference_logits(model, seq)[64:]).abs().max() > 1e-2


def test_generation_past_the_trained_length_uses_longer_rotary_tables(model: torch.nn.Module) -> None:
    out = sample(model, [1, 2, 3], SamplingSettings(max_new_tokens=200, temperature=0, stop_at_separator=False))
    assert len(out[0]) == 200 and max(SMALL.train_seq_len, SMALL.val_seq_len) < 204


def test_greedy_is_the_argmax_rollout_of_gpt_logits(model: torch.nn.Module) -> None:
    prompt = [5, 9, 200, 31]
    got = sample(model, prompt, SamplingSettings(max_new_tokens=30, temperature=0, num_samples=2, seed=7))
    seq = [SEP, *prompt]
    expected = []
    for _ in range(30):
        nxt = int(reference_logits(model, seq)[-1, : SMALL.vocab_size].argmax())
        if nxt == SEP:
            break
        expected.append(nxt)
        seq.append(nxt)
    assert got == [expected, expected]


def test_sampling_is_deterministic_for_a_seed(model: torch.nn.Module) -> None:
    s = SamplingSettings(max_new_tokens=40, temperature=1.0, num_samples=3, seed=11, stop_at_separator=False)
    a, b = sample(model, [1, 2], s), sample(model, [1, 2], s)
    c = sample(model, [1, 2], dataclasses.replace(s, seed=12))
    assert a == b and a != c
    assert len({tuple(x) for x in a}) == 3  # the samples of one batch differ from each other


def test_top_k_is_honoured(model: torch.nn.Module) -> None:
    k = 3
    s = SamplingSettings(max_new_tokens=25, temperature=50.0, top_k=k, num_samples=4, seed=0, stop_at_separator=False)
    prompt = [7, 8]
    seen_beyond_argmax = False
    for row in sample(model, prompt, s):
        seq = [SEP, *prompt]
        for t in row:
            logits = reference_logits(model, seq)[-1, : SMALL.vocab_size]
            top = logits.topk(k).indices.tolist()
            assert t in top, f"token {t} is not among the top {k} {top}"
            seen_beyond_argmax |= t != top[0]
            seq.append(t)
    assert seen_beyond_argmax  # at a high temperature it samples, not just argmax


def test_padding_tokens_are_never_sampled() -> None:
    args = dataclasses.replace(SMALL, vocab_size=500)  # the head has 512 rows: 12 are padding
    model = random_gpt(args, seed=2)
    with torch.no_grad():
        model.lm_head.weight[500:] = model.lm_head.weight[:500].abs().max() * 10  # padding rows win every argmax
    full = reference_logits(model, [499, 1])[-1]
    assert int(full.argmax()) >= 500
    out = sample(model, [1], SamplingSettings(max_new_tokens=20, temperature=0, stop_at_separator=False))[0]
    assert all(t < 500 for t in out)
    out = sample(model, [1], SamplingSettings(max_new_tokens=20, temperature=5.0, stop_at_separator=False))[0]
    assert all(t < 500 for t in out)


def test_a_sample_ends_at_the_separator() -> None:
    model = random_gpt(SMALL, seed=4)
    with torch.no_grad():  # make the separator the likeliest token after any input
        model.lm_head.weight[SEP] = model.lm_head.weight.abs().max() * 5 * torch.sign(model.lm_head.weight[SEP])
    full = sample(model, [3], SamplingSettings(max_new_tokens=10, temperature=0, stop_at_separator=False))[0]
    assert SEP in full
    assert sample(model, [3], SamplingSettings(max_new_tokens=10, temperature=0))[0] == full[: full.index(SEP)]


def test_bad_settings_are_usage_errors(model: torch.nn.Module) -> None:
    for bad in (dict(temperature=-1.0), dict(top_k=0), dict(max_new_tokens=0), dict(num_samples=0)):
        with pytest.raises(ValueError):
            sample(model, [1], SamplingSettings(**bad))
    with pytest.raises(ValueError, match="outside this model's vocabulary"):
        sample(model, [SMALL.vocab_size], SamplingSettings())


# ----------------------------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("run"), random_gpt(SMOKE, seed=6), SMOKE)


def test_sample_command_with_token_ids(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sample", "--checkpoint", str(checkpoint), "--prompt-tokens", "3,4,5", "--max-new-tokens", "12"]
    assert main([*argv, "--seed", "3", "--num-samples", "2", "--ignore-separator"]) == 0
    out = capsys.readouterr().out
    assert "----- sample 1/2 (12 tokens after 3 prompt tokens) -----" in out and "----- sample 2/2" in out
    assert main([*argv, "--seed", "3", "--num-samples", "2", "--ignore-separator"]) == 0
    assert capsys.readouterr().out == out  # same seed, same samples
    assert main([*argv, "--temperature", "0", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert (
        obj["prompt_tokens"] == [3, 4, 5] and obj["text"] is None and all(t < SMOKE.vocab_size for t in obj["tokens"])
    )


def test_sample_command_usage_errors(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["sample", "--checkpoint", str(checkpoint)]
    assert main([*base, "--prompt", "hello"]) == 2
    assert "--prompt-tokens" in capsys.readouterr().err  # a 512-token vocabulary has no text
    assert main([*base, "--prompt-tokens", "1,x"]) == 2
    assert main([*base, "--prompt-tokens", "1,512"]) == 2
    assert "not below this model's vocabulary size 512" in capsys.readouterr().err
    assert main([*base, "--prompt-tokens", "1", "--top-k", "0"]) == 2
    assert main(["sample", "--checkpoint", str(checkpoint.parent / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_text_prompts_go_through_the_tokenizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = dataclasses.replace(SMOKE, vocab_size=tok.GPT2_VOCAB_SIZE)
    ckpt = write_checkpoint(tmp_path, random_gpt(args, seed=8), args, optimizer=False)
    words = ["The", " cat", " sat"] + [f" w{i}" for i in range(3, tok.GPT2_VOCAB_SIZE)]
    monkeypatch.setattr(tok, "load_tokenizer", lambda vocab_size: WordTokenizer(words))
    argv = ["sample", "--checkpoint", str(ckpt), "--prompt", "The cat", "--max-new-tokens", "5", "--temperature", "0"]
    assert main([*argv, "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["prompt_tokens"] == [0, 1] and obj["text"] == "".join(words[t] for t in obj["tokens"])
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[1] == "The cat" + obj["text"]


def test_offline_tokenizer_is_one_paragraph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tiktoken

    def offline(name: str) -> None:
        raise ConnectionError("Failed to resolve 'openaipublic.blob.core.windows.net'")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(tok.TokenizerUnavailable, match="TIKTOKEN_CACHE_DIR"):
        tok.load_tokenizer(tok.GPT2_VOCAB_SIZE)
    assert tok.load_tokenizer(512) is None
    args = dataclasses.replace(SMOKE, vocab_size=tok.GPT2_VOCAB_SIZE)
    ckpt = write_checkpoint(tmp_path, random_gpt(args, seed=8), args, optimizer=False)
    assert main(["sample", "--checkpoint", str(ckpt), "--prompt", "hi"]) == 1
    err = capsys.readouterr().err
    assert "could not load GPT-2's tokenizer" in err and "--prompt-tokens" in err and "Traceback" not in err
    assert main(["sample", "--checkpoint", str(ckpt), "--prompt-tokens", "50256,1", "--max-new-tokens", "2"]) == 0
