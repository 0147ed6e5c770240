"""minilib.prenorm is a deprecated alias of minilib.models.conversions; minilib.models.FeedForward / make_norm
moved to the core. The old paths warn and give the same objects."""
import pytest

import minilib.models
import minilib.prenorm as prenorm
from minilib import feedforward, norms
from minilib.models import conversions


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
