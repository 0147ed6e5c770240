"""Ring attention on a real gloo group equals one-process attention (fp64), forward and gradients, and moves
exactly the key/value blocks its formula says; the zig-zag layout balances causal work."""
import pytest
import torch
import torch.nn.functional as F

from minilib.parallel import RankLog, launch, ring_attention_distributed, sequence_positions, shard, unshard

B, H, HKV, D = 2, 4, 2, 8


def _ring_worker(rank, world_size, q, k, v, dout, cases):
    results = []
    for layout, causal in cases:
        log = RankLog()
        local = [shard(t, rank, world_size, layout=layout).requires_grad_() for t in (q, k, v)]
        out = ring_attention_distributed(*local, q.shape[2], layout=layout, causal=causal, log=log)
        out.backward(shard(dout, rank, world_size, layout=layout))
        results.append((out.detach(), [t.grad for t in local], log.events))
    return results


def _reference(q, k, v, dout, causal):
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    out.backward(dout)
    return out.detach(), [q.grad, k.grad, v.grad]


CASES = [(layout, causal) for layout in ("contiguous", "zigzag") for causal in (False, True)]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_ring_attention_equals_sdpa_forward_and_backward(world_size):
    torch.manual_seed(world_size)
    L = 13  # divisible by no world size tried, nor by 2W for the zig-zag layout
    q = torch.randn(B, H, L, D, dtype=torch.float64)
    k, v = torch.randn(2, B, HKV, L, D, dtype=torch.float64)
    dout = torch.randn(B, H, L, D, dtype=torch.float64)
    ranks = launch(_ring_worker, world_size, q, k, v, dout, CASES, timeout=60)
    for c, (layout, causal) in enumerate(CASES):
        want, want_grads = _reference(q, k, v, dout, causal)
        got = unshard([r[c][0] for r in ranks], layout=layout)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        for i, name in enumerate("qkv"):
            grad = unshard([r[c][1][i] for r in ranks], layout=layout)
            torch.testing.assert_close(grad, want_grads[i], rtol=0, atol=1e-12, msg=f"d{name} {layout} causal={causal}")
        positions = sequence_positions(L, world_size, layout=layout)
        for rank, r in enumerate(ranks):
            events = r[c][2]
            # forward: W-1 sends of one key block and one value block, the blocks of ranks rank, rank-1, ...
            forward_sent = sum(e["bytes"] for e in events if e["kind"] == "send" and e["step"] < world_size)
            rows = sum(len(positions[(rank - s) % world_size]) for s in range(world_size - 1))
            assert forward_sent == 2 * B * HKV * rows * D * 8


def _balance_worker(rank, world_size, q, layout):
    log = RankLog()
    local = shard(q, rank, world_size, layout=layout)
    ring_attention_distributed(local, local, local, q.shape[2], layout=layout, causal=True, log=log)
    return sum(e["scores"] for e in log.events if e["kind"] == "compute")


def test_zigzag_balances_causal_work():
    L, W = 64, 4
    q = torch.randn(1, 1, L, 4, dtype=torch.float64)
    contiguous = launch(_balance_worker, W, q, "contiguous")
    zigzag = launch(_balance_worker, W, q, "zigzag")
    # contiguous: rank w computes w+1 blocks of (L/W)^2 scores; zig-zag: every rank the same
    assert contiguous == [(w + 1) * (L // W) ** 2 for w in range(W)]
    assert len(set(zigzag)) == 1 and max(zigzag) < max(contiguous)
    # zig-zag: 2W+1 of the (2W)^2 chunk pairs of (L/2W)^2 scores each, so the busiest rank does 4W/(2W+1) less
    assert zigzag[0] == (2 * W + 1) * (L // (2 * W)) ** 2
    assert max(contiguous) / max(zigzag) == pytest.approx(4 * W / (2 * W + 1))


def test_bad_shards_and_missing_group_fail_clearly():
    x = torch.randn(1, 2, 6, 4)
    with pytest.raises(RuntimeError, match="process group"):
        ring_attention_distributed(x, x, x, 6)
    with pytest.raises(ValueError, match="layout"):
        sequence_positions(6, 2, layout="striped")
    with pytest.raises(ValueError, match="seq_len"):
        sequence_positions(3, 2, layout="zigzag")
    with pytest.raises(ValueError, match="pieces"):
        unshard([x, x[:, :, :2]])
    with pytest.raises(ValueError, match="rank"):
        shard(x, 2, 2)
