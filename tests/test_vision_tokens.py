"""minilib.vision.tokens: soft split against slicing, T2T token counts, TNT words, CrossViT fusion against a loop."""
import math

import pytest
import torch
import torch.nn.functional as F

from minilib.attention import MultiHeadAttention
from minilib.vision import ConvTokenizer, CrossFusion, T2TStage, TNTBlock, cross_attention_fusion, patchify, soft_split


def test_soft_split_equals_overlapping_slices():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    got = soft_split(x, 3, stride=2, padding=1)
    padded = F.pad(x, (1, 1, 1, 1))
    want = torch.stack([padded[:, :, i:i + 3, j:j + 3].reshape(2, -1) for i in range(0, 6, 2) for j in range(0, 5, 2)], 1)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("side, stride, tokens", [(8, 2, 16), (8, 1, 64), (16, 2, 64), (7, 2, 16)])
def test_t2t_stage_token_counts(side, stride, tokens):
    stage = T2TStage(4, 6, grid=(side, side), stride=stride)
    out = stage(torch.randn(2, side * side, 4))
    assert out.shape == (2, tokens, 6)
    assert stage.out_grid[0] * stage.out_grid[1] == tokens


def test_conv_tokenizer_equals_conv_relu_pool():
    torch.manual_seed(0)
    tok = ConvTokenizer(5).double()
    x = torch.rand(2, 8, 8, dtype=torch.float64)
    y = F.conv2d(x[:, None], tok.conv.weight, padding=1).clamp(min=0)
    pooled = torch.stack([torch.stack([y[:, :, max(0, 2 * i - 1):2 * i + 2, max(0, 2 * j - 1):2 * j + 2].amax((-1, -2))
                                       for j in range(4)], -1) for i in range(4)], -2)
    torch.testing.assert_close(tok(x), pooled.flatten(2).transpose(1, 2), rtol=0, atol=0)


def test_tnt_words_are_sub_patches_of_each_patch():
    x = torch.randn(2, 1, 8, 8)
    words = TNTBlock.words_of(x, 4, 2)
    assert words.shape == (2 * 4, 4, 4)
    torch.testing.assert_close(words.reshape(2, 4, 4, 4)[:, 1, 2], x[0:2, 0, 2:4, 4:6].reshape(2, 4), rtol=0, atol=0)
    torch.testing.assert_close(words.reshape(2, 4, 16), patchify(x, 4).reshape(2, 4, 2, 2, 2, 2)
                               .permute(0, 1, 2, 4, 3, 5).reshape(2, 4, 16), rtol=0, atol=0)


def test_tnt_block_inner_then_fold_then_outer():
    torch.manual_seed(0)
    block = TNTBlock(8, 4, 4, n_heads_outer=2)
    words, sentences = torch.randn(6, 4, 4), torch.randn(2, 3, 8)
    w2, s2 = block(words, sentences)
    inner = block.inner(words)
    torch.testing.assert_close(w2, inner)
    torch.testing.assert_close(s2, block.outer(sentences + block.fold(inner.reshape(2, 3, 16))))


def test_cross_attention_fusion_equals_one_query_loop():
    torch.manual_seed(0)
    attn = MultiHeadAttention(8, 2).double()
    cls, tokens = torch.randn(2, 1, 8, dtype=torch.float64), torch.randn(2, 5, 8, dtype=torch.float64)
    kv = torch.cat([cls, tokens], 1)
    outs = []
    for b in range(2):
        q, k, v = cls[b] @ attn.wq.weight.T, kv[b] @ attn.wk.weight.T, kv[b] @ attn.wv.weight.T
        heads = [torch.softmax(q[:, h * 4:h * 4 + 4] @ k[:, h * 4:h * 4 + 4].T / 2, -1) @ v[:, h * 4:h * 4 + 4] for h in (0, 1)]
        outs.append(cls[b] + torch.cat(heads, -1) @ attn.wo.weight.T)
    torch.testing.assert_close(cross_attention_fusion(cls, tokens, attn), torch.stack(outs), rtol=1e-12, atol=1e-12)


def test_cross_fusion_changes_only_the_class_tokens():
    fusion = CrossFusion(8, 12, 2)
    a, b = torch.randn(2, 17, 8), torch.randn(2, 5, 12)
    a2, b2 = fusion(a, b)
    torch.testing.assert_close(a2[:, 1:], a[:, 1:], rtol=0, atol=0)
    torch.testing.assert_close(b2[:, 1:], b[:, 1:], rtol=0, atol=0)
    assert not torch.allclose(a2[:, :1], a[:, :1])
