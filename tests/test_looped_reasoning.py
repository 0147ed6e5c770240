"""The superposition construction decides reachability like breadth-first search (a queue, written here) on random graphs."""
from collections import deque

import numpy as np
import pytest

from minilib.looped import random_digraph, reachable_within, superposition_reachability


def bfs_hops(edges, n, source):
    """Hop distance from source by breadth-first search (inf when unreachable)."""
    dist = np.full(n, np.inf)
    dist[source] = 0
    queue = deque([source])
    while queue:
        u = queue.popleft()
        for a, b in edges:
            if a == u and dist[b] == np.inf:
                dist[b] = dist[u] + 1
                queue.append(b)
    return dist


@pytest.mark.parametrize("seed", range(12))
def test_each_thought_is_the_bfs_ball(seed):
    n = 32
    edges = random_digraph(n, 40 + 4 * seed, seed=seed)
    source = seed % n
    dist = bfs_hops(edges, n, source)
    weights = superposition_reachability(edges, n, source, 10, seed=seed)
    for c in range(11):
        ball = dist <= c
        assert np.array_equal(weights[c] > 0.5 / np.sqrt(n), ball)
        np.testing.assert_allclose(weights[c][ball], 1 / np.sqrt(ball.sum()), atol=1e-9)
        np.testing.assert_allclose(weights[c][~ball], 0, atol=1e-9)
        assert np.array_equal(reachable_within(edges, n, source, 10)[c], ball)


def test_random_digraph_edges_are_distinct_and_loop_free():
    edges = random_digraph(10, 30, seed=3)
    assert len({tuple(e) for e in edges}) == 30 and (edges[:, 0] != edges[:, 1]).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="edges"):
        superposition_reachability(np.array([[0, 5]]), 4, 0, 2)
    with pytest.raises(ValueError, match="source"):
        reachable_within(np.array([[0, 1]]), 4, 7, 2)
    with pytest.raises(ValueError, match="n_edges"):
        random_digraph(3, 7)
    with pytest.raises(ValueError, match="d_embed"):
        superposition_reachability(np.array([[0, 1]]), 4, 0, 1, d_embed=3)
