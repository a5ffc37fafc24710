"""One contract over every registered variant: output shape, no NaN, every trainable
parameter gets a gradient, frozen ones get none. The full-size ones are marked slow.
A mixture's loss is its training loss (Eq. 1 of the mixture and of every branch, plus the
distillation), so the gradient check covers every branch and the gate."""
from __future__ import annotations

import pytest
import torch

from trainer.layers.branch_mixing import MixtureOutput
from trainer.layers.moe import MoEOutput
from trainer.losses import PRETRAIN_DISTILLATION, segment_loss, video_loss, with_distillation
from trainer.models.context_aware import ContextAwareModel
from trainer.models.mixture import MixtureModel
from trainer.registry import VARIANTS, build

B, L, SEGMENT_LEN = 4, 12, 11


def _params() -> list:
    return [
        pytest.param(name, marks=() if "tiny" in name else (pytest.mark.slow,), id=name)
        for name in VARIANTS
    ]


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (B, L, 1152), generator=g, dtype=torch.uint8)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, 7:] = False
    mask[3, 4:] = False
    segments = torch.randint(0, 256, (B, SEGMENT_LEN, 1152), generator=g, dtype=torch.uint8)
    return frames, mask, segments


@pytest.mark.parametrize("name", _params())
def test_variant_contract(name):
    torch.manual_seed(0)
    model = build(name).train()
    frames, mask, segments = _batch(1)
    if isinstance(model, ContextAwareModel):
        out = model(frames, mask, segments)
        negatives = torch.rand(B, 1000) < 0.3
        loss = segment_loss(out, torch.tensor([0, 17, 400, 999]), torch.tensor([1, 0, 1, 0]), negatives)
    else:
        out = model(frames, mask)
        labels = torch.rand(B, 1000) < 0.05
        loss = with_distillation(out, lambda o: video_loss(o, labels), PRETRAIN_DISTILLATION)
    assert isinstance(out, MoEOutput | MixtureOutput)
    assert isinstance(out, MixtureOutput) == isinstance(model, MixtureModel)
    for branch in getattr(out, "branches", ()):
        assert isinstance(branch, MoEOutput) and branch.log_p.shape == (B, 1000)
        assert torch.isfinite(branch.log_p).all() and torch.isfinite(branch.log_not_p).all()
    assert out.log_p.shape == out.log_not_p.shape == (B, 1000)
    assert torch.isfinite(out.log_p).all() and torch.isfinite(out.log_not_p).all()
    assert torch.allclose(out.log_p.exp() + out.log_not_p.exp(), torch.ones(B, 1000), atol=1e-5)
    assert torch.isfinite(loss)
    loss.backward()
    n_trainable = n_frozen = 0
    for pname, p in model.named_parameters():
        if p.requires_grad:
            n_trainable += 1
            assert p.grad is not None, f"{pname} got no gradient"
            assert torch.isfinite(p.grad).all(), pname
            assert p.grad.abs().sum() > 0, f"{pname} got a zero gradient"
        else:
            n_frozen += 1
            assert p.grad is None, f"frozen {pname} got a gradient"
    assert n_trainable > 0
    assert (n_frozen > 0) == isinstance(model, ContextAwareModel)


def test_context_encoder_stays_frozen_in_eval_mode():
    torch.manual_seed(0)
    model = build("dbof-tiny+nxvlad-tiny").train()
    assert model.training and model.segment.training and not model.context.training
    assert all(not m.training for m in model.context.modules())
    before = {k: v.clone() for k, v in model.context.state_dict().items()}
    frames, mask, segments = _batch(2)
    model(frames, mask, segments)
    after = model.context.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats untouched
    seg_bn = model.segment.embedding.rgb.out_norm
    assert seg_bn.num_batches_tracked == 1  # the segment encoder does train


def test_load_encoders_copies_pretrained_weights():
    torch.manual_seed(0)
    context, segment = build("dbof-tiny"), build("nxvlad-tiny")
    model = build("dbof-tiny+nxvlad-tiny")
    model.load_encoders(context, segment)
    for k, v in model.context.state_dict().items():
        assert torch.equal(v, context.encoder.state_dict()[k])
    assert model.segment.gating is None  # a NeXtVLAD segment encoder stops at the FC
    for k, v in model.segment.state_dict().items():
        assert torch.equal(v, segment.encoder.state_dict()[k])


def test_context_agnostic_segment_model_is_the_video_model_without_mask():
    from trainer.models.segment import ContextAgnosticSegmentModel

    torch.manual_seed(0)
    video_model = build("nxvlad-tiny").eval()
    segment_model = ContextAgnosticSegmentModel(video_model)
    _, _, segments = _batch(3)
    with torch.no_grad():
        got = segment_model(segments).log_p
        want = video_model(segments, torch.ones(B, SEGMENT_LEN, dtype=torch.bool)).log_p
    torch.testing.assert_close(got, want)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["dbof-tiny", "nxvlad-tiny", "nxvlad-tiny+dbof-tiny",
                                  "mix-nxvlad-tiny"])
def test_variant_on_cuda_matches_cpu(name):
    torch.manual_seed(0)
    model = build(name).eval()
    frames, mask, segments = _batch(4)
    args = (frames, mask, segments) if isinstance(model, ContextAwareModel) else (frames, mask)
    with torch.no_grad():
        cpu = model(*args).log_p
        gpu = model.cuda()(*(a.cuda() for a in args)).log_p.cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", ["dbof-tiny", "nxvlad-tiny+dbof-tiny", "mix-nxvlad-tiny"])
def test_mixed_precision_keeps_float32_probabilities(name):
    """Under bfloat16 autocast the masked batch-norm statistics and the MoE mixing run in
    float32: finite float32 log-probabilities, gradients for every trainable parameter."""
    torch.manual_seed(0)
    model = build(name).train()
    frames, mask, segments = _batch(5)
    args = (frames, mask, segments) if isinstance(model, ContextAwareModel) else (frames, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*args)
        loss = video_loss(out, torch.rand(B, 1000) < 0.05)
    assert out.log_p.dtype == out.log_not_p.dtype == torch.float32
    assert torch.isfinite(out.log_p).all() and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
