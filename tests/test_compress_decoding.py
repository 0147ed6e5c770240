"""minilib.compress.decoding: draft-and-verify against plain greedy decoding of the target, and the sampled
version against the target's exact distribution over two-token continuations (total variation on 4000 samples)."""
import itertools

import pytest
import torch

from minilib.compress import draft_verify_generate, speculative_accept

f64 = torch.float64


def bigram_model(table: torch.Tensor):
    """A logits function whose prediction at each position depends only on the token there: logits = table[id]."""
    calls = []

    def fn(ids: torch.Tensor) -> torch.Tensor:
        calls.append(ids.shape[1])
        return table[ids]
    fn.calls = calls
    return fn


def greedy(fn, prompt: torch.Tensor, n_new: int) -> torch.Tensor:
    ids = prompt.clone()
    for _ in range(n_new):
        ids = torch.cat([ids, fn(ids[None])[0, -1].argmax().reshape(1)])
    return ids


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("noise", [0.0, 0.5, 3.0])
def test_greedy_draft_verify_is_exactly_the_targets_greedy_output(k, noise):
    g = torch.Generator().manual_seed(k)
    table = torch.randn(7, 7, generator=g, dtype=f64)
    target = bigram_model(table)
    draft = bigram_model(table + noise * torch.randn(7, 7, generator=g, dtype=f64))
    prompt = torch.tensor([3, 1])
    out, stats = draft_verify_generate(target, draft, prompt, 20, k=k)
    assert torch.equal(out, greedy(bigram_model(table), prompt, 20))
    assert stats["target_calls"] == len(target.calls) and stats["draft_calls"] == len(draft.calls)
    assert stats["accepted"] <= stats["drafted"] and 20 / (k + 1) <= stats["target_calls"] <= 20
    if noise == 0.0:  # a perfect draft: every round yields k + 1 tokens
        assert stats["target_calls"] == -(-20 // (k + 1)) and stats["accepted"] == stats["drafted"]


def test_zero_new_tokens_and_bad_arguments():
    f = bigram_model(torch.randn(3, 3))
    out, stats = draft_verify_generate(f, f, torch.tensor([1]), 0)
    assert out.tolist() == [1] and stats["target_calls"] == 0
    with pytest.raises(ValueError, match="prompt"):
        draft_verify_generate(f, f, torch.tensor([]), 3)
    with pytest.raises(TypeError, match="draft"):
        draft_verify_generate(f, "small", torch.tensor([1]), 3)
    with pytest.raises(ValueError, match="k"):
        draft_verify_generate(f, f, torch.tensor([1]), 3, k=0)


def test_acceptance_rule_outputs_the_target_distribution_exactly():
    p = torch.tensor([0.5, 0.1, 0.4, 0.0], dtype=f64)
    q = torch.tensor([0.2, 0.6, 0.1, 0.1], dtype=f64)
    out = torch.zeros(4, dtype=f64)
    for x in range(4):
        ratio = min(1.0, (p[x] / q[x]).item())
        assert speculative_accept(p, q, x, max(ratio - 1e-9, 0.0))[0] == (ratio > 0)
        out[x] += q[x] * ratio
        if ratio < 1:  # u in [0, 1) always passes a ratio of 1
            accepted, residual = speculative_accept(p, q, x, ratio)
            assert not accepted
            out += q[x] * (1 - ratio) * residual
    torch.testing.assert_close(out, p)
    with pytest.raises(ValueError, match="token"):
        speculative_accept(p, q, 4, 0.5)


def test_sampled_draft_verify_follows_the_target_distribution():
    g = torch.Generator().manual_seed(0)
    table = torch.randn(3, 3, generator=g, dtype=f64) * 1.5
    draft_table = torch.randn(3, 3, generator=g, dtype=f64)
    target, draft = bigram_model(table), bigram_model(draft_table)
    prompt, n, samples = torch.tensor([0]), 2, 4000
    probs = torch.softmax(table, -1)
    exact = {seq: (probs[0, seq[0]] * probs[seq[0], seq[1]]).item() for seq in itertools.product(range(3), repeat=n)}
    counts = dict.fromkeys(exact, 0)
    rng = torch.Generator().manual_seed(1)
    for _ in range(samples):
        out, _ = draft_verify_generate(target, draft, prompt, n, k=2, greedy=False, generator=rng)
        counts[tuple(out[1:].tolist())] += 1
    tv = 0.5 * sum(abs(counts[s] / samples - exact[s]) for s in exact)
    # the draft alone would be far off, so the test can fail
    q = torch.softmax(draft_table, -1)
    draft_tv = 0.5 * sum(abs((q[0, s[0]] * q[s[0], s[1]]).item() - exact[s]) for s in exact)
    assert draft_tv > 0.2 and tv < 0.04, (tv, draft_tv)
