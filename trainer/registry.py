"""Named model variants: the paper's (Tables 1, 2, 4, 5) and small ones for CPU tests.

`build("dbof-3")` returns a model; `VARIANTS[name].paper` holds the parameter counts the
paper prints, `.reference` the counts of the reference design instantiated. Context-aware
variants are named `CONTEXT+SEGMENT` (the frozen video encoder first).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch
from torch import nn

from trainer.errors import TrainerError
from trainer.models.config import (
    ContextAwareConfig,
    DBoFConfig,
    EncoderConfig,
    HeadConfig,
    MixtureConfig,
    MixtureEncoderConfig,
    NeXtVLADConfig,
    VideoModelConfig,
)
from trainer.models.context_aware import ContextAwareModel
from trainer.models.mixture import MixtureModel
from trainer.models.video import VideoModel

# How far (relative) a count may be from the paper's and still reproduce it.
COUNT_TOLERANCE = 0.03


@dataclass(frozen=True)
class Count:
    """Parameter counts in millions; a paper range (lo, hi) where it prints one."""

    total: tuple[float, float]
    trainable: tuple[float, float] | None = None  # None: every parameter is trainable

    @property
    def trainable_or_total(self) -> tuple[float, float]:
        return self.trainable or self.total


@dataclass(frozen=True)
class Variant:
    name: str
    config: VideoModelConfig | ContextAwareConfig
    source: str  # where the variant comes from
    paper: Count | None = None  # as printed in the paper
    reference: Count | None = None  # the reference design instantiated
    note: str = ""


def _video(embedding, fc_dim: int, mixtures: int) -> VideoModelConfig:
    return VideoModelConfig(EncoderConfig(embedding, fc_dim=fc_dim), HeadConfig(mixtures=mixtures))


def _segment_encoder(video: VideoModelConfig) -> EncoderConfig:
    """Reference design: a NeXtVLAD segment encoder ends at the FC's linear output."""
    if isinstance(video, MixtureConfig):
        raise TrainerError(
            "a mixture cannot be the segment encoder of a context-aware model: the aware "
            "model has one head, so the mixture's K heads and their distillation would be "
            "dropped (docs/models.md); fine-tune it with --kind agnostic, or use it as --context")
    nxvlad = isinstance(video.encoder.embedding, NeXtVLADConfig)
    return replace(video.encoder, stop_at_fc=nxvlad)


def _pair(context: VideoModelConfig, segment: VideoModelConfig, fc_dim: int, mixtures: int):
    return ContextAwareConfig(
        context.encoder, _segment_encoder(segment), fc_dim=fc_dim, head=HeadConfig(mixtures)
    )


def aware_config(context: VideoModelConfig, segment: VideoModelConfig) -> ContextAwareConfig:
    """A context-aware model of two video models' encoders (pairs not in the registry): the
    FC as wide as the wider encoder, the 2-mixture head of Table 5."""
    return _pair(context, segment, fc_dim=max(context.encoder.fc_dim, segment.encoder.fc_dim),
                 mixtures=2)


def _m(x: float) -> tuple[float, float]:
    return (x, x)


# Table 1 (H, D, N) and Table 2 (C, G, N).
_DBOF = DBoFConfig(hidden=4096)
_VIDEO = {
    "dbof-1": (_video(_DBOF, 2048, 5), Count(_m(38)), Count(_m(38.09))),
    "dbof-2": (_video(_DBOF, 2048, 4), Count(_m(36)), Count(_m(36.04))),
    "dbof-3": (_video(_DBOF, 2048, 4), Count(_m(36)), Count(_m(36.04))),
    "nxvlad-1": (_video(NeXtVLADConfig(64, 32), 2048, 4), Count(_m(26)), Count(_m(25.91))),
    "nxvlad-2": (_video(NeXtVLADConfig(64, 16), 2048, 4), Count(_m(33)), Count(_m(32.57))),
}
# Table 4 pairs, Table 5 counts, with a 2-mixture head.
_PAIRS = {
    ("dbof-1", "nxvlad-2"): (Count((64, 65), (36, 37)), Count(_m(64.70), _m(36.87))),
    ("dbof-2", "nxvlad-2"): (Count((64, 65), (36, 37)), Count(_m(64.70), _m(36.87))),
    ("dbof-3", "nxvlad-2"): (Count((64, 65), (36, 37)), Count(_m(64.70), _m(36.87))),
    ("nxvlad-2", "dbof-3"): (Count(_m(67), _m(43)), Count(_m(66.80), _m(42.45))),
    ("nxvlad-2", "nxvlad-2"): (Count(_m(59), _m(35)), Count(_m(61.22), _m(36.87))),
}
NXVLAD_PAIR_NOTE = (
    "paper row inconsistent: same trainable parts as dbof-x+nxvlad-2 (36.9M); "
    "59M/35M is what a 1-mixture head gives (59.2M/34.8M)"
)
_TINY = {
    "dbof-tiny": _video(DBoFConfig(hidden=64), 32, 2),
    "nxvlad-tiny": _video(NeXtVLADConfig(clusters=8, groups=8, expansion=1), 32, 2),
}


