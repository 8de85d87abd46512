"""Data-parallel training across processes: one recipe, N ranks (gloo on CPU, NCCL on GPUs).

How a run is distributed:
- `edge-pipeline run R --nproc N` starts N copies of itself (`launch`), like `torchrun
  --nproc-per-node N -m edge_pipeline.cli run R` would; either way every rank sees RANK / WORLD_SIZE
  / MASTER_ADDR / MASTER_PORT in its environment.
- Rank 0 (the leader) runs the pipeline as usual and is the only one that writes files. Before
  each stage it tells the other ranks whether the stage runs or is cached; ranks > 0 (followers)
  run only the stages that train (`Stage.distributed`), with the same inputs read from the run
  folder, and discard what they produce.
- Inside `training.fit`, every rank takes its slice of each global batch; gradients of every
  trained tensor (model and adapters) are averaged with all-reduce before the optimizer step, so
  the weights stay identical on every rank. While training, BatchNorm layers use the statistics of
  the *global* batch (sums all-reduced with autograd, as SyncBatchNorm does, which torch only
  offers on GPUs) and Dropout takes its slice of the global batch's mask, so a distributed run
  computes what the single-process run computes, up to float summation order.

The CLI imports this module only inside `run` (never on its fast paths), so torch is imported at top level.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from typing import IO, Any

import torch
import torch.distributed as dist
from torch import nn

from . import procs as children


def world() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment; (0, 1) when not distributed."""
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1


def is_leader() -> bool:
    return world()[0] == 0


def active() -> bool:
    """True inside an initialized process group of more than one rank."""
    if world()[1] <= 1:
        return False

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def backend() -> str:
    return "nccl" if torch.cuda.is_available() and os.environ.get("EDGE_PIPELINE_BACKEND", "") != "gloo" else "gloo"


def init() -> None:
    """Join the process group described by the environment (idempotent; no-op for one process)."""
    rank, size = world()
    if size <= 1:
        return

    if dist.is_initialized():
        return
    name = backend()
    if name == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    # Followers wait in a collective while the leader exports and profiles: allow hours.
    dist.init_process_group(name, rank=rank, world_size=size, timeout=timedelta(hours=12))


def shutdown() -> None:
    if active():

        dist.destroy_process_group()


def device():
    if active() and backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_object(obj: Any) -> Any:
    """The leader's `obj` on every rank (identity when not distributed)."""
    if not active():
        return obj

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: list[float]) -> list[float]:
    if not active():
        return values

    t = torch.tensor(values, dtype=torch.float64, device=device())
    dist.all_reduce(t)
    return t.tolist()


def average_gradients(params: list) -> None:
    """Mean of every parameter's gradient over the ranks (missing gradients count as zeros)."""
    if not active():
        return

    size = dist.get_world_size()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= size
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def average_buffers(module) -> None:
    """BatchNorm running statistics: mean over ranks; integer buffers: the leader's."""
    if not active():
        return

    size = dist.get_world_size()
    for buf in module.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf /= size
        else:
            dist.broadcast(buf, src=0)


