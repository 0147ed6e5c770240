"""What the tests of the whole-model modules and the token mixers share."""
import math

import torch


def decode_in_pieces(forward, x: torch.Tensor, cuts) -> torch.Tensor:
    """``forward`` on ``x[:, a:b]`` for the consecutive pieces between ``cuts``, concatenated along time: feeding a
    cached mixer or model piece by piece, to compare with one full forward."""
    bounds = [0, *cuts, x.shape[1]]
    return torch.cat([forward(x[:, a:b]) for a, b in zip(bounds, bounds[1:])], dim=1)


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


def repeated_triples(generator: torch.Generator, *, vocab_size: int = 12, batch_size: int = 16):
    """Endless ``(inputs, targets)`` batches of three random tokens repeated six times: token t is token t - 3.

    A causal mixer that reads three positions back predicts all but the first three targets; ln(vocab_size) is
    the best loss without reading the context.
    """
    while True:
        seq = torch.randint(0, vocab_size, (batch_size, 3), generator=generator).repeat(1, 6)
        yield seq[:, :-1], seq[:, 1:]


def assert_learns_repeated_triples(model, generator: torch.Generator) -> None:
    """40 AdamW steps on :func:`repeated_triples` bring the loss 0.4 nats under ln 12, the best loss without reading
    the context (a perfect copier reaches 2 ln 12 / 17 = 0.29)."""
    from minilib.models import train
    losses = train(model, repeated_triples(generator), steps=40, lr=2e-2, warmup_steps=5, progress=False)
    assert sum(losses[-5:]) / 5 < math.log(12) - 0.4


def assert_cached_decoding_matches_recomputing(model, new_tokens: int) -> None:
    """Greedy generation after a 5-token prompt: the same tokens with the model's caches as by recomputing."""
    prompt = torch.tensor([[0, 1, 2, 0, 1]])
    model.eval()
    with torch.no_grad():
        cached = model.generate(prompt, new_tokens, temperature=0)
        recomputed = model.generate(prompt, new_tokens, temperature=0, use_cache=False)
    assert cached.shape == (1, 5 + new_tokens)
    torch.testing.assert_close(cached, recomputed)
