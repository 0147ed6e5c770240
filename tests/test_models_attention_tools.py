"""attention_maps: the weights it returns, times each layer's values, give back what the layer computed."""
import pytest
import torch

from minilib.attention import merge_heads, split_heads
from minilib.models import TransformerLM, attention_maps


def small_lm(**kw):
    torch.manual_seed(0)
    return TransformerLM(11, 16, 2, 4, max_len=64, **kw).double()

@pytest.mark.parametrize("cfg", [dict(pos="rope", n_kv_heads=2), dict(pos="alibi"), dict(pos="learned", pre_norm=False, norm="layer")],
                         ids=["rope-gqa", "alibi", "postnorm"])
def test_attention_maps_reproduce_the_layer_outputs(cfg):
    """Weights from attention_maps, times the layer's values, give back what the layer computed."""
    model = small_lm(**cfg)
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(3))
    maps = attention_maps(model, idx)
    assert maps.shape == (2, 2, 4, 8, 8)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 4, 8, dtype=torch.float64))
    assert torch.all(maps.triu(diagonal=1) == 0)
    seen = []
    model.blocks[1].mixer.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
    model(idx)
    x, out = seen[0]
    attn = model.blocks[1].mixer
    v = split_heads(attn.wv(x), attn.n_kv_heads).repeat_interleave(attn.n_heads // attn.n_kv_heads, dim=1)
    heads = maps[1] @ v
    torch.testing.assert_close(attn.wo(merge_heads(heads)), out, rtol=0, atol=1e-10)

def test_attention_maps_of_a_layer_sharing_kv_use_the_keys_below():
    """With share_kv_layers={1}, layer 1's map times layer 0's values gives back layer 1's output."""
    model = small_lm(pos="rope").eval()
    model.share_kv_layers = {1}
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(4))
    maps = attention_maps(model, idx)
    seen = []
    for block in model.blocks:
        block.mixer.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
    model(idx)
    (x0, _), (_, out1) = seen
    below, attn = model.blocks[0].mixer, model.blocks[1].mixer
    v0 = split_heads(below.wv(x0), below.n_kv_heads)
    torch.testing.assert_close(attn.wo(merge_heads(maps[1] @ v0)), out1, rtol=0, atol=1e-10)
    model.share_kv_layers = set()
    assert not torch.allclose(attention_maps(model, idx)[1], maps[1])
