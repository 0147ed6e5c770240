"""minilib.vision.models: every classifier runs forward and backward on odd batch sizes; bad sizes are named."""
import pytest
import torch

from minilib import vision as V

BUILDERS = {
    "cct": lambda: V.CCT(8, 16, 1, 2, n_classes=10),
    "cvt": lambda: V.CvT(8, 16, 1, 2, n_classes=10),
    "t2t": lambda: V.T2TViT(8, 16, 1, 2, n_classes=10),
    "tnt": lambda: V.TNT(8, 4, 2, 16, 8, 1, 2, n_classes=10),
    "crossvit": lambda: V.CrossViT(8, (2, 4), (16, 16), 1, 2, n_classes=10),
    "crossvit-small": lambda: V.CrossViT(8, (2, 4), (16, 16), 1, 2, n_classes=10, branches="small"),
    "swin": lambda: V.Swin(8, 1, 8, (2, 2), 2, n_classes=10, window=4),
    "davit": lambda: V.DaViT(8, 2, 16, 2, 2, n_classes=10, window=2),
    "efficientvit": lambda: V.EfficientViT(8, 2, 16, 1, 2, n_classes=10),
    "shvit": lambda: V.SHViT(8, 2, 16, 1, n_classes=10),
    "rmt": lambda: V.RMT(8, 2, 16, 1, 2, n_classes=10),
    "reparam": lambda: V.ReparamViT(8, 2, 16, 1, 2, n_classes=10, n_branches=2),
    "causal": lambda: V.causal_vit(8, 2, 16, 1, 2, n_classes=10),
    "cnn": lambda: V.SmallCNN(8, n_classes=10),
}


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("batch", [1, 3])
def test_forward_backward_odd_batches(name, batch):
    torch.manual_seed(0)
    model = BUILDERS[name]()
    logits = model(torch.rand(batch, 8, 8))
    assert logits.shape == (batch, 10) and torch.isfinite(logits).all()
    logits.logsumexp(-1).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", BUILDERS)
def test_a_sample_does_not_depend_on_the_rest_of_the_batch(name):
    torch.manual_seed(0)
    model = BUILDERS[name]().eval()
    images = torch.rand(3, 8, 8)
    torch.testing.assert_close(model(images)[1:2], model(images[1:2]), rtol=1e-5, atol=1e-6)


def test_swin_stages_halve_the_grid():
    model = V.Swin(8, 1, 8, (2, 2), 2, n_classes=10, window=4)
    first, second = model.blocks
    assert [b.attn.shift for b in first.blocks] == [0, 2] and first.blocks[0].attn.grid == (8, 8)
    assert second.blocks[0].attn.grid == (4, 4) and second.merge is None
    assert model.head.norm.weight.shape == (16,)


def test_bad_image_sizes_name_the_sizes():
    with pytest.raises(ValueError, match="patch"):
        V.Swin(10, 4, 8, (2,), 2, n_classes=10, window=2)
    with pytest.raises(ValueError, match="window"):
        V.DaViT(8, 2, 16, 2, 2, n_classes=10, window=3)
    with pytest.raises(ValueError, match="images"):
        V.CCT(8, 16, 1, 2, n_classes=10)(torch.rand(2, 3, 8, 8))
