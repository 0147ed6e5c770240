"""Every mixer chapter 07 registers works as a language model's mixer: causal by default, it trains in
TransformerLM, never looks ahead, and, where it has a cache, decodes piece by piece like its full forward."""
import pytest
import torch

import minilib.mixers  # noqa: F401  (registers the names)
from minilib.mixing import mixer_factory
from minilib.models import TransformerConfig, TransformerLM, train
from tests.models_support import assert_causal_lm, decode_in_pieces, seeded

CAUSAL = {"identity": {}, "pool": {"pool_size": 3}, "dwconv": {"kernel_size": 4}, "ponet": {"segment": 3},
          "ffnified": {"kernel_size": 5}, "aff": {}, "token_mlp": {}, "ninformer": {}}
CACHED = ("identity", "pool", "dwconv", "ffnified")
NOT_CAUSAL = ("fourier", "dct")


def lm(name, **kwargs):
    config = TransformerConfig(vocab_size=11, d_model=16, n_layers=2, n_heads=2, max_len=12, pos="none",
                               mixer=name, mixer_kwargs={**CAUSAL[name], **kwargs})
    return TransformerLM(config)


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_mixer_trains_in_a_language_model(name):
    seeded(0)
    model = lm(name)
    x = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]])
    y = (x + 1) % 11
    losses = train(model, iter(lambda: (x, y), None), steps=40, lr=1e-2, progress=False)
    assert losses[-1] < 0.5 * losses[0], (name, losses[0], losses[-1])


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_mixer_never_looks_ahead(name):
    seeded(1)
    model = lm(name).double()
    assert_causal_lm(model, vocab_size=11, seq_len=9, changed=5)


@pytest.mark.parametrize("name", CAUSAL)
def test_cached_decoding_equals_the_full_forward(name):
    seeded(2)
    model = lm(name).double().eval()
    caches = model.new_caches()
    if name not in CACHED:
        assert caches is None  # no incremental form: decoding recomputes the prefix
        return
    idx = torch.randint(0, 11, (2, 10))
    decoded = decode_in_pieces(lambda piece: model(piece, caches=caches), idx, range(4, 8))
    torch.testing.assert_close(decoded, model(idx), rtol=1e-12, atol=1e-12)
    assert caches[0].length == 10


@pytest.mark.parametrize("name", NOT_CAUSAL)
def test_a_mixer_without_causal_form_refuses_a_language_model(name):
    with pytest.raises(ValueError, match="causal=True is impossible"):
        TransformerLM(TransformerConfig(vocab_size=5, d_model=8, n_layers=1, n_heads=1, max_len=8, mixer=name))


@pytest.mark.parametrize("name", [*CAUSAL, *NOT_CAUSAL])
def test_registered_names_build_the_non_causal_form_when_asked(name):
    config = TransformerConfig(vocab_size=5, d_model=8, n_layers=1, n_heads=1, max_len=8, pos="none",
                               mixer=name, mixer_kwargs={"causal": False})
    mixer = mixer_factory(name)(config, 0)
    assert mixer.causal is False
    assert name == "identity" or mixer.new_cache() is None  # the identity needs no future, so it keeps its cache
    assert mixer(torch.randn(2, 8, 8)).shape == (2, 8, 8)
