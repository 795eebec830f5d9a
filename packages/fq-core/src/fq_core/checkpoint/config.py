"""`CheckpointConfig`: the typed model of fq_config.json.

The config alone determines the full tensor inventory (see `inventory.py`), so a reader (eval, a
kernels-only deployment) can check a checkpoint and size its buffers without transformers. Parsing
is strict on purpose: an unknown field or a wrong type means the file was written by something
else (or by hand) and is refused with a message naming the field, instead of being half-read.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

from fq_core.checkpoint.errors import CheckpointConfigError, CheckpointVersionError
from fq_core.errors import ConfigError
from fq_core.quant.spec import QuantSpec

SCHEMA_VERSION = 1
"""The schema this fq-core writes and the newest it reads. Bump on any incompatible change."""
FORMAT = "flatquant-checkpoint"
CONFIG_NAME = "fq_config.json"
METHODS: tuple[str, ...] = ("flatquant", "rtn", "hadamard")
METHODS_WITHOUT_TRANSFORMS: tuple[str, ...] = ("rtn",)
"""Methods without per-layer transforms: their config has "layers": null."""
GEOMETRY_FIELDS: tuple[str, ...] = (
    "family",
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "vocab_size",
    "tie_word_embeddings",
    "qkv_bias",
    "qk_norm",
)
"""The "model" fields that decide tensor shapes (all but hf_config), compared against a model."""

Method = Literal["flatquant", "rtn", "hadamard"]

_FIX = "fix the producer or re-create the checkpoint"


# ---------------------------------------------------------------------------------------------
# Strict JSON field access. `where` is the dotted path of the object, for messages.


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _fail(message: str) -> CheckpointConfigError:
    return CheckpointConfigError(f"{message}; {_FIX}")


def _object(data: Any, where: str, fields: tuple[str, ...]) -> dict[str, Any]:
    """`data` as a dict with exactly `fields` (unknown and missing ones are errors)."""
    if not isinstance(data, dict):
        raise _fail(f"{where} must be a JSON object, got {_type_name(data)}")
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise CheckpointConfigError(
            f"unknown field {where}.{unknown[0]}: not part of schema_version {SCHEMA_VERSION}; "
            "remove it, or upgrade fq-core if a newer flatquant wrote it"
        )
    missing = [k for k in fields if k not in data]
    if missing:
        raise _fail(f"missing field {where}.{missing[0]}")
    return data


def _int(data: dict[str, Any], key: str, where: str, minimum: int = 1) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"{where}.{key} must be an integer, got {_type_name(value)} {value!r}")
    if value < minimum:
        raise _fail(f"{where}.{key} must be >= {minimum}, got {value}")
    return value


def _bool(data: dict[str, Any], key: str, where: str) -> bool:
    value = data[key]
    if not isinstance(value, bool):
        raise _fail(f"{where}.{key} must be true or false, got {_type_name(value)} {value!r}")
    return value


def _str(data: dict[str, Any], key: str, where: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise _fail(f"{where}.{key} must be a non-empty string, got {_type_name(value)} {value!r}")
    return value


def _dict(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data[key]
    if not isinstance(value, dict):
        raise _fail(f"{where}.{key} must be a JSON object, got {_type_name(value)}")
    return value


def _pair(value: Any, where: str) -> tuple[int, int]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
    ):
        raise _fail(f"{where} must be a list of two positive integers, got {value!r}")
    return (value[0], value[1])


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelGeometry:
    """The "model" section: everything that decides tensor names and shapes, plus the HF config.

    hf_config is the base model's full Hugging Face config, stored verbatim so that eval can rebuild
    the architecture; fq-core never interprets it.
    """

    family: str
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    qkv_bias: bool
    qk_norm: bool
    hf_config: dict[str, Any] = field(default_factory=dict)

    def geometry(self) -> dict[str, Any]:
        """The shape-deciding fields only (no hf_config), in schema order."""
        return {name: getattr(self, name) for name in GEOMETRY_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        return {**self.geometry(), "hf_config": self.hf_config}

    @classmethod
    def from_dict(cls, data: Any, where: str = "model") -> ModelGeometry:
        d = _object(data, where, (*GEOMETRY_FIELDS, "hf_config"))
        return cls(
            family=_str(d, "family", where),
            model_type=_str(d, "model_type", where),
            hidden_size=_int(d, "hidden_size", where),
            intermediate_size=_int(d, "intermediate_size", where),
            num_layers=_int(d, "num_layers", where),
            num_heads=_int(d, "num_heads", where),
            num_kv_heads=_int(d, "num_kv_heads", where),
            head_dim=_int(d, "head_dim", where),
            vocab_size=_int(d, "vocab_size", where),
            tie_word_embeddings=_bool(d, "tie_word_embeddings", where),
            qkv_bias=_bool(d, "qkv_bias", where),
            qk_norm=_bool(d, "qk_norm", where),
            hf_config=copy.deepcopy(_dict(d, "hf_config", where)),
        )


@dataclass(frozen=True)
class LayerTransforms:
    """One entry of "layers": the Kronecker factor sizes of a decoder layer's transforms.

    attn_in/mlp_in/down_in are (n1, n2) with n1*n2 = the linear's input size; o_in is
    (num_heads, head_dim): the heads factor runs online, the head_dim one is merged into v_proj
    ("v_out"). k_cache is the key transform's size (head_dim), or None when keys are not transformed.
    """

    attn_in: tuple[int, int]
    o_in: tuple[int, int]
    mlp_in: tuple[int, int]
    down_in: tuple[int, int]
    k_cache: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "attn_in": list(self.attn_in),
            "o_in": list(self.o_in),
            "mlp_in": list(self.mlp_in),
            "down_in": list(self.down_in),
            "k_cache": self.k_cache,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> LayerTransforms:
        d = _object(data, where, ("attn_in", "o_in", "mlp_in", "down_in", "k_cache"))
        k_cache = d["k_cache"]
        if k_cache is not None:
            k_cache = _int(d, "k_cache", where)
        return cls(
            attn_in=_pair(d["attn_in"], f"{where}.attn_in"),
            o_in=_pair(d["o_in"], f"{where}.o_in"),
            mlp_in=_pair(d["mlp_in"], f"{where}.mlp_in"),
            down_in=_pair(d["down_in"], f"{where}.down_in"),
            k_cache=k_cache,
        )


_SPEC_TYPES: dict[str, tuple[type, ...]] = {
    "bits": (int,),
    "symmetric": (bool,),
    "granularity": (str,),
    "group_size": (int, type(None)),
    "dynamic": (bool,),
}


def _quant_spec(data: Any, where: str) -> QuantSpec:
    d = _object(data, where, tuple(_SPEC_TYPES))
    for key, types in _SPEC_TYPES.items():
        value = d[key]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise _fail(f"{where}.{key} has the wrong type {_type_name(value)} ({value!r})")
    try:
        return QuantSpec(**d)
    except ConfigError as err:
        raise _fail(f"{where}: {err}") from err


@dataclass(frozen=True)
class QuantConfig:
    """The "quant" section: one `QuantSpec` per quantised tensor kind (bits 16 = not quantised)."""

    weight: QuantSpec
    act: QuantSpec
    key: QuantSpec
    value: QuantSpec

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).to_dict() for name in ("weight", "act", "key", "value")}

    @classmethod
    def from_dict(cls, data: Any, where: str = "quant") -> QuantConfig:
        d = _object(data, where, ("weight", "act", "key", "value"))
        return cls(**{name: _quant_spec(d[name], f"{where}.{name}") for name in d})


@dataclass(frozen=True)
class CheckpointConfig:
    """fq_config.json. `files` is filled by `save_checkpoint`; producers leave it empty."""

    method: Method
    quant: QuantConfig
    model: ModelGeometry
    layers: tuple[LayerTransforms, ...] | None
    options: dict[str, Any] = field(default_factory=dict)
    producers: dict[str, str] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, in the documented field order."""
        return {
            "schema_version": self.schema_version,
            "format": self.format,
            "method": self.method,
            "quant": self.quant.to_dict(),
            "options": self.options,
            "model": self.model.to_dict(),
            "layers": None if self.layers is None else [layer.to_dict() for layer in self.layers],
            "producers": dict(self.producers),
            "files": list(self.files),
        }

    @classmethod
    def from_dict(cls, data: Any) -> CheckpointConfig:
        """Parse and validate (types, then consistency). Raises a `CheckpointError` subclass.

        `format` and `schema_version` are checked before anything else: a file of another format or
        a newer schema must be refused as such, not as a pile of "unknown field" errors.
        """
        if not isinstance(data, dict):
            raise _fail(f"the config must be a JSON object, got {_type_name(data)}")
        fmt = data.get("format")
        if fmt != FORMAT:
            raise CheckpointConfigError(
                f"format is {fmt!r}, not {FORMAT!r}: this is not a flatquant checkpoint; "
                "point to a directory written by flatquant"
            )
        version = data.get("schema_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise CheckpointVersionError(
                f"schema_version {version!r} is unknown (this fq-core reads 1..{SCHEMA_VERSION}); "
                "re-create the checkpoint with flatquant"
            )
        if version > SCHEMA_VERSION:
            raise CheckpointVersionError(
                f"schema_version {version} was written by a newer flatquant (this fq-core reads up to "
                f"{SCHEMA_VERSION}); upgrade fq-core"
            )
        d = _object(data, "config", _CONFIG_FIELDS)
        method = d["method"]
        if method not in METHODS:
            raise _fail(f"config.method {method!r} is unknown: use one of {', '.join(METHODS)}")
        layers = d["layers"]
        if layers is not None:
            if not isinstance(layers, list):
                raise _fail(f"config.layers must be a list or null, got {_type_name(layers)}")
            layers = tuple(LayerTransforms.from_dict(e, f"layers[{i}]") for i, e in enumerate(layers))
        producers = _dict(d, "producers", "config")
        for name, version_str in producers.items():
            if not isinstance(version_str, str):
                raise _fail(f"config.producers.{name} must be a version string, got {version_str!r}")
        files = d["files"]
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise _fail(f"config.files must be a list of file names, got {files!r}")
        config = cls(
            schema_version=version,
            format=fmt,
            method=method,
            quant=QuantConfig.from_dict(d["quant"]),
            options=copy.deepcopy(_dict(d, "options", "config")),
            model=ModelGeometry.from_dict(d["model"]),
            layers=layers,
            producers=producers,
            files=tuple(files),
        )
        config.validate()
        return config

    def validate(self) -> None:
        """Cross-field consistency: everything `expected_tensors` relies on must hold."""
        m = self.model
        if self.method in METHODS_WITHOUT_TRANSFORMS:
            if self.layers is not None:
                raise _fail(f"method {self.method!r} has no transforms, so config.layers must be null")
        else:
            if self.layers is None:
                raise _fail(f"method {self.method!r} needs config.layers (one entry per decoder layer)")
            if len(self.layers) != m.num_layers:
                raise _fail(
                    f"config.layers has {len(self.layers)} entries, model.num_layers is {m.num_layers}"
                )
            for i, layer in enumerate(self.layers):
                _check_layer(layer, m, f"layers[{i}]")
        spec = self.quant.weight
        for name, (_, in_features) in linear_shapes(m).items():
            if spec.enabled and spec.granularity == "group" and in_features % (spec.group_size or 1):
                raise _fail(
                    f"quant.weight.group_size {spec.group_size} does not divide {name}'s input size "
                    f"{in_features}"
                )
            if spec.bits == 4 and in_features % 2:
                raise _fail(
                    f"4-bit weights are packed two per byte, but {name}'s input size {in_features} is odd"
                )
        if not self.files:
            raise _fail("config.files is empty: a checkpoint lists at least one .safetensors file")
        seen: set[str] = set()
        for name in self.files:
            if name in seen:
                raise _fail(f"config.files lists {name!r} twice")
            seen.add(name)
            if "/" in name or "\\" in name or name.startswith(".") or not name.endswith(".safetensors"):
                raise _fail(
                    f"config.files entry {name!r} must be a plain file name ending in .safetensors, "
                    "inside the checkpoint directory"
                )


