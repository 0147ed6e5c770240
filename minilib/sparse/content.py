r"""Content-based sparsity: each query keeps the keys (or regions of keys) that score highest.

Shapes as :func:`minilib.attention.sdpa`: ``q (B, H, T, D)``, ``k (B, Hkv, S, D)``, ``v (B, Hkv, S, Dv)``.
"""
from __future__ import annotations

import math

import torch

from minilib._checks import check_attention_inputs, check_positive_int, default_scale, require_tensor
from minilib.attention import causal_mask, expand_kv_heads, sdpa

__all__ = ["topk_mask", "topk_attention", "routing_mask", "bilevel_routing_attention", "probsparse_attention", "kmeans",
           "ivf_candidates", "ivf_topk_attention", "knn_attention"]


def topk_mask(scores: torch.Tensor, k_top: int, *, causal: bool = False) -> torch.Tensor:
    r"""True at the ``k_top`` largest entries of each row of ``scores (..., T, S)`` among the visible keys.

    A row with fewer than ``k_top`` visible keys keeps them all; ties are broken by :func:`torch.topk`.
    """
    check_positive_int("k_top", k_top)
    T, S = scores.shape[-2:]
    visible = causal_mask(T, S, device=scores.device) if causal else torch.ones(T, S, dtype=torch.bool, device=scores.device)
    masked = scores.masked_fill(~visible, float("-inf"))
    index = masked.topk(min(k_top, S), dim=-1).indices
    keep = torch.zeros_like(masked, dtype=torch.bool).scatter_(-1, index, True)
    return keep & visible


def topk_attention(q, k, v, *, k_top: int, causal: bool = False, scale: float | None = None) -> torch.Tensor:
    r"""Each query attends only to its ``k_top`` highest-scoring keys.

    $$ o_t = \sum_{s \in \mathcal{K}_t} \frac{e^{a_{ts}}}{\sum_{s' \in \mathcal{K}_t} e^{a_{ts'}}}\, v_s,
       \qquad \mathcal{K}_t = \operatorname{top}_k\{a_{ts}\}, \quad a_{ts} = \text{scale}\; q_t \cdot k_s $$

    The scores are computed densely, so this shows the *quality* of top-k attention, not its speed (that needs
    an index). ``(B,H,T,D), (B,Hkv,S,D), (B,Hkv,S,Dv) -> (B,H,T,Dv)``.
    See :cite:`nawrot2025sparse,liu2024retrievalattention`.
    """
    check_attention_inputs(q, k, v)
    scores = default_scale(q.shape[-1], scale) * q @ expand_kv_heads(k, q.shape[1]).transpose(-2, -1)
    return sdpa(q, k, v, mask=topk_mask(scores, k_top, causal=causal), causal=causal, scale=scale)


