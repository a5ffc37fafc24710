"""Every Linear of a freshly built model follows the reference initialisation (zero biases)."""
import pytest
from torch import nn

from trainer.registry import VARIANTS, build


@pytest.mark.parametrize("name", [n for n in VARIANTS if "tiny" in n])
def test_linear_biases_start_at_zero(name):
    model = build(name)
    for mod_name, m in model.named_modules():
        if isinstance(m, nn.Linear) and m.bias is not None:
            assert not m.bias.abs().sum().item(), f"{name}: {mod_name} bias not zero"
