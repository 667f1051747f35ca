"""Data-parallel training under ``torchrun``: every collective the trainers use, in one place.

Started by ``torchrun --nproc_per_node N`` (RANK, WORLD_SIZE and LOCAL_RANK set), each
trainer runs as N ranks of one torch.distributed group: gloo on CPU, nccl on CUDA. The
ranks hold identical weights, draw the same global batch from identical data cursors,
keep their own contiguous ``shard`` of it, and sum their gradients (``sum_grads``):
each rank's loss is its share of the global batch's loss (``global_count`` gives the
denominator), so the summed gradient is the one a single process computes for the
whole batch. Statistics that drive decisions (KL control, whitening, early stop) are
reduced the same way, so every rank takes the same decisions. Rank 0 alone writes
(``is_main``).

Outside torchrun (or with WORLD_SIZE=1) nothing is initialised and every helper is the
identity: a single process computes exactly what it did before this module existed.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from rlhf.engine.checkpoint import rng_state, set_rng_state

T = TypeVar("T")


def requested_world_size() -> int:
    """WORLD_SIZE as torchrun set it (1 when not started by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(device: str | torch.device) -> bool:
    """Join the process group torchrun prepared, once per process; True when distributed.

    The backend follows the training device: nccl for CUDA (each rank on GPU
    LOCAL_RANK, so "cuda" means that GPU), gloo otherwise. The group is torn down at
    exit. Nothing happens outside torchrun or with a world of one.
    """
    if dist.is_available() and dist.is_initialized():
        return True
    if requested_world_size() <= 1 or not dist.is_available():
        return False
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    atexit.register(teardown)
    return True


def teardown() -> None:
    """Leave the process group (idempotent)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """True on the rank that writes checkpoints, final/ and metrics (rank 0)."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def shard_bounds(n: int) -> tuple[int, int]:
    """[start, stop) of this rank's contiguous part of n items (sizes differ by <= 1)."""
    size, extra = divmod(n, world_size())
    start = rank() * size + min(rank(), extra)
    return start, start + size + (rank() < extra)


def shard(items: Sequence[T]) -> Sequence[T]:
    """This rank's contiguous part of a global batch (all of it in one process)."""
    if not active():
        return items
    start, stop = shard_bounds(len(items))
    return items[start:stop]


def sampling_shard() -> tuple[int, int] | None:
    """(rank, world size) for a rollout of this rank's shard (``rollout.Shard``); None
    in one process."""
    return (rank(), world_size()) if active() else None


def check_divisible(n: int, name: str) -> None:
    """ValueError unless n items split evenly across the ranks (sampling needs it)."""
    if n % world_size():
        raise ValueError(f"{name}: {n} is not divisible by the {world_size()} ranks (WORLD_SIZE)")


def all_reduce_sum(value: T) -> T:
    """Sum over ranks of a float or tensor (a detached copy); ``value`` itself in one
    process, so single-process numbers are bit-identical."""
    if not active():
        return value
    if isinstance(value, float | int):
        total = torch.tensor(float(value), dtype=torch.float64)
        dist.all_reduce(total)
        return type(value)(total.item())  # type: ignore[return-value]
    out = value.detach().clone()  # type: ignore[attr-defined]
    dist.all_reduce(out)
    return out


def all_reduce_mean(value: T) -> T:
    """Mean over ranks of a float or tensor (ranks holding equal shards); ``value``
    itself in one process."""
    if not active():
        return value
    if isinstance(value, float | int):
        return all_reduce_sum(float(value)) / world_size()  # type: ignore[return-value]
    return all_reduce_sum(value) / world_size()  # type: ignore[operator]


def all_reduce_sums(row: dict[str, float]) -> dict[str, float]:
    """Each value summed over ranks, in one collective (a step's metrics); ``row``
    itself in one process."""
    if not active():
        return row
    sums = all_reduce_sum(torch.tensor(list(row.values()), dtype=torch.float64))
    return dict(zip(row, sums.tolist(), strict=True))


def all_reduce_means(row: dict[str, float]) -> dict[str, float]:
    """Each value's mean over ranks (equal shards), in one collective."""
    return {k: v / world_size() for k, v in all_reduce_sums(row).items()} if active() else row


def all_true(flag: bool) -> bool:
    """True when ``flag`` holds on every rank (so all ranks leave a loop together)."""
    if not active():
        return flag
    return int(all_reduce_sum(torch.tensor([0 if flag else 1])).item()) == 0


def global_count(count: torch.Tensor) -> torch.Tensor:
    """A local count (tokens, pairs) summed over ranks: the denominator of a global mean."""
    return all_reduce_sum(count)


def masked_mean_share(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """This rank's share of the masked mean over the global batch, with its gradient.

    sum(values * mask) / (mask summed over all ranks): the shares of all ranks add up
    to the global masked mean, and so do their gradients (``sum_grads``). In one process
    it is the plain masked mean, computed exactly as ``rollout.masked_mean`` does.
    """
    mask = mask.to(values.dtype)
    return (values * mask).sum() / global_count(mask.sum()).clamp(min=1.0)


def global_masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The masked mean over the global batch, on every rank (no gradient across ranks)."""
    return all_reduce_sum(masked_mean_share(values, mask))


def all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Rows of every rank's tensor, in rank order (equal first dimensions)."""
    if not active():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    return torch.cat(parts)


def sum_grads(parameters: Iterable[nn.Parameter]) -> None:
    """Sum the gradients over ranks, in place, before clipping and the optimizer step.

    Each rank's loss is its share of the global loss, so the sum is the global
    gradient. A parameter without a gradient on this rank counts as zeros (a rank with
    an empty shard). One flat buffer, one all_reduce.
    """
    if not active():
        return
    params = [p for p in parameters if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def broadcast_params(module: nn.Module) -> None:
    """Rank 0's weights and buffers on every rank (they start identical by seeding;
    this makes it so whatever a rank did before, e.g. a seeded head init)."""
    if not active():
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def gather_objects(obj: T) -> list[T]:
    """Every rank's picklable ``obj``, in rank order, on every rank."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def rank_rng_states() -> list[dict[str, Any]] | None:
    """Every rank's RNG states (a collective), for rank 0's checkpoint; None in one
    process, whose RNG state the checkpoint holds already."""
    if not active():
        return None
    return gather_objects(rng_state())


def restore_rank_rng(states: list[dict[str, Any]] | None) -> None:
    """Put back this rank's RNG states from ``rank_rng_states`` (a resume is then exact
    on every rank). A checkpoint from a different world size keeps rank 0's states,
    which ``load_checkpoint`` restored: the run goes on, not bit-exactly."""
    if states is not None and len(states) == world_size():
        set_rng_state(states[rank()])
