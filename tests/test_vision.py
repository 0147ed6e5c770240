"""minilib.vision: patches against a slicing loop, the ViT against a forward written out with torch's functional ops."""
import math

import pytest
import torch
import torch.nn.functional as F

from minilib.vision import EncoderBlock, PatchEmbedding, PoolHead, VisionTransformer, patchify, seq_pool, sincos_positions_2d
from minilib.vision import attention_rollout as V_attention_rollout


def patchify_loop(images: torch.Tensor, p: int) -> torch.Tensor:
    """Reference: slice every patch out of (B, C, H, W), row by row, and flatten it."""
    B, C, H, W = images.shape
    rows = [images[:, :, i:i + p, j:j + p].reshape(B, C * p * p) for i in range(0, H, p) for j in range(0, W, p)]
    return torch.stack(rows, dim=1)


@pytest.mark.parametrize("shape, p", [((2, 1, 8, 8), 2), ((3, 3, 6, 9), 3), ((1, 2, 4, 8), 4), ((2, 1, 5, 5), 1)])
def test_patchify_equals_slicing_loop(shape, p):
    images = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(patchify(images, p), patchify_loop(images, p), rtol=0, atol=0)


def test_patchify_of_single_channel_images_adds_the_channel():
    images = torch.randn(4, 8, 8)
    torch.testing.assert_close(patchify(images, 2), patchify_loop(images[:, None], 2), rtol=0, atol=0)
    assert patchify(images, 2).shape == (4, 16, 4)


def test_patchify_bad_input():
    with pytest.raises(ValueError, match="patch"):
        patchify(torch.randn(2, 8, 8), 3)
    with pytest.raises(ValueError, match="patch"):
        patchify(torch.randn(2, 8, 8), 0)
    with pytest.raises(ValueError, match="images"):
        patchify(torch.randn(8, 8), 2)
    with pytest.raises(TypeError, match="images"):
        patchify(torch.zeros(2, 8, 8, dtype=torch.long), 2)


def reference_vit(model: VisionTransformer, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The ViT written out from the model's weights with functional ops: patches, blocks, norm, mean, head."""
    B, C, H, W = images.shape
    emb = model.embed
    p = emb.patch
    z = patchify_loop(images, p) @ emb.proj.weight.T + emb.proj.bias + emb.pos
    maps = []
    for block in model.blocks:
        attn = block.attn
        n_heads, D = attn.n_heads, attn.head_dim
        h = F.layer_norm(z, z.shape[-1:], block.norm1.weight, block.norm1.bias, eps=1e-5)
        q, k, v = ((h @ w.weight.T).reshape(B, -1, n_heads, D).transpose(1, 2) for w in (attn.wq, attn.wk, attn.wv))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D), dim=-1)
        maps.append(weights)
        z = z + (weights @ v).transpose(1, 2).reshape(B, -1, n_heads * D) @ attn.wo.weight.T
        h = F.layer_norm(z, z.shape[-1:], block.norm2.weight, block.norm2.bias, eps=1e-5)
        z = z + F.gelu(h @ block.ffn.w1.weight.T) @ block.ffn.w2.weight.T
    z = F.layer_norm(z, z.shape[-1:], model.final_norm.weight, model.final_norm.bias, eps=1e-5)
    return z.mean(dim=1) @ model.head.weight.T + model.head.bias, maps


