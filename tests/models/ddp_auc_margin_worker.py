"""The worker of tests/models/test_auc_margin.py's DDP test, in its own module so that each spawned process imports
torch and chestx.models.auc_margin only (not Lightning)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from chestx.models.auc_margin import MaskedAUCMarginLoss, pesg


class NetAndLoss(nn.Module):
    """What DDP wraps under Lightning: the module whose forward (training_step) runs the net and the loss."""

    def __init__(self, priors: list[float]) -> None:
        super().__init__()
        self.net, self.loss = nn.Linear(4, 3), MaskedAUCMarginLoss(priors)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss(self.net(x), y)


def ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    """3 PESG steps under DDP on this process's own data; the final state dict into <out>/rank<rank>.pt."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(rank)  # different initial weights, PESG reference points, priors, a and alpha per process
    model = NetAndLoss([0.2 + 0.1 * rank, 0.3, 0.4])
    with torch.no_grad():
        model.loss.a.fill_(float(rank))
        model.loss.alpha.fill_(0.1 * rank)
    ddp = nn.parallel.DistributedDataParallel(model)  # broadcasts rank 0's parameters and buffers
    optimizer = pesg(model.net.parameters(), model.loss, lr=0.1)
    g = torch.Generator().manual_seed(100 + rank)  # each process its own data
    for _ in range(3):
        x, y = torch.randn(16, 4, generator=g), (torch.rand(16, 3, generator=g) < 0.4).float()
        y[torch.rand(16, 3, generator=g) < 0.2] = float("nan")
        optimizer.zero_grad()
        ddp(x, y).backward()  # DDP averages the gradients of the net's weights and of a, b, alpha
        optimizer.step()
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()
