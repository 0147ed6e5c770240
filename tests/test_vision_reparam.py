"""minilib.vision.reparam: merging parallel linear branches is exact."""
import copy

import pytest
import torch

from minilib.vision import BranchedLinear, ReparamViT, merge_branches


def test_branched_linear_is_the_sum_of_its_branches():
    torch.manual_seed(0)
    layer = BranchedLinear(5, 3, 4).double()
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    want = sum(x @ b.weight.T + b.bias for b in layer.branches)
    torch.testing.assert_close(layer(x), want, rtol=1e-12, atol=1e-12)
    merged = merge_branches(layer)
    assert isinstance(merged, torch.nn.Linear)
    torch.testing.assert_close(merged(x), want, rtol=1e-12, atol=1e-12)


def test_merged_vit_equals_branched_vit_and_is_plain():
    torch.manual_seed(0)
    model = ReparamViT(8, 2, 16, 2, 2, n_classes=10, n_branches=4)
    before = copy.deepcopy(model.state_dict())
    merged = merge_branches(model)
    images = torch.rand(3, 8, 8)
    torch.testing.assert_close(merged(images), model(images), rtol=1e-6, atol=1e-6)
    assert not any(isinstance(m, BranchedLinear) for m in merged.modules())
    assert any(isinstance(m, BranchedLinear) for m in model.modules())  # the original is left alone
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(merged) < n(model)


def test_bad_model():
    with pytest.raises(TypeError, match="model"):
        merge_branches(3)
