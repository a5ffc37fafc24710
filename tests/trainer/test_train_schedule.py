"""Slanted triangular learning rate: rise, peak at 25%, decay, end value; per-group peaks;
the scheduler's state_dict survives JSON and resumes the same rates."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trainer.optim import FINETUNE_LR, SEGMENT_ENCODER_LR, build_optimizer
from trainer.registry import build
from trainer.schedule import (
    ULMFIT_RATIO,
    WARMUP_FRACTION,
    slanted_triangular,
    slanted_triangular_scheduler,
)


def test_constants_are_the_papers_and_ulmfits():
    assert WARMUP_FRACTION == 0.25 and ULMFIT_RATIO == 32


@pytest.mark.parametrize("total", [400, 1000, 12])
def test_shape(total):
    f = np.array([slanted_triangular(t, total) for t in range(total + 1)])
    peak = total // 4
    assert f[0] == pytest.approx(1 / 32) and f[total] == pytest.approx(1 / 32)
    assert f.argmax() == peak and f[peak] == pytest.approx(1.0)
    rise, fall = np.diff(f[: peak + 1]), np.diff(f[peak:])
    assert (rise > 0).all() and (fall < 0).all()
    np.testing.assert_allclose(rise, rise[0])  # linear
    np.testing.assert_allclose(fall, fall[0])
    np.testing.assert_allclose(-fall[0] / rise[0], 1 / 3)  # decay over 3x as many steps
    assert slanted_triangular(total + 50, total) == pytest.approx(1 / 32)  # stays at the floor


def test_peak_between_steps_when_total_is_not_a_multiple_of_four():
    f = [slanted_triangular(t, 10) for t in range(11)]  # cut = 2.5
    assert max(f) < 1.0 and np.argmax(f) in (2, 3)
    assert f[2] == pytest.approx((1 + 0.8 * 31) / 32)


def test_other_ratio_and_warmup():
    assert slanted_triangular(0, 100, warmup_fraction=0.1, ratio=10) == pytest.approx(0.1)
    assert slanted_triangular(10, 100, warmup_fraction=0.1, ratio=10) == pytest.approx(1.0)
    for bad in ({"total_steps": 0}, {"warmup_fraction": 1.0}, {"ratio": 0.5}):
        with pytest.raises(ValueError):
            slanted_triangular(**{"step": 0, "total_steps": 10, **bad})


def _setup(total):
    torch.manual_seed(0)
    model = build("dbof-tiny+nxvlad-tiny")
    opt = build_optimizer(model, lr=FINETUNE_LR, weight_decay=0.0)
    return opt, slanted_triangular_scheduler(opt, total)


def _rates(opt):
    return {g["name"]: g["lr"] for g in opt.param_groups}


def test_scheduler_scales_each_groups_own_peak():
    opt, sched = _setup(40)
    seen = []
    for _ in range(40):
        seen.append(_rates(opt))
        opt.step()
        sched.step()
    assert seen[0]["decay"] == pytest.approx(FINETUNE_LR / 32)
    assert seen[10]["decay"] == pytest.approx(FINETUNE_LR)
    assert seen[10]["segment_decay"] == pytest.approx(SEGMENT_ENCODER_LR)
    for t, r in enumerate(seen):
        assert r["decay"] == pytest.approx(FINETUNE_LR * slanted_triangular(t, 40))
        assert r["segment_no_decay"] == pytest.approx(r["decay"] / 2)


def test_state_dict_round_trips_through_json():
    total, k = 30, 11
    opt, sched = _setup(total)
    for _ in range(k):
        opt.step()
        sched.step()
    saved = {"opt": opt.state_dict()["param_groups"], "s": sched.state_dict()}
    saved = json.loads(json.dumps(saved))
    assert saved["s"]["lr_lambdas"][0]["total_steps"] == total
    fresh_opt, fresh = _setup(1000)  # another length: the saved one must win
    groups = fresh_opt.state_dict()
    groups["param_groups"] = saved["opt"]
    fresh_opt.load_state_dict(groups)
    fresh.load_state_dict(saved["s"])
    assert _rates(fresh_opt) == _rates(opt)
    for _ in range(total - k):
        for o, s in ((opt, sched), (fresh_opt, fresh)):
            o.step()
            s.step()
        assert _rates(fresh_opt) == _rates(opt)
    assert fresh.last_epoch == total
