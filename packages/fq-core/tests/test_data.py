"""fq_core.data: the pydoc corpus, the fixed split, reference-style calibration windows."""

import random
from pydoc_data.topics import topics

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from fq_core.data import calibration_windows, pydoc_text, read_text, split_calibration_eval, tokenize
from fq_core.errors import DataError


def test_pydoc_text_is_the_sorted_topics_joined_by_blank_lines():
    text = pydoc_text()
    keys = sorted(topics)
    assert text.startswith(topics[keys[0]]) and text.endswith(topics[keys[-1]])
    assert len(text) == sum(len(t) for t in topics.values()) + 2 * (len(topics) - 1)
    assert text[len(topics[keys[0]]) :].startswith("\n\n" + topics[keys[1]])


def test_tokenize_adds_no_special_tokens():
    backend = Tokenizer(models.WordLevel({"<s>": 0, "[UNK]": 1, "hello": 2, "world": 3}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", unk_token="[UNK]")
    assert tokenizer("hello world")["input_ids"] == [0, 2, 3]  # the tokenizer alone adds BOS
    ids = tokenize(tokenizer, "hello world moon")
    assert ids.dtype == torch.long and ids.tolist() == [2, 3, 1]


def test_split_is_disjoint_and_the_tail_is_exact():
    ids = torch.arange(10_000)
    calibration, tail = split_calibration_eval(ids, n_eval_windows=4, seqlen=512)
    assert tail.numel() == 4 * 512 and torch.equal(tail, torch.arange(10_000 - 2048, 10_000))
    assert torch.equal(torch.cat([calibration, tail]), ids)
    assert set(calibration.tolist()).isdisjoint(tail.tolist())
    c2, t2 = split_calibration_eval(ids[None], n_eval_windows=4, seqlen=512)  # [1, N] works too
    assert torch.equal(c2, calibration) and torch.equal(t2, tail)


def test_split_of_a_too_short_corpus_is_a_data_error():
    with pytest.raises(DataError, match="too few"):
        split_calibration_eval(torch.arange(16 * 512), n_eval_windows=16, seqlen=512)


def test_calibration_windows_are_the_references_draws():
    calibration = torch.arange(5_000)
    windows = calibration_windows(calibration, nsamples=8, seqlen=128, seed=0)
    random.seed(0)  # the reference's way, on the global generator
    starts = [random.randint(0, 5_000 - 128 - 1) for _ in range(8)]
    assert windows.shape == (8, 128)
    assert windows[:, 0].tolist() == starts
    for window in windows:  # contiguous slices inside the calibration part
        assert torch.equal(window, torch.arange(window[0], window[0] + 128))
        assert window[-1] < 5_000


def test_calibration_windows_are_reproducible_and_leave_global_random_alone():
    ids = torch.arange(3_000)
    random.seed(123)
    expected_next = random.random()
    random.seed(123)
    a = calibration_windows(ids, 4, 64, seed=1)
    assert random.random() == expected_next
    assert torch.equal(a, calibration_windows(ids, 4, 64, seed=1))
    assert not torch.equal(a, calibration_windows(ids, 4, 64, seed=2))


def test_calibration_windows_never_touch_the_eval_tail():
    ids = torch.arange(20_000)
    calibration, tail = split_calibration_eval(ids, n_eval_windows=16, seqlen=512)
    windows = calibration_windows(calibration, nsamples=64, seqlen=512, seed=0)
    assert windows.max() < tail.min()


def test_read_text(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("Ünïcode text\n", encoding="utf-8")
    assert read_text(path) == "Ünïcode text\n"
    with pytest.raises(DataError, match="does not exist"):
        read_text(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_text(tmp_path / "latin1.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(DataError, match="empty"):
        read_text(tmp_path / "empty.txt")
