"""Inputs of the linear-layer benchmark: LLaMA-2-7B / LLaMA-3-8B linear shapes, random data.

Weights are random int4 values with per-channel scales (their distribution does not change the
speed of exact integer kernels); the activations are bf16 normal; the online transforms are random
orthogonal Kronecker factors of the near-square split of K, as a flatquant checkpoint would hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fq_core.quant.pack import pack_int4
from fq_core.transforms.kronecker import kron_factors
from fq_kernels.layout import tile_decode_weight
from fq_kernels.testing import random_orthogonal

SHAPES: tuple[tuple[int, int], ...] = (
    (4096, 4096),
    (4096, 11008),
    (11008, 4096),
    (4096, 14336),
    (14336, 4096),
)
"""(K, N) = (in_features, out_features): q/o, up/gate (L2), down (L2), up/gate (L3), down (L3)."""
TOKENS: tuple[int, ...] = (1, 16, 64, 256, 512, 2048)


@dataclass
class LinearProblem:
    m: int
    k: int
    n: int
    device: str = "cuda"
    seed: int = 0
    x: torch.Tensor = field(init=False)
    left: torch.Tensor = field(init=False)
    right: torch.Tensor = field(init=False)
    clip: torch.Tensor = field(init=False)
    values: torch.Tensor = field(init=False)
    packed: torch.Tensor = field(init=False)
    scale: torch.Tensor = field(init=False)
    _weights: dict[str, torch.Tensor] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        n1, n2 = kron_factors(self.k)
        self.x = torch.randn(self.m, self.k, generator=gen).to(self.device, torch.bfloat16)
        self.left = random_orthogonal(n1, gen).to(self.device)
        self.right = random_orthogonal(n2, gen).to(self.device)
        self.clip = torch.tensor([0.95, 0.9], device=self.device)
        self.values = torch.randint(-8, 8, (self.n, self.k), generator=gen, dtype=torch.int8).to(self.device)
        self.packed = pack_int4(self.values)
        self.scale = (torch.rand(self.n, generator=gen) * 0.01 + 0.001).to(self.device)

    def weight(self, kind: str) -> torch.Tensor:
        """The weight in one storage kind, made once per kind (every copy and format query shares it)."""
        if kind not in self._weights:
            if kind == "bf16":
                base = (self.values.float() * self.scale[:, None]).to(torch.bfloat16)
            elif kind == "packed":
                base = self.packed
            elif kind == "tiles":
                base = tile_decode_weight(self.packed)
            elif kind == "int8":
                base = self.values
            elif kind == "fp8":
                base = self.values.to(torch.float8_e4m3fn)
            else:
                raise ValueError(kind)
            self._weights[kind] = base
        return self._weights[kind]

    def weight_copies(self, kind: str, count: int) -> list[torch.Tensor]:
        """`count` distinct buffers of the weight in one storage kind (same values)."""
        base = self.weight(kind)
        return [base.clone() for _ in range(count)]
