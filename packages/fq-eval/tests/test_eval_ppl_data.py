"""Perplexity data protocols: local files through `datasets`, determinism, the reference's formulas."""

import gzip
import json
import math
import random

import datasets
import pytest
import torch
import torch.nn.functional as F

from fq_core.data import pydoc_text, split_calibration_eval, tokenize
from fq_core.errors import ConfigError, DataError
from fq_core.models import load_model
from fq_eval.perplexity import perplexity, windows
from fq_eval.ppl_data import SOURCES, encode, load_ppl_data, load_rows

# WikiText-2-like lines: headings, prose, and whitespace-only separator lines.
RAW_LINES = [" \n", " = Title = \n", " \n", " the list of words and the value \n", " \n"] * 40


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_model(tiny_model_dir)[1]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir)[0]


@pytest.fixture
def raw_file(tmp_path):
    path = tmp_path / "wiki.test.raw"
    path.write_text("".join(RAW_LINES))
    return path


def hf_rows(lines):
    """What the HF wikitext builder yields for these lines: the line, or "" if it is only whitespace."""
    return [line if line.strip() else "" for line in lines]


def test_wikitext2_raw_file_gives_the_hf_rows_joined_by_blank_lines(tokenizer, raw_file):
    data = load_ppl_data("wikitext2", tokenizer, seqlen=16, paths={"wikitext2": raw_file})
    expected = tokenizer("\n\n".join(hf_rows(RAW_LINES)))["input_ids"]
    assert data.ids.tolist() == expected
    assert (data.seqlen, data.source) == (16, str(raw_file))


def test_wikitext2_parquet_snapshot_and_saved_dataset_agree_with_the_raw_file(tokenizer, raw_file, tmp_path):
    rows = datasets.Dataset.from_dict({"text": hf_rows(RAW_LINES)})
    snapshot = tmp_path / "Salesforce" / "wikitext" / "wikitext-2-raw-v1"
    snapshot.mkdir(parents=True)
    rows.to_parquet(str(snapshot / "test-00000-of-00001.parquet"))
    saved = tmp_path / "saved"
    datasets.DatasetDict({"test": rows, "train": rows.select([0])}).save_to_disk(str(saved))

    from_raw = load_ppl_data("wikitext2", tokenizer, paths={"wikitext2": raw_file}).ids
    from_dir = load_ppl_data("wikitext2", tokenizer, data_dir=tmp_path).ids  # DATA_DIR/<hub id>
    from_saved = load_ppl_data("wikitext2", tokenizer, paths={"wikitext2": saved}).ids
    assert torch.equal(from_raw, from_dir) and torch.equal(from_raw, from_saved)


def c4_docs(n):
    rng = random.Random(5)
    words = ["the", "value", "list", "of", "object", "is", "a", "and", "function", "to"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 80))) for _ in range(n)]


@pytest.fixture
def c4_file(tmp_path):
    path = tmp_path / "c4-validation.00000-of-00008.json.gz"
    with gzip.open(path, "wt") as f:
        for i, doc in enumerate(c4_docs(1200)):
            f.write(json.dumps({"text": doc, "timestamp": str(i), "url": f"u{i}"}) + "\n")
    return path


def test_c4_is_the_first_1100_documents_joined_by_spaces_cut_to_256_windows(tokenizer, c4_file):
    seqlen = 8
    data = load_ppl_data("c4", tokenizer, seqlen=seqlen, paths={"c4": c4_file})
    joined = tokenizer(" ".join(c4_docs(1200)[:1100]))["input_ids"]
    assert len(joined) > 256 * seqlen  # the cut matters
    assert data.ids.tolist() == joined[: 256 * seqlen]
    assert data.n_windows == 256


