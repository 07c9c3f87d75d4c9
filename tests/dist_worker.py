"""torchrun worker for tests/test_dist.py: the loss and gradients of a small model on this rank's slice of a fixed
batch, with the engine's real pieces (TwoViews under DDP, NT-Xent with the differentiable all-gather).

Usage: ``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_worker.py OUT_DIR``.
Rank 0 writes OUT_DIR/sync_bn.pt and OUT_DIR/local_bn.pt: {"loss": global mean loss, "grads": {name: grad}}.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from audiomosaic.train.dist import all_reduce_mean, cleanup, init_distributed
from audiomosaic.train.pretrain import TwoViews, contrastive_loss
from audiomosaic.masking import view_masks
from audiomosaic.model import AudioMosaic, create_model
from audiomosaic.train.runtime import convert_sync_batchnorm

BATCH, TAU = 8, 0.1


def fixed_problem(seed: int = 0) -> tuple[AudioMosaic, tuple[torch.Tensor, ...]]:
    """A nano model (no drop path: no randomness in the forward) and a fixed two-view batch with its masks."""
    torch.manual_seed(seed)
    model = create_model("vit_nano", spec_size=(64, 32), drop_path_rate=0.0, projector_hidden=64, projector_out=32)
    g = torch.Generator().manual_seed(seed + 1)
    spec_a, spec_b = torch.randn(2, BATCH, 1, 64, 32, generator=g)
    (keep_a, _, _), (keep_b, _, _) = view_masks("tf", BATCH, model.grid, generator=g)
    return model, (spec_a, keep_a, spec_b, keep_b)


def loss_and_grads(model: torch.nn.Module, raw: AudioMosaic, batch: tuple[torch.Tensor, ...],
                   offset: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    loss, _ = contrastive_loss(model, *batch, tau=TAU, offset=offset)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in raw.named_parameters() if p.grad is not None}


def main(out_dir: Path) -> None:
    info = init_distributed("cpu")
    n = BATCH // info.world_size
    for sync in (True, False):
        raw, batch = fixed_problem()
        if sync:
            raw = convert_sync_batchnorm(raw, torch.device("cpu"))
        local = tuple(x[info.rank * n:(info.rank + 1) * n] for x in batch)
        loss, grads = loss_and_grads(DDP(TwoViews(raw)), raw, local, offset=info.rank * n)
        loss = all_reduce_mean(loss)  # DDP already averaged the gradients; the loss is averaged here
        if info.is_main:
            torch.save({"loss": loss, "grads": grads}, out_dir / f"{'sync' if sync else 'local'}_bn.pt")
    cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
