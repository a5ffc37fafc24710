"""The planted signal of `ingest synth`: a fixed "world" of classes and how frames are rendered.

A world (one per `world_seed`) fixes, for every class, what it looks like:

- a topic direction per vocabulary class (3862, 1152): added to every frame of a
  video carrying that label; weak in one 5-frame segment, strong over a whole video;
- an event pattern per segment class (1000, 1152), sparse: added to the frames of
  the 5-second segments where that class's event happens; strong in one segment;
- ambiguous pairs: 20% of the segment classes share their event pattern with a
  partner class, so only the video's topic tells which of the two an event is;
- skewed (Zipf-like) label frequencies over the segment classes and the vocabulary.

Frames are rendered as floats `topic + events + noise` and quantised as the
dataset did (docs/formats.md "Feature values"). `render_frames` is the numba
kernel, `render_frames_np` its plain numpy twin. docs/synth.md gives the numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ingest.codec.video import FRAME_BYTES
from ingest.jit import njit
from ingest.store.segments import SEGMENT_FRAMES
from ingest.vocab import N_SEGMENT_CLASSES, N_VOCAB

QUANT_SCALE = 255.0 / 4.0  # dataset encoder: q = round((f + 2) * 255/4), f in [-2, 2]
QUANT_OFFSET = 2.0

# Signal strengths, in feature units (floats before quantisation). The noise of a
# 5-frame segment mean along any unit direction is NOISE_STD / sqrt(5) = 0.22.
NOISE_STD = 0.5  # per value per frame (triangular noise, see render_frames)
TOPIC_NORM = 0.2  # ||topic direction||: SNR 0.9 in one segment, ~6 over 210 frames
EVENT_NORM = 0.8  # ||event pattern||: SNR 3.6 in one segment
EVENT_SUPPORT = 64  # values an event pattern touches (of the 1152 rgb ‖ audio values)
AMBIGUOUS_PERIOD = 10  # classes at popularity rank 10i and 10i+1 form a pair: 20% ambiguous
ZIPF_EXPONENT = 1.0  # label frequency ∝ 1 / (rank + ZIPF_OFFSET) ** ZIPF_EXPONENT
ZIPF_OFFSET = 5.0

# Triangular noise from two random bytes: b0 + b1 - 255 has std sqrt(2 * (256**2 - 1) / 12).
_TRIANGLE_STD = float(np.sqrt(2 * (256**2 - 1) / 12))


def noise_scale(noise_std: float = NOISE_STD) -> float:
    """The factor on (b0 + b1 - 255) that gives triangular noise of std `noise_std`."""
    return float(noise_std) / _TRIANGLE_STD


NOISE_SCALE = noise_scale()


@dataclass(frozen=True)
class World:
    """What every class looks like; identical for every split and shard of one world seed."""

    topic: np.ndarray  # (3862, 1152) float32: topic direction of each vocabulary id
    pattern: np.ndarray  # (1000, 1152) float32: event pattern of each segment class
    partner: np.ndarray  # (1000,) int16: the class sharing the pattern, -1 if unambiguous
    segment_cdf: np.ndarray  # (1000,) float64: cumulative label frequency of segment classes
    vocab_cdf: np.ndarray  # (3862,) float64: cumulative label frequency of vocabulary ids


def _zipf_cdf(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(cdf (n,), rank (n,)): a Zipf-like frequency over n items in a random popularity order."""
    rank = rng.permutation(n)
    weight = 1.0 / (rank + ZIPF_OFFSET) ** ZIPF_EXPONENT
    cdf = np.cumsum(weight / weight.sum())
    cdf[-1] = 1.0
    return cdf, rank


def _unit_rows(rng: np.random.Generator, n: int, support: int | None = None) -> np.ndarray:
    """(n, 1152) float32 random unit vectors; with `support`, each touches that many values."""
    rows = np.zeros((n, FRAME_BYTES), np.float64)
    if support is None:
        rows[:] = rng.standard_normal((n, FRAME_BYTES))
    else:
        for i in range(n):
            idx = rng.choice(FRAME_BYTES, size=support, replace=False)
            rows[i, idx] = rng.standard_normal(support)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float32)


