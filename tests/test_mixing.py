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


class _ConstantMixer(TokenMixer):
    """A linear mixer whose weights its constructor sets to 0.5: any redraw by the model shows."""

    def __init__(self, d_model: int, owns_init: bool):
        super().__init__()
        self.owns_init = owns_init
        self.proj = torch.nn.Linear(d_model, d_model)
        torch.nn.init.constant_(self.proj.weight, 0.5)
        torch.nn.init.constant_(self.proj.bias, 0.5)

    def forward(self, x, *, cache=None):
        return self.proj(x)


@pytest.mark.parametrize("init", ["default", "xavier"])
def test_the_models_init_leaves_a_mixer_that_owns_its_init_as_built(init):
    from minilib.models import TransformerLM

    def build(owns):
        return TransformerLM(11, 16, 2, 2, d_ff=32, init=init, mixer=lambda config, layer: _ConstantMixer(16, owns))

    for block in build(True).blocks:
        assert (block.mixer.proj.weight == 0.5).all() and (block.mixer.proj.bias == 0.5).all()
        assert block.ffn.w1.weight.std() < 0.3  # everything else is still drawn by the model
    redrawn = build(False).blocks[0].mixer.proj
    assert (redrawn.bias == 0).all() and redrawn.weight.std() < 0.3


def test_mamba_keeps_pytorchs_default_linear_init_inside_a_language_model():
    from minilib.models import TransformerLM
    d = 32
    mixer = TransformerLM(11, d, 1, 2, mixer="mamba").blocks[0].mixer
    for layer in (mixer.in_proj, mixer.x_proj):
        bound = layer.in_features ** -0.5  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std bound/sqrt(3)
        assert layer.weight.abs().max() <= bound and layer.weight.std() > 0.8 * bound / 3 ** 0.5
