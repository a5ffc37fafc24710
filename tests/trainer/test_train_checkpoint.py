"""Checkpoints (trainer/checkpoint.py): exact resume, no pickle, refusals, best + last."""
from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from trainer.checkpoint import (
    CheckpointError,
    CheckpointKeeper,
    decode,
    encode,
    load_checkpoint,
    read_config,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unwrap,
)
from trainer.losses import video_loss
from trainer.models.config import DBoFConfig, EncoderConfig, VideoModelConfig
from trainer.optim import build_optimizer
from trainer.registry import build, build_config
from trainer.schedule import slanted_triangular_scheduler

STEPS, SAVE_AT, BATCH, LENGTH = 10, 4, 6, 12


@pytest.fixture
def deterministic():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


def _batch(step: int):
    """The data of a step depends on the step alone (as a resumed loader's does)."""
    g = torch.Generator().manual_seed(1000 + step)
    frames = torch.randint(0, 256, (BATCH, LENGTH, 1152), generator=g, dtype=torch.uint8)
    lengths = torch.randint(1, LENGTH + 1, (BATCH,), generator=g)
    mask = torch.arange(LENGTH)[None, :] < lengths[:, None]
    labels = torch.rand(BATCH, 1000, generator=g) < 0.02
    return frames, mask, labels


def _setup(seed: int, name="dbof-tiny"):
    torch.manual_seed(seed)
    model = build(name)
    opt = build_optimizer(model, lr=3e-3, weight_decay=0.1)
    return model, opt, slanted_triangular_scheduler(opt, STEPS)


