"""`fq generate`'s engine: a checkpoint's real-int4 model continues a prompt, streaming the tokens."""

from __future__ import annotations

import os
from typing import TextIO

import torch
from transformers import PreTrainedTokenizerBase, TextStreamer

from fq_core.checkpoint import read_config
from fq_core.errors import ConfigError
from fq_core.models import load_tokenizer
from fq_kernels.runtime.loader import check_supported, load_int4_model
from fq_kernels.runtime.static_decode import StaticDecoder

ENGINES = ("static", "transformers")


def checkpoint_tokenizer(
    checkpoint_dir: str | os.PathLike[str], tokenizer: str | None = None
) -> PreTrainedTokenizerBase:
    """`tokenizer` ('default' or a local model), else the one of the model the checkpoint was made from.

    fq calib records that model in `options.source` (as given: 'default', or a path); other producers
    may not, and then the user has to say.
    """
    source = tokenizer or read_config(checkpoint_dir).options.get("source")
    if not source:
        raise ConfigError(
            f"{checkpoint_dir} does not record the model it was made from (options.source): "
            "pass --tokenizer default|PATH"
        )
    return load_tokenizer(source)


class _Streamer(TextStreamer):
    """TextStreamer writing to a chosen stream (it prints to stdout), flushed token by token."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stream: TextIO) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.stream = stream

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.stream.write(text + ("\n" if stream_end else ""))
        self.stream.flush()


@torch.no_grad()
def stream_generate(
    checkpoint_dir: str | os.PathLike[str],
    prompt: str,
    out: TextIO,
    max_new_tokens: int = 64,
    device: torch.device | str = "cpu",
    tokenizer: str | None = None,
    engine: str = "static",
) -> torch.Tensor:
    """Greedy continuation of `prompt`, written to `out` as it is generated; returns the new token ids.

    engine: "static" (`StaticDecoder`: preallocated int4 cache, CUDA-graph steps on CUDA) or
    "transformers" (`model.generate`, whose int4 cache layer grows and is dequantised every step).
    Cheap checks (prompt, engine, checkpoint config) come before the tokenizer and the model load.
    """
    if not prompt.strip():
        raise ConfigError("the prompt is empty: pass the text to continue as the argument of fq generate")
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r} is unknown: use {' or '.join(ENGINES)}")
    check_supported(read_config(checkpoint_dir), kv_bits=None)
    tok = checkpoint_tokenizer(checkpoint_dir, tokenizer)
    model = load_int4_model(checkpoint_dir, device=device)
    ids = tok(prompt, return_tensors="pt").input_ids.to(model.device)
    if engine == "static":
        decoder = StaticDecoder(model, max_batch=1, max_len=ids.shape[1] + max_new_tokens)
        return decoder.generate(ids, max_new_tokens, streamer=_Streamer(tok, out))[0]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    output = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=pad,
        streamer=_Streamer(tok, out),
    )
    return output[0, ids.shape[1] :]
