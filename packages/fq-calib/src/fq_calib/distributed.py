"""Several processes calibrating one model together, through torch.distributed.

Every rank holds the whole model and an equal share of the calibration windows: its contiguous
1/world slice of every batch (`shard_rows`), so a step over a global batch is each rank's slice of
it, and the ranks see together exactly the batches one process sees. Whatever reduces over samples
(gradients, losses, activation maxima, GPTQ Hessians, logged MSEs) is all-reduced, so every rank
takes the same optimizer steps and freezes the same layer. Only rank 0 writes files.

A single-process run never initialises a process group; every helper here is then the identity,
so the one-process code path computes exactly what it computed before ranks existed.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fq_core.errors import ConfigError, FqError

T = TypeVar("T")

TIMEOUT = timedelta(hours=1)
"""How long a collective waits: the other ranks wait while rank 0 alone writes a large model's
checkpoint, which can outlast NCCL's default 10 minutes."""


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def check_batch_size(batch_size: int, world: int) -> None:
    """Each rank takes an equal share of every batch, so the batch must split evenly."""
    if batch_size % world:
        raise ConfigError(
            f"batch_size ({batch_size}) must be a multiple of the number of ranks ({world}): "
            "each rank takes an equal share of every batch"
        )


def shard_rows(n: int, batch_size: int, rank: int, world: int) -> torch.Tensor:
    """Indices of rank's windows among n: its contiguous 1/world slice of each batch of batch_size,
    in batch order. Batch i of the shard (batch_size / world rows) is then the rank's part of
    global batch i, so the ranks step through the same batches as one process, in the same order."""
    check_batch_size(batch_size, world)
    return torch.arange(n).view(n // batch_size, world, batch_size // world)[:, rank].reshape(-1)


def all_reduce_(tensor: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> torch.Tensor:
    """Reduce `tensor` over the ranks, in place (it must live on the backend's device: the
    accelerator with NCCL, the CPU with gloo); returns it."""
    if is_initialized():
        dist.all_reduce(tensor, op)
    return tensor


def _scalar(value: float) -> torch.Tensor:
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    return torch.tensor(value, dtype=torch.float64, device=device)


def sum_over_ranks(value: float) -> float:
    return all_reduce_(_scalar(value)).item() if is_initialized() else value


def mean_over_ranks(value: float) -> float:
    """The mean of a per-rank mean over equal-sized shards, i.e. the mean over all samples."""
    return sum_over_ranks(value) / world_size() if is_initialized() else value


def all_reduce_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum the ranks' gradients (every rank then holds the gradient of the global loss)."""
    if not is_initialized():
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])  # one collective instead of one per tensor
    dist.all_reduce(flat)
    for grad, reduced in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        grad.copy_(reduced.view_as(grad))


def on_main(fn: Callable[[], T]) -> T:
    """Run fn on rank 0 only and give every rank its result, or raise its error on every rank (so
    a refusal on rank 0, e.g. an existing run directory, stops all ranks instead of hanging them)."""
    if not is_initialized():
        return fn()
    box: list[Any] = [None]
    if is_main():
        try:
            box[0] = (True, fn())
        except Exception as error:
            box[0] = (False, error)
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def init(
    rank: int, world: int, device: torch.device, local_rank: int, init_method: str = "env://"
) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo on the CPU); returns this rank's device."""
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ConfigError(f"several ranks run on CUDA (NCCL) or the CPU (gloo), not on {device.type}")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world, timeout=TIMEOUT)
    return device


def torchrun_world() -> int:
    """The number of ranks torchrun started (1 when this process was not started by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def run_torchrun_rank(fn: Callable[..., None], device: torch.device, *args: Any) -> None:
    """Run fn(rank_device, *args) as the rank torchrun started this process as (RANK, WORLD_SIZE,
    LOCAL_RANK and MASTER_ADDR/PORT from the environment; cuda:LOCAL_RANK on CUDA)."""
    env = os.environ
    rank_device = init(int(env["RANK"]), int(env["WORLD_SIZE"]), device, int(env.get("LOCAL_RANK", "0")))
    try:
        fn(rank_device, *args)
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable[..., None], world: int, device: torch.device, *args: Any) -> None:
    """Run fn(rank_device, *args) in `world` new processes forming one process group on this host
    (one per GPU: cuda:0..world-1 on CUDA). A user error (FqError) of a rank is raised here as
    itself, so the command still prints one line; any other failure stops every rank."""
    if device.type == "cuda" and world > torch.cuda.device_count():
        raise ConfigError(f"--ranks {world} needs {world} GPUs; this machine has {torch.cuda.device_count()}")
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    errors = mp.get_context("spawn").SimpleQueue()
    ranks = mp.start_processes(
        _rank_main,
        args=(world, device, f"tcp://127.0.0.1:{port}", errors, fn, args),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    try:
        # After a rank fails the others get a few seconds to stop by themselves: a user error is
        # raised by every rank at once, and they need not be terminated (with torch's warnings).
        while not ranks.join(grace_period=10):
            pass
    except (mp.ProcessRaisedException, mp.ProcessExitedException):
        if not errors.empty():
            raise errors.get() from None
        raise


def _rank_main(
    rank: int,
    world: int,
    device: torch.device,
    init_method: str,
    errors: Any,
    fn: Callable[..., None],
    args: tuple[Any, ...],
) -> None:
    if device.type == "cpu":  # the ranks share the cores instead of each taking them all
        torch.set_num_threads(max(1, torch.get_num_threads() // world))
    rank_device = init(rank, world, device, rank, init_method)
    try:
        fn(rank_device, *args)
    except FqError as error:
        errors.put(error)
        raise
    finally:
        dist.destroy_process_group()
