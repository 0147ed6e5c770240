"""Routers against naive loops and the auxiliary losses against closed forms."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.moe.routing import (capacity_keep, expert_capacity, expert_choice_routing, load_balancing_loss,
                                 router_z_loss, top_k_routing)


def test_top_k_routing_keeps_the_largest_probabilities_renormalised():
    torch.manual_seed(0)
    logits = torch.randn(7, 5, dtype=torch.float64)
    probs, weights, experts = top_k_routing(logits, 2)
    want = logits.exp() / logits.exp().sum(-1, keepdim=True)
    torch.testing.assert_close(probs, want)
    for t in range(7):
        order = sorted(range(5), key=lambda e: -want[t, e].item())[:2]
        assert experts[t].tolist() == order
        top = want[t, order]
        torch.testing.assert_close(weights[t], top / top.sum())
    _, raw, _ = top_k_routing(logits, 2, renormalize=False)
    torch.testing.assert_close(raw, want.gather(1, experts))


def _naive_keep(experts, n_experts, capacity):
    n, k = experts.shape
    taken, keep = [0] * n_experts, [[False] * k for _ in range(n)]
    for slot in range(k):
        for t in range(n):
            e = int(experts[t, slot])
            if taken[e] < capacity:
                keep[t][slot] = True
                taken[e] += 1
    return torch.tensor(keep)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 20), n_experts=st.integers(1, 5), k=st.integers(1, 3), capacity=st.integers(1, 8),
       seed=st.integers(0, 100))
def test_capacity_keep_matches_a_slot_major_loop_and_never_overfills(n, n_experts, k, capacity, seed):
    k = min(k, n_experts)
    g = torch.Generator().manual_seed(seed)
    experts = torch.stack([torch.randperm(n_experts, generator=g)[:k] for _ in range(n)])
    keep = capacity_keep(experts, n_experts, capacity)
    assert torch.equal(keep, _naive_keep(experts, n_experts, capacity))
    assert torch.bincount(experts[keep], minlength=n_experts).max() <= capacity


def test_expert_capacity_is_the_rounded_up_fair_share():
    assert expert_capacity(100, 8, 2, 1.0) == 25
    assert expert_capacity(100, 8, 1, 1.25) == math.ceil(1.25 * 100 / 8)
    assert expert_capacity(10, 2, 2, 4.0) == 10  # never more than the tokens


def test_expert_choice_gives_every_expert_its_best_tokens():
    torch.manual_seed(1)
    logits = torch.randn(12, 3, dtype=torch.float64)
    probs, weights, tokens = expert_choice_routing(logits, 4)
    assert tokens.shape == weights.shape == (3, 4)
    for e in range(3):
        best = sorted(range(12), key=lambda t: -probs[t, e].item())[:4]
        assert tokens[e].tolist() == best
        torch.testing.assert_close(weights[e], probs[best, e])


def test_load_balancing_loss_closed_forms():
    n, e = 8, 4
    uniform = torch.full((n, e), 1.0 / e, dtype=torch.float64)
    balanced = torch.arange(n).remainder(e)[:, None]
    assert load_balancing_loss(uniform, balanced).item() == pytest.approx(1.0)
    collapsed = torch.zeros(n, e, dtype=torch.float64)
    collapsed[:, 0] = 1.0
    assert load_balancing_loss(collapsed, torch.zeros(n, 1, dtype=torch.long)).item() == pytest.approx(e)
    torch.manual_seed(2)
    probs = torch.softmax(torch.randn(n, e, dtype=torch.float64), -1)
    experts = probs.topk(2, -1).indices
    want = e * sum((experts == j).sum().item() / (2 * n) * probs[:, j].mean() for j in range(e))
    torch.testing.assert_close(load_balancing_loss(probs, experts), want)


def test_router_z_loss_closed_form():
    assert router_z_loss(torch.zeros(5, 4)).item() == pytest.approx(math.log(4) ** 2)
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert router_z_loss(logits).item() == pytest.approx(math.log(4.0) ** 2)


@pytest.mark.parametrize("call, error, name", [
    (lambda: top_k_routing(torch.zeros(3, 2), 3), ValueError, "top_k"),
    (lambda: top_k_routing(torch.zeros(3), 1), ValueError, "logits"),
    (lambda: expert_choice_routing(torch.zeros(3, 2), 4), ValueError, "capacity"),
    (lambda: expert_capacity(4, 2, 1, 0.0), ValueError, "capacity_factor"),
    (lambda: load_balancing_loss(torch.zeros(3, 2), torch.zeros(4, 1, dtype=torch.long)), ValueError, "experts")])
def test_bad_arguments_are_named(call, error, name):
    with pytest.raises(error, match=name):
        call()