def _regions(x: torch.Tensor, region_size: int) -> torch.Tensor:
    """Mean over consecutive groups of ``region_size`` positions: ``(B, H, L, D) -> (B, H, L / region_size, D)``."""
    B, H, L, D = x.shape
    if L % region_size:
        raise ValueError(f"sequence length {L} must be a multiple of region_size ({region_size})")
    return x.view(B, H, L // region_size, region_size, D).mean(dim=3)


def routing_mask(q, k, *, region_size: int, k_top: int, causal: bool = False) -> torch.Tensor:
    r"""BiFormer's region routing as a token mask ``(B, H, T, S)``: query region $i$ reads key region $j$ when $j$
    is among the ``k_top`` regions of highest affinity $A_{ij} = \bar q_i \cdot \bar k_j$ (means over the regions).

    ``causal=True`` routes only among the regions $j \le i$ and keeps $s \le t$ inside them, for a decoder: region
    $i$ always has a region to read, so no query row is empty (its own region holds its key when it is routed there,
    and earlier regions' keys otherwise). See :cite:`zhu2023biformer`.
    """
    check_positive_int("region_size", region_size)
    check_positive_int("k_top", k_top)
    affinity = _regions(q, region_size) @ _regions(expand_kv_heads(k, q.shape[1]), region_size).transpose(-2, -1)
    routed = topk_mask(affinity, k_top, causal=causal)  # (B, H, T / r, S / r)
    mask = routed.repeat_interleave(region_size, dim=-2).repeat_interleave(region_size, dim=-1)
    return mask & causal_mask(*mask.shape[-2:], device=mask.device) if causal else mask


def bilevel_routing_attention(q, k, v, *, region_size: int, k_top: int, scale: float | None = None) -> torch.Tensor:
    r"""Bi-level routing attention: route regions to regions, then attend token to token inside the routed regions.

    $$ A = \bar Q \bar K^\top,\quad I_i = \operatorname{top}_k(A_{i,:}),\quad
       O_{\text{region } i} = \operatorname{softmax}\!\big(\text{scale}\, Q_i K_{I_i}^\top\big) V_{I_i} $$

    with $\bar Q, \bar K$ the region means over ``region_size`` consecutive positions. The gathered keys of the
    $k$ routed regions form a dense ``(region_size, k * region_size)`` block per query region, so the token
    level is plain matrix products. Non-causal (BiFormer is a vision model; flatten a 2-D grid region by region).
    ``T`` and ``S`` multiples of ``region_size``. Equals ``sdpa`` with :func:`routing_mask`.
    See :cite:`zhu2023biformer`.
    """
    check_attention_inputs(q, k, v)
    check_positive_int("region_size", region_size)
    check_positive_int("k_top", k_top)
    B, H, T, D = q.shape
    k, v = expand_kv_heads(k, H), expand_kv_heads(v, H)
    nq, nk = T // region_size, k.shape[2] // region_size
    k_top = min(k_top, nk)
    affinity = _regions(q, region_size) @ _regions(k, region_size).transpose(-2, -1)  # (B, H, nq, nk)
    routed = affinity.topk(k_top, dim=-1).indices  # (B, H, nq, k_top)
    kr = k.view(B, H, nk, region_size, D)
    vr = v.view(B, H, nk, region_size, v.shape[-1])

    def gather(x):  # (B, H, nk, r, E) -> (B, H, nq, k_top * r, E)
        index = routed[..., None, None].expand(-1, -1, -1, -1, region_size, x.shape[-1])
        picked = torch.gather(x[:, :, None].expand(-1, -1, nq, -1, -1, -1), 3, index)
        return picked.flatten(3, 4)

    qr = q.view(B, H, nq, region_size, D)
    weights = torch.softmax(default_scale(D, scale) * qr @ gather(kr).transpose(-2, -1), dim=-1)
    return (weights @ gather(vr)).view(B, H, T, -1)


def probsparse_attention(q, k, v, *, factor: float = 5.0, generator: torch.Generator | None = None,
                         scale: float | None = None) -> tuple[torch.Tensor, int]:
    r"""Informer's ProbSparse self-attention (non-causal): only the $u = \lceil c \ln T \rceil$ queries with the largest
    sparsity measure get full attention, the others output the mean of the values.

    $$ \bar M(q_i) = \max_{j \in \mathcal{U}} s_{ij} - \frac{1}{|\mathcal{U}|} \sum_{j \in \mathcal{U}} s_{ij}, \qquad
       s_{ij} = \text{scale}\; q_i \cdot k_j $$

    with $\mathcal{U}$ a random sample of $\lceil c \ln S \rceil$ keys (shared by all queries). Returns
    ``(out (B,H,T,Dv), n_scores)``: the scores evaluated, $T |\mathcal{U}| + u S$ per head, which grows as
    $T \ln T$. See :cite:`zhou2021informer`.
    """
    check_attention_inputs(q, k, v)
    B, H, T, D = q.shape
    S = k.shape[2]
    k, v = expand_kv_heads(k, H), expand_kv_heads(v, H)
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor!r}")
    scale = default_scale(D, scale)
    n_sample = min(S, math.ceil(factor * math.log(max(S, 2))))
    u = min(T, math.ceil(factor * math.log(max(T, 2))))
    sample = torch.randperm(S, generator=generator)[:n_sample]
    sampled = scale * q @ k[:, :, sample].transpose(-2, -1)  # (B, H, T, n_sample)
    measure = sampled.amax(-1) - sampled.mean(-1)
    active = measure.topk(u, dim=-1).indices  # (B, H, u)
    out = v.mean(dim=2, keepdim=True).expand(B, H, T, v.shape[-1]).clone()
    q_active = torch.gather(q, 2, active[..., None].expand(-1, -1, -1, D))
    weights = torch.softmax(scale * q_active @ k.transpose(-2, -1), dim=-1)
    out.scatter_(2, active[..., None].expand(-1, -1, -1, v.shape[-1]), weights @ v)
    return out, T * n_sample + u * S