_CONFIG_FIELDS: tuple[str, ...] = (
    "schema_version",
    "format",
    "method",
    "quant",
    "options",
    "model",
    "layers",
    "producers",
    "files",
)


def _check_layer(layer: LayerTransforms, m: ModelGeometry, where: str) -> None:
    for site, size in (
        ("attn_in", m.hidden_size),
        ("mlp_in", m.hidden_size),
        ("down_in", m.intermediate_size),
    ):
        n1, n2 = getattr(layer, site)
        if n1 * n2 != size:
            raise _fail(f"{where}.{site} = [{n1}, {n2}] must multiply to {size}")
    if layer.o_in != (m.num_heads, m.head_dim):
        raise _fail(
            f"{where}.o_in = {list(layer.o_in)} must be [num_heads, head_dim] = [{m.num_heads}, {m.head_dim}]"
        )
    if layer.k_cache is not None and layer.k_cache != m.head_dim:
        raise _fail(f"{where}.k_cache = {layer.k_cache} must be head_dim ({m.head_dim}) or null")


def linear_shapes(model: ModelGeometry) -> dict[str, tuple[int, int]]:
    """(out_features, in_features) of each decoder layer's linears, keyed by their name in the layer."""
    q = model.num_heads * model.head_dim
    kv = model.num_kv_heads * model.head_dim
    h, inter = model.hidden_size, model.intermediate_size
    return {
        "self_attn.q_proj": (q, h),
        "self_attn.k_proj": (kv, h),
        "self_attn.v_proj": (kv, h),
        "self_attn.o_proj": (h, q),
        "mlp.gate_proj": (inter, h),
        "mlp.up_proj": (inter, h),
        "mlp.down_proj": (h, inter),
    }
