"""minilib.ssm.lmu: the "lmu" mixer against a from-scratch Legendre memory (scipy's expm for ZOH), cached decoding,
training in TransformerLM."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.linalg import expm

from minilib.mixing import mixer_factory
from minilib.models import TransformerConfig, TransformerLM, train
from minilib.ssm import LMUMixer, SSMCache
from tests.models_support import decode_in_pieces


def legendre_memory(u: np.ndarray, order: int, theta: float) -> np.ndarray:
    """``u (L,)`` -> ``(L, order)``: Voelker's A, B written out, ZOH by the augmented-matrix exponential, one step a token."""
    A, B = np.zeros((order, order)), np.zeros((order, 1))
    for i in range(order):
        B[i] = (2 * i + 1) * (-1) ** i / theta
        for j in range(order):
            A[i, j] = (2 * i + 1) / theta * (-1 if i < j else (-1) ** (i - j + 1))
    E = expm(np.block([[A, B], [np.zeros((1, order + 1))]]))
    A_bar, B_bar = E[:order, :order], E[:order, order:]
    m, out = np.zeros((order, 1)), []
    for x in u:
        m = A_bar @ m + B_bar * x
        out.append(m[:, 0])
    return np.array(out)


def test_lmu_mixer_equals_a_from_scratch_memory():
    torch.manual_seed(0)
    mixer = LMUMixer(6, units=3, order=5, theta=7.0).double()
    x = torch.randn(2, 13, 6, dtype=torch.float64)
    u = (x @ mixer.encode.weight.T + mixer.encode.bias).detach().numpy()  # (B, T, units)
    for b in range(2):
        m = np.concatenate([legendre_memory(u[b, :, j], 5, 7.0) for j in range(3)], axis=1)  # (T, units*order)
        pre = m @ mixer.memory_out.weight.detach().numpy().T + x[b].numpy() @ mixer.token_out.weight.detach().numpy().T \
            + mixer.token_out.bias.detach().numpy()
        want = torch.nn.functional.gelu(torch.from_numpy(pre))
        torch.testing.assert_close(mixer(x)[b], want, rtol=0, atol=1e-9)


def test_cached_decoding_equals_the_full_forward_and_the_state_is_fixed():
    torch.manual_seed(1)
    config = SimpleNamespace(d_model=8, n_heads=2, max_len=32, mixer_kwargs={"units": 2, "order": 6, "theta": 9.0})
    mixer = mixer_factory("lmu")(config, 0).double()
    x = torch.randn(2, 17, 8, dtype=torch.float64)
    cache = mixer.new_cache()
    decoded = decode_in_pieces(lambda piece: mixer(piece, cache=cache), x, [1, 5, 6, 12])
    assert isinstance(cache, SSMCache) and cache.length == 17 and cache.state.shape == (2, 2, 6)
    torch.testing.assert_close(decoded, mixer(x), rtol=0, atol=1e-9)


def test_trains_in_transformer_lm():
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig(5, 16, 1, 2, max_len=16, pos="none", mixer="lmu",
                                            mixer_kwargs={"units": 4, "order": 4, "theta": 4.0}))
    x = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]])
    y = torch.tensor([[1, 2, 3, 4, 0, 1, 2, 3]])
    losses = train(model, iter(lambda: (x, y), None), steps=40, lr=1e-2, progress=False)
    assert losses[0] > 1.4 and losses[-1] < 0.3 * losses[0]


def test_bad_input():
    with pytest.raises(ValueError, match="theta"):
        LMUMixer(4, theta=0.0)
    with pytest.raises(ValueError, match="units"):
        LMUMixer(4, units=0)
    with pytest.raises(ValueError, match="x must end in d_model=4"):
        LMUMixer(4)(torch.randn(1, 3, 5))
    with pytest.raises(TypeError, match="cache"):
        LMUMixer(4)(torch.randn(1, 3, 4), cache=object())
