"""`--sync-bn` (issue #21): two real gloo processes, each with half of a global batch, give
the outputs, the DDP-averaged gradients and the running statistics of one process on the
whole batch, for every BatchNorm of the models (masked or not)."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainer.layers.masking import MaskedBatchNorm1d
from trainer.layers.sync_batchnorm import SyncMaskedBatchNorm1d, convert_sync_batchnorm
from trainer.losses import segment_loss, video_loss
from trainer.registry import build

BATCH, FRAMES = 8, 12
MODELS = ["dbof-tiny", "nxvlad-tiny", "dbof-tiny+nxvlad-tiny"]


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = build(name)
    for m in model.modules():  # dropout off: the two runs draw no masks to compare
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if hasattr(m, "cluster_dropout"):
            m.cluster_dropout = 0.0
    return model.train()


def _batch() -> dict:
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([12, 3, 7, 12, 1, 9, 5, 12])
    return {"frames": torch.randint(0, 256, (BATCH, FRAMES, 1152), dtype=torch.uint8, generator=g),
            "mask": torch.arange(FRAMES)[None] < lengths[:, None],
            "windows": torch.randint(0, 256, (BATCH, 11, 1152), dtype=torch.uint8, generator=g),
            "labels": torch.rand(BATCH, 1000, generator=g) > 0.99,
            "cls": torch.randint(0, 1000, (BATCH,), generator=g),
            "score": (torch.rand(BATCH, generator=g) > 0.5).float()}


def _step(net: nn.Module, name: str, b: dict, rows: slice) -> torch.Tensor:
    """The model's output probabilities on `rows` of the batch; backward of its loss."""
    if "+" in name:
        out = net(b["frames"][rows], b["mask"][rows], b["windows"][rows])
        loss = segment_loss(out, b["cls"][rows], b["score"][rows])
    else:
        out = net(b["frames"][rows], b["mask"][rows])
        loss = video_loss(out, b["labels"][rows])
    loss.backward()
    return out.probs().detach()


def _results(model: nn.Module, probs: torch.Tensor) -> dict:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    stats = {n: b.clone() for n, b in model.named_buffers() if "running" in n}
    return {"probs": probs, "grads": grads, "stats": stats}


def _rank(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        found = {}
        for name in MODELS:
            model = convert_sync_batchnorm(_model(name))
            net = DistributedDataParallel(model)
            half = BATCH // world
            probs = _step(net, name, _batch(), slice(rank * half, (rank + 1) * half))
            gathered = [torch.zeros_like(probs) for _ in range(world)]
            dist.all_gather(gathered, probs)
            found[name] = _results(model, torch.cat(gathered))
        if rank == 0:
            torch.save(found, out)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    """Each model's results from two gloo processes with half the batch each (one spawn)."""
    tmp = tmp_path_factory.mktemp("sync_bn")
    out = str(tmp / "ranks.pt")
    mp.spawn(_rank, args=(2, f"file://{tmp / 'rendezvous'}", out), nprocs=2, join=True)
    return torch.load(out)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_two_ranks_with_sync_bn_equal_one_process_on_the_whole_batch(two_ranks, name):
    ranks = two_ranks[name]
    model = _model(name)
    one = _results(model, _step(model, name, _batch(), slice(0, BATCH)))
    torch.testing.assert_close(ranks["probs"], one["probs"], rtol=1e-4, atol=1e-6)
    assert ranks["grads"].keys() == one["grads"].keys() and one["grads"]
    for key, grad in one["grads"].items():  # sums of many terms: to 1e-3 of the largest
        scale = max(float(grad.abs().max()), 1e-4)  # (some are 0 up to rounding)
        torch.testing.assert_close(ranks["grads"][key], grad, rtol=0, atol=1e-3 * scale, msg=key)
    assert ranks["stats"].keys() == one["stats"].keys() and one["stats"]
    for key, stat in one["stats"].items():
        torch.testing.assert_close(ranks["stats"][key], stat, rtol=1e-4, atol=1e-6, msg=key)


def test_conversion_keeps_parameters_buffers_and_frozen_weights():
    model = build("dbof-tiny+nxvlad-tiny")
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    before = {n: id(t) for n, t in [*model.named_parameters(), *model.named_buffers()]}
    norms = sum(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    convert_sync_batchnorm(model)
    after = {n: id(t) for n, t in [*model.named_parameters(), *model.named_buffers()]}
    assert after == before  # the very tensors: same state_dict keys, optimizer, checkpoints
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == frozen
    synced = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(synced) == norms and all(isinstance(m, SyncMaskedBatchNorm1d) for m in synced)
    x = torch.randn(6, 5, 16)
    bn, plain = SyncMaskedBatchNorm1d(16), MaskedBatchNorm1d(16)
    torch.testing.assert_close(bn(x, torch.ones(6, 5, dtype=torch.bool)), plain(x, None))