def kmeans(x: torch.Tensor, n_clusters: int, *, iters: int = 10, generator: torch.Generator | None = None):
    r"""Lloyd's k-means on ``x (N, D)`` (inner-product search follows the centroids): returns ``(centroids (C, D),
    assignment (N,))``, initialised with ``n_clusters`` distinct points. An empty cluster keeps its centroid."""
    check_positive_int("n_clusters", n_clusters)
    if n_clusters > x.shape[0]:
        raise ValueError(f"n_clusters ({n_clusters}) must be <= the number of points ({x.shape[0]})")
    centroids = x[torch.randperm(x.shape[0], generator=generator)[:n_clusters]].clone()
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=n_clusters)[:, None]
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    return centroids, torch.cdist(x, centroids).argmin(dim=1)


def ivf_candidates(q, k, *, n_clusters: int, n_probe: int, index_from: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    r"""The keys an inverted-file (IVF) index hands each query: ``(T, S)`` bool.

    The keys ``k (S, D)`` of one head are assigned to the centroid they score highest with, among ``n_clusters``
    centroids learnt by :func:`kmeans` from ``index_from`` (default: the keys themselves; RetrievalAttention's
    query-aware index learns them from sample *queries*, whose distribution differs from the keys'). Query $q_t$
    probes the ``n_probe`` centroids it scores highest with and is handed their keys. An ``n_probe`` at or above
    ``n_clusters`` hands every key. See :cite:`liu2024retrievalattention`.
    """
    for name, x in (("q", q), ("k", k)):
        require_tensor(name, x, ndim=2, floating=True)  # one head
    if k.shape[1] != q.shape[1]:
        raise ValueError(f"q (T, D) and k (S, D) must agree in D, got q {tuple(q.shape)}, k {tuple(k.shape)}")
    check_positive_int("n_probe", n_probe)
    centroids, _ = kmeans(k if index_from is None else index_from, n_clusters, generator=generator)
    assign = (k @ centroids.T).argmax(dim=1)
    probed = (q @ centroids.T).topk(min(n_probe, n_clusters), dim=1).indices  # (T, n_probe)
    return (assign[None, :, None] == probed[:, None, :]).any(-1)


def ivf_topk_attention(q, k, v, *, k_top: int, n_clusters: int, n_probe: int, index_from: torch.Tensor | None = None,
                       generator: torch.Generator | None = None, scale: float | None = None):
    r"""Attention over each query's ``k_top`` best keys among those :func:`ivf_candidates` hands it.

    $$ o_t = \sum_{s \in \mathcal K_t} \operatorname{softmax}_{s \in \mathcal K_t}(\text{scale}\; q_t \cdot k_s)\, v_s,
       \qquad \mathcal K_t = \operatorname{top}_k\{q_t \cdot k_s : s \in \text{IVF}(q_t)\} $$

    Scores are formed densely and masked, to measure quality; :func:`knn_attention` is the form that saves time.
    ``q (T, D)``, ``k (S, D)``, ``v (S, Dv)`` -> ``(out (T, Dv), scanned (T,))`` with ``scanned`` the fraction of
    keys each query scored. An ``n_probe`` above ``n_clusters`` probes every cluster (exact top-k). IceFormer and
    RetrievalAttention use other search structures; k-means IVF stands in here.
    See :cite:`mao2024iceformer,liu2024retrievalattention`.
    """
    require_tensor("v", v, ndim=2, floating=True)
    if v.shape[0] != k.shape[0]:
        raise ValueError(f"k (S, D) and v (S, Dv) must agree in S, got k {tuple(k.shape)}, v {tuple(v.shape)}")
    check_positive_int("k_top", k_top)
    candidate = ivf_candidates(q, k, n_clusters=n_clusters, n_probe=n_probe, index_from=index_from, generator=generator)
    scores = (default_scale(k.shape[1], scale) * q @ k.T).masked_fill(~candidate, float("-inf"))
    top = scores.topk(min(k_top, k.shape[0]), dim=1)
    weights = torch.softmax(top.values, dim=1).nan_to_num(0.0)
    return (weights[..., None] * v[top.indices]).sum(1), candidate.float().mean(1)


def knn_attention(q, k, v, *, k_top: int, n_clusters: int, n_probe: int, generator: torch.Generator | None = None,
                  scale: float | None = None):
    r"""Training-free top-k attention through a k-means IVF index, scoring only the keys the index hands out (the
    IceFormer recipe, with IVF standing in for its k-nearest-neighbour search).

    Same result as :func:`ivf_topk_attention` with the keys as index (same ``generator``), computed cluster by
    cluster: the queries probing cluster $c$ are scored against its keys only, into a padded ``(T, n_probe, m)``
    buffer ($m$ the largest cluster) from which each query keeps its ``k_top`` best. Work is about
    $T S\, n_\text{probe} / n_\text{clusters}$ scores plus the index, against $T S$ for full attention.

    ``q (T, D)``, ``k (S, D)``, ``v (S, Dv)`` (one head, non-causal) -> ``(out (T, Dv), scanned)`` with ``scanned``
    the mean fraction of keys a query scored. See :cite:`mao2024iceformer`.
    """
    require_tensor("v", v, ndim=2, floating=True)
    if v.shape[0] != k.shape[0]:
        raise ValueError(f"k (S, D) and v (S, Dv) must agree in S, got k {tuple(k.shape)}, v {tuple(v.shape)}")
    for name, x in (("q", q), ("k", k)):
        require_tensor(name, x, ndim=2, floating=True)
    if k.shape[1] != q.shape[1]:
        raise ValueError(f"q (T, D) and k (S, D) must agree in D, got q {tuple(q.shape)}, k {tuple(k.shape)}")
    check_positive_int("k_top", k_top)
    check_positive_int("n_probe", n_probe)
    centroids, _ = kmeans(k, n_clusters, generator=generator)
    home = (k @ centroids.T).argmax(dim=1)
    probed = (q @ centroids.T).topk(min(n_probe, n_clusters), dim=1).indices  # (T, p)
    members = [(home == c).nonzero()[:, 0] for c in range(n_clusters)]
    width = max(len(m) for m in members)
    scores = q.new_full((q.shape[0], probed.shape[1], width), float("-inf"))
    index = torch.zeros(scores.shape, dtype=torch.long, device=q.device)
    scale = default_scale(k.shape[1], scale)
    for c, keys in enumerate(members):
        rows, slot = (probed == c).nonzero(as_tuple=True)
        if len(rows) and len(keys):
            scores[rows, slot, :len(keys)] = scale * q[rows] @ k[keys].T
            index[rows, slot, :len(keys)] = keys
    top = scores.flatten(1).topk(min(k_top, scores[0].numel()), dim=1)
    weights = torch.softmax(top.values, dim=1).nan_to_num(0.0)
    picked = torch.gather(index.flatten(1), 1, top.indices)
    scanned = sum(len(members[c]) for c in probed.flatten().tolist()) / (q.shape[0] * k.shape[0])
    return (weights[..., None] * v[picked]).sum(1), scanned
