"""LayerNorm and RMSNorm against torch.nn's layers, CRMSNorm and BiasNorm against their equations (fp64), and
σReparam: the power-iteration estimate against the exact spectral norm, the forward against its equation, gradients."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch.func import functional_call

from minilib.models import TransformerLM
from minilib.norms import BiasNorm, CRMSNorm, LayerNorm, RMSNorm, SigmaReparamLinear, make_norm, sigma_reparam_


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 33), rows=st.integers(1, 5), seed=st.integers(0, 999), bias=st.booleans())
def test_layernorm_matches_torch(d, rows, seed, bias):
    g = torch.Generator().manual_seed(seed)
    ours, ref = LayerNorm(d, bias=bias).double(), torch.nn.LayerNorm(d, bias=bias).double()
    with torch.no_grad():
        w = torch.randn(d, generator=g, dtype=torch.float64)
        ours.weight.copy_(w), ref.weight.copy_(w)
        if bias:
            b = torch.randn(d, generator=g, dtype=torch.float64)
            ours.bias.copy_(b), ref.bias.copy_(b)
    x = 3 + 5 * torch.randn(rows, 4, d, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 33), seed=st.integers(0, 999))
def test_rmsnorm_matches_torch(d, seed):
    g = torch.Generator().manual_seed(seed)
    ours, ref = RMSNorm(d, eps=1e-6).double(), torch.nn.RMSNorm(d, eps=1e-6).double()
    with torch.no_grad():
        w = torch.randn(d, generator=g, dtype=torch.float64)
        ours.weight.copy_(w), ref.weight.copy_(w)
    x = 2 + torch.randn(3, 5, d, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-10)


def test_rmsnorm_and_layernorm_agree_on_zero_mean_input():
    x = torch.randn(4, 8, dtype=torch.float64)
    x = x - x.mean(-1, keepdim=True)
    torch.testing.assert_close(RMSNorm(8, eps=1e-5).double()(x), LayerNorm(8, bias=False).double()(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("layer", [LayerNorm(4), RMSNorm(4)])
def test_wrong_width_raises(layer):
    with pytest.raises(ValueError, match=r"x must end in d=4 features, got shape \(2, 5\)"):
        layer(torch.randn(2, 5))


@settings(max_examples=30, deadline=None)
@given(d=st.integers(2, 40), seed=st.integers(0, 999), eps=st.sampled_from([0.0, 1e-6]))
def test_crmsnorm_is_rmsnorm_of_the_implied_vector(d, seed, eps):
    z = torch.randn(3, 5, d - 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = torch.cat([z, -z.sum(dim=-1, keepdim=True)], dim=-1)
    ref = torch.nn.RMSNorm(d, eps=eps, elementwise_affine=False).double()
    torch.testing.assert_close(CRMSNorm(d, eps=eps)(z), ref(x)[..., : d - 1], rtol=0, atol=1e-12)

def test_crmsnorm_bad_input():
    with pytest.raises(ValueError, match=r"z must end in d - 1=4 features"):
        CRMSNorm(5)(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="d >= 2"):
        CRMSNorm(1)

@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 33), seed=st.integers(0, 999))
def test_biasnorm_matches_its_equation(d, seed):
    g = torch.Generator().manual_seed(seed)
    norm = BiasNorm(d, eps=0.0).double()
    with torch.no_grad():
        norm.bias.copy_(torch.randn(d, generator=g, dtype=torch.float64))
        norm.log_scale.fill_(0.3)
    x = 2 * torch.randn(4, 3, d, generator=g, dtype=torch.float64)
    rms = torch.linalg.vector_norm(x - norm.bias, dim=-1, keepdim=True) / math.sqrt(d)
    torch.testing.assert_close(norm(x), x / rms * math.exp(0.3), rtol=1e-12, atol=0)

def test_biasnorm_without_bias_is_rmsnorm_with_gain_exp_gamma():
    norm = BiasNorm(7, eps=0.0).double()
    with torch.no_grad():
        norm.log_scale.fill_(-0.4)
    x = torch.randn(5, 7, dtype=torch.float64)
    want = F.rms_norm(x, (7,), weight=torch.full((7,), math.exp(-0.4), dtype=torch.float64), eps=0.0)
    torch.testing.assert_close(norm(x), want, rtol=1e-12, atol=0)

@settings(max_examples=30, deadline=None)
@given(d=st.integers(2, 33), seed=st.integers(0, 999))
def test_biasnorm_keeps_length_information_that_layernorm_removes(d, seed):
    """Scaling x by c leaves LayerNorm's output unchanged, but BiasNorm's output RMS grows with c (b != 0, x.b <= 0)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d, generator=g, dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    if torch.dot(x, b) > 0:
        b = -b
    bias_norm, layer_norm = BiasNorm(d, eps=0.0).double(), LayerNorm(d, eps=0.0).double()
    with torch.no_grad():
        bias_norm.bias.copy_(b)
    scales = [0.25, 0.5, 1.0, 2.0, 4.0]
    out_rms = torch.stack([bias_norm(c * x).pow(2).mean().sqrt() for c in scales])
    assert torch.all(out_rms[1:] > out_rms[:-1] * (1 + 1e-9))
    for c in scales:
        torch.testing.assert_close(layer_norm(c * x), layer_norm(x), rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------- σReparam

def _fresh_weight(layer, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g, dtype=layer.weight.dtype))

