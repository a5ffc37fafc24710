"""The loader hands uint8 frames to the device; the models dequantise them in their own dtype."""
from __future__ import annotations

import pytest
import torch

from trainer.layers.masking import QUANT_OFFSET, QUANT_SCALE, dequantize
from trainer.registry import build


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dequantize_in_the_model_dtype(dtype):
    q = torch.tensor([0, 128, 255], dtype=torch.uint8)
    x = dequantize(q, dtype)
    assert x.dtype == dtype
    want = q.double() * QUANT_SCALE + QUANT_OFFSET
    torch.testing.assert_close(x.double(), want, atol=2e-2 if dtype == torch.bfloat16 else 1e-6,
                               rtol=0)


@pytest.mark.parametrize("name", ["dbof-tiny", "nxvlad-tiny"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_models_in_another_dtype_take_uint8_frames(name, dtype):
    model = build(name).eval().to(dtype)
    frames = torch.randint(0, 256, (3, 11, 1152), dtype=torch.uint8)
    out = model(frames, None)
    assert torch.isfinite(out.log_p).all() and out.log_p.shape == (3, 1000)
