"""Expert parallelism on a real gloo group: each rank's MoE output equals the one-process MoE on its tokens (fp64),
with and without capacity dropping, and the all_to_all traffic is exactly the routed rows that change rank."""
import pytest
import torch

from minilib.moe import MoE
from minilib.parallel import RankLog, expert_parallel_moe, launch, local_experts

D = 8


def _expert_worker(rank, world_size, moe, xs):
    log = RankLog()
    out = expert_parallel_moe(moe, xs[rank], local_experts(moe, rank, world_size), log=log)
    sent = {step: sum(e["bytes"] for e in log.events if e["kind"] == "all_to_all" and e["step"] == step)
            for step in (2, 4)}
    return out, sent


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("capacity_factor", [None, 1.0])
def test_expert_parallel_moe_equals_one_process(world_size, capacity_factor):
    torch.manual_seed(world_size)
    moe = MoE(D, 16, n_experts=6, top_k=2, capacity_factor=capacity_factor).double()  # 6 experts: uneven over 4 ranks
    xs = [torch.randn(2, 5 + r, D, dtype=torch.float64) for r in range(world_size)]  # every rank its own token count
    ranks = launch(_expert_worker, world_size, moe, xs, timeout=60)
    # who sends how many rows to whom, from the one-process routing of each rank's tokens
    rows = torch.zeros(world_size, world_size, dtype=torch.long)
    for r, x in enumerate(xs):
        routing = moe.route(x.reshape(-1, D))
        for e, tokens in enumerate(routing.tokens):
            rows[r, e % world_size] += len(tokens)
    for r, (out, sent) in enumerate(ranks):
        torch.testing.assert_close(out, moe(xs[r]), rtol=0, atol=1e-12)
        to_others = int(rows[r].sum() - rows[r, r])
        from_others = int(rows[:, r].sum() - rows[r, r])
        assert sent == {2: to_others * D * 8, 4: from_others * D * 8}


def test_local_experts_and_bad_input():
    moe = MoE(D, 16, n_experts=5, top_k=1)
    assert sorted(local_experts(moe, 1, 2)) == [1, 3]
    assert sum(len(local_experts(moe, r, 3)) for r in range(3)) == 5
    with pytest.raises(ValueError, match="rank"):
        local_experts(moe, 2, 2)
    with pytest.raises(TypeError, match="moe"):
        local_experts(torch.nn.Linear(2, 2), 0, 1)
    with pytest.raises(RuntimeError, match="process group"):
        expert_parallel_moe(moe, torch.randn(3, D), local_experts(moe, 0, 1))
    with pytest.raises(ValueError, match="router_kind"):
        expert_parallel_moe(MoE(D, 16, 4, 1, router="expert_choice"), torch.randn(3, D), {})