def _weight_with_gap(layer, seed):
    """A random weight whose top singular value is at least twice the next, so 300 power-iteration steps converge."""
    g = torch.Generator().manual_seed(seed)
    d_out, d_in = layer.weight.shape
    left = torch.linalg.qr(torch.randn(d_out, d_out, generator=g, dtype=torch.float64))[0]
    right = torch.linalg.qr(torch.randn(d_in, d_in, generator=g, dtype=torch.float64))[0]
    n = min(d_in, d_out)
    singular = torch.cat([torch.tensor([3.0], dtype=torch.float64), torch.rand(n - 1, generator=g, dtype=torch.float64) * 1.5])
    with torch.no_grad():
        layer.weight.copy_(left[:, :n] @ torch.diag(singular) @ right[:, :n].T)

@settings(max_examples=20, deadline=None)
@given(d_in=st.integers(1, 12), d_out=st.integers(1, 12), seed=st.integers(0, 999))
def test_power_iteration_converges_to_the_spectral_norm(d_in, d_out, seed):
    layer = SigmaReparamLinear(d_in, d_out, n_power_iterations=1).double()
    _weight_with_gap(layer, seed)  # buffers now hold the previous weight's singular vectors
    x = torch.randn(3, d_in, dtype=torch.float64)
    layer.train()
    for _ in range(300):
        layer(x)
    layer.eval()
    exact = torch.linalg.matrix_norm(layer.weight.detach(), ord=2)
    torch.testing.assert_close(layer.sigma().detach(), exact, rtol=1e-6, atol=0)
    # so the effective weight has spectral norm |gamma|
    effective = torch.linalg.matrix_norm(layer.effective_weight().detach(), ord=2)
    torch.testing.assert_close(effective, layer.gamma.detach().abs(), rtol=1e-6, atol=0)

def test_one_step_per_forward_and_buffers_frozen_in_eval():
    layer = SigmaReparamLinear(6, 4).double()
    _fresh_weight(layer, 0)
    W = layer.weight.detach()
    u0, v0 = layer.u.clone(), layer.v.clone()
    x = torch.randn(2, 6, dtype=torch.float64)
    layer.eval()
    layer(x)
    assert torch.equal(layer.u, u0) and torch.equal(layer.v, v0)
    layer.train()
    layer(x)
    v1 = W.T @ u0 / torch.linalg.vector_norm(W.T @ u0)
    u1 = W @ v1 / torch.linalg.vector_norm(W @ v1)
    torch.testing.assert_close(layer.v, v1, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.u, u1, rtol=0, atol=1e-12)
    assert not layer.u.requires_grad and not layer.v.requires_grad

