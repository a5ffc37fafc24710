"""Checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint is a directory:

    model.safetensors      model.state_dict() (parameters and buffers, e.g. BN running
                           statistics); metadata "model": the model's class and config
    optimizer.safetensors  every tensor of optimizer.state_dict(); metadata "optimizer":
                           the rest of it as JSON, tensors replaced by {"__tensor__": key}
    state.json             {"format", "state": the caller's dict (step, epoch, metrics,
                           the loader's position, ...), "scheduler": its state_dict,
                           "rng": [per process: python, numpy, torch CPU, CUDA states]}
    config.json            the run's resolved config (the caller's dict)
    extra.safetensors      optional: other tensors of the run's state (`tensors=`, e.g. the
                           weight average of --swa-from), read by `load_tensors`

It is written to a temporary directory beside the target and renamed into place, so a
directory with the final name is always complete. Replacing an existing checkpoint takes
two renames (old → `.NAME.old`, new → NAME); a crash between them leaves the old one
complete at `.NAME.old`, which `load_checkpoint` falls back to.

JSON holds tuples, int-keyed dicts and small numpy / torch arrays (base64) through a small
tagged encoding (`{"__tuple__": [...]}`, `{"__int_keys__": {...}}`, `{"__numpy__": ...}`,
`{"__torch__": ...}`), so a state comes back exactly as it was saved (python's RNG state
is a tuple, the optimizer's state is keyed by int).

`load_checkpoint` restores the model, optimizer, scheduler and RNG states exactly: a run
saved at step k and resumed in fresh objects ends with bit-identical weights (CPU, tested).
It refuses, with a one-line `CheckpointError`, a directory that is not a checkpoint and a
checkpoint of another model (naming the config fields, parameters or shapes that differ).

`CheckpointKeeper(run_dir, metric, mode)` keeps `last/` (every save) and `best/` (hard
links to the files of the best `last/` so far by the evaluation metric).
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from trainer.errors import TrainerError

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"
EXTRA_FILE = "extra.safetensors"  # optional
_FILES = (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, CONFIG_FILE)
# How many differences a refusal names before "(+N more)".
_SHOWN = 3


class CheckpointError(TrainerError):
    """A directory is not a checkpoint, or not one of this model / optimizer."""


# ---------------------------------------------------------------- JSON with tags


def _array_to_json(tag: str, array: np.ndarray) -> dict:
    data = base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")
    return {tag: {"dtype": array.dtype.str, "shape": list(array.shape), "b64": data}}


def _array_from_json(spec: dict) -> np.ndarray:
    raw = base64.b64decode(spec["b64"])
    return np.frombuffer(raw, dtype=np.dtype(spec["dtype"])).reshape(spec["shape"]).copy()


def encode(obj: Any, tensors: dict[str, torch.Tensor] | None = None, key: str = "") -> Any:
    """Nested dicts, lists, tuples, numbers, strings, numpy arrays and torch tensors → JSON.

    Tensors go to `tensors[key]` (stored in a safetensors file) when a sink is given,
    else inline as base64 (small ones: RNG states). `decode` is the inverse.
    """
    if isinstance(obj, torch.Tensor):
        if tensors is None:
            return _array_to_json("__torch__", obj.detach().cpu().numpy())
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return _array_to_json("__numpy__", obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        items = {str(k): encode(v, tensors, f"{key}.{k}") for k, v in obj.items()}
        if all(isinstance(k, str) for k in obj):
            return items
        if all(isinstance(k, int) and not isinstance(k, bool) for k in obj):
            return {"__int_keys__": items}
        raise CheckpointError(f"{key or 'value'}: dict keys must be all str or all int")
    raise CheckpointError(f"{key or 'value'}: cannot store a {type(obj).__name__} without pickle")


def decode(obj: Any, tensors: dict[str, torch.Tensor] | None = None) -> Any:
    """The inverse of `encode` (tensors from the sink, or inline)."""
    if isinstance(obj, list):
        return [decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        ((tag, value),) = obj.items()
        if tag == "__tensor__":
            return tensors[value]
        if tag == "__torch__":
            return torch.from_numpy(_array_from_json(value))
        if tag == "__numpy__":
            return _array_from_json(value)
        if tag == "__tuple__":
            return tuple(decode(v, tensors) for v in value)
        if tag == "__int_keys__":
            return {int(k): decode(v, tensors) for k, v in value.items()}
    return {k: decode(v, tensors) for k, v in obj.items()}


# ---------------------------------------------------------------- RNG states


def rng_state() -> dict:
    """This process's RNG states: python `random`, numpy's global, torch CPU and CUDA."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` returned (CUDA states only where CUDA is present)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        for device, s in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, device)


