"""What the tests of the whole-model modules (tests/test_models_*.py) share."""
import torch


def seeded(seed=0):
    """Seed torch's global generator and return a fresh generator with the same seed."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def assert_causal_lm(model, *, vocab_size: int, seq_len: int, changed: int):
    """Changing the token at position ``changed`` leaves the logits before it exactly alone and moves those after."""
    idx = torch.randint(0, vocab_size, (2, seq_len))
    idx2 = idx.clone()
    idx2[:, changed] = (idx[:, changed] + 1) % vocab_size
    a, b = model(idx), model(idx2)
    assert a.shape == (2, seq_len, vocab_size)
    torch.testing.assert_close(a[:, :changed], b[:, :changed], rtol=0, atol=1e-12)
    assert (a[:, changed:] - b[:, changed:]).abs().amax() > 1e-6
