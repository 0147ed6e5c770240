"""Pre-LN == Pre-RMSNorm == Pre-CRMSNorm: the converted models give the same logits in fp64, and a broken rewrite does not."""
import pytest
import torch

from minilib.models import ConvertedLM, TransformerLM, to_pre_crmsnorm, to_pre_rmsnorm, train
from minilib.norms import CRMSNorm, LayerNorm, RMSNorm


POSITIONS = ["rope", "sinusoidal", "learned", "alibi", "none"]

def perturbed_pre_ln(pos, ffn, *, d=16, vocab=13, seed=0):
    """A Pre-LN model whose gains, biases and weights are all far from their initial values."""
    torch.manual_seed(seed)
    model = TransformerLM(vocab, d, 2, 4, max_len=32, norm="layer", pos=pos, ffn=ffn).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model

@pytest.mark.parametrize("ffn", ["swiglu", "gelu"])
@pytest.mark.parametrize("pos", POSITIONS)
def test_conversions_keep_logits(pos, ffn):
    model = perturbed_pre_ln(pos, ffn)
    idx = torch.randint(0, 13, (3, 20), generator=torch.Generator().manual_seed(1))
    want = model(idx)
    rms, crms = to_pre_rmsnorm(model), to_pre_crmsnorm(model)
    torch.testing.assert_close(rms(idx), want, rtol=0, atol=1e-10)
    torch.testing.assert_close(crms(idx), want, rtol=0, atol=1e-10)
    torch.testing.assert_close(to_pre_crmsnorm(rms)(idx), want, rtol=0, atol=1e-10)
    torch.testing.assert_close(model(idx), want, rtol=0, atol=0)  # the source model is untouched

def test_trained_char_lm_converts_exactly():
    """The chapter's claim: a 2-layer Pre-LN char-LM trained 100 steps, converted, same logits to 1e-10 in fp64."""
    torch.manual_seed(0)
    text = "the cat sat on the mat. the dog sat on the log. " * 8
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text])
    g = torch.Generator().manual_seed(0)

    def batches():
        while True:
            start = torch.randint(0, len(data) - 33, (16,), generator=g)
            window = torch.stack([data[s:s + 33] for s in start])
            yield window[:, :-1], window[:, 1:]

    model = TransformerLM(len(chars), 32, 2, 4, max_len=32, norm="layer", pos="learned")
    losses = train(model, batches(), steps=100, lr=3e-3, progress=False)
    assert losses[-1] < 0.7 * losses[0]
    model = model.double()
    idx = next(batches())[0]
    want = model(idx)
    assert (to_pre_rmsnorm(model)(idx) - want).abs().max() < 1e-10
    assert (to_pre_crmsnorm(model)(idx) - want).abs().max() < 1e-10

def stream_states(model, idx):
    states = []
    hooks = [b.register_forward_hook(lambda _m, _a, out: states.append(out)) for b in model.blocks]
    model(idx)
    for h in hooks:
        h.remove()
    return states

def test_structure_of_converted_models():
    model = perturbed_pre_ln("learned", "swiglu", d=12)
    rms, crms = to_pre_rmsnorm(model), to_pre_crmsnorm(model)
    assert isinstance(rms, ConvertedLM) and isinstance(crms, ConvertedLM)
    assert not any(isinstance(m, LayerNorm) for m in list(rms.modules()) + list(crms.modules()))
    assert sum(isinstance(m, RMSNorm) for m in rms.modules()) == 5
    assert sum(isinstance(m, CRMSNorm) for m in crms.modules()) == 5
    assert rms.d_stream == 12 and crms.d_stream == 11
    torch.testing.assert_close(rms.blocks[0].norm1.weight, model.blocks[0].norm1.weight)
    idx = torch.randint(0, 13, (2, 9))
    for x in stream_states(rms, idx):
        assert x.mean(dim=-1).abs().max() < 1e-12
    for x in stream_states(model, idx):
        assert x.mean(dim=-1).abs().max() > 1e-3  # the Pre-LN stream itself is not zero-mean

def test_a_nonzero_mean_write_breaks_equivalence():
    """The check is sensitive: give W_O outputs a mean again and the RMSNorm model's logits move."""
    model = perturbed_pre_ln("rope", "gelu")
    rms = to_pre_rmsnorm(model)
    idx = torch.randint(0, 13, (2, 10))
    with torch.no_grad():
        rms.blocks[0].mixer.wo.weight.add_(0.1)
    assert (rms(idx) - model(idx)).abs().max() > 1e-3

def test_conversion_rejects_other_models():
    with pytest.raises(ValueError, match="Pre-LN"):
        to_pre_rmsnorm(TransformerLM(5, 8, 1, 2, norm="layer", pre_norm=False))
    with pytest.raises(ValueError, match="Pre-LN"):
        to_pre_rmsnorm(TransformerLM(5, 8, 1, 2, norm="rms"))
    with pytest.raises(TypeError, match="TransformerLM"):
        to_pre_rmsnorm(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="to_pre_rmsnorm"):
        to_pre_crmsnorm(torch.nn.Linear(2, 2))
