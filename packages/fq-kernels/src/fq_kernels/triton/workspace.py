"""Scratch buffers for kernels whose programs meet through global memory (the decode GEMM's split-K
partial sums), with per-tile arrival counters, kept ready between calls."""

from __future__ import annotations

import threading

import torch


class Workspace:
    """Per-device scratch of one dtype plus int32 tile counters that the kernels leave at zero.

    The last program of a tile (the counter says which) consumes the scratch and resets the counter,
    so no memset launch is needed on the next call. Allocate before CUDA-graph capture (any eager
    call of the op does): a capture then reuses the same buffers on every replay. Two concurrent
    calls on different streams would share them, so such ops on one device must run on one stream at
    a time (the usual case). Integer scratch (split-K sums) is also left at zero by its kernels.
    """

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self._buffers: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._lock = threading.Lock()

    def get(self, device: torch.device, numel: int, tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
        with self._lock:
            ws, counters = self._buffers.get(device, (None, None))
            if ws is None or ws.numel() < numel or counters.numel() < tiles:
                size = max(numel, 0 if ws is None else ws.numel(), 1 << 16)
                n_counters = max(tiles, 0 if counters is None else counters.numel(), 1 << 12)
                ws = torch.zeros(size, dtype=self.dtype, device=device)
                counters = torch.zeros(n_counters, dtype=torch.int32, device=device)
                self._buffers[device] = (ws, counters)
            return ws, counters
