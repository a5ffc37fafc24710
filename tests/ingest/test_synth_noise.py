"""`ingest synth --noise-std`: the frame noise alone changes; labels, events, ratings and the
world stay those of the same seed (the default, 0.5, writes what it always wrote)."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from ingest.cli.main import main
from ingest.errors import IngestError
from ingest.synth import SynthConfig, iter_shard
from ingest.synth.world import NOISE_STD, QUANT_SCALE


def _videos(noise_std: float):
    cfg = SynthConfig(split="validate", videos_per_shard=6, seed=3, classes=20,
                      noise_std=noise_std)
    return list(iter_shard(cfg, "validate", 0))


def _frames(video) -> np.ndarray:
    return np.concatenate([video.rgb, video.audio], axis=1).astype(np.float64)


def _segments(frames: np.ndarray) -> np.ndarray:
    """(S, 5, F): the whole 5-frame segments (frames 5s..5s+4 share their signal)."""
    n = len(frames) // 5 * 5
    return frames[:n].reshape(-1, 5, frames.shape[1])


def _within_segment_std(frames: np.ndarray) -> float:
    """Std of one frame's noise, from differences of neighbouring frames of one segment:
    var(a - b) = 2 var(noise)."""
    return float(np.diff(_segments(frames), axis=1).std() / np.sqrt(2) / QUANT_SCALE)


@pytest.mark.parametrize("noise_std", [0.1, 0.2, NOISE_STD])
def test_noise_std_is_the_frames_noise_and_nothing_else_changes(noise_std):
    base, other = _videos(NOISE_STD), _videos(noise_std)
    for (a, ra), (b, rb) in zip(base, other):
        assert a.id == b.id and list(a.labels) == list(b.labels) and len(a.rgb) == len(b.rgb)
        np.testing.assert_array_equal(ra.start_times, rb.start_times)
        np.testing.assert_array_equal(ra.scores, rb.scores)
        # quantisation adds 1/sqrt(12) of a level; clipping at [-2, 2] removes a little
        assert _within_segment_std(_frames(b)) == pytest.approx(noise_std, rel=0.06)


def test_no_noise_gives_constant_segments():
    video, _ = _videos(0.0)[0]
    seg = _segments(_frames(video))
    assert (seg == seg[:, :1]).all()


def test_bad_noise_std(tmp_path):
    with pytest.raises(IngestError, match="--noise-std"):
        SynthConfig(noise_std=-0.1)
    result = CliRunner().invoke(main, ["synth", str(tmp_path), "--noise-std", "3"])
    assert result.exit_code == 2 and "--noise-std" in result.output
