"""Mixture of NeXtVLADs with online distillation (MOD, 3rd place; NeXtVLAD paper §3.4):
the distillation loss against a hand-written KL at T, a whole training step's loss against
Eq. 16 written out, the mixing (Eq. 12-13) against a direct computation, padding, the
teacher's gradient, the mixture as an aware context encoder, and the refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.trainer.test_models_contract import B
from tests.trainer.test_models_contract import _batch as contract_batch
from trainer.errors import TrainerError
from trainer.layers.branch_mixing import MixtureOutput
from trainer.layers.masking import dequantize
from trainer.layers.moe import MoEOutput
from trainer.losses import (
    FINETUNE_DISTILLATION,
    PRETRAIN_DISTILLATION,
    Distillation,
    distillation_loss,
    segment_loss,
    video_loss,
    with_distillation,
)
from trainer.models.config import NUM_CLASSES, config_from_dict, config_to_dict
from trainer.models.mixture import MixtureEncoder
from trainer.registry import VARIANTS, aware_config, build


def _output(z: np.ndarray) -> MoEOutput:
    t = torch.tensor(z, dtype=torch.float64)
    return MoEOutput(F.logsigmoid(t), F.logsigmoid(-t))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _hand_kl(teacher: np.ndarray, students: list[np.ndarray], t: float) -> np.ndarray:
    """Σ_k Σ_c p_e log(p_e / p_k), p = softmax(z / T) over the classes: `(B,)`."""
    pe = _softmax(teacher / t)
    return sum((pe * np.log(pe / _softmax(zk / t))).sum(axis=1) for zk in students)


@pytest.mark.parametrize("temperature", [1.0, 3.0, 20.0])
def test_distillation_loss_is_the_kl_at_t_written_out(temperature):
    rng = np.random.default_rng(0)
    ze = rng.normal(0, 3, (B, 7))
    zs = [rng.normal(0, 3, (B, 7)) for _ in range(3)]
    mixed = _output(ze)
    out = MixtureOutput(mixed.log_p, mixed.log_not_p, tuple(_output(z) for z in zs))
    want = _hand_kl(ze, zs, temperature)
    got = distillation_loss(out, temperature, reduction="none")
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(distillation_loss(out, temperature).item(), want.mean(), rtol=1e-9)
    valid = torch.tensor([True, False, True, False])
    np.testing.assert_allclose(distillation_loss(out, temperature, valid).item(),
                               want[[0, 2]].mean(), rtol=1e-9)
    # a branch equal to the mixture is taught nothing
    same = MixtureOutput(mixed.log_p, mixed.log_not_p, (mixed, mixed))
    assert distillation_loss(same, temperature).abs().item() < 1e-12


def test_defaults_are_the_sources():
    """MOD's final scripts: pre-training T = 1, λ = 1 (over a sum over classes, so / C here);
    fine-tuning T = 20, λ = 400 = T²."""
    assert PRETRAIN_DISTILLATION == Distillation(1.0, 1.0 / NUM_CLASSES)
    assert FINETUNE_DISTILLATION == Distillation(20.0, 400.0)


def _hand_bce(log_p: torch.Tensor, log_not_p: torch.Tensor, y: np.ndarray) -> float:
    """Eq. 1 from probabilities: mean over classes and examples of the BCE."""
    p = log_p.exp().detach().double().numpy()
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def _batch(seed: int):
    """The contract test's frames `(B, 12, 1152)` and mask (video 3: 4 real frames)."""
    frames, mask, _ = contract_batch(seed)
    return frames, mask


def test_a_training_step_loss_is_eq16_written_out():
    """The pre-training loss of a mix-nxvlad-tiny step: the mixture's and each branch's
    Eq. 1 plus λ · the hand-written KL at T, from the model's own outputs."""
    torch.manual_seed(0)
    model = build("mix-nxvlad-tiny").train()
    frames, mask = _batch(1)
    labels = (torch.rand(B, NUM_CLASSES) < 0.05).float()
    torch.manual_seed(5)
    out = model(frames, mask)
    dist = Distillation(temperature=2.0, weight=0.3)
    got = with_distillation(out, lambda o: video_loss(o, labels), dist)
    y = labels.numpy()
    want = _hand_bce(out.log_p, out.log_not_p, y)
    want += sum(_hand_bce(b.log_p, b.log_not_p, y) for b in out.branches)
    zs = [(b.log_p - b.log_not_p).detach().double().numpy() for b in out.branches]
    ze = (out.log_p - out.log_not_p).detach().double().numpy()
    want += 0.3 * _hand_kl(ze, zs, 2.0).mean()
    assert got.item() == pytest.approx(want, rel=1e-5)
    # a single model's loss is its label loss alone
    single = build("nxvlad-tiny").train()
    plain = single(frames, mask)
    assert with_distillation(plain, lambda o: video_loss(o, labels), dist).item() == \
        video_loss(plain, labels).item()


