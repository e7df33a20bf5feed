"""HellaSwag (Zellers et al., ACL 2019): commonsense sentence completion, 4 endings per context, for trained GPTs.

Data. The validation split (10,042 items) from the Hugging Face Hub dataset ``Rowan/hellaswag``: its parquet
file ``data/validation-00000-of-00001.parquet`` on the main branch, else the Hub's automatic conversion
``default/validation/0000.parquet`` on the ``refs/convert/parquet`` branch. It is downloaded once into
``data/hellaswag/`` (resumable, checked against the sha256 the Hub publishes, by data/hub.py), or taken from
the Hugging Face cache (HF_HUB_CACHE) when a copy is there; offline with neither, `fetch` raises
`HellaSwagUnavailable` with what to do. A local copy can be given instead (``--hellaswag-file``): the
authors' jsonl (``hellaswag_val.jsonl`` of github.com/rowanz/hellaswag) or a parquet file, with the fields
``ctx``, ``endings`` (4 strings) and ``label`` (0-3, an int or a string).

Scoring. As in llm.c / nanoGPT's hellaswag.py (Karpathy): each candidate is [separator] + ctx + " " + ending,
tokenized with GPT-2's BPE (no other text preprocessing), and scored by the model's cross-entropy on the
ending's tokens only, with the attention window the model ended training with. Two accuracies:

- ``acc``: the ending with the largest total log-probability (the smallest *sum* of its token losses), as
  lm-evaluation-harness's ``acc``;
- ``acc_norm``: the ending with the smallest *mean* per-token loss, as llm.c / nanoGPT's ``acc_norm``
  (lm-evaluation-harness's ``acc_norm`` divides by the ending's length in bytes instead).

Candidates are packed into windows of ``pack_tokens`` tokens for one model call each; every candidate starts
on a block boundary and is its own document (the separator opens it), so under the model's document-causal,
block-aligned window mask it is scored exactly as if it were alone at position 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tools.use.checkpoints import REPO_ROOT, repo_module
from tools.use.tokens import Tokenizer

REPO_ID = "Rowan/hellaswag"
DEFAULT_DIR = REPO_ROOT / "data" / "hellaswag"
# split -> (revision, path in the repository), tried in order
SOURCES: dict[str, list[tuple[str, str]]] = {
    "val": [
        ("main", "data/validation-00000-of-00001.parquet"),
        ("refs/convert/parquet", "default/validation/0000.parquet"),
    ],
    "train": [("main", "data/train-00000-of-00001.parquet"), ("refs/convert/parquet", "default/train/0000.parquet")],
}
ENDINGS = 4


class HellaSwagUnavailable(Exception):
    """The data could not be had (offline and not cached, download failed); one paragraph with what to do."""


@dataclass(frozen=True)
class Item:
    context: str
    endings: tuple[str, ...]
    label: int


# ----------------------------------------------------------------------------------------------- data


def _hub() -> Any:
    """data/hub.py: resumable, digest-checked Hub downloads and the HF cache, shared with the data scripts."""
    return repo_module("data.hub")


def read_items(path: Path) -> list[Item]:
    """Items of a .jsonl (one JSON object per line) or .parquet file; ValueError naming the file and the row."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file (--hellaswag-file wants a .jsonl or .parquet file of HellaSwag items)")
    rows: list[Any]
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path, columns=["ctx", "endings", "label"]).to_pylist()
        except (OSError, pa.ArrowException, KeyError) as e:
            raise ValueError(
                f"{path}: not a readable HellaSwag parquet file with columns ctx, endings, label ({e}); if it was "
                f"downloaded, delete it and run again"
            ) from None
    else:
        rows = []
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: cannot read it as UTF-8 text ({e})") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {n}: not JSON ({e}); expected one HellaSwag item per line") from None
    items = []
    for n, row in enumerate(rows, 1):
        where = f"{path}, {'row' if path.suffix == '.parquet' else 'line'} {n}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object with ctx, endings and label")
        ctx, endings, label = row.get("ctx"), row.get("endings"), row.get("label")
        if not isinstance(ctx, str) or not ctx:
            raise ValueError(f"{where}: 'ctx' must be a non-empty string")
        if not isinstance(endings, list) or len(endings) != ENDINGS or not all(isinstance(e, str) for e in endings):
            raise ValueError(f"{where}: 'endings' must be a list of {ENDINGS} strings")
        if isinstance(label, str) and label.strip().isdigit():
            label = int(label)
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < ENDINGS:
            raise ValueError(
                f"{where}: 'label' must be 0..{ENDINGS - 1}, found {label!r} (the test split has no labels: use val)"
            )
        items.append(Item(ctx, tuple(endings), label))
    if not items:
        raise ValueError(f"{path} holds no items")
    return items