def _train(model, opt, sched, steps):
    model.train()
    for step in steps:
        frames, mask, labels = _batch(step)
        loss = video_loss(model(frames, mask), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


def _assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


def _scramble_rngs():
    torch.manual_seed(12345)
    np.random.seed(12345)
    random.seed(12345)


def test_resume_is_bit_identical(tmp_path, deterministic):
    straight = _setup(0)
    _train(*straight, range(STEPS))

    first = _setup(0)
    _train(*first, range(SAVE_AT))
    config = {"model": "dbof-tiny", "steps": STEPS}
    state = {"step": SAVE_AT, "loader": {"i": 7}}
    save_checkpoint(tmp_path / "ck", *first, state=state, config=config)
    _train(*first, range(SAVE_AT, STEPS))  # the run that saved goes on unchanged
    _assert_same_state(first[0].state_dict(), straight[0].state_dict())

    resumed = _setup(99)  # other initial weights: everything must come from the checkpoint
    _scramble_rngs()
    assert load_checkpoint(tmp_path / "ck", *resumed) == state
    assert read_config(tmp_path / "ck") == config
    _train(*resumed, range(SAVE_AT, STEPS))
    _assert_same_state(resumed[0].state_dict(), straight[0].state_dict())
    _assert_same_state(
        {str(k): v for k, v in _flat_optimizer(resumed[1]).items()},
        {str(k): v for k, v in _flat_optimizer(straight[1]).items()},
    )

    # Without the RNG states, dropout draws differently and the weights differ.
    unseeded = _setup(99)
    load_checkpoint(tmp_path / "ck", *unseeded, restore_rng=False)
    _scramble_rngs()
    _train(*unseeded, range(SAVE_AT, STEPS))
    assert not torch.equal(unseeded[0].head.gate.weight, straight[0].head.gate.weight)


def _flat_optimizer(opt) -> dict:
    return {(i, k): v for i, s in opt.state_dict()["state"].items() for k, v in s.items()}


def test_buffers_optimizer_and_scheduler_round_trip(tmp_path):
    model, opt, sched = _setup(1, "nxvlad-tiny+dbof-tiny")
    frames, mask, _ = _batch(0)
    for _ in range(3):
        out = model(frames, mask, frames[:, :11])
        opt.zero_grad()
        out.log_p.mean().backward()
        opt.step()
        sched.step()
    save_checkpoint(tmp_path / "ck", model, opt, sched)
    weights = load_file(tmp_path / "ck" / "model.safetensors")
    for buffer in ("segment.fc.0.running_mean", "segment.fc.0.num_batches_tracked"):
        assert torch.equal(weights[buffer], model.state_dict()[buffer])  # buffers too
        assert weights[buffer].abs().sum() > 0  # and they did change in training
    other, other_opt, other_sched = _setup(2, "nxvlad-tiny+dbof-tiny")
    load_checkpoint(tmp_path / "ck", other, other_opt, other_sched)
    _assert_same_state(other.state_dict(), model.state_dict())
    a, b = other_opt.state_dict(), opt.state_dict()
    assert a["param_groups"] == b["param_groups"]  # lr per group, betas as a tuple, names
    assert isinstance(a["param_groups"][0]["betas"], tuple)
    _assert_same_state(
        {str(k): v for k, v in _flat_optimizer(other_opt).items()},
        {str(k): v for k, v in _flat_optimizer(opt).items()},
    )
    assert other_sched.state_dict() == sched.state_dict()


def test_nothing_is_unpickled(tmp_path, monkeypatch):
    model, opt, sched = _setup(0)
    _train(model, opt, sched, range(2))
    save_checkpoint(tmp_path / "ck", model, opt, sched, {"step": 2}, {})

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling")

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    load_checkpoint(tmp_path / "ck", *_setup(1))
    names = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert names == ["config.json", "model.safetensors", "optimizer.safetensors", "state.json"]
    json.loads((tmp_path / "ck" / "state.json").read_text())


def test_encoding_keeps_types_exactly():
    value = {
        "t": (1, 2.5, None, "x"),
        "ints": {0: [True, 3], 7: {"a": np.float32(1.5)}},
        "arr": np.arange(5, dtype=np.uint32),
        "rng": torch.get_rng_state(),
        "nan": float("nan"),
    }
    back = decode(json.loads(json.dumps(encode(value))))
    assert back["t"] == (1, 2.5, None, "x") and back["ints"] == {0: [True, 3], 7: {"a": 1.5}}
    assert back["arr"].dtype == np.uint32 and (back["arr"] == np.arange(5)).all()
    assert torch.equal(back["rng"], value["rng"]) and back["nan"] != back["nan"]
    sink = {}
    index = encode({"w": torch.ones(2, 3)}, sink, "k")
    assert index == {"w": {"__tensor__": "k.w"}} and decode(index, sink)["w"].shape == (2, 3)
    with pytest.raises(CheckpointError, match="cannot store a set"):
        encode({"bad": {1, 2}})
    with pytest.raises(CheckpointError, match="all str or all int"):
        encode({1: 0, "a": 1})


def test_rng_states_round_trip():
    saved = json.loads(json.dumps(encode(rng_state())))
    draws = (random.random(), np.random.rand(), torch.rand(3))
    _scramble_rngs()
    set_rng_state(decode(saved))
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert draws[:2] == again[:2] and torch.equal(draws[2], again[2])


def test_refuses_what_is_not_a_checkpoint(tmp_path):
    model = build("dbof-tiny")
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        load_checkpoint(tmp_path / "absent", model)
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "manifest.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"not a checkpoint \(no model.safetensors"):
        load_checkpoint(tmp_path / "store", model)
    save_checkpoint(tmp_path / "ck", model)
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a checkpoint file"):
        load_checkpoint(tmp_path / "ck", model)


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_refuses_a_checkpoint_of_another_model(tmp_path):
    save_checkpoint(tmp_path / "dbof", build("dbof-tiny"))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "dbof", build("nxvlad-tiny"))
    message = _one_line(err)
    assert "another model" in message
    assert "encoder.embedding.class = DBoFConfig in the checkpoint, NeXtVLADConfig here" in message
    assert "missing encoder.embedding.rgb" in message and "more)" in message

    head = build("dbof-tiny").cfg.head
    narrower = VideoModelConfig(EncoderConfig(DBoFConfig(hidden=48), fc_dim=32), head)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "dbof", build_config(narrower))
    message = _one_line(err)
    assert "encoder.embedding.hidden = 64 in the checkpoint, 48 here" in message
    assert "shapes encoder.embedding" in message and "(64, 1152) vs (48, 1152)" in message

    # A module without a config: the tensors alone decide.
    save_checkpoint(tmp_path / "lin", torch.nn.Linear(3, 4))
    with pytest.raises(CheckpointError, match=r"shapes weight \(4, 3\) vs \(5, 3\), bias"):
        load_checkpoint(tmp_path / "lin", torch.nn.Linear(3, 5))
    with pytest.raises(CheckpointError, match="class Linear in the checkpoint, GatedDBoF here"):
        load_checkpoint(tmp_path / "lin", build("dbof-tiny").encoder.embedding)


