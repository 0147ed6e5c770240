"""MoE: sparse dispatch equals the dense reference and naive per-token loops; gradients; registered in TransformerLM."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.moe import MoE, expert_capacity, ffn_flops


def _moe(**kwargs):
    torch.manual_seed(kwargs.pop("seed", 0))
    return MoE(6, 10, kwargs.pop("n_experts", 4), **kwargs).double()


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 24), k=st.integers(1, 3), cf=st.sampled_from([None, 0.5, 1.0, 1.5]),
       router=st.sampled_from(["topk", "expert_choice"]), seed=st.integers(0, 50))
def test_sparse_dispatch_equals_the_dense_reference(n, k, cf, router, seed):
    moe = _moe(top_k=k, capacity_factor=cf, router=router, seed=seed)
    x = torch.randn(1, n, 6, dtype=torch.float64)
    torch.testing.assert_close(moe(x), moe.dense_reference(x), rtol=0, atol=1e-12)


def test_top_k_with_capacity_equals_a_per_token_loop():
    moe = _moe(top_k=2, capacity_factor=0.75, seed=3)
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    flat = x.reshape(-1, 6)
    probs = torch.softmax(flat @ moe.router.weight.T, -1)
    capacity = expert_capacity(18, 4, 2, 0.75)
    taken, want, dropped = [0] * 4, torch.zeros_like(flat), 0
    choices = [sorted(range(4), key=lambda e: -probs[t, e].item())[:2] for t in range(18)]
    for slot in range(2):
        for t in range(18):
            e = choices[t][slot]
            if taken[e] == capacity:
                dropped += 1
                continue
            taken[e] += 1
            w = probs[t, e] / probs[t, choices[t]].sum()
            want[t] += w * moe.experts[e](flat[t])
    torch.testing.assert_close(moe(x).reshape(-1, 6), want, rtol=0, atol=1e-12)
    assert moe.routing.dropped == dropped > 0
    assert moe.routing.load.max() <= capacity


def test_expert_choice_equals_a_per_expert_loop():
    moe = _moe(top_k=2, router="expert_choice", seed=4)
    x = torch.randn(10, 6, dtype=torch.float64)
    probs = torch.softmax(x @ moe.router.weight.T, -1)
    want = torch.zeros_like(x)
    for e in range(4):
        for t in sorted(range(10), key=lambda t: -probs[t, e].item())[:5]:
            want[t] += probs[t, e] * moe.experts[e](x[t])
    torch.testing.assert_close(moe(x), want, rtol=0, atol=1e-12)
    assert moe.routing.load.tolist() == [5] * 4


@pytest.mark.parametrize("router", ["topk", "expert_choice"])
def test_gradients_flow_to_router_and_experts(router):
    moe = _moe(top_k=2, router=router, n_experts=3, seed=5)
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda x: moe(x), (x,))
    (moe(x).pow(2).sum() + moe.aux_loss).backward()
    assert moe.router.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in moe.experts.parameters())


def test_aux_loss_is_the_weighted_sum_of_balance_and_z_losses():
    from minilib.moe import load_balancing_loss, router_z_loss

    moe = _moe(top_k=2, balance_coef=0.5, z_coef=0.25)
    x = torch.randn(7, 6, dtype=torch.float64)
    moe(x)
    logits = x @ moe.router.weight.T
    experts = torch.softmax(logits, -1).topk(2, -1).indices
    want = 0.5 * load_balancing_loss(torch.softmax(logits, -1), experts) + 0.25 * router_z_loss(logits)
    torch.testing.assert_close(moe.aux_loss, want)
    assert _moe(aux_loss=False)(x) is not None and _moe(aux_loss=False).aux_loss is None


def test_flops_per_token_stay_constant_while_parameters_grow():
    params, flops = [], []
    for n_experts in (2, 4, 8):
        moe = MoE(16, 32, n_experts, 2, kind="gelu")
        params.append(sum(p.numel() for p in moe.experts.parameters()))
        flops.append(moe.flops_per_token() - 2 * 16 * n_experts)
    assert params == [n * 2 * 16 * 32 for n in (2, 4, 8)]
    assert flops == [2 * ffn_flops(16, 32, "gelu")] * 3 == [2 * 2 * 2 * 16 * 32] * 3


@pytest.mark.parametrize("make, name", [
    (lambda: MoE(8, 8, 2, 3), "top_k"), (lambda: MoE(8, 8, 0, 1), "n_experts"),
    (lambda: MoE(8, 8, 2, 1, router="hash"), "router"), (lambda: MoE(8, 8, 2, 1, capacity_factor=-1.0), "capacity_factor"),
    (lambda: MoE(8, 8, 2, 1)(torch.zeros(2, 4)), "x")])
def test_bad_arguments_are_named(make, name):
    with pytest.raises(ValueError, match=name):
        make()


@pytest.mark.parametrize("router", ["topk", "expert_choice"])
def test_registered_moe_trains_in_a_transformer_lm_with_its_aux_loss(router):
    from minilib.models import TransformerLM, train

    torch.manual_seed(0)
    model = TransformerLM(vocab_size=11, d_model=16, n_layers=2, n_heads=2, d_ff=16, ffn="moe",
                          ffn_kwargs={"n_experts": 4, "top_k": 2, "router": router})
    assert isinstance(model.blocks[1].ffn, MoE)
    x = torch.randint(0, 11, (4, 12))
    batches = iter(lambda: (x, x.roll(-1, 1)), None)
    model(x)
    want = sum(block.ffn.aux_loss for block in model.blocks)
    torch.testing.assert_close(model.aux_loss(), want)
    assert model.aux_loss().item() > 0
    losses = train(model, batches, steps=25, lr=1e-2, progress=False)
    assert losses[-1] < 0.7 * losses[0]
    with pytest.raises(ValueError, match="n_experts"):
        TransformerLM(vocab_size=11, d_model=16, n_layers=1, n_heads=2, ffn="moe")
