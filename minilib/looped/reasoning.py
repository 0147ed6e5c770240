r"""Continuous thoughts as superpositions: the NumPy construction that decides graph reachability breadth-first.

Chain of continuous thought feeds a model's last hidden state back as its next input instead of sampling a token.
Zhu et al. show that a 2-layer Transformer can then keep *all* nodes reachable so far in one thought, as a
normalised superposition of their embeddings, and widen it by one hop per thought. This module builds that
mechanism explicitly (one attention step over the edge tokens, one thresholding MLP step) in NumPy.
"""
from __future__ import annotations

import numpy as np

from minilib._checks import check_nonnegative_int, check_positive_int

__all__ = ["random_digraph", "reachable_within", "superposition_reachability"]


def random_digraph(n_nodes: int, n_edges: int, *, seed: int = 0) -> np.ndarray:
    """``n_edges`` distinct directed edges ``(E, 2)`` (source, destination) without self-loops, drawn uniformly."""
    check_positive_int("n_nodes", n_nodes)
    check_nonnegative_int("n_edges", n_edges)
    if n_edges > n_nodes * (n_nodes - 1):
        raise ValueError(f"n_edges={n_edges} exceeds the {n_nodes * (n_nodes - 1)} possible edges of {n_nodes} nodes")
    rng = np.random.default_rng(seed)
    pairs = np.array([(s, d) for s in range(n_nodes) for d in range(n_nodes) if s != d]).reshape(-1, 2)
    return pairs[np.sort(rng.choice(len(pairs), n_edges, replace=False))]


def _check_graph(edges, n_nodes: int, source: int) -> np.ndarray:
    check_positive_int("n_nodes", n_nodes)
    edges = np.asarray(edges)
    if edges.ndim != 2 or edges.shape[1] != 2 or not np.issubdtype(edges.dtype, np.integer):
        raise ValueError(f"edges must be an integer array (E, 2) of (source, destination) pairs, got shape {edges.shape}")
    if edges.size and (edges.min() < 0 or edges.max() >= n_nodes):
        raise ValueError(f"edges must name nodes in [0, n_nodes={n_nodes}), got values in [{edges.min()}, {edges.max()}]")
    check_nonnegative_int("source", source)
    if source >= n_nodes:
        raise ValueError(f"source must be a node in [0, n_nodes={n_nodes}), got {source}")
    return edges


def reachable_within(edges, n_nodes: int, source: int, n_steps: int) -> np.ndarray:
    r"""Boolean ``(n_steps + 1, n_nodes)``: row $c$ marks the nodes reachable from ``source`` in at most $c$ hops.

    $$ R_0 = \{s\},\qquad R_{c} = R_{c-1} \cup \{v : (u, v) \in E,\ u \in R_{c-1}\} $$ (boolean matrix products).
    """
    edges = _check_graph(edges, n_nodes, source)
    check_nonnegative_int("n_steps", n_steps)
    adjacency = np.zeros((n_nodes, n_nodes), dtype=bool)
    adjacency[edges[:, 0], edges[:, 1]] = True
    rows = [np.eye(n_nodes, dtype=bool)[source]]
    for _ in range(n_steps):
        rows.append(rows[-1] | (rows[-1].astype(int) @ adjacency.astype(int) > 0))
    return np.stack(rows)


def superposition_reachability(edges, n_nodes: int, source: int, n_steps: int, *, d_embed: int | None = None,
                               seed: int = 0) -> np.ndarray:
    r"""Run ``n_steps`` continuous thoughts of the superposition construction; returns each thought's node weights.

    Node $v$ has an embedding $u_v$ (orthonormal rows of a random ``(n_nodes, d_embed)`` matrix); edge $(a, b)$ is a
    token with key $u_a$ and value $u_b$; a sink token (key score $\beta\theta$, value 0) absorbs attention when no
    edge leaves the set. Thought $t_0 = u_s$, and

    $$ w = \operatorname{softmax}_e\big(\beta\, u_{a_e}^\top t_c\big),\quad
       a = \textstyle\sum_e w_e u_{b_e},\quad S_{c+1} = \{v : u_v^\top t_c > \theta\} \cup \{v : u_v^\top a > \tau\},\quad
       t_{c+1} = \frac{1}{\sqrt{|S_{c+1}|}} \sum_{v \in S_{c+1}} u_v $$

    (attention, then a thresholding MLP), so $t_c$ is the normalised superposition of the nodes within $c$ hops.
    Returns ``(n_steps + 1, n_nodes)`` floats $U t_c$: node $v$'s weight in thought $c$ ($1/\sqrt{|S_c|}$ on the
    set, 0 elsewhere up to rounding); the target is reachable when its weight after $D$ = diameter steps exceeds
    $\theta = \tfrac{1}{2\sqrt{n}}$. See :cite:`zhu2025superposition`.
    """
    edges = _check_graph(edges, n_nodes, source)
    check_nonnegative_int("n_steps", n_steps)
    d_embed = n_nodes if d_embed is None else check_positive_int("d_embed", d_embed)
    if d_embed < n_nodes:
        raise ValueError(f"d_embed={d_embed} must be at least n_nodes={n_nodes} for orthonormal node embeddings")
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.standard_normal((d_embed, n_nodes)))[0].T  # (n_nodes, d_embed), orthonormal rows
    theta = 0.5 / np.sqrt(n_nodes)  # below every member weight 1/sqrt(|S|), above the non-members' 0
    n_keys = len(edges) + 1
    tau = 0.5 / n_keys              # every successor of the set gets attention of at least about 1 / n_keys
    beta = np.log(1e6 * n_keys) / theta  # the sink outweighs each edge leaving a non-member by a factor 1e6 * n_keys
    keys = np.vstack([U[edges[:, 0]], np.zeros((1, d_embed))]) if len(edges) else np.zeros((1, d_embed))
    values = np.vstack([U[edges[:, 1]], np.zeros((1, d_embed))]) if len(edges) else np.zeros((1, d_embed))
    thought, weights = U[source], [U @ U[source]]
    for _ in range(n_steps):
        scores = beta * (keys @ thought)
        scores[-1] = beta * theta
        w = np.exp(scores - scores.max())
        attended = (w / w.sum()) @ values
        members = (U @ thought > theta) | (U @ attended > tau)
        thought = U[members].sum(0) / np.sqrt(members.sum())
        weights.append(U @ thought)
    return np.stack(weights)