# ---------------------------------------------------------------- model identity


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel and torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _flat_config(obj: Any, prefix: str = "") -> dict[str, Any]:
    """A (nested dataclass) config as {"a.b.c": value}, with each dataclass's class name."""
    if dataclasses.is_dataclass(obj):
        out = {f"{prefix}class": type(obj).__name__}
        for f in dataclasses.fields(obj):
            out.update(_flat_config(getattr(obj, f.name), f"{prefix}{f.name}."))
        return out
    return {prefix.rstrip("."): encode(obj)}


def model_identity(model: nn.Module) -> dict:
    """What must match for a checkpoint to load: the class, the config (`model.cfg`, if
    any), the name, shape and dtype of every entry of the state_dict."""
    model = unwrap(model)
    cfg = getattr(model, "cfg", None)
    return {
        "class": type(model).__name__,
        "config": _flat_config(cfg) if dataclasses.is_dataclass(cfg) else None,
        "tensors": {k: list(v.shape) for k, v in model.state_dict().items()},
    }


def _more(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")


def _differences(saved: dict, model: dict) -> list[str]:
    out = []
    if saved["class"] != model["class"]:
        out.append(f"class {saved['class']} in the checkpoint, {model['class']} here")
    a, b = saved["config"] or {}, model["config"] or {}
    fields = [k for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
    if fields:
        out.append(
            "config "
            + _more([f"{k} = {a.get(k)} in the checkpoint, {b.get(k)} here" for k in fields])
        )
    a, b = saved["tensors"], model["tensors"]
    missing = [k for k in b if k not in a]
    unexpected = [k for k in a if k not in b]
    shapes = [f"{k} {tuple(a[k])} vs {tuple(b[k])}" for k in b if k in a and a[k] != b[k]]
    for what, items in (("missing", missing), ("unexpected", unexpected), ("shapes", shapes)):
        if items:
            out.append(f"{what} {_more(items)}")
    return out


# ---------------------------------------------------------------- files


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def _replace_dir(src: Path, dst: Path) -> None:
    """Move the complete directory `src` to `dst`, the old `dst` (if any) out of the way."""
    old = dst.parent / f".{dst.name}.old"
    if dst.exists():
        if old.exists():
            shutil.rmtree(old)
        os.rename(dst, old)
    os.rename(src, dst)
    _fsync(dst.parent)
    if old.exists():
        shutil.rmtree(old)


def _fresh_temp(dst: Path) -> Path:
    """An empty `.NAME.tmp-PID` beside `dst`, after removing any left by a crash."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    for stale in dst.parent.glob(f".{dst.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = dst.parent / f".{dst.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    return tmp


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    state: dict | None = None,
    config: dict | None = None,
    rng_states: list[dict] | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a checkpoint to `directory` atomically (see the module docstring).

    `model` may be wrapped (DDP, torch.compile). `state`: JSON-able dict of the caller's
    (step, epoch, metrics, the loader's state ...); `config`: the run's resolved config.
    `rng_states`: one `rng_state()` per process (gathered on rank 0 under DDP); default
    this process's. `tensors`: more named tensors of the run's state (`EXTRA_FILE`).
    Call on one process only.
    """
    directory = Path(directory)
    model = unwrap(model)
    tmp = _fresh_temp(directory)
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, tmp / MODEL_FILE, {"model": json.dumps(model_identity(model))})
        opt_tensors: dict[str, torch.Tensor] = {}
        index = encode(optimizer.state_dict() if optimizer is not None else None, opt_tensors,
                       "opt")
        save_file(opt_tensors, tmp / OPTIMIZER_FILE, {"optimizer": json.dumps(index)})
        full_state = {
            "format": FORMAT_VERSION,
            "state": encode(state or {}),
            "scheduler": encode(scheduler.state_dict() if scheduler is not None else None),
            "rng": encode(rng_states if rng_states is not None else [rng_state()]),
        }
        _write_json(tmp / STATE_FILE, full_state)
        _write_json(tmp / CONFIG_FILE, config or {})
        names = list(_FILES)
        if tensors:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                      tmp / EXTRA_FILE)
            names.append(EXTRA_FILE)
        for name in names:
            _fsync(tmp / name)
        _replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def checkpoint_dir(directory: str | Path) -> Path:
    """`directory` if it is a complete checkpoint, else its `.NAME.old` left by a crash
    between the two renames of a replacement; a one-line `CheckpointError` otherwise."""
    directory = Path(directory)
    for candidate in (directory, directory.parent / f".{directory.name}.old"):
        if candidate.is_dir() and all((candidate / f).is_file() for f in _FILES):
            return candidate
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint directory")
    absent = [f for f in _FILES if not (directory / f).is_file()]
    raise CheckpointError(f"{directory}: not a checkpoint (no {', '.join(absent)})")


def read_config(directory: str | Path) -> dict:
    """The run config saved in a checkpoint."""
    return json.loads((checkpoint_dir(directory) / CONFIG_FILE).read_text())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable ({err})") from None


def _metadata(path: Path, key: str) -> Any:
    try:
        with safe_open(path, "pt") as f:
            return json.loads((f.metadata() or {})[key])
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: not a checkpoint file ({err})") from None


