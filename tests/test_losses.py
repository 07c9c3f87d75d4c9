import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from audiomosaic.train.dist import gather_with_grad
from audiomosaic.losses import contrastive_accuracy, nt_xent, nt_xent_logits


def loop_nt_xent(z_a, z_b, tau):
    """SimCLR Algorithm 1 written as loops: 2N samples, each anchor against the other 2N-1."""
    z = F.normalize(torch.cat([z_a, z_b]).double(), dim=1)
    n = z_a.shape[0]
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        num = math.exp(float(z[i] @ z[j]) / tau)
        den = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(2 * n) if k != i)
        total += -math.log(num / den)
    return total / (2 * n)


@pytest.mark.parametrize("n,d,tau", [(2, 3, 0.1), (5, 8, 0.5), (8, 16, 1.0), (3, 128, 0.07)])
def test_matches_loop_reference(n, d, tau):
    g = torch.Generator().manual_seed(n * d)
    za, zb = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    assert nt_xent(za, zb, tau).item() == pytest.approx(loop_nt_xent(za, zb, tau), rel=1e-5)


def test_symmetric():
    za, zb = torch.randn(6, 10), torch.randn(6, 10)
    assert nt_xent(za, zb, 0.1).item() == pytest.approx(nt_xent(zb, za, 0.1).item(), rel=1e-6)


def test_analytic_value_for_identical_collinear_views():
    # every embedding identical: all 2N-1 candidates have the same logit -> loss = log(2N - 1)
    n = 7
    z = torch.ones(n, 4)
    assert nt_xent(z, z, 0.1).item() == pytest.approx(math.log(2 * n - 1), rel=1e-6)


def test_accuracy_perfect_for_matching_orthogonal_views():
    z = torch.eye(8) * 3
    logits, target = nt_xent_logits(z, z.clone(), 0.1)
    assert logits.shape == (16, 16) and contrastive_accuracy(logits, target).item() == 1.0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        nt_xent(torch.randn(3, 4), torch.randn(4, 4))


def test_fake_gather_with_offsets_equals_one_process_on_the_combined_batch():
    """One process plays each rank of a world of 2. The fake gather returns the combined batch with the local
    embeddings in this rank's place, i.e. it concatenates the other rank's fixed (normalised) embeddings before or
    after them, as all_gather would. Each rank's logits are then its rows of the combined batch's logits, and the
    mean of the ranks' losses (what DDP averages) is the combined-batch loss, gradients included."""
    n, world, d, tau = 3, 2, 8, 0.1
    g = torch.Generator().manual_seed(0)
    za = torch.randn(n * world, d, generator=g, requires_grad=True)
    zb = torch.randn(n * world, d, generator=g, requires_grad=True)
    full_logits, full_target = nt_xent_logits(za, zb, tau)
    ref = nt_xent(za, zb, tau)
    ref_ga, ref_gb = torch.autograd.grad(ref, (za, zb), retain_graph=True)

    def rank_logits(rank, offset):
        lo, hi = rank * n, (rank + 1) * n
        banks = iter([F.normalize(za, dim=1), F.normalize(zb, dim=1)])  # nt_xent gathers z_a, then z_b

        def fake_gather(x):
            other = next(banks)
            return torch.cat([other[:lo], x, other[hi:]])  # (n * world, d): this rank's rows are its own

        return nt_xent_logits(za[lo:hi], zb[lo:hi], tau, gather=fake_gather, offset=offset)

    losses = []
    for rank in range(world):
        logits, target = rank_logits(rank, offset=rank * n)
        rows = torch.cat([torch.arange(rank * n, (rank + 1) * n), n * world + torch.arange(rank * n, (rank + 1) * n)])
        assert logits.shape == (2 * n, 2 * n * world) and target.shape == (2 * n,)
        torch.testing.assert_close(logits, full_logits[rows], rtol=0, atol=1e-6)
        assert torch.equal(target, full_target[rows])
        losses.append(F.cross_entropy(logits, target))
    mean = torch.stack(losses).mean()
    assert mean.item() == pytest.approx(ref.item(), rel=1e-6)
    ga, gb = torch.autograd.grad(mean, (za, zb))
    torch.testing.assert_close(ga, ref_ga, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gb, ref_gb, rtol=1e-5, atol=1e-7)
    # the offset is what points each anchor at its own positive: rank 1 with offset 0 scores rank 0's pairs
    wrong = F.cross_entropy(*rank_logits(1, offset=0))
    assert wrong.item() != pytest.approx(losses[1].item(), rel=1e-3)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, za, zb, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    n = za.shape[0] // world
    a = za[rank * n:(rank + 1) * n].clone().requires_grad_(True)
    b = zb[rank * n:(rank + 1) * n].clone().requires_grad_(True)
    loss = nt_xent(a, b, 0.1, gather=gather_with_grad, offset=rank * n)
    loss.backward()
    # DDP averages gradients over ranks; emulate that to compare with one process on the full batch
    ga, gb, lo = a.grad.clone(), b.grad.clone(), loss.detach().clone()
    for t in (lo,):
        dist.all_reduce(t)
        t /= world
    out[rank] = (lo, ga / world, gb / world)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gather_equals_single_process():
    torch.manual_seed(0)
    za, zb = torch.randn(8, 16), torch.randn(8, 16)
    full_a, full_b = za.clone().requires_grad_(True), zb.clone().requires_grad_(True)
    ref = nt_xent(full_a, full_b, 0.1)
    ref.backward()
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(2, _free_port(), za, zb, out), nprocs=2, join=True)
    for rank in range(2):
        lo, ga, gb = out[rank]
        assert lo.item() == pytest.approx(ref.item(), rel=1e-6)
        torch.testing.assert_close(ga, full_a.grad[rank * 4:(rank + 1) * 4], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(gb, full_b.grad[rank * 4:(rank + 1) * 4], rtol=1e-5, atol=1e-7)
