"""torchrun / DistributedDataParallel helpers; every function is a no-op in a single process."""
import gc
import inspect
import os
import sys

import torch
import torch.distributed as tdist
from torch import nn

from utils.core.cli import note_batch_size
from utils.core.errors import UsageError


def is_distributed() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_distributed() else 1


def init(device_flag: str) -> None:
    """Join the process group that torchrun describes in the environment (NCCL on CUDA, gloo on the CPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return
    use_cuda = device_flag != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    tdist.init_process_group("nccl" if use_cuda else "gloo")


def shutdown() -> None:
    if is_distributed():
        # A trainer that stopped on an exception sits in a reference cycle with its DDP wrapper; freed by the
        # collector after the group is gone, the wrapper's gloo threads abort the process at exit.
        gc.collect()
        tdist.destroy_process_group()


def device_for(device: torch.device) -> torch.device:
    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def wrap_model(model: nn.Module, device: torch.device, sync_bn: bool) -> nn.Module:
    """``model`` in DDP (its BatchNorm layers SyncBatchNorm on CUDA with ``sync_bn``); ``model`` itself alone.

    Buffers are made equal on every rank once, here, and never re-broadcast at a forward. DDP's default
    re-broadcasts rank 0's buffers in place before every forward: with several forwards before one backward
    (``--per-view-forward``, a clean branch) that copy overwrites BatchNorm running statistics that the earlier
    forwards' graphs saved, which torch 2.11 refuses at ``backward`` ("modified by an inplace operation")
    and 2.13+ let through with the version counter hidden. Without it each rank's running
    statistics follow the batches it normalises: the global batch's with SyncBatchNorm (the same on every
    rank, so a broadcast had nothing to add), its own share without. Rank 0's buffers, the ones a checkpoint
    keeps, are the same either way: the broadcast only ever copied them onto the other ranks.
    """
    if not is_distributed():
        return model
    if sync_bn and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif sync_bn and rank() == 0:
        print("note: SyncBatchNorm needs CUDA; BatchNorm statistics stay per process on the CPU", file=sys.stderr)
    ddp = nn.parallel.DistributedDataParallel
    if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters:  # torch >= 2.13: syncs them at init
        no_forward_sync = {"forward_sync_buffers": False}
    else:  # broadcast_buffers=False (deprecated since 2.13) also skips DDP's sync at init
        with torch.no_grad():
            for buf in model.buffers():
                tdist.broadcast(buf, src=0)
        no_forward_sync = {"broadcast_buffers": False}
    return ddp(model, device_ids=[device.index] if device.type == "cuda" else None, **no_forward_sync)


def gather_views(z: torch.Tensor) -> torch.Tensor:
    """(V, b, d) per-rank embeddings -> (V, world*b, d) over the global batch, keeping the gradient.

    The backward of the gather sums every rank's gradient for this rank's slice; with DDP averaging the
    parameter gradients afterwards, the result is the gradient of the single-process loss on the global batch.
    """
    return _GatherViews.apply(z.contiguous()) if is_distributed() else z


class _GatherViews(torch.autograd.Function):
    """All-gather along the batch dimension, written here because torch's autograd all_gather is deprecated."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(z) for _ in range(world_size())]
        tdist.all_gather(parts, z)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        summed = grad.clone(memory_format=torch.contiguous_format)  # autograd's gradient is not ours to reduce in place
        tdist.all_reduce(summed)
        return summed.chunk(world_size(), dim=1)[rank()]


def local_batch(batch_size: int) -> int:
    """This process's share of the global batch (which must divide evenly)."""
    if batch_size % world_size():
        raise UsageError(f"--batch-size {batch_size} must be divisible by the {world_size()} processes")
    note_batch_size(batch_size)
    return batch_size // world_size()


def barrier() -> None:
    if is_distributed():
        tdist.barrier()


def gather_objects(obj) -> list:
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def any_true(*flags: bool) -> list:
    """Each flag OR-ed over all ranks (one small all-reduce; local values in a single process)."""
    if not is_distributed():
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device="cuda" if tdist.get_backend() == "nccl" else "cpu")
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]