def ambiguous_partners(segment_rank: np.ndarray) -> np.ndarray:
    """(1000,) int16 partner of each segment class, -1 if unambiguous.

    The classes of popularity rank 10i and 10i+1 are partners (i = 0..99), so the
    pairs spread over frequent and rare classes and both partners are about as common.
    """
    by_rank = np.argsort(segment_rank)
    partner = np.full(len(segment_rank), -1, np.int16)
    first = by_rank[0::AMBIGUOUS_PERIOD]
    second = by_rank[1::AMBIGUOUS_PERIOD]
    partner[first], partner[second] = second, first
    return partner


@lru_cache(maxsize=4)
def make_world(world_seed: int) -> World:
    """The world of a seed (cached; arrays are read-only)."""
    rng = np.random.default_rng(np.random.SeedSequence([world_seed, 0x5E6]))
    segment_cdf, segment_rank = _zipf_cdf(rng, N_SEGMENT_CLASSES)
    vocab_cdf, _ = _zipf_cdf(rng, N_VOCAB)
    topic = _unit_rows(rng, N_VOCAB) * np.float32(TOPIC_NORM)
    pattern = _unit_rows(rng, N_SEGMENT_CLASSES, EVENT_SUPPORT) * np.float32(EVENT_NORM)
    partner = ambiguous_partners(segment_rank)
    shared = partner >= 0
    lead = np.minimum(np.arange(N_SEGMENT_CLASSES), np.where(shared, partner, N_SEGMENT_CLASSES))
    pattern = pattern[lead]  # both partners of a pair take the pattern of the lower index
    world = World(topic, pattern, partner, segment_cdf, vocab_cdf)
    for arr in (world.topic, world.pattern, world.partner, world.segment_cdf, world.vocab_cdf):
        arr.setflags(write=False)
    return world


@njit
def render_frames(topic, seg_add, noise, noise_scale, out):
    """Render and quantise frames (numba kernel; twin: `render_frames_np`).

    topic (1152,) float32 added to every frame; seg_add (n_seg, 1152) float32
    added to the frames of segment s = frame // 5; noise (n, 1152, 2) uint8 random
    bytes, noise = noise_scale * (b0 + b1 - 255); out (n, 1152) uint8 receives
    clip(rint((f + 2) * 255/4), 0, 255) of f = topic + seg_add + noise.
    """
    n, width = out.shape
    for i in range(n):
        s = i // SEGMENT_FRAMES
        for d in range(width):
            signal = topic[d] + seg_add[s, d]
            f = signal + noise_scale * (np.float64(noise[i, d, 0]) + np.float64(noise[i, d, 1])
                                        - 255.0)
            q = np.rint((f + QUANT_OFFSET) * QUANT_SCALE)
            out[i, d] = 0 if q < 0.0 else (255 if q > 255.0 else np.uint8(q))


def render_frames_np(topic, seg_add, noise, noise_scale, out) -> None:
    """Plain numpy twin of `render_frames` (same float32/float64 steps, same result)."""
    n = out.shape[0]
    seg = np.arange(n) // SEGMENT_FRAMES
    signal = topic[None, :] + seg_add[seg]  # float32
    f = signal + noise_scale * (noise[..., 0].astype(np.float64) + noise[..., 1] - 255.0)
    out[:] = np.clip(np.rint((f + QUANT_OFFSET) * QUANT_SCALE), 0, 255).astype(np.uint8)


def quantize(f: np.ndarray) -> np.ndarray:
    """Dataset quantisation of floats in [-2, 2]: clip(round((f + 2) * 255/4), 0, 255) uint8."""
    q = np.rint((np.asarray(f, np.float64) + QUANT_OFFSET) * QUANT_SCALE)
    return np.clip(q, 0, 255).astype(np.uint8)


def dequantize(q: np.ndarray) -> np.ndarray:
    """Starter-code dequantisation `q * 4/255 + 4/512 - 2` (float32), as models use it."""
    return (np.asarray(q, np.float32) * np.float32(4 / 255) + np.float32(4 / 512 - 2))