def gptq_c4_reference(tokenizer, docs, seqlen):
    """GPTQ's datautils.get_c4 validation loop, with the global `random` as it is written there."""
    random.seed(0)
    valenc = []
    for _ in range(256):
        while True:
            i = random.randint(0, len(docs) - 1)
            tmp = tokenizer(docs[i])["input_ids"]
            if len(tmp) >= seqlen + 1:  # GPTQ: >= seqlen, then crashes on len == seqlen
                break
        i = random.randint(0, len(tmp) - seqlen - 1)
        valenc += tmp[i : i + seqlen]
    return valenc


def test_c4_gptq_draws_gptqs_windows_deterministically(tokenizer, c4_file):
    seqlen = 32
    first = load_ppl_data("c4-gptq", tokenizer, seqlen=seqlen, paths={"c4": c4_file})
    random.seed(123)  # the global generator's state must not matter
    again = load_ppl_data("c4-gptq", tokenizer, seqlen=seqlen, paths={"c4": c4_file})
    assert torch.equal(first.ids, again.ids)
    assert first.ids.tolist() == gptq_c4_reference(tokenizer, c4_docs(1200), seqlen)
    assert first.n_windows == 256


def test_window_cutting_is_deterministic_and_drops_the_remainder():
    ids = torch.arange(103)
    grid = windows(ids, 10)
    assert grid.shape == (10, 10)
    assert torch.equal(grid.flatten(), ids[:100]) and torch.equal(grid, windows(ids.clone()[None], 10))


def test_pydoc_protocol_is_the_fixed_eval_tail(tokenizer):
    data = load_ppl_data("pydoc", tokenizer, seqlen=32)
    tail = split_calibration_eval(tokenize(tokenizer, pydoc_text()), 16, 32)[1]
    assert torch.equal(data.ids, tail) and data.n_windows == 16


def reference_ppl_eval(model, ids, seqlen):
    """FlatQuant's eval_utils.ppl_eval, transcribed: NLL * seqlen summed, over n * seqlen, exp."""
    n = ids.numel() // seqlen
    nlls = []
    with torch.no_grad():
        for i in range(n):
            batch = ids[None, i * seqlen : (i + 1) * seqlen]
            logits = model(batch).logits
            loss = F.cross_entropy(logits[0, :-1], batch[0, 1:])
            nlls.append(loss.float() * seqlen)
    return math.exp((torch.stack(nlls).sum() / (n * seqlen)).item())


def test_wikitext2_perplexity_equals_the_reference_loop(model, tokenizer, raw_file):
    data = load_ppl_data("wikitext2", tokenizer, seqlen=24, paths={"wikitext2": raw_file})
    assert data.n_windows >= 5
    ours = perplexity(model, data.ids, data.seqlen, batch_size=3)
    assert ours == pytest.approx(reference_ppl_eval(model, data.ids, data.seqlen), rel=1e-6)


def test_missing_data_names_the_file_to_provide(tokenizer, tmp_path):
    with pytest.raises(DataError, match=r"--data wikitext2=PATH .*wiki\.test\.raw") as info:
        load_ppl_data("wikitext2", tokenizer)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match=r"c4-validation\.00000-of-00008\.json\.gz"):
        load_ppl_data("c4", tokenizer, data_dir=tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_ppl_data("c4", tokenizer, paths={"c4": tmp_path / "nope.json.gz"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no"):
        load_ppl_data("wikitext2", tokenizer, paths={"wikitext2": tmp_path / "empty"})


def test_unknown_protocol_and_textless_data_are_clear_errors(tokenizer, tmp_path):
    with pytest.raises(ConfigError, match="unknown perplexity dataset 'ptb'"):
        load_ppl_data("ptb", tokenizer)
    path = tmp_path / "rows.jsonl"
    path.write_text('{"sentence": "a b"}\n')
    with pytest.raises(DataError, match="no 'text' column"):
        load_rows(path, SOURCES["c4"])


def test_encode_keeps_the_tokenizers_special_tokens():
    class Bos:
        def __call__(self, text):
            return {"input_ids": [1, *(ord(c) for c in text)]}

    assert encode(Bos(), "ab").tolist() == [1, 97, 98]