def test_segment_loss_hook_adds_branch_terms():
    torch.manual_seed(0)
    model = build("mix-nxvlad-tiny").train()
    windows = torch.randint(0, 256, (B, 11, 1152), dtype=torch.uint8)
    out = model(windows, None)
    cls, score = torch.tensor([0, 5, 999, 40]), torch.tensor([1, 0, 1, 0])
    neg = torch.rand(B, NUM_CLASSES) < 0.2
    valid = torch.tensor([True, True, False, True])

    def label(o):
        return segment_loss(o, cls, score, neg, valid=valid)
    got = with_distillation(out, label, FINETUNE_DISTILLATION, valid)
    want = label(out) + sum(label(b) for b in out.branches) + FINETUNE_DISTILLATION.weight * \
        distillation_loss(out, FINETUNE_DISTILLATION.temperature, valid)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_mixture_is_the_gated_sum_of_branch_logits():
    """Eq. 12-13 computed directly from the modules: a = softmax(W BN(x̄) + b), x̄ the mean
    of the real frames; z_e = Σ a_k z_k; and the mixture's probabilities are σ(z_e)."""
    torch.manual_seed(0)
    model = build("mix-nxvlad-tiny").eval()
    frames, mask = _batch(2)
    with torch.no_grad():
        out = model(frames, mask)
        x = dequantize(frames)
        m = mask.float()
        mean = (x * m[:, :, None]).sum(1) / m.sum(1, keepdim=True)
        a = torch.softmax(model.gate.linear(model.gate.norm(mean)), dim=-1)
        z = torch.stack([head(enc(frames, mask)).logits()
                         for enc, head in zip(model.encoder.branches, model.heads)])
        ze = torch.einsum("bk,kbc->bc", a, z)
    torch.testing.assert_close(out.logits(), ze, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.probs(), torch.sigmoid(ze))
    assert (a.sum(1) - 1).abs().max() < 1e-6 and a.shape == (B, 3)


def test_padding_does_not_change_a_mixture_output():
    """Eval mode: a padded video's output is the same video's alone (the gate's mean too)."""
    torch.manual_seed(0)
    model = build("mix-nxvlad-tiny").eval()
    frames, mask = _batch(3)
    with torch.no_grad():
        batched = model(frames, mask).log_p[3]
        alone = model(frames[3:4, :4], None).log_p[0]
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)


def test_the_teacher_is_not_stopped():
    """As the source: the distillation term alone sends gradient into the gate (the teacher)."""
    torch.manual_seed(0)
    model = build("mix-nxvlad-tiny").train()
    frames, mask = _batch(4)
    distillation_loss(model(frames, mask), 20.0).backward()
    assert model.gate.linear.weight.grad.abs().sum() > 0
    assert all(h.experts.weight.grad.abs().sum() > 0 for h in model.heads)


def test_branches_have_their_own_weights_and_configs_round_trip():
    torch.manual_seed(0)
    model = build("mix-nxvlad-tiny")
    a, b = (br.embedding.rgb.expand.weight for br in model.encoder.branches[:2])
    assert a.shape == b.shape and not torch.equal(a, b)
    for name in ("mix-nxvlad-3", "mix-nxvlad-tiny", "mix-nxvlad-tiny+nxvlad-tiny"):
        cfg = VARIANTS[name].config
        assert config_from_dict(config_to_dict(cfg)) == cfg


def test_parameter_counts():
    """K branches of the variant, plus the gate (BN 2·1152, Linear 1152·K + K)."""
    from trainer.registry import count_parameters

    gate = 2 * 1152 + 1152 * 3 + 3
    for mixture, branch in (("mix-nxvlad-3", "nxvlad-2"), ("mix-nxvlad-tiny", "nxvlad-tiny")):
        total = count_parameters(build(mixture, device="meta"))[0]
        assert total == 3 * count_parameters(build(branch, device="meta"))[0] + gate
    assert count_parameters(build("mix-nxvlad-3", device="meta"))[0] == 97_718_034


def test_mixture_as_aware_context_is_its_branch_encoders_side_by_side():
    torch.manual_seed(0)
    mixture, segment = build("mix-nxvlad-tiny"), build("nxvlad-tiny")
    aware = build("mix-nxvlad-tiny+nxvlad-tiny")
    assert isinstance(aware.context, MixtureEncoder) and aware.context.out_dim == 3 * 32
    aware.load_encoders(mixture, segment)
    for k, v in aware.context.state_dict().items():
        assert torch.equal(v, mixture.encoder.state_dict()[k])
    frames, mask = _batch(5)
    with torch.no_grad():
        want = torch.cat([e(frames, mask) for e in mixture.eval().encoder.branches], dim=1)
        torch.testing.assert_close(aware.encode_context(frames, mask), want)


def test_mixture_as_aware_segment_encoder_is_refused():
    with pytest.raises(TrainerError, match="segment encoder of a context-aware model"):
        aware_config(VARIANTS["nxvlad-tiny"].config, VARIANTS["mix-nxvlad-tiny"].config)
