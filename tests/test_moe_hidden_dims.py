"""MoHD against a per-token loop over its hidden units; active fraction counted; registered and trained."""
import pytest
import torch
import torch.nn.functional as F

from minilib.moe import MoHD


def test_mohd_equals_a_per_token_loop_over_shared_and_routed_units():
    torch.manual_seed(0)
    layer = MoHD(6, 20, 4, 2, shared_fraction=0.2).double()
    x = torch.randn(7, 6, dtype=torch.float64)
    want = torch.zeros_like(x)
    for t in range(7):
        h = F.gelu(layer.w1.weight @ x[t])
        p = torch.softmax(layer.router.weight @ x[t], -1)
        top = p.topk(2).indices.tolist()
        mask = torch.zeros(20, dtype=torch.float64)
        mask[:4] = 1.0
        for g in top:
            mask[4 + 4 * g:8 + 4 * g] = p[g] / p[top].sum() * 4 / 2
        want[t] = layer.w2.weight @ (h * mask)
    torch.testing.assert_close(layer(x), want)
    assert layer.active_fraction() == (4 + 2 * 4) / 20


def test_registered_mohd_trains():
    from minilib.models import TransformerLM, train

    torch.manual_seed(0)
    model = TransformerLM(vocab_size=7, d_model=16, n_layers=1, n_heads=2, d_ff=32, ffn="mohd",
                          ffn_kwargs={"n_groups": 4, "top_k": 2})
    x = torch.randint(0, 7, (4, 10))
    losses = train(model, iter(lambda: (x, x.roll(-1, 1)), None), steps=20, lr=1e-2, progress=False)
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("call, name", [(lambda: MoHD(8, 16, 2, 3), "top_k"), (lambda: MoHD(8, 17, 4, 2), "n_groups"),
                                        (lambda: MoHD(8, 16, 2, 1, shared_fraction=1.5), "shared_fraction"),
                                        (lambda: MoHD(8, 16, 2, 1)(torch.zeros(2, 4)), "x")])
def test_bad_arguments_are_named(call, name):
    with pytest.raises(ValueError, match=name):
        call()
