"""Activator and WideNet: the blocks against their equations, counted FLOPs and parameters, training on digits."""
import pytest
import torch
import torch.nn.functional as F

from minilib.moe import ActivatorBlock, ActivatorClassifier, WideNet, vit_block_flops


def test_activator_block_mixes_tokens_with_a_geglu_mlp():
    torch.manual_seed(0)
    block = ActivatorBlock(5, 6, token_hidden=7, d_ff=8, channel_mlp=False).double()
    z = torch.randn(2, 5, 6, dtype=torch.float64)
    u = block.norm1(z).transpose(1, 2)  # (B, d, N)
    mlp = block.token_mlp
    want = z + ((F.gelu(u @ mlp.w1.weight.T) * (u @ mlp.w3.weight.T)) @ mlp.w2.weight.T).transpose(1, 2)
    torch.testing.assert_close(block(z), want)
    assert block.flops() == 6 * 2 * 5 * 7 * 3


def test_activator_needs_fewer_flops_than_a_vit_block_on_digits():
    n, d = 16, 32
    act = ActivatorBlock(n, d, token_hidden=n, d_ff=4 * d * 2 // 3)
    assert act.flops() < vit_block_flops(n, d, 4 * d)
    assert vit_block_flops(n, d, 4 * d) == 8 * n * d * d + 4 * n * n * d + 2 * 2 * n * d * 4 * d


def test_widenet_shares_attention_and_moe_and_has_fewer_parameters_than_a_vit():
    from minilib.vision import VisionTransformer

    torch.manual_seed(1)
    wide = WideNet(8, 2, 16, 6, 2, n_classes=10, n_experts=4)
    vit = VisionTransformer(8, 2, 16, 6, 2, n_classes=10)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(wide) < count(vit)
    shared = WideNet(8, 2, 16, 6, 2, n_classes=10, n_experts=4, share_norms=True)
    assert count(wide) - count(shared) == 2 * 5 * 2 * 16  # 5 more pairs of LayerNorms (weight and bias)
    images = torch.randn(3, 8, 8)
    assert wide(images).shape == (3, 10) and wide.aux_loss is not None


def test_activator_and_widenet_train_on_random_labels_a_few_steps():
    torch.manual_seed(2)
    images, labels = torch.randn(32, 8, 8), torch.randint(0, 10, (32,))
    for model in (ActivatorClassifier(8, 2, 16, 2, n_classes=10, token_hidden=16, d_ff=32),
                  WideNet(8, 2, 16, 2, 2, n_classes=10, n_experts=2, top_k=1)):
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        first = None
        for _ in range(30):
            loss = F.cross_entropy(model(images), labels)
            first = first or loss.item()
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.item() < 0.7 * first


@pytest.mark.parametrize("call, name", [
    (lambda: ActivatorBlock(4, 8, token_hidden=4, d_ff=8)(torch.zeros(1, 5, 8)), "n_tokens"),
    (lambda: ActivatorBlock(4, 8, token_hidden=0, d_ff=8), "token_hidden"),
    (lambda: WideNet(8, 2, 16, 0, 2, n_classes=10, n_experts=2), "n_layers"),
    (lambda: vit_block_flops(0, 8, 8), "n_tokens")])
def test_bad_arguments_are_named(call, name):
    with pytest.raises(ValueError, match=name):
        call()
