"""Latency harness on the CPU: shapes, timing bookkeeping, and that decode really uses the KV cache."""

import time

import pytest
import torch

from fq_core.errors import ConfigError
from fq_eval.latency import (
    LatencySettings,
    LayerRunner,
    ModelRunner,
    random_model,
    run_latency,
    shape_config,
    time_ms,
)


def llama_params(h, inter, layers, heads, kv_heads, vocab, tied=False):
    """Parameter count of a LLaMA from its dimensions (no biases)."""
    head_dim = h // heads
    attn = h * h * 2 + 2 * h * kv_heads * head_dim
    per_layer = attn + 3 * h * inter + 2 * h
    return vocab * h * (1 if tied else 2) + layers * per_layer + h


@pytest.mark.parametrize(
    ("name", "dims"),
    [("llama-2-7b", (4096, 11008, 32, 32, 32, 32000)), ("llama-3-8b", (4096, 14336, 32, 32, 8, 128256))],
)
def test_paper_shapes_have_the_published_sizes(name, dims):
    model = random_model(name, torch.float16, "meta")  # no memory: shapes only
    n = sum(p.numel() for p in model.parameters())
    assert n == llama_params(*dims)
    assert next(model.parameters()).dtype == torch.float16
    expected_billions = {"llama-2-7b": 6.74, "llama-3-8b": 8.03}[name]
    assert n / 1e9 == pytest.approx(expected_billions, abs=0.01)
    assert shape_config(name, layers=1).num_hidden_layers == 1


def test_unknown_shape_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown model shape 'gpt-5'"):
        shape_config("gpt-5")


def test_time_ms_times_only_the_repeats_and_runs_setup_untimed():
    calls = []

    def run():
        calls.append("run")
        time.sleep(0.02)

    def setup():
        calls.append("setup")
        time.sleep(0.05)

    times = time_ms(run, torch.device("cpu"), warmup=2, repeats=3, setup=setup)
    assert len(times) == 3 and calls == ["setup", "run"] * 5
    assert all(19 <= t < 45 for t in times)  # the 50 ms setup is never counted


@pytest.fixture(scope="module")
def tiny():
    return random_model("tiny", torch.float32, "cpu")


@torch.no_grad()
def test_model_decode_with_cache_is_greedy_generation(tiny):
    runner = ModelRunner(tiny)
    prompt = runner.prompt(2, 12)
    cache, token = runner.prefill(prompt)
    tokens = [token]
    for _ in range(5):
        tokens.append(runner.decode(cache, tokens[-1], 1))
    generated = tiny.generate(prompt, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    assert torch.equal(torch.cat(tokens, dim=1), generated[:, 12:])


@torch.no_grad()
def test_layer_decode_step_attends_to_the_cache(tiny):
    """One cached step of layer 0 equals the last position of the layer run on the whole sequence."""
    runner = LayerRunner(tiny)
    x = runner.prompt(3, 9)
    full = runner._step(x, None, 0)
    cache, _ = runner.prefill(x[:, :8])
    assert cache.get_seq_length() == 8
    step = runner._step(x[:, 8:], cache, 8)
    torch.testing.assert_close(step, full[:, 8:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scope", ["model", "layer"])
def test_run_latency_reports_medians_and_throughput(tiny, scope):
    settings = LatencySettings(
        scope=scope,
        prefill_seqlen=32,
        decode_batches=(1, 3),
        decode_prompt=8,
        decode_tokens=2,
        warmup=0,
        repeats=3,
    )
    rows = run_latency(tiny, settings)
    assert [(r["phase"], r["batch"]) for r in rows] == [("prefill", 1), ("decode", 1), ("decode", 3)]
    for row in rows:
        assert row["scope"] == scope and row["ms_min"] <= row["ms"] <= row["ms_max"]
        assert row["tokens_per_s"] == pytest.approx(row["tokens"] * 1e3 / row["ms"])
    assert rows[0]["tokens"] == 32 and rows[2]["tokens"] == 3 and rows[2]["steps"] == 2


def test_settings_reject_nonsense():
    with pytest.raises(ConfigError, match="scope"):
        LatencySettings(scope="kernel")
    with pytest.raises(ConfigError, match="repeats"):
        LatencySettings(repeats=0)
    with pytest.raises(ConfigError, match="decode batches"):
        LatencySettings(decode_batches=(0,))
