"""The token-mixer registry: names resolve to their factories, bad names and clashes fail clearly."""
import pytest
import torch

from minilib import mixing
from minilib.mixing import TokenMixer, mixer_factory, register_mixer, registered_mixers
from tests.models_support import decode_in_pieces


class _Identity(TokenMixer):
    def forward(self, x, *, cache=None):
        return x


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(mixing._REGISTRY, "factories", dict(mixing._REGISTRY.factories))


def test_registered_name_and_direct_factory_resolve(clean_registry):
    def factory(config, layer):
        return _Identity()

    register_mixer("identity-test", factory)
    assert "identity-test" in registered_mixers()
    assert mixer_factory("identity-test") is factory
    assert mixer_factory(factory) is factory
    mixer = mixer_factory("identity-test")(None, 0)
    x = torch.randn(2, 3, 4)
    assert mixer.causal and mixer.new_cache() is None and torch.equal(mixer(x), x)


def test_bad_names_fail_clearly(clean_registry):
    with pytest.raises(ValueError, match="mixer must be a registered name"):
        mixer_factory("no-such-mixer")
    register_mixer("twice-test", lambda config, layer: _Identity())
    with pytest.raises(ValueError, match="already registered"):
        register_mixer("twice-test", lambda config, layer: _Identity())
    with pytest.raises(TypeError, match="factory must be callable"):
        register_mixer("not-callable", 3)
    with pytest.raises(TypeError, match="name must be a non-empty str"):
        register_mixer("", lambda config, layer: _Identity())


@pytest.mark.parametrize("name, kwargs", [("attention", {}), ("moh", {"top_k": 2, "n_shared": 1})])
def test_registered_attention_mixers_decode_like_their_full_forward(name, kwargs):
    from types import SimpleNamespace

    import minilib.attention  # noqa: F401  (registers "attention" and "moh")

    torch.manual_seed(0)
    config = SimpleNamespace(d_model=16, n_heads=4, n_kv_heads=2, pos="rope", max_len=32, mixer_kwargs=kwargs)
    mixer = mixer_factory(name)(config, 0).double()
    assert isinstance(mixer, TokenMixer) and mixer.causal
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    cache = mixer.new_cache()
    torch.testing.assert_close(decode_in_pieces(lambda piece: mixer(piece, cache=cache), x, range(3, 7)), mixer(x))
