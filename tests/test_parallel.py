"""minilib.parallel: ring attention against SDPA (fp64), and what each worker holds."""
import pytest
import torch
from hypothesis import given, strategies as st

from minilib.parallel import ring_attention
from tests.flash_reference import FAST, TOL, reference


@FAST
@given(T=st.integers(2, 40), W=st.integers(1, 5), causal=st.booleans(), gqa=st.booleans())
def test_ring_attention_equals_sdpa(T, W, causal, gqa):
    W = min(W, T)
    g = torch.Generator().manual_seed(T * 10 + W)
    Hkv = 1 if gqa else 2
    q = torch.randn(2, 2, T, 8, dtype=torch.float64, generator=g)
    k = torch.randn(2, Hkv, T, 8, dtype=torch.float64, generator=g)
    v = torch.randn(2, Hkv, T, 5, dtype=torch.float64, generator=g)
    torch.testing.assert_close(ring_attention(q, k, v, W, causal=causal), reference(q, k, v, causal=causal), **TOL)


def test_ring_attention_workers_hold_one_chunk():
    q = k = v = torch.randn(1, 1, 10, 4, dtype=torch.float64)
    _, log = ring_attention(q, k, v, 4, return_log=True)
    assert len(log) == 16
    # chunks of 10 over 4 workers are 3, 3, 2, 2 rows; each worker sees every K/V chunk once
    assert sorted({e["q_rows"] for e in log}) == [2, 3] and max(e["kv_rows"] for e in log) == 3
    for w in range(4):
        seen = sorted(e["kv_rows"] for e in log if e["worker"] == w)
        assert seen == [2, 2, 3, 3]


def test_ring_attention_rejects_bad_workers():
    q = torch.randn(1, 1, 3, 4)
    with pytest.raises(ValueError, match="n_workers"):
        ring_attention(q, q, q, 4)
    with pytest.raises(ValueError, match="n_workers"):
        ring_attention(q, q, q, 0)



def test_old_import_path_warns_and_gives_the_same_function():
    import minilib.flash

    with pytest.warns(DeprecationWarning, match="minilib.parallel"):
        old = minilib.flash.ring_attention
    assert old is ring_attention
