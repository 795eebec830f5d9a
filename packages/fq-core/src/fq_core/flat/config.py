"""`FlatConfig`: what `quantize_` does to a model (method, bit widths, FlatQuant's switches)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fq_core.errors import ConfigError
from fq_core.quant.spec import NO_QUANT, QuantSpec
from fq_core.transforms.matrices import Parametrization

Method = Literal["flatquant", "rtn", "hadamard"]
METHODS: tuple[str, ...] = ("flatquant", "rtn", "hadamard")


@dataclass(frozen=True)
class FlatConfig:
    """Fake-quantisation of a decoder model.

    method: "flatquant" learnable Kronecker affine transforms (to be calibrated), "hadamard" fixed
        Hadamard-like rotations at the same places (QuaRot-style baseline), "rtn" no transform.
    weight / act / key / value: quantisation of linear weights, linear inputs, and the KV cache
        (bits=16 leaves a tensor in full precision).
    lwc / lac: learnable weight / activation clipping (flatquant only).
    channel_scale: learnable per-channel scaling before each Kronecker transform ("add_diag").
    parametrization: "svd" (U diag(s) V^T, Cayley-orthogonal U, V) or "direct" (float64 inverse).
    diag_alpha: SmoothQuant exponent for the channel-scale init.
    seed: seeds the random orthogonal inits (and the odd factor of Hadamard-like matrices).
    """

    method: Method = "flatquant"
    weight: QuantSpec = field(default_factory=lambda: QuantSpec(4, True, "channel"))
    act: QuantSpec = field(default_factory=lambda: QuantSpec(4, True, "token"))
    key: QuantSpec = NO_QUANT
    value: QuantSpec = NO_QUANT
    lwc: bool = True
    lac: bool = True
    channel_scale: bool = True
    parametrization: Parametrization = "svd"
    diag_alpha: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method {self.method!r} is unknown: use one of {', '.join(METHODS)}")
        if self.weight.enabled and self.weight.granularity not in ("channel", "group"):
            raise ConfigError("weights are quantised per channel or per group")
        if self.act.enabled and self.act.granularity == "channel":
            raise ConfigError("activations are quantised per token, per group or per tensor")
        if self.method != "flatquant" and (self.lwc or self.lac or self.channel_scale):
            # Baselines have nothing to learn: normalise instead of failing, so
            # FlatConfig(method="rtn") just works.
            object.__setattr__(self, "lwc", False)
            object.__setattr__(self, "lac", False)
            object.__setattr__(self, "channel_scale", False)

    @property
    def has_transforms(self) -> bool:
        return self.method != "rtn"

    def kv_spec(self, spec: QuantSpec, head_dim: int) -> QuantSpec:
        """KV quantisers group along head_dim; a group larger than a head means one group per head."""
        if spec.enabled and spec.granularity == "group" and (spec.group_size or 0) > head_dim:
            return replace(spec, group_size=head_dim)
        return spec

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = value.to_dict() if isinstance(value, QuantSpec) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlatConfig:
        specs = {k: QuantSpec.from_dict(data[k]) for k in ("weight", "act", "key", "value") if k in data}
        return cls(**{**data, **specs})