def check_model(directory: str | Path, model: nn.Module) -> Path:
    """The checkpoint's directory if it holds weights of this very model (class, config,
    tensor names and shapes), else a one-line `CheckpointError` naming the differences."""
    found = checkpoint_dir(directory)
    saved = _metadata(found / MODEL_FILE, "model")
    differences = _differences(saved, model_identity(model))
    if differences:
        raise CheckpointError(
            f"{directory}: a checkpoint of another model: {'; '.join(differences)}"
        )
    return found


def load_checkpoint(
    directory: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    restore_rng: bool = True,
) -> dict:
    """Restore a checkpoint into `model` (and `optimizer`, `scheduler` if given, and this
    process's RNG states unless `restore_rng=False`); return the caller's `state` dict.

    Under DDP each rank restores its own saved RNG state (`rng_states[rank]`).
    Nothing is unpickled.
    """
    found = check_model(directory, model)
    full = _read_json(found / STATE_FILE)
    if full.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{directory}: checkpoint format {full.get('format')}, "
            f"this version reads {FORMAT_VERSION}"
        )
    rng = decode(full["rng"])
    rank, world = _rank_and_world()
    if restore_rng and len(rng) != world:
        raise CheckpointError(f"{directory}: saved by {len(rng)} process(es), resumed by {world}")
    unwrap(model).load_state_dict(load_file(found / MODEL_FILE))
    if optimizer is not None:
        _load_optimizer(found, optimizer)
    if scheduler is not None:
        saved = decode(full["scheduler"])
        if saved is None:
            raise CheckpointError(f"{directory}: the checkpoint has no scheduler state")
        scheduler.load_state_dict(saved)
    if restore_rng:
        set_rng_state(rng[rank])
    return decode(full["state"])


def load_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    """The `tensors` saved with a checkpoint (empty if none were)."""
    path = checkpoint_dir(directory) / EXTRA_FILE
    if not path.is_file():
        return {}
    try:
        return load_file(path)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: unreadable ({err})") from None


def _rank_and_world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _load_optimizer(found: Path, optimizer: torch.optim.Optimizer) -> None:
    path = found / OPTIMIZER_FILE
    saved = decode(_metadata(path, "optimizer"), load_file(path))
    if saved is None:
        raise CheckpointError(f"{found}: the checkpoint has no optimizer state")
    ours = [len(g["params"]) for g in optimizer.param_groups]
    theirs = [len(g["params"]) for g in saved["param_groups"]]
    if ours != theirs:
        raise CheckpointError(
            f"{found}: optimizer groups of {theirs} parameters in the checkpoint, {ours} here"
        )
    optimizer.load_state_dict(saved)


# ---------------------------------------------------------------- best and last


class CheckpointKeeper:
    """`run_dir/last` on every `save`, `run_dir/best` when `state["metrics"][metric]`
    improves (`mode` "max" or "min"; NaN never improves).

    The best value so far is read back from `best/state.json`, so a resumed run keeps it.
    `best/` holds hard links to the files of `last/` (a saved file is never rewritten:
    each save writes new files), copies where links are not supported.
    """

    def __init__(self, run_dir: str | Path, metric: str, mode: str = "max"):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
        self.run_dir, self.metric, self.mode = Path(run_dir), metric, mode
        self.last, self.best_dir = self.run_dir / "last", self.run_dir / "best"
        self.best: float | None = None
        if self.best_dir.is_dir():
            saved = decode(_read_json(checkpoint_dir(self.best_dir) / STATE_FILE)["state"])
            self.best = saved.get("metrics", {}).get(metric)

    def improves(self, value: float | None) -> bool:
        if value is None or np.isnan(value):
            return False
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def save(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        scheduler: Any | None,
        state: dict,
        config: dict,
        rng_states: list[dict] | None = None,
        tensors: dict[str, torch.Tensor] | None = None,
    ) -> bool:
        """Save `last/`; also `best/` if the metric improved (returns whether it did)."""
        save_checkpoint(self.last, model, optimizer, scheduler, state, config, rng_states,
                        tensors)
        value = state.get("metrics", {}).get(self.metric)
        if not self.improves(value):
            return False
        tmp = _fresh_temp(self.best_dir)
        for name in _FILES:
            try:
                os.link(self.last / name, tmp / name)
            except OSError:
                shutil.copy2(self.last / name, tmp / name)
        _replace_dir(tmp, self.best_dir)
        self.best = value
        return True

    def offer(self, model: nn.Module, state: dict, config: dict) -> bool:
        """`best/` = `model` (weights only: no optimizer or scheduler state) if its
        `state["metrics"][metric]` improves on the best so far, e.g. the weight average of
        --swa-from against the trained weights just saved; returns whether it did."""
        value = state.get("metrics", {}).get(self.metric)
        if not self.improves(value):
            return False
        save_checkpoint(self.best_dir, model, None, None, state, config)
        self.best = value
        return True