def fetch(split: str = "val", folder: Path = DEFAULT_DIR) -> Path:
    """A local file of the split: in `folder`, in the Hugging Face cache, or downloaded from the Hub into `folder`."""
    hub = _hub()
    sources = SOURCES[split]
    local = folder / f"hellaswag_{split}.parquet"
    if local.is_file():
        return local
    for revision, name in sources:
        cached = hub.cached_file(REPO_ID, name, revision)
        if cached is not None:
            return Path(cached)
    tried = []
    reached = False  # once the Hub has answered, a failure on a later source means "not there", not "offline"
    for revision, name in sources:
        tried.append(f"{name} at {revision}")
        try:
            commit, remote = hub.remote_files(REPO_ID, [name], revision)
        except hub.HubUnreachable as e:
            if not reached:
                raise HellaSwagUnavailable(_unreachable(split, folder, local, str(e))) from None
            continue
        except hub.HubError:
            continue  # e.g. no refs/convert/parquet branch: try the next source
        reached = True
        if name not in remote:
            continue
        try:
            hub.download(REPO_ID, remote[name], local, commit, f"HellaSwag {split}")
        except (hub.DownloadError, hub.HubError) as e:
            raise HellaSwagUnavailable(
                f"downloading HellaSwag's {split} split ({REPO_ID}, {name}) into {local} failed: {e}. Run the same "
                f"command again (a partial download resumes), or pass a local copy with --hellaswag-file."
            ) from None
        except OSError as e:
            raise HellaSwagUnavailable(
                f"cannot write {local}: {e.strerror or e}; pass --hellaswag-dir with a writable folder."
            ) from None
        return local
    raise HellaSwagUnavailable(
        f"the Hugging Face Hub's {REPO_ID} has none of the files this tool knows for the {split} split "
        f"({'; '.join(tried)}): the dataset was reorganised. Pass a local copy with --hellaswag-file (the authors' "
        f"hellaswag_val.jsonl from github.com/rowanz/hellaswag, or a parquet file with ctx, endings, label)."
    )


def _unreachable(split: str, folder: Path, local: Path, reason: str) -> str:
    hub = _hub()
    first = SOURCES[split][0][1]
    return (
        f"could not reach the Hugging Face Hub at {hub.endpoint()} ({reason}) to download HellaSwag's {split} split "
        f"(dataset {REPO_ID}, file {first}), and no copy is in {folder} or in the Hugging Face cache "
        f"({hub.cache_dir()}). Run the same command once on a machine that can reach the Hub (unset HF_HUB_OFFLINE if "
        f"it is set; behind a proxy set HTTPS_PROXY; for a mirror set HF_ENDPOINT): the file lands in {local} and is "
        f"used offline from then on. Or copy that file there from a machine that has it, or pass a local copy with "
        f"--hellaswag-file (the authors' hellaswag_val.jsonl from github.com/rowanz/hellaswag also works)."
    )


# ----------------------------------------------------------------------------------------------- scoring


@dataclass
class Candidate:
    item: int
    ending: int
    tokens: list[int]  # [separator] + context + ending
    ending_start: int  # index in tokens of the ending's first token


@dataclass
class HellaSwagResult:
    items: int = 0
    correct: int = 0  # by the sum of the ending's token losses (acc)
    correct_norm: int = 0  # by their mean (acc_norm)
    predictions: list[tuple[int, int]] = field(default_factory=list)  # (by sum, by mean) per item
    losses: list[list[tuple[float, int]]] = field(default_factory=list)  # per item, per ending: (sum, token count)

    @property
    def acc(self) -> float:
        return self.correct / self.items if self.items else math.nan

    @property
    def acc_norm(self) -> float:
        return self.correct_norm / self.items if self.items else math.nan


