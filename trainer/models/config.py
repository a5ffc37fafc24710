"""Frozen configurations of every model; the registry (trainer/registry.py) names them.

Defaults are the reference design's (7th-place solution, paper §3 and Tables 1, 2, 5).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ingest.codec.video import AUDIO_BYTES, FRAME_BYTES, RGB_BYTES
from ingest.vocab import N_SEGMENT_CLASSES

# YouTube-8M frame features: 1024 rgb + 128 audio values per frame (docs/formats.md).
RGB_DIM = RGB_BYTES
AUDIO_DIM = AUDIO_BYTES
FRAME_DIM = FRAME_BYTES
# The 1000 rated segment classes.
NUM_CLASSES = N_SEGMENT_CLASSES


@dataclass(frozen=True)
class DBoFConfig:
    """Context-gated DBoF embedding (Table 1: H = hidden)."""

    hidden: int = 4096
    frame_gating_reduction: int = 8  # SE bottleneck H / 8 on every frame


@dataclass(frozen=True)
class NeXtVLADConfig:
    """NeXtVLAD embedding (Table 2: C = clusters, G = groups); audio branch C/2 clusters."""

    clusters: int = 64
    groups: int = 16
    expansion: int = 2
    cluster_dropout: float = 0.25  # paper §3: 25% cluster dropout


@dataclass(frozen=True)
class EncoderConfig:
    """Embedding → FC → ReLU → SE gating: a video (or segment) → `(B, fc_dim)`.

    `stop_at_fc=True` ends the encoder at the FC's linear output (no ReLU, no gating):
    the reference design's NeXtVLAD segment encoder inside a context-aware model.
    `gating_reduction=0` removes the gating.
    """

    embedding: DBoFConfig | NeXtVLADConfig
    fc_dim: int = 2048  # Table 1: D
    gating_reduction: int = 4
    dropout: float = 0.5
    stop_at_fc: bool = False


@dataclass(frozen=True)
class HeadConfig:
    """Mixture-of-experts head (Tables 1, 2: N = mixtures)."""

    mixtures: int = 4
    classes: int = NUM_CLASSES
    dropout: float = 0.5


@dataclass(frozen=True)
class VideoModelConfig:
    """Video-level model = encoder + MoE head (also the context-agnostic segment model)."""

    encoder: EncoderConfig
    head: HeadConfig = field(default_factory=HeadConfig)


@dataclass(frozen=True)
class ContextAwareConfig:
    """Frozen context (video) encoder + trainable segment encoder → concat → FC → gating → MoE."""

    context: EncoderConfig | MixtureEncoderConfig
    segment: EncoderConfig
    fc_dim: int = 2048
    gating_reduction: int = 4  # 0: no gating after the FC
    dropout: float = 0.5
    head: HeadConfig = field(default_factory=lambda: HeadConfig(mixtures=2))


@dataclass(frozen=True)
class MixtureEncoderConfig:
    """The encoder of a mixture: `branches` encoders side by side, each its own weights
    (trainer/models/mixture.py); its output is their encodings concatenated `(B, K·D)`."""

    branch: EncoderConfig
    branches: int = 3  # K (NeXtVLAD paper §3.4: a mixture of 3)

    @property
    def fc_dim(self) -> int:
        """One branch's width D (what sizes an aware FC after it, `aware_config`)."""
        return self.branch.fc_dim


@dataclass(frozen=True)
class MixtureConfig(VideoModelConfig):
    """A mixture of K video models sharing the input frames, each with its own MoE head
    (`head`), mixed by a gate on the frames' mean; trained with online distillation."""

    encoder: MixtureEncoderConfig


_CONFIG_CLASSES = {c.__name__: c for c in (DBoFConfig, NeXtVLADConfig, EncoderConfig, HeadConfig,
                                           VideoModelConfig, ContextAwareConfig,
                                           MixtureEncoderConfig, MixtureConfig)}


def config_to_dict(cfg) -> dict:
    """A model config as JSON-able nested dicts, each tagged with its class (`"class"`)."""
    out = {"class": type(cfg).__name__}
    for name, value in vars(cfg).items():
        out[name] = config_to_dict(value) if type(value).__name__ in _CONFIG_CLASSES else value
    return out


def config_from_dict(d: dict):
    """The inverse of `config_to_dict`."""
    cls = _CONFIG_CLASSES[d["class"]]
    kw = {k: config_from_dict(v) if isinstance(v, dict) and "class" in v else v
          for k, v in d.items() if k != "class"}
    return cls(**kw)