def differentiable_all_reduce(x):
    """Sum over ranks with a gradient: every rank's input receives the sum of all ranks' gradients
    (d sum_r x_r / d x_r = 1 on every rank)."""

    class _AllReduce(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            out = t.clone()
            dist.all_reduce(out)
            return out

        @staticmethod
        def backward(ctx, grad):
            grad = grad.clone()
            dist.all_reduce(grad)
            return grad

    return _AllReduce.apply(x)


class SyncedTraining:
    """While active (distributed only): BatchNorm over the global batch, Dropout masks sliced from
    the global batch's mask. `fit` calls `batch(global_n, offset)` before each forward."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.global_n = self.offset = 0
        self.patched: list[nn.Module] = []
        if active():
            for m in model.modules():
                # Instance attributes shadow the class's forward; `__exit__` deletes them again.
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.forward = self._batchnorm(m)  # type: ignore[method-assign]
                    self.patched.append(m)
                elif type(m) is nn.Dropout:
                    m.forward = self._dropout(m)  # type: ignore[method-assign]
                    self.patched.append(m)

    def batch(self, global_n: int, offset: int) -> None:
        self.global_n, self.offset = global_n, offset

    def __enter__(self) -> SyncedTraining:
        return self

    def __exit__(self, *exc) -> None:
        for m in self.patched:
            del m.forward  # back to the class's forward

    @staticmethod
    def _batchnorm(bn):
        original = type(bn).forward

        def forward(x):
            if not bn.training:
                return original(bn, x)
            c = x.shape[1]
            dims = [0] + list(range(2, x.dim()))
            local = torch.cat([x.double().sum(dims), (x.double() ** 2).sum(dims),
                               x.new_full((1,), x.numel() // c, dtype=torch.float64)])
            total = differentiable_all_reduce(local)  # gradients flow back to every rank's inputs
            n = total[-1]
            mean = total[:c] / n
            var = (total[c : 2 * c] / n - mean * mean).clamp_min(0)
            shape = [1, c] + [1] * (x.dim() - 2)
            y = (x - mean.to(x.dtype).view(shape)) * torch.rsqrt(var.to(x.dtype).view(shape) + bn.eps)
            if bn.affine:
                y = y * bn.weight.view(shape) + bn.bias.view(shape)
            if bn.track_running_stats:
                with torch.no_grad():
                    bn.num_batches_tracked += 1
                    m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                    unbiased = var * n / torch.clamp(n - 1, min=1)
                    bn.running_mean.mul_(1 - m).add_(mean.to(x.dtype), alpha=m)
                    bn.running_var.mul_(1 - m).add_(unbiased.to(x.dtype), alpha=m)
            return y

        return forward

    def _dropout(self, drop):
        def forward(x):
            if not drop.training or drop.p == 0 or self.global_n == 0:
                return type(drop).forward(drop, x)
            shape = (self.global_n,) + tuple(x.shape[1:])
            keep = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1 - drop.p)
            mask = keep[self.offset : self.offset + x.shape[0]]
            return x * mask / (1 - drop.p) if drop.p < 1 else x * 0

        return forward


def shard(x, y, rank: int, size: int):
    """This rank's contiguous slice of a global batch, and where it starts. A batch smaller than the
    number of ranks is not split (every rank takes all of it, with weight 1/size)."""

    if len(y) < size:
        return x, y, 0
    bounds = torch.tensor_split(torch.arange(len(y)), size)
    start = int(bounds[rank][0]) if len(bounds[rank]) else len(y)
    return torch.tensor_split(x, size)[rank], torch.tensor_split(y, size)[rank], start


# ---------------------------------------------------------------------------------------------
# Launching N local ranks (`edge-pipeline run ... --nproc N`)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: list[str], nproc: int, log_dir: str | None = None) -> int:
    """Run `python -m edge_pipeline.cli *argv` as `nproc` ranks on this machine; rank 0 keeps the
    terminal, the others log to `log_dir/rank<N>.log`. If one rank fails, the others are stopped.
    Returns rank 0's exit code (or the first failure's)."""
    port = _free_port()
    # As torchrun does: one OpenMP thread per rank unless the user chose, so N ranks do not fight
    # over the cores (oversubscribed OpenMP threads make small kernels many times slower).
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // nproc))
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
    procs: list[subprocess.Popen] = []
    with contextlib.ExitStack() as open_logs:  # the rank logs stay open until every rank has ended
        for rank in range(nproc):
            env = dict(os.environ, OMP_NUM_THREADS=threads, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc),
                       LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            out: IO[str] | int | None = None
            if rank > 0:
                out = open_logs.enter_context(open(os.path.join(log_dir, f"rank{rank}.log"), "w")) if log_dir else subprocess.DEVNULL
            # Through `procs`: each rank dies with this launcher, even when it is killed with -9.
            procs.append(children.spawn([sys.executable, "-m", "edge_pipeline.cli", *argv], env=env, stdin=None, stdout=out, stderr=out))
        return _wait_for_ranks(procs)


def _wait_for_ranks(procs: list[subprocess.Popen]) -> int:
    """Rank 0's exit code once all ranks have ended, or (after stopping the rest) the first failure's."""
    failed: list[int] = []
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed or all(c is not None for c in codes):
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        _end_ranks(procs)
        raise
    _end_ranks(procs)
    if failed:
        return procs[0].returncode if procs[0].returncode not in (None, 0, -15) else failed[0]
    return procs[0].returncode


def _end_ranks(procs: list[subprocess.Popen]) -> None:
    """Ask the ranks still running to stop (SIGTERM: they save nothing half-written), then reap every
    rank through `procs`, which also kills what a rank left in its process group."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        children.finish(p)
