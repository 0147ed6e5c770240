"""MatFFN: sub-width m equals an FFN built from the first m units; full width equals the base FFN; Mix'n'Match per layer."""
import pytest
import torch
import torch.nn.functional as F

from minilib.feedforward import FeedForward
from minilib.looped import MatFFN, nested_widths
from minilib.models import TransformerConfig, TransformerLM


@pytest.mark.parametrize("kind", ["swiglu", "gelu"])
@pytest.mark.parametrize("m", [1, 8, 20, 32])
def test_sub_width_equals_ffn_of_first_units(kind, m):
    torch.manual_seed(0)
    ffn = MatFFN(12, 32, kind=kind).double()
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    w1, w2 = ffn.full.w1.weight, ffn.full.w2.weight
    hidden = x @ w1[:m].T
    hidden = F.gelu(hidden) if kind == "gelu" else F.silu(hidden) * (x @ ffn.full.w3.weight[:m].T)
    expected = hidden @ w2[:, :m].T
    torch.testing.assert_close(ffn(x, width=m), expected)
    torch.testing.assert_close(ffn.extract(m)(x), expected)
    assert sum(p.numel() for p in ffn.extract(m).parameters()) == (3 if kind == "swiglu" else 2) * 12 * m


def test_extraction_equals_masking_hidden_units():
    torch.manual_seed(1)
    ffn = MatFFN(12, 32).double()
    x = torch.randn(3, 12, dtype=torch.float64)
    masked = FeedForward(12, 32).double()
    masked.load_state_dict(ffn.full.state_dict())
    with torch.no_grad():
        masked.w2.weight[:, 8:] = 0  # units 8.. switched off
    torch.testing.assert_close(ffn.extract(8)(x), masked(x))


def test_full_width_equals_base_ffn_and_registered_name():
    torch.manual_seed(2)
    ffn = MatFFN(12, 32)
    x = torch.randn(2, 3, 12)
    torch.testing.assert_close(ffn(x), ffn.full(x))
    model = TransformerLM(TransformerConfig(vocab_size=10, d_model=16, n_layers=2, n_heads=2, ffn="matformer", d_ff=32))
    assert all(isinstance(b.ffn, MatFFN) for b in model.blocks)
    assert model.blocks[0].ffn.widths == (4, 8, 16, 32)


def test_nested_widths():
    assert nested_widths(64) == (8, 16, 32, 64)
    assert nested_widths(12, 2) == (6, 12)
    with pytest.raises(ValueError, match="d_ff"):
        nested_widths(12, 4)


def test_bad_arguments():
    ffn = MatFFN(8, 16)
    with pytest.raises(ValueError, match="width"):
        ffn(torch.randn(1, 2, 8), width=17)
    with pytest.raises(ValueError, match="widths"):
        MatFFN(8, 16, widths=(4, 32))
    with pytest.raises(ValueError, match="x"):
        ffn(torch.randn(1, 2, 9))