def candidates(items: Sequence[Item], tokenizer: Tokenizer, separator: int) -> list[Candidate]:
    out = []
    for i, item in enumerate(items):
        context = [separator, *tokenizer.encode_ordinary(item.context)]
        for j, ending in enumerate(item.endings):
            ending_tokens = tokenizer.encode_ordinary(" " + ending)  # the ending continues the context's sentence
            if not ending_tokens:
                raise ValueError(f"HellaSwag item {i}: ending {j} is empty")
            out.append(Candidate(i, j, context + ending_tokens, len(context)))
    return out


def pack(cands: list[Candidate], pack_tokens: int, block_size: int) -> list[list[tuple[int, Candidate]]]:
    """Greedy packing, in order: [(offset, candidate)] per window; each offset is a multiple of block_size."""
    packs: list[list[tuple[int, Candidate]]] = []
    current: list[tuple[int, Candidate]] = []
    used = 0
    for c in cands:
        size = -(-len(c.tokens) // block_size) * block_size
        if size > pack_tokens:
            raise ValueError(
                f"HellaSwag item {c.item}, ending {c.ending} has {len(c.tokens)} tokens, more than a window of "
                f"{pack_tokens}; pass a larger --pack-tokens (at most the model's sequence length)"
            )
        if used + size > pack_tokens:
            packs.append(current)
            current, used = [], 0
        current.append((used, c))
        used += size
    if current:
        packs.append(current)
    return packs


@torch.no_grad()
def score(
    logits_fn: Callable[[Tensor, Tensor], Tensor],
    args: Any,
    tokenizer: Tokenizer,
    items: Sequence[Item],
    pack_tokens: int,
    device: torch.device,
    window_blocks: int,
    progress: bool = True,
) -> HellaSwagResult:
    """Score every item: logits_fn(input_T, window_blocks) -> (T, V) logits is GPT.logits (or a stand-in)."""
    from tqdm import tqdm

    separator = args.vocab_size - 1
    cands = candidates(items, tokenizer, separator)
    losses: list[list[tuple[float, int]]] = [[(math.nan, 0)] * ENDINGS for _ in items]
    window = torch.tensor(window_blocks, dtype=torch.int32, device=device)
    packs = pack(cands, pack_tokens, args.block_size)
    with tqdm(total=len(items), desc="HellaSwag", unit="item", disable=not progress, mininterval=1.0) as bar:
        finished = 0
        for packed in packs:
            window_T = torch.full((pack_tokens,), separator, dtype=torch.int32)
            positions: list[int] = []
            targets: list[int] = []
            for offset, c in packed:
                window_T[offset : offset + len(c.tokens)] = torch.tensor(c.tokens, dtype=torch.int32)
                # the logits at position p predict token p + 1: the ending's tokens are predicted from ending_start - 1
                positions += range(offset + c.ending_start - 1, offset + len(c.tokens) - 1)
                targets += c.tokens[c.ending_start :]
            logits_TV = logits_fn(window_T.to(device), window)
            token_losses = F.cross_entropy(
                logits_TV[torch.tensor(positions, device=device)].float(),
                torch.tensor(targets, device=device, dtype=torch.long),
                reduction="none",
            ).tolist()
            start = 0
            for _, c in packed:
                n = len(c.tokens) - c.ending_start
                losses[c.item][c.ending] = (math.fsum(token_losses[start : start + n]), n)
                start += n
            done_now = packed[-1][1].item + (1 if packed[-1][1].ending == ENDINGS - 1 else 0)
            bar.update(done_now - finished)
            finished = done_now
    result = HellaSwagResult(items=len(items), losses=losses)
    for item, per_ending in zip(items, losses, strict=True):
        by_sum = min(range(ENDINGS), key=lambda j: per_ending[j][0])
        by_mean = min(range(ENDINGS), key=lambda j: per_ending[j][0] / per_ending[j][1])
        result.predictions.append((by_sum, by_mean))
        result.correct += by_sum == item.label
        result.correct_norm += by_mean == item.label
    return result
