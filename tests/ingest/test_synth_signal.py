"""The synth world and the frame renderer: numba kernel == numpy twin, the world's structure."""
from __future__ import annotations

import numpy as np
import pytest

from ingest.synth.world import (
    AMBIGUOUS_PERIOD,
    EVENT_NORM,
    EVENT_SUPPORT,
    NOISE_SCALE,
    NOISE_STD,
    TOPIC_NORM,
    dequantize,
    make_world,
    quantize,
    render_frames,
    render_frames_np,
)
from ingest.vocab import N_SEGMENT_CLASSES, N_VOCAB


@pytest.mark.parametrize("n", [1, 4, 5, 6, 123, 300])
def test_render_kernel_matches_twin(n):
    rng = np.random.default_rng(n)
    n_seg = -(-n // 5)
    # large signal values so that both clipping ends are exercised
    topic = rng.normal(0, 0.8, 1152).astype(np.float32)
    seg_add = rng.normal(0, 0.8, (n_seg, 1152)).astype(np.float32)
    noise = rng.integers(0, 256, (n, 1152, 2), dtype=np.uint8)
    a = np.empty((n, 1152), np.uint8)
    b = np.empty((n, 1152), np.uint8)
    render_frames(topic, seg_add, noise, NOISE_SCALE, a)
    render_frames_np(topic, seg_add, noise, NOISE_SCALE, b)
    np.testing.assert_array_equal(a, b)
    assert a.min() == 0 and a.max() == 255


def test_render_is_quantised_signal_plus_noise():
    """With zero noise bytes offset (b0 + b1 = 255) the output is quantize(topic + events)."""
    rng = np.random.default_rng(0)
    n = 12
    topic = rng.uniform(-1, 1, 1152).astype(np.float32)
    seg_add = rng.uniform(-1, 1, (3, 1152)).astype(np.float32)
    noise = np.zeros((n, 1152, 2), np.uint8)
    noise[..., 0] = rng.integers(0, 256, (n, 1152))
    noise[..., 1] = 255 - noise[..., 0]
    out = np.empty((n, 1152), np.uint8)
    render_frames(topic, seg_add, noise, NOISE_SCALE, out)
    expect = quantize(topic[None] + np.repeat(seg_add, 5, axis=0)[:n])
    np.testing.assert_array_equal(out, expect)


def test_noise_has_the_documented_std():
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (200, 1152, 2), dtype=np.uint8)
    out = np.empty((200, 1152), np.uint8)
    render_frames(np.zeros(1152, np.float32), np.zeros((40, 1152), np.float32), noise,
                  NOISE_SCALE, out)
    x = dequantize(out)
    assert abs(x.std() - NOISE_STD) < 0.01
    assert abs(x.mean()) < 0.02


def test_quantize_matches_dataset_formula():
    f = np.array([-3.0, -2.0, -1.0, 0.0, 0.5, 1.99, 2.0, 5.0])
    expect = [min(255, max(0, round((x + 2) * 255 / 4))) for x in f]
    np.testing.assert_array_equal(quantize(f), expect)
    # dequantize is the starter code's inverse, within one step
    q = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(quantize(dequantize(q)), q)


def test_world_structure():
    w = make_world(0)
    assert w.topic.shape == (N_VOCAB, 1152) and w.pattern.shape == (N_SEGMENT_CLASSES, 1152)
    np.testing.assert_allclose(np.linalg.norm(w.topic, axis=1), TOPIC_NORM, rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(w.pattern, axis=1), EVENT_NORM, rtol=1e-4)
    assert ((w.pattern != 0).sum(axis=1) == EVENT_SUPPORT).all()
    amb = np.flatnonzero(w.partner >= 0)
    assert len(amb) == N_SEGMENT_CLASSES * 2 // AMBIGUOUS_PERIOD  # 20%
    assert (w.partner[w.partner[amb]] == amb).all() and (w.partner[amb] != amb).all()
    np.testing.assert_array_equal(w.pattern[amb], w.pattern[w.partner[amb]])
    solo = np.flatnonzero(w.partner < 0)
    # unambiguous patterns are distinct from every other pattern
    assert len({w.pattern[c].tobytes() for c in solo}) == len(solo)
    # the most popular segment classes come in pairs (popularity ranks 0 and 1)
    freq = np.diff(np.concatenate([[0.0], w.segment_cdf]))
    top = np.argsort(-freq)[:2]
    assert w.partner[top[0]] == top[1]
    assert freq.max() > 20 * np.median(freq)  # skewed
    assert not w.topic.flags.writeable


def test_world_depends_on_world_seed_only():
    a, b = make_world(3), make_world(4)
    assert not np.array_equal(a.topic, b.topic)
    make_world.cache_clear()
    np.testing.assert_array_equal(make_world(3).pattern, a.pattern)
    np.testing.assert_array_equal(make_world(3).partner, a.partner)
