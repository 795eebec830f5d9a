"""`QuantSpec`: how one tensor is quantised (bits, symmetry, granularity), shared by every package.

The same spec drives fake quantisation during calibration, the packed format in the checkpoint and
the kernels, so it is plain data that serialises to JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from fq_core.errors import ConfigError

Granularity = Literal["tensor", "channel", "token", "group"]
GRANULARITIES: tuple[str, ...] = ("tensor", "channel", "token", "group")


@dataclass(frozen=True)
class QuantSpec:
    """Quantisation of one tensor.

    bits: 2..8, or 16 for "not quantised".
    symmetric: integers in [-2^(b-1), 2^(b-1)-1] with zero point 0; otherwise [0, 2^b-1] with a
        zero point.
    granularity: which elements share one scale.
        "tensor"  one scale for the whole tensor;
        "channel" one per index of the first dim (a weight's output channel);
        "token"   one per row of the last dim (an activation's token, all leading dims kept);
        "group"   one per `group_size` consecutive elements of the last dim.
    dynamic: scales come from the tensor at hand (activations, per call); static ones are observed
        during calibration and then frozen.
    """

    bits: int = 4
    symmetric: bool = True
    granularity: Granularity = "channel"
    group_size: int | None = None
    dynamic: bool = True

    def __post_init__(self) -> None:
        if not (2 <= self.bits <= 8 or self.bits == 16):
            raise ConfigError(f"bits={self.bits} is not supported: use 2..8, or 16 for no quantisation")
        if self.granularity not in GRANULARITIES:
            raise ConfigError(
                f"granularity={self.granularity!r} is unknown: use one of {', '.join(GRANULARITIES)}"
            )
        if self.granularity == "group":
            if self.group_size is None or self.group_size < 1:
                raise ConfigError("granularity='group' needs group_size >= 1")
        elif self.group_size is not None:
            raise ConfigError(f"group_size is only valid with granularity='group', not {self.granularity!r}")

    @property
    def enabled(self) -> bool:
        return self.bits < 16

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2**self.bits - 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantSpec:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown quantisation field(s) {sorted(unknown)}")
        return cls(**data)


NO_QUANT = QuantSpec(bits=16)
