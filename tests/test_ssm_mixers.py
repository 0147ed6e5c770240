"""minilib.ssm.mixers: the "mamba" and "s4d" token mixers decode in pieces like their full forward and train in TransformerLM."""
from types import SimpleNamespace

import pytest
import torch

from minilib.mixing import TokenMixer, mixer_factory
from minilib.models import TransformerConfig, TransformerLM, train
from minilib.ssm import MambaMixer, S4DMixer, SSMCache
from tests.models_support import decode_in_pieces


@pytest.mark.parametrize("name, kwargs", [("mamba", {"d_state": 4, "chunk_size": 3}), ("s4d", {"d_state": 4}),
                                          ("h3", {"d_state": 4, "shift": 3})])
def test_cached_decoding_equals_the_full_forward(name, kwargs):
    torch.manual_seed(0)
    config = SimpleNamespace(d_model=8, n_heads=2, n_kv_heads=2, pos="none", max_len=32, mixer_kwargs=kwargs)
    mixer = mixer_factory(name)(config, 0).double()
    assert isinstance(mixer, TokenMixer) and mixer.causal
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    cache = mixer.new_cache()
    decoded = decode_in_pieces(lambda piece: mixer(piece, cache=cache), x, range(5, 10))
    assert isinstance(cache, SSMCache) and cache.length == 11
    torch.testing.assert_close(decoded, mixer(x), rtol=0, atol=1e-10)
    # causal: changing position 6 leaves outputs before it alone
    x2 = x.clone()
    x2[:, 6] += 1.0
    torch.testing.assert_close(mixer(x2)[:, :6], mixer(x)[:, :6], rtol=0, atol=1e-12)
    assert (mixer(x2)[:, 6:] - mixer(x)[:, 6:]).abs().amax() > 1e-6


@pytest.mark.parametrize("mixer", ["mamba", "s4d", "h3"])
def test_trains_in_transformer_lm_and_generates_with_its_cache(mixer):
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig(5, 16, 2, 2, max_len=16, pos="none", mixer=mixer,
                                            mixer_kwargs={"d_state": 4}))
    x = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]])
    y = torch.tensor([[1, 2, 3, 4, 0, 1, 2, 3]])
    losses = train(model, iter(lambda: (x, y), None), steps=40, lr=1e-2, progress=False)
    assert losses[0] > 1.4 and losses[-1] < 0.3 * losses[0]
    prompt = x[:, :3]
    assert torch.equal(model.generate(prompt, 6, temperature=0), model.generate(prompt, 6, temperature=0, use_cache=False))


def test_mamba_initial_step_sizes_and_parameter_shapes():
    torch.manual_seed(0)
    m = MambaMixer(32, d_state=8, dt_min=0.01, dt_max=0.05)
    dt = torch.nn.functional.softplus(m.dt_bias)
    assert dt.min() >= 0.01 - 1e-6 and dt.max() <= 0.05 + 1e-6
    assert m.dt_weight.shape == (64, 2) and m.dt_weight.abs().max() <= 2 ** -0.5
    torch.testing.assert_close(-torch.exp(m.A_log[0]), -torch.arange(1, 9.0))
    assert m.x_proj.weight.shape == (2 + 16, 64)
    s = S4DMixer(32, d_state=8)
    A, B, C, dt = s.ssm_parameters()
    assert A.shape == B.shape == C.shape == (64, 4) and dt.shape == (64,)


def test_mamba_step_sizes_survive_the_language_models_init():
    """TransformerLM re-initialises every nn.Linear (zero bias); Delta's bias must keep Mamba's init."""
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig(5, 16, 2, 2, max_len=16, pos="none", mixer="mamba",
                                            mixer_kwargs={"dt_min": 1e-3, "dt_max": 1e-1}))
    for block in model.blocks:
        dt = torch.nn.functional.softplus(block.mixer.dt_bias)
        assert dt.min() >= 1e-3 - 1e-6 and dt.max() <= 1e-1 + 1e-6
        assert all(p._no_weight_decay for p in (block.mixer.A_log, block.mixer.D, block.mixer.dt_bias))


def test_bad_input():
    with pytest.raises(ValueError, match="d_state must be a positive int"):
        MambaMixer(8, d_state=0)
    with pytest.raises(ValueError, match=r"x must end in d_model=8 features"):
        S4DMixer(8)(torch.randn(1, 3, 7))
