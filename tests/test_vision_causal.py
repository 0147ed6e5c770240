"""minilib.vision.causal: the soft mask interpolates bidirectional and causal attention; a leading class token is blind."""
import math

import pytest
import torch

from minilib.attention import sdpa
from minilib.vision import CausalViT, causal_vit, soft_causal_mask


def test_soft_mask_ends_are_bidirectional_and_causal():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 3, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(sdpa(q, k, v, bias=soft_causal_mask(5, 1.0, dtype=torch.float64)), sdpa(q, k, v))
    torch.testing.assert_close(sdpa(q, k, v, bias=soft_causal_mask(5, 0.0, dtype=torch.float64)), sdpa(q, k, v, causal=True))


def test_soft_mask_scales_future_weights_by_alpha():
    torch.manual_seed(0)
    q, k = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    alpha = 0.3
    e = torch.exp(q @ k.T / math.sqrt(3))
    e = torch.where(torch.ones(4, 4, dtype=torch.bool).triu(1), alpha * e, e)
    want = e / e.sum(-1, keepdim=True)
    got = torch.softmax(q @ k.T / math.sqrt(3) + soft_causal_mask(4, alpha, dtype=torch.float64), -1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_leading_class_token_under_causal_mask_ignores_the_image():
    torch.manual_seed(0)
    first = causal_vit(8, 2, 16, 2, 2, n_classes=10, cls_position="first")
    images = torch.rand(5, 8, 8)
    logits = first(images)
    torch.testing.assert_close(logits, logits[:1].expand(5, -1), rtol=0, atol=0)
    last = causal_vit(8, 2, 16, 2, 2, n_classes=10, cls_position="last")
    assert not torch.allclose(last(images), last(images)[:1].expand(5, -1))
    first.alpha = 0.5  # the soft mask lets the leading token see the image again
    assert not torch.allclose(first(images), first(images)[:1].expand(5, -1))


def test_bad_position():
    with pytest.raises(ValueError, match="cls_position"):
        CausalViT(8, 2, 16, 1, 2, n_classes=10, cls_position="middle")


def test_anneal_moves_alpha_linearly_from_one_to_zero_in_training_steps():
    torch.manual_seed(0)
    model = causal_vit(8, 2, 16, 1, 2, n_classes=10, anneal_steps=4)
    images = torch.rand(3, 8, 8)
    seen = []
    for _ in range(6):
        model(images)
        seen.append(model.alpha)
    assert seen == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    model.eval()
    model(images)
    assert model.alpha == 0.0 and model.steps_seen.item() == 6, "eval passes do not advance the anneal"
    # at alpha = 1 the model is the bidirectional one: logits equal those under a zero bias
    fresh = causal_vit(8, 2, 16, 1, 2, n_classes=10, anneal_steps=4)
    out = fresh(images)
    z = fresh.embed(images)
    z = torch.cat([z, fresh.cls.expand(3, 1, -1)], dim=1)
    for block in fresh.blocks:
        z = block(z)
    torch.testing.assert_close(out, fresh.head(z))
    with pytest.raises(ValueError, match="anneal_steps"):
        causal_vit(8, 2, 16, 1, 2, n_classes=10, anneal_steps=-1)
