"""Moved public names keep their old import paths (minilib._moved): each old name warns and is the new object.

minilib.variants -> minilib.models.*; minilib.prenorm -> minilib.models.conversions; minilib.models.FeedForward /
make_norm -> the core (minilib.feedforward, minilib.norms); minilib.positional.urpe_attention / URPEAttention ->
minilib.attention.urpe.
"""
import importlib

import pytest

from minilib import feedforward, norms
from minilib.attention import URPEAttention, urpe_attention
from minilib.models import conversions
import minilib.models
import minilib.prenorm as prenorm
import minilib.variants as variants

OLD_NAMES = ["EncoderLayer", "DecoderLayer", "EncoderDecoderTransformer", "SIMILARITIES", "MinimalAttention",
             "MinimalBlock", "MinimalTransformer", "count_parameters", "GatedResidual", "GatedBlock",
             "GatedTransformerLM", "MIXINGS", "DualStreamBlock", "DualStreamLM", "FeedForward", "make_norm"]


@pytest.mark.parametrize("name", OLD_NAMES)
def test_old_names_warn_and_resolve_to_their_new_home(name):
    with pytest.warns(DeprecationWarning, match=f"minilib.variants.{name} moved to"):
        old = getattr(variants, name)
    new_module = variants._NEW_HOMES[name]
    assert old is getattr(importlib.import_module(new_module), name)
    if new_module.startswith("minilib.models.") and not name.isupper():
        assert getattr(minilib.models, name) is old


def test_unknown_names_still_raise_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'TransformerLM'"):
        variants.TransformerLM


@pytest.mark.parametrize("name", ["ConvertedLM", "to_pre_rmsnorm", "to_pre_crmsnorm"])
def test_prenorm_names_warn_and_resolve(name):
    with pytest.warns(DeprecationWarning, match=f"minilib.prenorm.{name} moved to minilib.models.conversions"):
        assert getattr(prenorm, name) is getattr(conversions, name) is getattr(minilib.models, name)


def test_core_blocks_moved_out_of_models():
    with pytest.warns(DeprecationWarning, match="minilib.feedforward.FeedForward"):
        assert minilib.models.FeedForward is feedforward.FeedForward
    with pytest.warns(DeprecationWarning, match="minilib.norms.make_norm"):
        assert minilib.models.make_norm is norms.make_norm
    with pytest.raises(AttributeError):
        minilib.models.no_such_name


def test_old_positional_path_still_works_with_a_deprecation_warning():
    import minilib.positional

    with pytest.warns(DeprecationWarning, match="minilib.attention.urpe"):
        assert minilib.positional.urpe_attention is urpe_attention
    with pytest.warns(DeprecationWarning, match="minilib.attention.urpe"):
        from minilib.positional import URPEAttention as old
    assert old is URPEAttention
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        minilib.positional.nothing
