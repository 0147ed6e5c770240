"""GatedResidual against the GRU equations, its near-identity start, GatedTransformerLM's shapes and causality."""
import math

import pytest
import torch

from minilib.models import GatedResidual, GatedTransformerLM
from tests.models_support import assert_causal_lm, seeded


def gru_gate_reference(gate, x, y):
    """GTrXL's gating equations with the module's weights, written out term by term."""
    Wr, Wz, Wg = gate.w.weight.chunk(3, dim=0)
    Ur, Uz = gate.u_rz.weight.chunk(2, dim=0)
    Ug, b = gate.u_g.weight, gate.gate_bias
    r = torch.sigmoid(y @ Wr.T + x @ Ur.T)
    z = torch.sigmoid(y @ Wz.T + x @ Uz.T - b)
    h = torch.tanh(y @ Wg.T + (r * x) @ Ug.T)
    return (1 - z) * x + z * h, z

@pytest.mark.parametrize("bias", [0.0, 2.0, 5.0])
def test_gated_residual_matches_gru_equations(bias):
    seeded()
    gate = GatedResidual(12, gate_bias=bias).double()
    x, y = torch.randn(3, 4, 12, dtype=torch.float64), torch.randn(3, 4, 12, dtype=torch.float64)
    want, _ = gru_gate_reference(gate, x, y)
    torch.testing.assert_close(gate(x, y), want)

def test_gated_residual_starts_near_identity():
    x, y = torch.randn(64, 8, 32, dtype=torch.float64), torch.randn(64, 8, 32, dtype=torch.float64)
    deviation = {}
    for bias in (0.0, 2.0, 4.0, 8.0):
        seeded()
        gate = GatedResidual(32, gate_bias=bias).double()
        _, z = gru_gate_reference(gate, x, y)
        deviation[bias] = ((gate(x, y) - x).norm() / x.norm()).item()
        assert abs(z.mean().item() - 1 / (1 + math.exp(bias))) < 0.06, f"mean update gate at init vs sigmoid(-b), b={bias}"
    assert deviation[0.0] > deviation[2.0] > deviation[4.0] > deviation[8.0]
    assert deviation[2.0] < 0.25 and deviation[8.0] < 1e-3
    seeded()
    gate = GatedResidual(32, gate_bias=2.0).double()
    with torch.no_grad():
        for lin in (gate.w, gate.u_rz, gate.u_g):
            lin.weight.zero_()
    torch.testing.assert_close(gate(x, y), (1 - 1 / (1 + math.exp(2.0))) * x)  # z = sigmoid(-2), tanh(0) = 0

def test_gated_lm_shapes_and_causality():
    seeded()
    model = GatedTransformerLM(13, 16, 3, 2, gate_bias=2.0).double()
    assert_causal_lm(model, vocab_size=13, seq_len=9, changed=6)


@pytest.mark.parametrize("make, name", [
    (lambda: GatedTransformerLM(10, 16, 2, 3), "d_model"), (lambda: GatedTransformerLM(10, 16, 0, 4), "n_layers"),
    (lambda: GatedTransformerLM(0, 16, 1, 4), "vocab_size"), (lambda: GatedTransformerLM(10, 16, 1, 4, d_ff=0), "d_ff"),
    (lambda: GatedResidual(0), "d_model")])
def test_bad_config_is_named(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="y"):
        GatedResidual(8)(torch.randn(2, 8), torch.randn(2, 7))
    model = GatedTransformerLM(10, 16, 1, 4)
    with pytest.raises(TypeError, match="idx"):
        model(torch.randn(1, 4))
    with pytest.raises(ValueError, match="idx holds ids outside"):
        model(torch.tensor([[0, 10]]))