@pytest.mark.parametrize("channels, size, patch", [(1, 8, 2), (3, (6, 9), 3)])
def test_vit_forward_equals_written_out_forward(channels, size, patch):
    torch.manual_seed(0)
    model = VisionTransformer(size, patch, 16, 2, 4, n_classes=5, d_ff=24, channels=channels).double()
    with torch.no_grad():  # non-trivial norms, so that their weights are exercised
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_()
    height, width = (size, size) if isinstance(size, int) else size
    images = torch.randn(3, channels, height, width, dtype=torch.float64)
    logits, maps = model(images, return_attention=True)
    ref_logits, ref_maps = reference_vit(model, images)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-12, atol=1e-12)
    for got, want in zip(maps, ref_maps, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    n_tokens = (height // patch) * (width // patch)
    assert logits.shape == (3, 5) and [m.shape for m in maps] == [(3, 4, n_tokens, n_tokens)] * 2
    torch.testing.assert_close(model(images), logits, rtol=0, atol=0)


def test_vit_accepts_single_channel_images_without_the_channel_axis():
    torch.manual_seed(0)
    model = VisionTransformer(8, 2, 16, 1, 2, n_classes=10)
    images = torch.rand(4, 8, 8)
    torch.testing.assert_close(model(images), model(images[:, None]), rtol=0, atol=0)


def test_vit_output_is_invariant_to_permuting_patches_and_positions_together():
    """Attention and mean pooling are permutation-equivariant: only the position table ties a patch to its place."""
    torch.manual_seed(0)
    model = VisionTransformer(8, 2, 16, 2, 2, n_classes=3).double()
    images = torch.randn(2, 8, 8, dtype=torch.float64)
    perm = torch.randperm(16)
    tokens = model.embed(images)
    permuted = model.embed.proj(patchify(images, 2)[:, perm]) + model.embed.pos[perm]
    torch.testing.assert_close(permuted, tokens[:, perm], rtol=0, atol=0)
    out, out_perm = tokens, permuted
    for block in model.blocks:
        out, out_perm = block(out), block(out_perm)
    torch.testing.assert_close(out_perm, out[:, perm], rtol=1e-12, atol=1e-12)


def test_vit_passes_attention_options_to_every_block():
    model = VisionTransformer(8, 2, 16, 2, 2, n_classes=3, mixer_kwargs=dict(score="sigmoid"))
    assert all(block.attn.score == "sigmoid" for block in model.blocks)
    assert model.blocks[0].ffn.w1.out_features == 64  # d_ff defaults to 4 d_model


def test_bad_sizes_name_the_argument():
    with pytest.raises(ValueError, match="patch"):
        VisionTransformer(8, 3, 16, 1, 2, n_classes=10)
    with pytest.raises(ValueError, match="n_classes"):
        VisionTransformer(8, 2, 16, 1, 2, n_classes=0)
    with pytest.raises(ValueError, match="n_layers"):
        VisionTransformer(8, 2, 16, True, 2, n_classes=10)
    with pytest.raises(ValueError, match="channels"):
        PatchEmbedding(8, 2, 16, channels=0)
    with pytest.raises(ValueError, match="d_ff"):
        EncoderBlock(16, 2, d_ff=0)
    model = VisionTransformer(8, 2, 16, 1, 2, n_classes=10)
    with pytest.raises(ValueError, match="images"):
        model(torch.rand(4, 3, 8, 8))
    with pytest.raises(ValueError, match="images"):
        model(torch.rand(4, 10, 10))


def test_patch_embedding_equals_strided_conv2d():
    """Unfold + linear is a convolution with kernel = stride = patch, the weight reshaped to (d, C, p, p)."""
    torch.manual_seed(0)
    emb = PatchEmbedding((6, 9), 3, 5, channels=2, pos="none").double()
    images = torch.randn(3, 2, 6, 9, dtype=torch.float64)
    conv = F.conv2d(images, emb.proj.weight.reshape(5, 2, 3, 3), emb.proj.bias, stride=3)
    torch.testing.assert_close(emb(images), conv.flatten(2).transpose(1, 2), rtol=1e-12, atol=1e-12)
    assert emb.pos is None and emb.grid == (2, 3)


def test_seq_pool_equals_softmax_weighted_loop():
    torch.manual_seed(0)
    z, s = torch.randn(3, 5, 4, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    want = torch.stack([sum(math.exp(s[b, n]) * z[b, n] for n in range(5)) / sum(math.exp(s[b, n]) for n in range(5))
                        for b in range(3)])
    torch.testing.assert_close(seq_pool(z, s), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(seq_pool(z, s[..., None]), want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="scores"):
        seq_pool(z, s[:, :4])


@pytest.mark.parametrize("pool", PoolHead.POOLS)
def test_pool_head_reads_the_right_tokens(pool):
    torch.manual_seed(0)
    head = PoolHead(4, 3, pool=pool).double()
    z = torch.randn(2, 5, 4, dtype=torch.float64)
    h = F.layer_norm(z, (4,), head.norm.weight, head.norm.bias, eps=1e-5)
    pooled = {"mean": h.mean(1), "first": h[:, 0], "last": h[:, -1],
              "seq": seq_pool(h, h @ head.score.weight[0] + head.score.bias) if pool == "seq" else None}[pool]
    torch.testing.assert_close(head(z), pooled @ head.head.weight.T + head.head.bias, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="pool"):
        PoolHead(4, 3, pool="max")


def test_encoder_block_takes_a_mixer_and_a_bias():
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 8)
    block = EncoderBlock(8, 2, d_ff=16, mixer=lin)
    z = torch.randn(2, 3, 8)
    want = z + lin(block.norm1(z))
    torch.testing.assert_close(block(z), want + block.ffn(block.norm2(want)))
    with pytest.raises(ValueError, match="bias"):
        block(z, bias=torch.zeros(3, 3))
    with pytest.raises(TypeError, match="mixer"):
        EncoderBlock(8, 2, d_ff=16, mixer=lambda x: x)
    mha = EncoderBlock(8, 2, d_ff=16)
    causal = torch.zeros(3, 3).masked_fill(torch.ones(3, 3, dtype=torch.bool).triu(1), float("-inf"))
    h = mha.norm1(z)
    want = z + mha.attn(h, causal=True)
    torch.testing.assert_close(mha(z, bias=causal), want + mha.ffn(mha.norm2(want)))


def test_attention_rollout_equals_per_image_loop():
    torch.manual_seed(0)
    maps = [torch.softmax(torch.randn(2, 3, 4, 4, dtype=torch.float64), -1) for _ in range(3)]
    got = V_attention_rollout(maps, residual=0.3)
    for b in range(2):
        want = torch.eye(4, dtype=torch.float64)
        for m in maps:
            a = [[0.3 * (i == j) + 0.7 * sum(m[b, h, i, j].item() for h in range(3)) / 3 for j in range(4)] for i in range(4)]
            a = torch.tensor([[x / sum(row) for x in row] for row in a], dtype=torch.float64)
            want = a @ want
        torch.testing.assert_close(got[b], want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got.sum(-1), torch.ones(2, 4, dtype=torch.float64))
    torch.testing.assert_close(V_attention_rollout(maps, residual=1.0), torch.eye(4, dtype=torch.float64).expand(2, 4, 4))
    with pytest.raises(ValueError, match="maps"):
        V_attention_rollout([maps[0], maps[1][:, :, :3, :3]])
    with pytest.raises(TypeError, match="maps"):
        V_attention_rollout([])


def test_sincos_positions_2d_follow_the_formula():
    table = sincos_positions_2d((3, 5), 8)
    assert table.shape == (15, 8)
    for i in range(3):
        for j in range(5):
            for c in range(4):  # columns 0..3 encode the row i, 4..7 the column j, each as sin/cos pairs at width 4
                freq = 10000.0 ** (-(c - c % 2) / 4)
                fn = math.sin if c % 2 == 0 else math.cos
                assert table[i * 5 + j, c].item() == pytest.approx(fn(i * freq), abs=1e-6)
                assert table[i * 5 + j, 4 + c].item() == pytest.approx(fn(j * freq), abs=1e-6)
    emb = PatchEmbedding(8, 2, 8, pos="sincos")
    assert not list(p for n, p in emb.named_parameters() if n == "pos") and emb.pos.shape == (16, 8)
    with pytest.raises(ValueError, match="d_model"):
        PatchEmbedding(8, 2, 7, pos="sincos")
    with pytest.raises(ValueError, match="pos"):
        PatchEmbedding(8, 2, 8, pos="rope")


def test_class_token_pool_reads_the_first_token_of_the_encoder():
    torch.manual_seed(0)
    model = VisionTransformer(8, 2, 16, 2, 2, n_classes=3, pool="cls").double()
    images = torch.rand(5, 8, 8, dtype=torch.float64)
    logits, maps = model(images, return_attention=True)
    assert maps[0].shape == (5, 2, 17, 17)
    z = torch.cat([model.cls.expand(5, 1, 16), model.embed(images)], dim=1)
    for block in model.blocks:
        z = block(z)
    expected = F.layer_norm(z[:, 0], (16,), model.final_norm.weight, model.final_norm.bias, eps=1e-5) @ model.head.weight.T
    torch.testing.assert_close(logits, expected + model.head.bias, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="pool"):
        VisionTransformer(8, 2, 16, 1, 2, n_classes=3, pool="max")


def test_attention_mixer_by_name_is_the_default_vit():
    torch.manual_seed(3)
    default = VisionTransformer(8, 2, 16, 2, 2, n_classes=3)
    torch.manual_seed(3)
    named = VisionTransformer(8, 2, 16, 2, 2, n_classes=3, mixer="attention")
    images = torch.rand(4, 8, 8)
    torch.testing.assert_close(default(images), named(images), rtol=0, atol=0)


@pytest.mark.parametrize("mixer, kwargs, bidirectional", [("fourier", {"causal": False}, True),
                                                         ("dwconv", {"causal": False}, True),
                                                         ("linear_attention", {}, False)])
def test_vit_takes_registered_token_mixers(mixer, kwargs, bidirectional):
    """Any registered mixer: the ViT trains with it, and a bidirectional one lets the first token see the next."""
    import minilib  # noqa: F401  (registers every family's mixers)

    torch.manual_seed(0)
    # a leading class token under a causal mixer sees only itself (chapter 11's iLLaMA section): pool the mean there
    model = VisionTransformer(8, 2, 16, 2, 2, n_classes=3, mixer=mixer, mixer_kwargs=kwargs,
                              pool="cls" if bidirectional else "mean")
    assert all(type(b.attn).__name__ != "MultiHeadAttention" for b in model.blocks)
    images, labels = torch.rand(7, 8, 8), torch.randint(0, 3, (7,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    # bidirectional: the first token's output depends on the second token (a causal mixer's does not)
    z = torch.randn(1, 17, 16, requires_grad=True)
    (grad,) = torch.autograd.grad(model.blocks[0].attn(z)[0, 0].sum(), z)
    assert bool(grad[0, 1].abs().sum() > 0) == bidirectional
    with pytest.raises(ValueError, match="return_attention"):
        model(images, return_attention=True)
