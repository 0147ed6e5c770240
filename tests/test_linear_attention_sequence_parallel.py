"""LASP-2 simulated: workers exchanging only their states give the recurrent form's output; traffic counted."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.linear_attention import lasp2_simulated, linear_attention_recurrent


@settings(max_examples=25, deadline=None)
@given(L=st.integers(1, 30), W=st.integers(1, 6), decay_kind=st.sampled_from(["none", "constant", "gates"]),
       chunk=st.integers(1, 8), seed=st.integers(0, 1000))
def test_equals_the_recurrent_form(L, W, decay_kind, chunk, seed):
    W = min(W, L)
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 2, L, 3, generator=g, dtype=torch.float64) for _ in range(3))
    decay = {"none": None, "constant": torch.tensor([0.9, 0.6], dtype=torch.float64),
             "gates": 0.2 + 0.8 * torch.rand(2, 2, L, generator=g, dtype=torch.float64)}[decay_kind]
    want = linear_attention_recurrent(q, k, v, decay=decay)
    torch.testing.assert_close(lasp2_simulated(q, k, v, W, decay=decay, chunk_size=chunk), want, rtol=0, atol=1e-10)


def test_communication_is_counted():
    q = k = v = torch.zeros(1, 1, 1000, 8)
    _, comm = lasp2_simulated(q, k, v, 4, return_comm=True)
    assert comm == {"allgather": 4 * 3 * 8 * 8, "ring_kv": 3 * 1000 * 16}


def test_bad_worker_counts_raise():
    q = torch.zeros(1, 1, 5, 2)
    with pytest.raises(ValueError, match="n_workers"):
        lasp2_simulated(q, q, q, 6)
    with pytest.raises(ValueError, match="n_workers"):
        lasp2_simulated(q, q, q, 0)