def test_refuses_an_optimizer_of_another_shape(tmp_path):
    model, opt, sched = _setup(0, "dbof-tiny")
    save_checkpoint(tmp_path / "ck", model, opt, sched)
    other = torch.optim.AdamW(model.parameters())
    with pytest.raises(CheckpointError, match="optimizer groups"):
        load_checkpoint(tmp_path / "ck", model, other)
    save_checkpoint(tmp_path / "weights", model)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(tmp_path / "weights", model, opt)


def test_wrapped_models_save_their_inner_weights(tmp_path):
    model = build("dbof-tiny")
    wrapped = torch.nn.DataParallel(model)
    assert unwrap(wrapped) is model
    save_checkpoint(tmp_path / "ck", wrapped)
    load_checkpoint(tmp_path / "ck", build("dbof-tiny"))  # no "module." prefix


def test_replacement_is_atomic(tmp_path):
    model = build("dbof-tiny")
    save_checkpoint(tmp_path / "last", model, state={"step": 1})
    # A save that fails half-way leaves the previous checkpoint untouched, and no temp dir.
    with pytest.raises(CheckpointError):
        save_checkpoint(tmp_path / "last", model, state={"step": 2, "bad": object()})
    assert load_checkpoint(tmp_path / "last", model)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    # A crash between the two renames: the old checkpoint is complete at .last.old.
    (tmp_path / "last").rename(tmp_path / ".last.old")
    (tmp_path / ".last.tmp-999").mkdir()  # and a crash while writing
    assert load_checkpoint(tmp_path / "last", model)["step"] == 1
    save_checkpoint(tmp_path / "last", model, state={"step": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert load_checkpoint(tmp_path / "last", model)["step"] == 3


NAN = float("nan")


@pytest.mark.parametrize(
    "mode, values, improved",
    [
        ("max", [0.5, 0.4, NAN, 0.7, 0.7], [True, False, False, True, False]),
        ("min", [0.5, 0.4, 0.6], [True, True, False]),
    ],
)
def test_keeper_keeps_best_and_last(tmp_path, mode, values, improved):
    model = build("dbof-tiny")
    keeper = CheckpointKeeper(tmp_path, "auc", mode)
    seen = []
    for step, v in enumerate(values):
        seen.append(keeper.save(model, None, None, {"step": step, "metrics": {"auc": v}}, {}))
        assert not keeper.save(model, None, None, {"step": step, "metrics": {}}, {})  # no eval
    assert seen == improved
    best_step = max(i for i, up in enumerate(improved) if up)
    assert load_checkpoint(tmp_path / "best", model)["step"] == best_step
    assert load_checkpoint(tmp_path / "last", model)["step"] == len(values) - 1
    # A resumed run reads the best value back.
    again = CheckpointKeeper(tmp_path, "auc", mode)
    assert again.best == values[best_step] and not again.improves(values[best_step])
