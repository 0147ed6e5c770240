"""LASP-2 on a real gloo group equals the one-process recurrence (fp64) for every decay kind, and gathers W·D·Dv
elements per (batch, head) whatever the sequence length."""
import pytest
import torch

from minilib.linear_attention import linear_attention_recurrent
from minilib.parallel import RankLog, lasp2_distributed, launch, shard

B, H, D, DV = 2, 3, 4, 5


def _lasp_worker(rank, world_size, q, k, v, decays, chunk_size):
    out = []
    for decay in decays:
        local_decay = decay if decay is None or decay.ndim == 1 else shard(decay, rank, world_size, dim=2)
        log = RankLog()
        y = lasp2_distributed(*(shard(t, rank, world_size) for t in (q, k, v)), q.shape[2], decay=local_decay,
                              chunk_size=chunk_size, log=log)
        out.append((y, log.bytes("all_gather")))
    return out


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_lasp2_equals_the_recurrence_for_every_decay_kind(world_size):
    torch.manual_seed(world_size)
    L = 13
    q, k = torch.randn(2, B, H, L, D, dtype=torch.float64)
    v = torch.randn(B, H, L, DV, dtype=torch.float64)
    decays = [None, torch.tensor([0.9, 0.7, 0.99], dtype=torch.float64),
              torch.rand(B, H, L, dtype=torch.float64) * 0.5 + 0.5]
    ranks = launch(_lasp_worker, world_size, q, k, v, decays, 3, timeout=60)
    for d, decay in enumerate(decays):
        got = torch.cat([r[d][0] for r in ranks], dim=2)
        torch.testing.assert_close(got, linear_attention_recurrent(q, k, v, decay=decay), rtol=0, atol=1e-12)
        decay_elements = 0 if decay is None else world_size * B * H
        for r in ranks:
            assert r[d][1] == 8 * (world_size * B * H * D * DV + decay_elements)


def test_lasp2_traffic_does_not_grow_with_length():
    def gathered(L):
        q = torch.randn(1, 1, L, D, dtype=torch.float64)
        v = torch.randn(1, 1, L, DV, dtype=torch.float64)
        return launch(_lasp_worker, 2, q, q, v, [None], 16)[0][0][1]
    assert gathered(8) == gathered(256) == 8 * 2 * D * DV


def test_lasp2_needs_a_group_and_this_ranks_part():
    x = torch.randn(1, 1, 6, 4)
    with pytest.raises(RuntimeError, match="process group"):
        lasp2_distributed(x, x, x, 6)