@settings(max_examples=15, deadline=None)
@given(d_in=st.integers(1, 9), d_out=st.integers(1, 9), bias=st.booleans(), seed=st.integers(0, 999))
def test_forward_equals_gamma_over_sigma_times_weight(d_in, d_out, bias, seed):
    g = torch.Generator().manual_seed(seed)
    layer = SigmaReparamLinear(d_in, d_out, bias=bias).double().eval()
    _fresh_weight(layer, seed)
    with torch.no_grad():
        layer.gamma.fill_(1.7)
        layer.u.copy_(F.normalize(torch.randn(d_out, generator=g, dtype=torch.float64), dim=0))
        layer.v.copy_(F.normalize(torch.randn(d_in, generator=g, dtype=torch.float64), dim=0))
    x = torch.randn(4, 2, d_in, generator=g, dtype=torch.float64)
    W, u, v = layer.weight.detach(), layer.u, layer.v
    sigma = sum(u[i] * W[i, j] * v[j] for i in range(d_out) for j in range(d_in))
    expected = torch.einsum("oi,bti->bto", 1.7 / sigma * W, x)
    if bias:
        expected = expected + layer.bias.detach()
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-12)

def test_new_layer_and_from_linear_equal_the_plain_linear_layer():
    torch.manual_seed(0)
    plain = torch.nn.Linear(7, 5).double()
    x = torch.randn(3, 7, dtype=torch.float64)
    reparam = SigmaReparamLinear.from_linear(plain)
    torch.testing.assert_close(reparam(x), plain(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(reparam.gamma.detach(), torch.linalg.matrix_norm(plain.weight.detach(), ord=2))
    fresh = SigmaReparamLinear(7, 5)
    torch.testing.assert_close(fresh(x.float()), F.linear(x.float(), fresh.weight, fresh.bias), rtol=0, atol=1e-5)

def test_gradcheck_with_fixed_power_iteration_vectors():
    layer = SigmaReparamLinear(4, 3).double().eval()
    _fresh_weight(layer, 1)
    W = layer.weight.detach().clone().requires_grad_(True)
    gamma = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)

    def forward(W, gamma, x):
        return functional_call(layer, {"weight": W, "gamma": gamma, "bias": layer.bias.detach()}, (x,))

    assert torch.autograd.gradcheck(forward, (W, gamma, x))
    assert torch.autograd.gradgradcheck(forward, (W, gamma, x))

def test_gradient_flows_through_sigma():
    # d/dW of sum(W' x) must include the -gamma/sigma^2 * (u v^T) term from sigma = u^T W v
    layer = SigmaReparamLinear(3, 2, bias=False).double().eval()
    _fresh_weight(layer, 2)
    x = torch.randn(3, dtype=torch.float64)
    layer(x).sum().backward()
    W, u, v, gamma = layer.weight.detach(), layer.u, layer.v, layer.gamma.detach()
    sigma = u @ W @ v
    ones = torch.ones(2, dtype=torch.float64)
    expected = gamma / sigma * torch.outer(ones, x) - gamma / sigma ** 2 * (ones @ W @ x) * torch.outer(u, v)
    torch.testing.assert_close(layer.weight.grad, expected, rtol=1e-10, atol=1e-12)

def test_sigma_reparam_swaps_every_linear_and_keeps_the_output():
    torch.manual_seed(0)
    model = TransformerLM(11, 16, 2, 2, max_len=8).double().eval()
    idx = torch.randint(0, 11, (2, 8))
    before = model(idx)
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    sigma_reparam_(model, skip=["blocks.1.ffn.w2"])
    assert sum(isinstance(m, SigmaReparamLinear) for m in model.modules()) == n_linear - 1
    assert isinstance(model.blocks[1].ffn.w2, torch.nn.Linear)
    torch.testing.assert_close(model(idx), before, rtol=0, atol=1e-10)

@pytest.mark.parametrize("kwargs, name", [(dict(d_in=0, d_out=3), "d_in"), (dict(d_in=3, d_out=-1), "d_out"),
                                          (dict(d_in=3, d_out=2, n_power_iterations=0), "n_power_iterations")])
def test_sigma_reparam_bad_sizes_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SigmaReparamLinear(**kwargs)

def test_sigma_reparam_bad_input_raises():
    layer = SigmaReparamLinear(5, 2)
    with pytest.raises(ValueError, match=r"x must end in .*5.*\(2, 4\)"):
        layer(torch.randn(2, 4))
    with pytest.raises(ValueError, match="not nn.Linear layers"):
        sigma_reparam_(torch.nn.Sequential(torch.nn.Linear(2, 2)), skip=["nope"])
    with pytest.raises(TypeError, match="skip"):
        sigma_reparam_(torch.nn.Sequential(torch.nn.Linear(2, 2)), skip="0")
    with pytest.raises(TypeError, match="from_linear"):
        sigma_reparam_(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("make, name", [
    (lambda: RMSNorm(0), "d"), (lambda: LayerNorm(-1), "d"), (lambda: BiasNorm(0), "d"), (lambda: CRMSNorm(0), "d"),
    (lambda: RMSNorm(4, eps=-1e-6), "eps"), (lambda: LayerNorm(True), "d"), (lambda: make_norm("batch", 4), "norm")])
def test_bad_constructor_arguments_are_named(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_make_norm_builds_the_named_norm():
    assert isinstance(make_norm("rms", 6), RMSNorm) and make_norm("rms", 6).d == 6
    assert isinstance(make_norm("layer", 6), LayerNorm) and make_norm("layer", 6).d == 6


def test_prepbn_starts_as_layernorm_and_hands_over_linearly():
    from minilib.norms import PRepBN

    torch.manual_seed(0)
    norm = PRepBN(6, warmup_steps=4).double()
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(norm(x), F.layer_norm(x, (6,)), rtol=0, atol=1e-12)  # step 0: gamma = 1
    assert norm.gamma == 0.75
    norm(x)
    norm.bn.eval()
    with torch.no_grad():
        norm.eta.fill_(0.3)
    bn = F.batch_norm(x.reshape(-1, 6), norm.bn.running_mean, norm.bn.running_var, norm.bn.weight, norm.bn.bias,
                      training=False, eps=1e-5).reshape(x.shape)
    want = 0.5 * F.layer_norm(x, (6,)) + 0.5 * (bn + 0.3 * x)
    torch.testing.assert_close(norm(x), want, rtol=0, atol=1e-12)


def test_prepbn_folds_into_the_next_linear_layer_after_training():
    from minilib.norms import PRepBN

    torch.manual_seed(1)
    norm, linear = PRepBN(8, warmup_steps=5), torch.nn.Linear(8, 3)
    opt = torch.optim.SGD([*norm.parameters(), *linear.parameters()], lr=0.1)
    for _ in range(12):
        x = 2 + 3 * torch.randn(16, 4, 8)
        loss = linear(norm(x)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    norm.eval()
    folded = norm.fold_into(linear)
    x = 2 + 3 * torch.randn(10, 8)
    assert norm.gamma == 0 and norm.eta.item() != 0
    torch.testing.assert_close(folded(x), linear(norm(x)), rtol=0, atol=1e-5)


def test_prepbn_refuses_to_fold_early_and_checks_arguments():
    from minilib.norms import PRepBN

    norm = PRepBN(4, warmup_steps=10)
    with pytest.raises(ValueError, match="gamma"):
        norm.fold_into(torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match="warmup_steps"):
        PRepBN(4, warmup_steps=0)
