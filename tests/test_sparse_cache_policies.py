"""minilib.sparse.cache_policies: exact with a large budget, never over budget, the eviction order of each policy
on a hand-computed case, the quantised cache on its grid within half a step, retrieval equal to top-k attention."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.sparse import (POLICIES, HeavyHitterCache, MergeCache, QuantizedCache, RetrievalCache, SinkCache,
                            TOVACache, WindowCache, cached_attention, make_policy, sink_window_mask, swa_cache_policy,
                            topk_attention)
from tests.flash_reference import qkv, reference

FAST = settings(max_examples=20, deadline=None)
BUDGETED = ["window", "sinks", "heavy_hitter", "tova", "merge", "retrieval"]


def decode(q, k, v, cache, step=1, **kwargs):
    """Feed the sequence to cached_attention ``step`` positions at a time; returns the outputs and the sizes held."""
    outs, sizes = [], []
    for a in range(0, q.shape[2], step):
        outs.append(cached_attention(q[:, :, a:a + step], k[:, :, a:a + step], v[:, :, a:a + step], cache, **kwargs))
        sizes.append(cache.size)
    return torch.cat(outs, dim=2), sizes


@pytest.mark.parametrize("name", ["full", *BUDGETED])
def test_a_budget_of_the_whole_sequence_is_full_attention(name):
    q, k, v = (x.detach() for x in qkv(2, 4, 2, 13, 13, 8, 5, seed=1))
    out, _ = decode(q, k, v, make_policy(name, None if name == "full" else 13))
    torch.testing.assert_close(out, reference(q, k, v, causal=True), rtol=0, atol=1e-12)


@FAST
@given(name=st.sampled_from(BUDGETED), T=st.integers(1, 24), budget=st.integers(1, 12), step=st.integers(1, 3),
       seed=st.integers(0, 3))
def test_policies_never_hold_more_than_the_budget(name, T, budget, step, seed):
    q, k, v = (x.detach() for x in qkv(1, 2, 1, T, T, 4, 4, seed=seed))
    cache = make_policy(name, budget, **({"n_sinks": min(2, budget)} if name == "sinks" else {}))
    out, sizes = decode(q, k, v, cache, step=step)
    assert torch.isfinite(out).all() and cache.length == T
    held = sizes if name != "retrieval" else [min(s, budget) for s in sizes]
    assert max(held) <= budget
    if name != "retrieval":
        assert sizes[-1] == min(T, budget)


def run_weights(policy, rows, keys=None):
    """Append one position per row and hand the policy that row as the attention of the new query."""
    for t, row in enumerate(rows):
        key = torch.zeros(1, 1, 1, 2, dtype=torch.float64) if keys is None else keys[t].view(1, 1, 1, 2)
        policy.append(key, key)
        policy.observe(torch.tensor(row, dtype=torch.float64).view(1, 1, 1, -1))
    return policy.keys_values()[2].flatten().tolist()


ROWS = [[1.0], [0.3, 0.7], [0.5, 0.1, 0.4], [0.1, 0.5, 0.4]]


def test_eviction_orders_on_a_hand_computed_case():
    # After step 2 the held positions are [0, 1, 2] and the last row is over [kept..., 3].
    # window keeps the newest; sinks keep position 0 and the newest; H2O: accumulated scores after step 2 are
    # [1.8, 0.8, 0.4] -> keep the recent 2 and the heaviest 0; step 3 adds [0.1, ., 0.5] to the kept [0, 2]
    # -> [1.9, 0.9] plus the recent 3 -> [0, 3]; TOVA drops the least attended by the newest query:
    # step 2 drops 1 ([0.5, 0.1, 0.4]), step 3 drops 0 ([0.1, 0.5, 0.4] over [0, 2, 3]).
    assert run_weights(WindowCache(2), ROWS) == [2, 3]
    assert run_weights(SinkCache(2, n_sinks=1), ROWS) == [0, 3]
    assert run_weights(HeavyHitterCache(2, n_recent=1), ROWS) == [0, 3]
    assert run_weights(TOVACache(2), ROWS) == [2, 3]
    h2o = HeavyHitterCache(2, n_recent=1)
    run_weights(h2o, ROWS[:3])
    torch.testing.assert_close(h2o._score.flatten(), torch.tensor([1.8, 0.4], dtype=torch.float64))


def loop_delayed_tova(rows, budget, delay):
    """Delayed TOVA in Python: over budget, the live slots of least weight from the newest query are marked at step
    t (positions seen) and leave at step t + delay; marked slots are read but no longer compete."""
    held = []  # [position, step it leaves or None]
    for t, row in enumerate(rows):
        held.append([t, None])
        weight = dict(zip([p for p, _ in held], row))
        live = [h for h in held if h[1] is None]
        for h in sorted(live, key=lambda h: (weight[h[0]], h[0]))[:max(0, len(live) - budget)]:
            h[1] = t + 1 + delay
        held = [h for h in held if h[1] is None or h[1] > t + 1]
    return [p for p, _ in held]


@FAST
@given(T=st.integers(1, 20), budget=st.integers(1, 6), delay=st.integers(0, 5), seed=st.integers(0, 50))
def test_delayed_eviction_matches_a_python_loop_and_holds_at_most_budget_plus_delay(T, budget, delay, seed):
    g = torch.Generator().manual_seed(seed)
    cache, rows = TOVACache(budget, delay=delay), []
    for t in range(T):
        key = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
        cache.append(key, key)
        row = torch.rand(cache.size, generator=g, dtype=torch.float64)  # distinct weights: no ties
        rows.append(row.tolist())
        cache.observe(row.view(1, 1, 1, -1))
        assert cache.size <= budget + delay
        assert cache.keys_values()[2].flatten().tolist() == loop_delayed_tova(rows, budget, delay)


def test_delay_zero_is_immediate_eviction_and_a_delayed_cache_reads_more():
    q, k, v = (x.detach() for x in qkv(1, 2, 1, 24, 24, 4, 4, seed=3))
    for name in ("tova", "heavy_hitter"):
        now, _ = decode(q, k, v, make_policy(name, 6))
        torch.testing.assert_close(decode(q, k, v, make_policy(name, 6, delay=0))[0], now, rtol=0, atol=0)
        later, sizes = decode(q, k, v, make_policy(name, 6, delay=3))
        assert max(sizes) == 6 + 3 and not torch.allclose(later, now)
    assert swa_cache_policy(8, delay=2).delay == 2


def test_merge_averages_the_most_similar_adjacent_keys():
    keys = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]], dtype=torch.float64)
    cache = MergeCache(2)
    positions = run_weights(cache, ROWS[:3], keys)
    k, v, _ = cache.keys_values()
    assert positions == [1, 2]  # 0 and 1 merged into one slot at the newer position
    torch.testing.assert_close(k.view(2, 2), torch.tensor([[1.0, 0.05], [0.0, 1.0]], dtype=torch.float64))
    assert cache._count.flatten().tolist() == [2.0, 1.0]


def test_swa_cache_policy_is_a_heavy_hitter_cache_with_a_recent_share():
    policy = swa_cache_policy(10, recent_fraction=0.3)
    assert isinstance(policy, HeavyHitterCache) and policy.n_recent == 3


def test_retrieval_decoding_equals_causal_topk_attention():
    q, k, v = (x.detach() for x in qkv(1, 2, 2, 17, 17, 6, 4, seed=3))
    out, _ = decode(q, k, v, RetrievalCache(5))
    torch.testing.assert_close(out, topk_attention(q, k, v, k_top=5, causal=True), rtol=0, atol=1e-12)


@FAST
@given(T=st.integers(1, 20), window=st.integers(1, 6), n_sinks=st.integers(0, 2), step=st.integers(1, 5))
def test_windowed_decoding_in_chunks_equals_the_masked_forward(T, window, n_sinks, step):
    q, k, v = (x.detach() for x in qkv(1, 2, 2, T, T, 4, 4, seed=T))
    cache = SinkCache(n_sinks + window - 1, n_sinks=n_sinks) if window > 1 or n_sinks else make_policy("full")
    out, _ = decode(q, k, v, cache, step=step, window=window, n_sinks=n_sinks)
    ref = reference(q, k, v, mask=sink_window_mask(T, window, n_sinks=n_sinks))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_quantized_cache_holds_every_position_within_the_bound():
    q, k, v = (x.detach() for x in qkv(1, 2, 2, 37, 37, 8, 8, seed=4))
    cache = QuantizedCache(bits=4, group=8)
    out, sizes = decode(q, k, v, cache, step=3)
    kq, vq, pos = cache.keys_values()
    assert pos.shape[-1] == 37 and sizes[-1] == 37
    key_step = k[:, :, :32].unflatten(2, (4, 8)).abs().amax(dim=3, keepdim=True) / 7
    assert ((kq[:, :, :32] - k[:, :, :32]).unflatten(2, (4, 8)).abs() <= key_step / 2 + 1e-12).all()
    codes = kq[:, :, :32].unflatten(2, (4, 8)) / key_step  # int4 codes: integers in [-7, 7]
    assert (codes - codes.round()).abs().max() < 1e-9 and codes.abs().max() <= 7 + 1e-9
    torch.testing.assert_close(kq[:, :, 32:], k[:, :, 32:], rtol=0, atol=0)  # the unfinished group stays in float
    assert (vq - v).abs().max() <= v.abs().amax(-1, keepdim=True).max() / 14 + 1e-12
    assert (out - reference(q, k, v, causal=True)).abs().max() < 0.2
    # 64 int4 codes each for key and value (64 bytes), 64/8 fp16 key scales and one value scale per token
    assert cache.bytes_per_token(64) == 64 + 2 * (8 + 1)


def test_bad_budgets_and_names_raise():
    for name in BUDGETED:
        with pytest.raises(ValueError, match="budget"):
            make_policy(name, 0)
    with pytest.raises(ValueError, match="name"):
        make_policy("lru", 4)
    with pytest.raises(ValueError, match="n_sinks"):
        SinkCache(4, n_sinks=5)
    with pytest.raises(ValueError, match="n_recent"):
        HeavyHitterCache(4, n_recent=5)
    with pytest.raises(ValueError, match="bits"):
        QuantizedCache(bits=1)
    with pytest.raises(ValueError, match="recent_fraction"):
        swa_cache_policy(4, recent_fraction=2.0)
    assert set(POLICIES) == {"full", "quantized", *BUDGETED}
