"""minilib.variants is a deprecated alias: every old name still imports, warns, and is the model in minilib.models."""
import importlib

import pytest

import minilib.models
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
