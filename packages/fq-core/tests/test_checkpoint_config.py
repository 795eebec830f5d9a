"""fq_config.json model: JSON round trip and strict parsing (each bad field gives a one-line error)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from fq_core.checkpoint import (
    SCHEMA_VERSION,
    CheckpointConfig,
    CheckpointConfigError,
    CheckpointVersionError,
    LayerTransforms,
    ModelGeometry,
)
from fq_core.checkpoint.testing import tiny_config
from fq_core.quant import QuantSpec


def _valid_dict() -> dict[str, Any]:
    return {**tiny_config().to_dict(), "files": ["model.safetensors"]}


def test_json_round_trip_is_lossless() -> None:
    data = _valid_dict()
    text = json.dumps(data)
    config = CheckpointConfig.from_dict(json.loads(text))
    assert config.to_dict() == data
    assert config.quant.key == QuantSpec(bits=4, symmetric=False, granularity="group", group_size=8)
    assert config.layers is not None
    assert config.layers[0] == LayerTransforms(
        attn_in=(4, 4), o_in=(2, 8), mlp_in=(4, 4), down_in=(4, 8), k_cache=8
    )
    assert config.model.hf_config == {"model_type": "llama", "hidden_size": 16, "num_hidden_layers": 2}
    assert CheckpointConfig.from_dict(config.to_dict()) == config


def test_documented_field_order_and_values() -> None:
    data = _valid_dict()
    assert list(data) == [
        "schema_version",
        "format",
        "method",
        "quant",
        "options",
        "model",
        "layers",
        "producers",
        "files",
    ]
    assert data["schema_version"] == 1 == SCHEMA_VERSION
    assert data["format"] == "flatquant-checkpoint"
    assert data["layers"][1] == {
        "attn_in": [4, 4],
        "o_in": [2, 8],
        "mlp_in": [4, 4],
        "down_in": [4, 8],
        "k_cache": 8,
    }


def test_rtn_has_null_layers() -> None:
    data = {**tiny_config(method="rtn").to_dict(), "files": ["model.safetensors"]}
    assert data["layers"] is None
    assert CheckpointConfig.from_dict(data).layers is None


def test_geometry_excludes_hf_config() -> None:
    model = tiny_config().model
    assert "hf_config" not in model.geometry()
    assert ModelGeometry.from_dict(model.to_dict()) == model


def _set(path: str, value: Any) -> Any:
    """A mutation of the valid dict: set (or with value=..., delete) the dotted `path`."""

    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        key: Any = int(last) if isinstance(target, list) else last
        if value is ...:
            del target[key]
        else:
            target[key] = value

    return mutate


BAD_CONFIGS = [
    # (mutation, error type, text the message must contain)
    (_set("format", "something-else"), CheckpointConfigError, "not a flatquant checkpoint"),
    (_set("format", ...), CheckpointConfigError, "format"),
    (_set("schema_version", 2), CheckpointVersionError, "upgrade fq-core"),
    (_set("schema_version", 0), CheckpointVersionError, "unknown"),
    (_set("schema_version", "1"), CheckpointVersionError, "unknown"),
    (_set("schema_version", ...), CheckpointVersionError, "unknown"),
    (_set("extra", 1), CheckpointConfigError, "unknown field config.extra"),
    (_set("model.rope", 1), CheckpointConfigError, "unknown field model.rope"),
    (_set("quant.weight.foo", 1), CheckpointConfigError, "unknown field quant.weight.foo"),
    (_set("layers.0.extra", 1), CheckpointConfigError, "unknown field layers[0].extra"),
    (_set("options", ...), CheckpointConfigError, "missing field config.options"),
    (_set("model.head_dim", ...), CheckpointConfigError, "missing field model.head_dim"),
    (_set("method", "gptq"), CheckpointConfigError, "config.method 'gptq'"),
    (_set("model.hidden_size", "16"), CheckpointConfigError, "model.hidden_size must be an integer"),
    (_set("model.hidden_size", 16.0), CheckpointConfigError, "model.hidden_size must be an integer"),
    (_set("model.num_layers", True), CheckpointConfigError, "model.num_layers must be an integer"),
    (_set("model.vocab_size", 0), CheckpointConfigError, "model.vocab_size must be >= 1"),
    (_set("model.qk_norm", 1), CheckpointConfigError, "model.qk_norm must be true or false"),
    (_set("model.family", ""), CheckpointConfigError, "model.family must be a non-empty string"),
    (_set("model.hf_config", []), CheckpointConfigError, "model.hf_config must be a JSON object"),
    (_set("quant.act.bits", "4"), CheckpointConfigError, "quant.act.bits has the wrong type"),
    (_set("quant.act.bits", 9), CheckpointConfigError, "quant.act: bits=9"),
    (_set("quant.weight.symmetric", 1), CheckpointConfigError, "quant.weight.symmetric has the wrong type"),
    (_set("quant", []), CheckpointConfigError, "quant must be a JSON object"),
    (_set("layers", {}), CheckpointConfigError, "config.layers must be a list or null"),
    (
        _set("layers.0.attn_in", [4, 5]),
        CheckpointConfigError,
        "layers[0].attn_in = [4, 5] must multiply to 16",
    ),
    (_set("layers.1.down_in", [4]), CheckpointConfigError, "layers[1].down_in must be a list of two"),
    (_set("layers.0.o_in", [8, 2]), CheckpointConfigError, "must be [num_heads, head_dim] = [2, 8]"),
    (_set("layers.0.k_cache", 4), CheckpointConfigError, "layers[0].k_cache = 4 must be head_dim (8)"),
    (_set("layers.1", ...), CheckpointConfigError, "config.layers has 1 entries, model.num_layers is 2"),
    (_set("layers", None), CheckpointConfigError, "needs config.layers"),
    (_set("method", "rtn"), CheckpointConfigError, "config.layers must be null"),
    (_set("producers", {"fq-core": 1}), CheckpointConfigError, "config.producers.fq-core"),
    (_set("files", []), CheckpointConfigError, "config.files is empty"),
    (_set("files", ["a.safetensors", "a.safetensors"]), CheckpointConfigError, "twice"),
    (_set("files", ["../x.safetensors"]), CheckpointConfigError, "plain file name"),
    (_set("files", ["model.bin"]), CheckpointConfigError, "plain file name"),
    (_set("files", "model.safetensors"), CheckpointConfigError, "config.files must be a list"),
    (
        _set("quant.weight", {**QuantSpec(granularity="group", group_size=5).to_dict()}),
        CheckpointConfigError,
        "group_size 5 does not divide",
    ),
]


@pytest.mark.parametrize(("mutate", "error", "text"), BAD_CONFIGS)
def test_bad_config_is_refused_with_one_line(mutate: Any, error: type[Exception], text: str) -> None:
    data = copy.deepcopy(_valid_dict())
    mutate(data)
    with pytest.raises(error) as info:
        CheckpointConfig.from_dict(data)
    message = str(info.value)
    assert "\n" not in message
    assert text in message


def test_not_an_object() -> None:
    with pytest.raises(CheckpointConfigError, match="must be a JSON object, got list"):
        CheckpointConfig.from_dict([1, 2])


def test_odd_input_size_cannot_hold_int4_pairs() -> None:
    data = {**tiny_config(method="rtn").to_dict(), "files": ["model.safetensors"]}
    data["model"]["hidden_size"] = 15  # q/k/v/gate/up take hidden as their input
    with pytest.raises(CheckpointConfigError, match="input size 15 is odd"):
        CheckpointConfig.from_dict(data)
    data["quant"]["weight"]["bits"] = 8  # unpacked int8 storage has no such constraint
    CheckpointConfig.from_dict(data)
