"""Padding invariance: padded frames (with the mask) never change a video's output, and the
masked pieces (pooling, batch norm, dequantisation) against direct computations."""
from __future__ import annotations

import pytest
import torch

from trainer.layers.masking import MaskedBatchNorm1d, dequantize, masked_max_mean
from trainer.registry import build


def _video(seed: int, length: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, length, 1152), generator=g, dtype=torch.uint8)


def _pad(x: torch.Tensor, total: int, seed: int) -> torch.Tensor:
    """Pad with random garbage frames (not zeros), to make the test strict."""
    g = torch.Generator().manual_seed(seed)
    garbage = torch.randint(0, 256, (1, total - x.shape[1], 1152), generator=g, dtype=torch.uint8)
    return torch.cat([x, garbage], dim=1)


@pytest.mark.parametrize("name", ["dbof-tiny", "nxvlad-tiny"])
def test_video_model_padding_invariance(name):
    torch.manual_seed(0)
    model = build(name).eval()
    videos = [_video(i, n) for i, n in enumerate((5, 9, 13))]
    total = 20
    padded = torch.cat([_pad(v, total, 10 + i) for i, v in enumerate(videos)])
    mask = torch.zeros(3, total, dtype=torch.bool)
    for i, v in enumerate(videos):
        mask[i, : v.shape[1]] = True
    with torch.no_grad():
        batched = model(padded, mask).log_p
        for i, v in enumerate(videos):
            alone = model(v, torch.ones(1, v.shape[1], dtype=torch.bool)).log_p
            torch.testing.assert_close(batched[i : i + 1], alone, rtol=1e-5, atol=1e-5)
        unmasked = model(padded, None).log_p
    assert not torch.allclose(unmasked[0], batched[0], atol=1e-4)  # the mask did matter


@pytest.mark.parametrize("name", ["dbof-tiny+nxvlad-tiny", "nxvlad-tiny+dbof-tiny"])
def test_context_aware_padding_invariance(name):
    torch.manual_seed(0)
    model = build(name).eval()
    video = _video(1, 7)
    segment = _video(2, 11)
    with torch.no_grad():
        alone = model(video, torch.ones(1, 7, dtype=torch.bool), segment).log_p
        mask = torch.zeros(1, 16, dtype=torch.bool)
        mask[0, :7] = True
        padded = model(_pad(video, 16, 3), mask, segment).log_p
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5)


def test_masked_max_mean_against_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, 3, generator=g)
    lengths = [6, 1, 3, 0]
    mask = torch.arange(6)[None, :] < torch.tensor(lengths)[:, None]
    out = masked_max_mean(x, mask)
    for b, n in enumerate(lengths):
        want = (
            torch.cat([x[b, :n].amax(0), x[b, :n].mean(0)]) if n else torch.zeros(6)
        )
        torch.testing.assert_close(out[b], want)
    torch.testing.assert_close(masked_max_mean(x, None), torch.cat([x.amax(1), x.mean(1)], 1))


def test_masked_batch_norm_uses_real_rows_only():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, generator=g) * 3 + 1
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    garbage = x.clone()
    garbage[~mask] = 1e3
    bn = MaskedBatchNorm1d(4, momentum=0.5)
    ref = torch.nn.BatchNorm1d(4, momentum=0.5)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
        ref.load_state_dict(bn.state_dict())
    out = bn(garbage, mask)
    want = ref(x[mask])  # plain batch norm over the real rows
    torch.testing.assert_close(out[mask], want)
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    bn.eval()
    ref.eval()
    torch.testing.assert_close(bn(x, mask), ref(x.reshape(-1, 4)).reshape(3, 5, 4))


def test_dequantize_is_the_starter_code_formula():
    q = torch.arange(256, dtype=torch.uint8)
    x = dequantize(q)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, q.double().mul(4 / 255).add(4 / 512 - 2).float())
    f = torch.randn(3)
    assert dequantize(f) is f
