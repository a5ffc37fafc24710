"""RunDir.create under two real gloo processes: the ranks agree whatever their timing."""
from __future__ import annotations

import json
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainer.errors import TrainerError
from trainer.recipes.runtime import Ranks, RunDir


def _create(rank: int, world: int, init: str, out: str, delay: float, results: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        ranks = Ranks(rank, world, torch.device("cpu"))
        if rank == 1:
            time.sleep(delay)  # rank 0 has written config.json before rank 1 looks
        try:
            RunDir(out, ranks).create({"model": "dbof-tiny"}, resume=False)
            outcome = "ok"
        except TrainerError as err:
            outcome = str(err)
        with open(f"{results}.{rank}", "w") as f:
            f.write(outcome)
    finally:
        dist.destroy_process_group()


def _run(tmp_path, out, delay: float) -> list[str]:
    init = f"file://{tmp_path / 'rendezvous'}"
    (tmp_path / "rendezvous").unlink(missing_ok=True)
    results = str(tmp_path / "result")
    mp.spawn(_create, args=(2, init, str(out), delay, results), nprocs=2, join=True)
    return [open(f"{results}.{r}").read() for r in range(2)]


@pytest.mark.slow
def test_a_late_rank_does_not_refuse_the_run_rank_0_just_created(tmp_path):
    out = tmp_path / "run"
    assert _run(tmp_path, out, delay=1.0) == ["ok", "ok"]
    assert json.loads((out / "config.json").read_text()) == {"model": "dbof-tiny"}
    again = _run(tmp_path, out, delay=0.0)  # a run is there now: every rank refuses it
    assert all("already holds a run" in r for r in again), again