def _mixture(branch: VideoModelConfig, branches: int) -> MixtureConfig:
    """K copies of a video model's architecture (own weights each), mixed and distilled."""
    return MixtureConfig(MixtureEncoderConfig(branch.encoder, branches), branch.head)


# Mixtures of NeXtVLADs (MOD, 3rd place of the 3rd challenge, arXiv 1910.12295): name →
# (branch variant, K). K = 3 as MOD's and the NeXtVLAD paper's mixtures (§3.4).
MIXTURES = {"mix-nxvlad-3": ("nxvlad-2", 3), "mix-nxvlad-tiny": ("nxvlad-tiny", 3)}
MIXTURE_SOURCE = "MOD (3rd place, arXiv 1910.12295): K branches of {branch}"


def _variants() -> dict[str, Variant]:
    out = {}
    for name, (cfg, paper, ref) in _VIDEO.items():
        out[name] = Variant(name, cfg, "paper Tables 1-2", paper, ref)
    for (ctx, seg), (paper, ref) in _PAIRS.items():
        name = f"{ctx}+{seg}"
        note = NXVLAD_PAIR_NOTE if name == "nxvlad-2+nxvlad-2" else ""
        cfg = _pair(_VIDEO[ctx][0], _VIDEO[seg][0], fc_dim=2048, mixtures=2)
        out[name] = Variant(name, cfg, "paper Tables 4-5", paper, ref, note)
    for name, cfg in _TINY.items():
        out[name] = Variant(name, cfg, "small, for CPU tests and the demo")
    for ctx, seg in (("dbof-tiny", "nxvlad-tiny"), ("nxvlad-tiny", "dbof-tiny")):
        cfg = _pair(_TINY[ctx], _TINY[seg], fc_dim=32, mixtures=2)
        out[f"{ctx}+{seg}"] = Variant(f"{ctx}+{seg}", cfg, "small, for CPU tests and the demo")
    for name, (branch, k) in MIXTURES.items():
        out[name] = Variant(name, _mixture(out[branch].config, k),
                            MIXTURE_SOURCE.format(branch=f"{branch}, K = {k}"))
    # a mixture as the frozen context encoder (its K encoders side by side)
    name = "mix-nxvlad-tiny+nxvlad-tiny"
    cfg = _pair(out["mix-nxvlad-tiny"].config, _TINY["nxvlad-tiny"], fc_dim=32, mixtures=2)
    out[name] = Variant(name, cfg, "small, for CPU tests and the demo")
    return out


VARIANTS: dict[str, Variant] = _variants()


def build_config(config: VideoModelConfig | ContextAwareConfig) -> nn.Module:
    if isinstance(config, ContextAwareConfig):
        return ContextAwareModel(config)
    if isinstance(config, MixtureConfig):
        return MixtureModel(config)
    return VideoModel(config)


def build(name: str, device: str | torch.device | None = None) -> nn.Module:
    """The model of a registered variant; `device="meta"` builds it without memory."""
    if name not in VARIANTS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(VARIANTS)}")
    with torch.device(device) if device is not None else nullcontext():
        return build_config(VARIANTS[name].config)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def within(count: float, paper: tuple[float, float], tol: float = COUNT_TOLERANCE) -> bool:
    """Is `count` (millions) within `tol` of the paper's value or range?"""
    lo, hi = paper
    return lo * (1 - tol) <= count <= hi * (1 + tol)


def _fmt(count: tuple[float, float] | None) -> str:
    if count is None:
        return "-"
    lo, hi = count
    return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"


def parameter_rows() -> list[dict]:
    """One row per variant: our counts (millions, built on the meta device) beside the
    paper's and the reference design's (`*_m`), and whether ours are within 3% of the paper."""
    rows = []
    for v in VARIANTS.values():
        total, trainable = count_parameters(build(v.name, device="meta"))
        ours = (total / 1e6, trainable / 1e6)
        row = {
            "name": v.name,
            "total_m": round(ours[0], 3),
            "trainable_m": round(ours[1], 3),
            "paper_total_m": _fmt(v.paper and v.paper.total),
            "paper_trainable_m": _fmt(v.paper and v.paper.trainable_or_total),
            "reference_total_m": _fmt(v.reference and v.reference.total),
            "reference_trainable_m": _fmt(v.reference and v.reference.trainable_or_total),
            "reproduces_paper": None,
            "note": v.note,
            "source": v.source,
        }
        if v.paper:
            row["reproduces_paper"] = within(ours[0], v.paper.total) and within(
                ours[1], v.paper.trainable_or_total
            )
        rows.append(row)
    return rows
