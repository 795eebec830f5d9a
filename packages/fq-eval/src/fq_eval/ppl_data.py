"""The token streams that perplexity is measured on: WikiText-2, C4 and the pydoc tail.

Each protocol is the published one, rebuilt from what the reference code (GPTQ, QuaRot, FlatQuant
`data_utils`) does, so our numbers are comparable with the papers':

- wikitext2: the `wikitext-2-raw-v1` test split, rows joined with "\\n\\n", tokenised whole with the
  tokenizer's defaults (a LLaMA tokenizer adds one BOS at the very start).
- c4: what QuaRot and FlatQuant report as C4 (GPTQ's `c4_new`): the first 1100 documents of
  `en/c4-validation.00000-of-00008.json.gz` joined with " ", tokenised whole, cut to 256 x seqlen.
- c4-gptq: GPTQ's original C4: python `random` seeded with 0 draws a document until one has more
  than seqlen tokens, then a random window of seqlen in it; 256 such windows, concatenated.
- pydoc: the embedded corpus's fixed evaluation tail (last 16 windows of 512, no BOS), which
  calibration never draws from.

Perplexity then cuts the stream into non-overlapping windows (`fq_eval.perplexity`). Data comes from
local files only, read with the `datasets` library: a `save_to_disk` folder, a hub snapshot folder,
parquet / JSON(L)(.gz) files, or the raw text file. `datasets` is imported inside the functions so
that `fq` starts without it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fq_core.data import pydoc_text, split_calibration_eval, tokenize
from fq_core.errors import ConfigError, DataError

if TYPE_CHECKING:
    from datasets import Dataset

PYDOC_WINDOWS, PYDOC_SEQLEN = 16, 512
"""The pydoc protocol: the last 16 windows of 512 tokens (fq-calib never calibrates on them)."""
PAPER_SEQLEN = 2048
C4_DOCS, C4_WINDOWS, C4_SEED = 1100, 256, 0
C4_SHARD = "c4-validation.00000-of-00008.json.gz"


@dataclass(frozen=True)
class Source:
    """Where a dataset is found locally, and how to tell the user what to provide."""

    hub_id: str
    """The dataset repo the reference loads; also the folder name under --data-dir."""
    split: str
    patterns: tuple[str, ...]
    """Files to look for inside a folder that is not a `save_to_disk` folder."""
    hint: str


SOURCES = {
    "wikitext2": Source(
        "Salesforce/wikitext",
        "test",
        ("**/wikitext-2-raw-v1/test-*.parquet", "**/wiki.test.raw"),
        "wiki.test.raw, or wikitext-2-raw-v1/test-00000-of-00001.parquet of the Salesforce/wikitext "
        "dataset repo, or a `datasets` save_to_disk folder of its test split",
    ),
    "c4": Source(
        "allenai/c4",
        "validation",
        (f"**/{C4_SHARD}",),
        f"en/{C4_SHARD} of the allenai/c4 dataset repo (or a save_to_disk folder of it)",
    ),
}
SOURCES["c4-gptq"] = SOURCES["c4"]
PROTOCOLS = ("wikitext2", "c4", "c4-gptq", "pydoc")


@dataclass(frozen=True)
class PplData:
    """One perplexity protocol's token stream and window length."""

    name: str
    ids: torch.Tensor
    """[N] token ids; perplexity scores its first N // seqlen whole windows."""
    seqlen: int
    source: str

    @property
    def n_windows(self) -> int:
        return self.ids.numel() // self.seqlen


def encode(tokenizer: Any, text: str) -> torch.Tensor:
    """Token ids [N] with the tokenizer's defaults (special tokens included), as the reference."""
    return torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long).reshape(-1)


# ---------------------------------------------------------------------------------------------
# Finding and reading local copies.


def resolve_path(name: str, paths: dict[str, Path], data_dir: Path | None) -> Path:
    """The local path of dataset `name`: --data NAME=PATH first, then DATA_DIR/<hub id>."""
    source = SOURCES[name]
    given = next((key for key in (name, name.split("-")[0]) if key in paths), None)  # c4-gptq reads c4's
    if given is not None:
        path = Path(paths[given]).expanduser()
        if not path.exists():
            raise DataError(f"{name} data {path} does not exist: provide {source.hint}")
        return path
    if data_dir is not None and (Path(data_dir) / source.hub_id).exists():
        return Path(data_dir) / source.hub_id
    where = f" (nothing at {Path(data_dir) / source.hub_id})" if data_dir is not None else ""
    raise DataError(
        f"{name} needs a local copy{where}: pass --data {name}=PATH with PATH {source.hint}, "
        f"or --data-dir DIR holding {source.hub_id}/"
    )


