"""fp16 safety of NeXtVLAD: all-zero padded frames gave NaN in fp16 (F.normalize's eps
underflows); `l2_normalize` keeps them finite and float32 results unchanged."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainer.layers.masking import dequantize
from trainer.layers.nextvlad import NeXtVLAD, l2_normalize
from trainer.losses import video_loss
from trainer.registry import build

LENGTHS = (30, 20, 7, 1)


def _padded(with_empty: bool = False):
    """Dequantised frames `(4 or 5, 30, 1152)` with all-zero padding, and the mask."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor(LENGTHS + ((0,) if with_empty else ()))
    frames = torch.randint(0, 256, (len(lengths), 30, 1152), generator=g, dtype=torch.uint8)
    mask = torch.arange(30)[None] < lengths[:, None]
    return dequantize(frames).masked_fill(~mask[..., None], 0.0), mask


def test_the_problem_exists():
    assert torch.isnan(F.normalize(torch.zeros(2, 3, dtype=torch.float16), dim=-1)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_l2_normalize_is_f_normalize_in_full_precision(dtype):
    x = torch.randn(6, 5, 40, dtype=dtype)
    x[1, 2] = 0.0
    x[3, 0] = 1e-3
    x[4, 1] = 1e-20  # under eps: clamped, as F.normalize does
    got = l2_normalize(x)
    assert torch.equal(got, F.normalize(x, dim=-1))
    assert torch.equal(got[1, 2], torch.zeros(40, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_l2_normalize_half_precision(dtype):
    x = torch.randn(8, 1024) * 300.0  # squares sum to ~1e8: past fp16's 65504
    x[2] = 0.0
    x[5] = 1e-6  # a norm under fp16's precision
    got = l2_normalize(x.to(dtype))
    assert got.dtype == dtype and torch.isfinite(got).all()
    want = F.normalize(x.to(dtype).float(), dim=-1)
    torch.testing.assert_close(got.float(), want, atol=2e-3, rtol=1e-2)
    assert torch.equal(got[2].float(), torch.zeros(1024))


def test_zero_vector_has_a_finite_gradient():
    x = torch.zeros(2, 4, dtype=torch.float16, requires_grad=True)
    (l2_normalize(x).float() * torch.arange(4.0)).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_nextvlad_model_fp16_autocast_with_padded_frames():
    torch.manual_seed(0)
    model = build("nxvlad-tiny").eval()
    x, mask = _padded()
    with torch.no_grad():
        reference = model(x, mask)
        with torch.autocast("cpu", dtype=torch.float16):
            half = model(x.half(), mask)
    assert torch.isfinite(half.log_p).all() and torch.isfinite(half.log_not_p).all()
    torch.testing.assert_close(half.log_p, reference.log_p, atol=1e-3, rtol=1e-3)


def test_nextvlad_layer_in_half_with_padded_frames():
    torch.manual_seed(0)
    layer = NeXtVLAD(1024, 8, 8, 2, 0.25).eval()
    x, mask = _padded()
    with torch.no_grad():
        reference = layer(x[..., :1024], mask)
        half = layer.half()(x[..., :1024].half(), mask)
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), reference, atol=2e-3, rtol=1e-2)


def test_nextvlad_fp16_training_step_is_finite_even_with_an_empty_video():
    torch.manual_seed(0)
    model = build("nxvlad-tiny").train()
    x, mask = _padded(with_empty=True)
    labels = torch.zeros(len(x), 1000, dtype=torch.bool)
    labels[:, :3] = True
    with torch.autocast("cpu", dtype=torch.float16):
        loss = video_loss(model(x.half(), mask), labels)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
