"""minilib.attention.cache: the KV cache and the bytes it holds, against real tensors."""
import pytest
import torch

from minilib.attention import KVCache, kv_cache_bytes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_kv_cache_bytes_counts_the_tensors_a_real_cache_holds(dtype):
    n_layers, n_kv, D, S, B = 3, 2, 8, 11, 2
    caches = [KVCache() for _ in range(n_layers)]
    for cache in caches:
        for _ in range(S):
            cache.append(torch.zeros(B, n_kv, 1, D, dtype=dtype), torch.zeros(B, n_kv, 1, D, dtype=dtype))
    held = sum(c.k.nbytes + c.v.nbytes for c in caches)
    assert kv_cache_bytes(n_layers=n_layers, n_kv_heads=n_kv, head_dim=D, seq_len=S, batch=B, dtype=dtype) == held


def test_kv_cache_bytes_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_kv_heads"):
        kv_cache_bytes(n_layers=1, n_kv_heads=-1, head_dim=4, seq_len=3)
    with pytest.raises(TypeError, match="dtype"):
        kv_cache_bytes(n_layers=1, n_kv_heads=1, head_dim=4, seq_len=3, dtype="fp16")