def load_rows(path: Path, source: Source) -> Dataset:
    """The split's rows (a `datasets.Dataset` with a "text" column) from a local file or folder."""
    import datasets

    path = Path(path)
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if source.split not in loaded:
                    raise DataError(f"{path} has no {source.split!r} split (it has {', '.join(loaded)})")
                loaded = loaded[source.split]
            return _with_text(loaded, path)
        files = _first_match(path, source.patterns)
        if not files:
            raise DataError(f"{path} holds no {' or '.join(source.patterns)}: provide {source.hint}")
    else:
        files = [path]
    builder = _builder(files[0])
    kwargs = {"keep_linebreaks": True} if builder == "text" else {}
    rows = datasets.load_dataset(
        builder, data_files={"rows": [str(f) for f in files]}, split="rows", **kwargs
    )
    if builder == "text":
        # The HF wikitext builder turns each whitespace-only line of wiki.*.raw into "".
        rows = rows.map(lambda row: {"text": row["text"] if row["text"].strip() else ""})
    return _with_text(rows, files[0])


def _first_match(folder: Path, patterns: tuple[str, ...]) -> list[Path]:
    """The files of the first pattern that matches anything (e.g. parquet shards before raw text)."""
    for pattern in patterns:
        found = sorted(folder.glob(pattern))
        if found:
            return found
    return []


def _builder(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz")):
        return "json"
    if name.endswith(".arrow"):
        return "arrow"
    return "text"


def _with_text(rows: Dataset, where: Path) -> Dataset:
    if "text" not in rows.column_names:
        raise DataError(f"{where} has no 'text' column (columns: {', '.join(rows.column_names)})")
    return rows


# ---------------------------------------------------------------------------------------------
# The protocols.


def wikitext2_ids(tokenizer: Any, rows: Dataset) -> torch.Tensor:
    return encode(tokenizer, "\n\n".join(rows["text"]))


def c4_ids(tokenizer: Any, rows: Dataset, seqlen: int) -> torch.Tensor:
    """QuaRot/FlatQuant's C4: first 1100 documents joined by " ", the first 256 x seqlen tokens."""
    docs = rows.select(range(min(C4_DOCS, len(rows))))["text"]
    return encode(tokenizer, " ".join(docs))[: C4_WINDOWS * seqlen]


def c4_gptq_ids(
    tokenizer: Any, rows: Dataset, seqlen: int, n_windows: int = C4_WINDOWS, seed: int = C4_SEED
) -> torch.Tensor:
    """GPTQ's C4: n_windows random windows of seqlen, each from a random long-enough document.

    The draws are GPTQ's (`random.seed(seed)`, `randint(0, len(docs) - 1)` until a document is long
    enough, then `randint(0, n - seqlen - 1)`), on a private generator. GPTQ accepts n == seqlen and
    then crashes in the second randint; we skip such a document, which changes nothing else.
    """
    rng = random.Random(seed)
    out = []
    for _ in range(n_windows):
        for _attempt in range(100_000):
            doc = encode(tokenizer, rows[rng.randint(0, len(rows) - 1)]["text"])
            if doc.numel() > seqlen:
                break
        else:
            raise DataError(f"no C4 document has more than {seqlen} tokens: use a shorter --seqlen")
        start = rng.randint(0, doc.numel() - seqlen - 1)
        out.append(doc[start : start + seqlen])
    return torch.cat(out)


def pydoc_ids(tokenizer: Any, seqlen: int = PYDOC_SEQLEN, n_windows: int = PYDOC_WINDOWS) -> torch.Tensor:
    """The embedded corpus's evaluation tail (no BOS, as the reference anchor)."""
    return split_calibration_eval(tokenize(tokenizer, pydoc_text()), n_windows, seqlen)[1]


def load_ppl_data(
    name: str,
    tokenizer: Any,
    seqlen: int | None = None,
    paths: dict[str, Path] | None = None,
    data_dir: Path | None = None,
    status: Callable[[str], None] = lambda message: None,
) -> PplData:
    """The token stream of protocol `name` at `seqlen` (None: the protocol's own, 2048 or 512)."""
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown perplexity dataset {name!r}: use one of {', '.join(PROTOCOLS)}")
    if name == "pydoc":
        seqlen = seqlen or PYDOC_SEQLEN
        return PplData(name, pydoc_ids(tokenizer, seqlen), seqlen, "embedded pydoc corpus, eval tail")
    seqlen = seqlen or PAPER_SEQLEN
    path = resolve_path(name, paths or {}, data_dir)
    status(f"reading {name} from {path}")
    rows = load_rows(path, SOURCES[name])
    status(f"tokenising {name}")
    if name == "wikitext2":
        ids = wikitext2_ids(tokenizer, rows)
    elif name == "c4":
        ids = c4_ids(tokenizer, rows, seqlen)
    else:
        ids = c4_gptq_ids(tokenizer, rows, seqlen)
    return PplData(name, ids, seqlen, str(path))
