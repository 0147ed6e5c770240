"""Hash memory layer: buckets and bucket probabilities against loops and the 2^tau-code softmax; FLOPs counted."""
import itertools

import pytest
import torch

from minilib.moe import HashMemoryLayer


def test_output_equals_a_loop_over_chunks_with_the_softmax_over_all_codes():
    torch.manual_seed(0)
    layer = HashMemoryLayer(8, 3, chunk=4, temperature=0.7).double()
    x = torch.randn(5, 8, dtype=torch.float64)
    codes = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=4)), dtype=torch.float64)  # (16, 4)
    want = torch.zeros(5, 3, dtype=torch.float64)
    for t in range(5):
        for k in range(2):
            z = x[t, 4 * k:4 * k + 4]
            h = torch.where(z > 0, 1.0, -1.0).double()
            bucket = sum(int(z[i] > 0) << i for i in range(4))
            p = torch.exp(codes @ z / 0.7)
            p_h = torch.exp(h @ z / 0.7) / p.sum()
            want[t] += p_h * layer.tables[k, bucket]
    torch.testing.assert_close(layer(x), want)


def test_gradients_reach_the_input_and_the_chosen_rows_only():
    torch.manual_seed(1)
    layer = HashMemoryLayer(8, 4, chunk=4).double()
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(layer, (x,))
    layer(x).sum().backward()
    used = layer.tables.grad.abs().sum(-1) > 0
    assert used.sum() <= 3 * 2 and x.grad.abs().sum() > 0


def test_flops_fall_by_about_the_chunk_size_against_a_linear_layer_at_d_256():
    # 2 d_in d_out / (2 K d_out + 3 d_in) with K = d_in / chunk: about chunk times fewer (7.6x at chunk 8)
    for chunk in (4, 8, 16):
        layer = HashMemoryLayer(256, 256, chunk=chunk) if chunk < 16 else None
        flops = 3 * 256 + 2 * (256 // chunk) * 256
        if layer is not None:
            assert layer.flops_per_token() == flops
        assert 0.9 * chunk < 2 * 256 * 256 / flops < chunk


@pytest.mark.parametrize("call, name", [(lambda: HashMemoryLayer(10, 4, chunk=4), "d_in"),
                                        (lambda: HashMemoryLayer(8, 4, chunk=32), "chunk"),
                                        (lambda: HashMemoryLayer(8, 4, temperature=0.0), "temperature"),
                                        (lambda: HashMemoryLayer(8, 4, chunk=4)(torch.zeros(2, 6)), "x")])
def test_bad_arguments_are_named(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_registered_hash_memory_ffn_trains_in_a_transformer_lm():
    from minilib.models import TransformerLM, train

    torch.manual_seed(0)
    model = TransformerLM(vocab_size=7, d_model=16, n_layers=1, n_heads=2, d_ff=16, ffn="hash_memory",
                          ffn_kwargs={"chunk": 4})
    x = torch.randint(0, 7, (4, 10))
    losses = train(model, iter(lambda: (x, x.roll(-1, 1)), None), steps=60, lr=1e-2, progress=False)
    assert losses[-1] < 0.75 * losses[0]
