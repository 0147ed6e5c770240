r"""Fewer tokens: merging (ToMe, PiToMe), adaptive sampling, lossless LZ77 meta-tokens, entropy patching.

Merging and sampling act on a batch of token states ``x (B, N, C)`` between two encoder blocks and return fewer
tokens plus their *sizes* (how many original tokens each one stands for), so a size-weighted mean pool and
proportional attention ($\text{logits} + \log \text{size}$) still see the original token mass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minilib._checks import check_nonnegative_int, check_number, check_positive_int, require_tensor

__all__ = ["merge_tokens", "tome", "pitome", "LTMP", "adaptive_token_sampler", "lz_tokens_encode", "lz_tokens_decode",
           "lz_vocab_size", "bigram_entropies", "entropy_patches"]


def _check_states(x: torch.Tensor, size: torch.Tensor | None) -> torch.Tensor:
    require_tensor("x", x, ndim=3, floating=True)
    if size is None:
        return torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
    require_tensor("size", size, ndim=2, floating=True)
    if size.shape != x.shape[:2]:
        raise ValueError(f"size must have shape (B, N) = {tuple(x.shape[:2])}, got {tuple(size.shape)}")
    return size


def merge_tokens(x: torch.Tensor, size: torch.Tensor, src: torch.Tensor, dst: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Merge token ``src[b, i]`` into token ``dst[b, i]`` by size-weighted average, and drop the sources.

    $$ x_d \leftarrow \frac{s_d x_d + \sum_{i \to d} s_i x_i}{s_d + \sum_{i \to d} s_i}, \qquad s_d \leftarrow s_d + \sum_{i\to d} s_i $$

    ``x (B, N, C)``, ``size (B, N)``, ``src, dst (B, r)`` long indices (sources distinct and never destinations)
    -> ``x (B, N - r, C)``, ``size (B, N - r)``; the kept tokens stay in their original order.
    See :cite:`bolya2023tome`.
    """
    size = _check_states(x, size)
    B, N, C = x.shape
    for name, idx in (("src", src), ("dst", dst)):
        require_tensor(name, idx, ndim=2)
        if idx.is_floating_point() or idx.shape != src.shape or idx.shape[0] != B or (idx.numel() and (idx.min() < 0 or idx.max() >= N)):
            raise ValueError(f"src and dst must be (B={B}, r) long indices into N={N} tokens, got {tuple(src.shape)}, {tuple(dst.shape)}")
    if (src[:, :, None] == dst[:, None, :]).any() or any(len(set(row)) < len(row) for row in src.tolist()):
        raise ValueError("src must hold distinct tokens that are not in dst")
    weighted = torch.cat([x * size[..., None], size[..., None]], dim=-1)
    summed = weighted.scatter_add(1, dst[..., None].expand(-1, -1, C + 1), weighted.gather(1, src[..., None].expand(-1, -1, C + 1)))
    keep = torch.ones(B, N, dtype=torch.bool, device=x.device)
    keep.scatter_(1, src, False)
    summed = summed[keep].reshape(B, N - src.shape[1], C + 1)
    return summed[..., :C] / summed[..., C:], summed[..., C]


def _bipartite_match(metric: torch.Tensor, a_idx: torch.Tensor, b_idx: torch.Tensor, r: int):
    """The ``r`` tokens of set A most similar to their best match in B: (src, dst) indices into the full sequence."""
    a = F.normalize(metric.gather(1, a_idx[..., None].expand(-1, -1, metric.shape[-1])), dim=-1)
    b = F.normalize(metric.gather(1, b_idx[..., None].expand(-1, -1, metric.shape[-1])), dim=-1)
    best, match = (a @ b.transpose(1, 2)).max(dim=-1)
    chosen = torch.sort(best, dim=-1, descending=True, stable=True).indices[:, :r]
    return a_idx.gather(1, chosen), b_idx.gather(1, match.gather(1, chosen))


def tome(x: torch.Tensor, r: int, *, size: torch.Tensor | None = None, metric: torch.Tensor | None = None
         ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Token Merging by bipartite soft matching: merge the ``r`` most similar pairs, one step.

    Tokens alternate into sets A (even positions) and B (odd). Each $a \in A$ finds its most similar
    $b^*(a) = \arg\max_b \cos(k_a, k_b)$ (``metric`` $k$, default ``x``, ToMe uses the attention keys); the ``r``
    edges with the highest similarity are merged (:func:`merge_tokens`). ``r = 0`` returns the input unchanged.
    ``x (B, N, C)`` -> ``(x (B, N - r, C), size (B, N - r))``; ``r <= ceil(N / 2)`` (``N >= 2``). See :cite:`bolya2023tome`.
    """
    size = _check_states(x, size)
    N = x.shape[1]
    limit = (N + 1) // 2 if N > 1 else 0
    if check_nonnegative_int("r", r) > limit:
        raise ValueError(f"r must be at most ceil(N/2) = {limit} for N={N} tokens (0 for one token), got {r}")
    if r == 0:
        return x, size
    metric = x if metric is None else metric
    require_tensor("metric", metric, ndim=3, floating=True)
    if metric.shape[:2] != x.shape[:2]:
        raise ValueError(f"metric must have shape (B, N, *) = {tuple(x.shape[:2])}, got {tuple(metric.shape)}")
    B = x.shape[0]
    pos = torch.arange(N, device=x.device).expand(B, N)
    src, dst = _bipartite_match(metric, pos[:, 0::2], pos[:, 1::2], r)
    return merge_tokens(x, size, src, dst)


def pitome(x: torch.Tensor, r: int, *, size: torch.Tensor | None = None, metric: torch.Tensor | None = None,
           margin: float = 0.5, alpha: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Spectrum-preserving token merging (PiToMe): merge only tokens with high *energy*, keep isolated ones.

    $$ E_i = \frac{1}{N}\sum_j f_m\big(\cos(k_i, k_j)\big), \qquad
       f_m(c) = \begin{cases} c & c \ge m \\ \alpha\,(e^{c - m} - 1) & c < m \end{cases} $$

    The $2r$ tokens of highest energy (members of large clusters of similar tokens) alternate into sets A and B
    in energy order, each A token merges into its most similar B token (:func:`merge_tokens`); all other tokens
    are kept as they are. ``x (B, N, C)`` -> ``(x (B, N - r, C), size (B, N - r))``, ``2r <= N``.
    See :cite:`tran2024pitome`.
    """
    size = _check_states(x, size)
    N = x.shape[1]
    if 2 * check_nonnegative_int("r", r) > N:
        raise ValueError(f"r must be at most N/2 = {N // 2} for N={N} tokens, got {r}")
    margin, alpha = check_number("margin", margin, low=-1.0, high=1.0), check_number("alpha", alpha, positive=True)
    if r == 0:
        return x, size
    metric = x if metric is None else metric
    require_tensor("metric", metric, ndim=3, floating=True)
    k = F.normalize(metric, dim=-1)
    cos = k @ k.transpose(1, 2)
    energy = torch.where(cos >= margin, cos, alpha * (torch.exp(cos - margin) - 1)).mean(dim=-1)
    order = torch.sort(energy, dim=-1, descending=True, stable=True).indices[:, :2 * r]
    src, dst = _bipartite_match(metric, order[:, 0::2], order[:, 1::2], r)
    return merge_tokens(x, size, src, dst)


def _threshold_mask(score: torch.Tensor, threshold: torch.Tensor, tau: float) -> torch.Tensor:
    """``score > threshold`` as 0/1 in the forward pass, the gradient of ``sigmoid((score - threshold) / tau)``."""
    soft = torch.sigmoid((score - threshold) / tau)
    return soft + ((score > threshold).to(soft.dtype) - soft).detach()


class LTMP(nn.Module):
    r"""Learned-threshold token merging and pruning (LTMP) for one encoder block: two learned scalars decide per token.

    With $A$ the block's attention weights ``(B, H, N, N)`` over the active tokens, token $j$'s importance is the
    attention it receives, $s_j = \frac{n}{H\,n}\sum_{h}\sum_{i\ \text{active}} A_{hij}$ ($n$ active tokens, so a uniform
    attention gives 1). Tokens with $s_j < \theta_p$ are pruned; then ToMe's bipartite split (even positions A, odd
    B) gives each surviving A token its most similar surviving B token, $c_j = \max_b \cos(k_j, k_b)$, and
    $$ \text{prune}_j = [\,s_j < \theta_p\,], \qquad \text{merge}_j = [\,c_j > \theta_m\,] $$
    in the forward pass, with the gradient of $\sigma((c_j - \theta_m)/\tau)$ and $\sigma((s_j - \theta_p)/\tau)$
    (straight-through), so fine-tuning learns $\theta_m, \theta_p$ against a FLOPs target. Tokens are never
    moved: a merged token's size-weighted state is added to its partner (:func:`merge_tokens`' average) and it is
    switched off, a pruned one is switched off. The next attention must use :meth:`attention_bias`
    ($\log$ size, $-\infty$ for switched-off keys) and the final pooling weights ``size * keep``; the result equals
    running the block on the active tokens alone. ``tau`` is the sigmoid temperature. See :cite:`bonnaerens2023ltmp`.
    """

    def __init__(self, *, prune_threshold: float = 0.0, merge_threshold: float = 1.0, tau: float = 0.1):
        super().__init__()
        self.prune_threshold = nn.Parameter(torch.tensor(check_number("prune_threshold", prune_threshold)))
        self.merge_threshold = nn.Parameter(torch.tensor(check_number("merge_threshold", merge_threshold)))
        self.tau = check_number("tau", tau, positive=True)

    @staticmethod
    def attention_bias(size: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        r"""Key bias ``(B, 1, 1, N)``: $\log$ size (proportional attention) and a mask for the switched-off tokens.

        ``keep`` holds 0/1 values (straight-through in training): keys with ``keep = 0`` get $-30$ (weight below
        $10^{-13}$), which keeps the gradient of ``keep`` finite; outside training they get $-\infty$.
        """
        require_tensor("size", size, ndim=2, floating=True)
        require_tensor("keep", keep, ndim=2, floating=True)
        if torch.is_grad_enabled() and keep.requires_grad:
            bias = size.log() + 30.0 * (keep - 1)
        else:
            bias = size.log().masked_fill(keep == 0, float("-inf"))
        return bias[:, None, None, :]

    def forward(self, x: torch.Tensor, size: torch.Tensor, keep: torch.Tensor, attention: torch.Tensor,
                metric: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x (B, N, C)``, ``size (B, N)``, ``keep (B, N)`` (1 = active, 0 = switched off), ``attention (B, H, N, N)``
        (rows of switched-off queries are ignored), ``metric (B, N, K)`` (default ``x``) -> ``(x, size, keep)``."""
        size = _check_states(x, size)
        B, N, C = x.shape
        require_tensor("keep", keep, ndim=2, floating=True)
        require_tensor("attention", attention, ndim=4, floating=True)
        if keep.shape != (B, N) or attention.shape[0] != B or attention.shape[2:] != (N, N):
            raise ValueError(f"keep (B, N) and attention (B, H, N, N) must match x's (B, N) = {(B, N)}, got "
                             f"{tuple(keep.shape)} and {tuple(attention.shape)}")
        metric = x if metric is None else metric
        require_tensor("metric", metric, ndim=3, floating=True)
        if metric.shape[:2] != (B, N):
            raise ValueError(f"metric must have shape (B, N, *) = {(B, N)}, got {tuple(metric.shape)}")
        importance = (attention * (keep.detach() > 0)[:, None, :, None]).sum(dim=(1, 2)) / attention.shape[1]
        keep = keep * _threshold_mask(importance, self.prune_threshold, self.tau)  # prune first: (B, N)
        a_idx, b_idx = torch.arange(0, N, 2, device=x.device), torch.arange(1, N, 2, device=x.device)
        if len(b_idx) == 0:
            return x, size, keep
        k = F.normalize(metric, dim=-1)
        sim = (k[:, a_idx] @ k[:, b_idx].transpose(1, 2)).masked_fill(keep.detach()[:, None, b_idx] == 0, -2.0)
        best, partner = sim.max(dim=-1)  # (B, N_a): every A token's most similar surviving B token
        merge = _threshold_mask(best, self.merge_threshold, self.tau) * keep[:, a_idx] * (best > -2).to(x.dtype)
        mass = merge * size[:, a_idx]  # what each merged A token hands to its partner
        dst = b_idx[partner]
        new_size = size.scatter_add(1, dst, mass)
        summed = (x * size[..., None]).scatter_add(1, dst[..., None].expand(-1, -1, C), x[:, a_idx] * mass[..., None])
        keep = keep.index_copy(1, a_idx, keep[:, a_idx] * (1 - merge))
        return summed / new_size[..., None], new_size, keep


def adaptive_token_sampler(x: torch.Tensor, cls_attention: torch.Tensor, values: torch.Tensor, n_samples: int
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Adaptive Token Sampling: keep a variable number of tokens, drawn deterministically by inverse-transform sampling.

    $$ s_j = \frac{a_{j}\,\lVert v_j\rVert}{\sum_i a_{i}\,\lVert v_i\rVert}, \qquad
       \text{keep } \{\, \operatorname{CDF}^{-1}(u_k) : u_k = \tfrac{k + 1/2}{K},\ k < K \,\} $$

    $a_j$ = ``cls_attention (B, N)`` (attention of the class/pooling query to token $j$, averaged over heads),
    ``values (B, N, D)``. The $K$ = ``n_samples`` evenly spaced quantiles of the scores' CDF pick tokens; repeats
    collapse, so a peaked score distribution keeps few tokens and a flat one keeps up to $K$. No parameters.
    Returns ``(x_kept, keep_mask)``: ``x`` with dropped tokens zeroed ``(B, N, C)`` and the bool mask ``(B, N)``
    (gather ``x[b][keep_mask[b]]`` for a shorter sequence). See :cite:`fayyaz2022ats`.
    """
    require_tensor("x", x, ndim=3, floating=True)
    require_tensor("cls_attention", cls_attention, ndim=2, floating=True)
    require_tensor("values", values, ndim=3, floating=True)
    B, N, _ = x.shape
    if cls_attention.shape != (B, N) or values.shape[:2] != (B, N):
        raise ValueError(f"cls_attention (B, N) and values (B, N, D) must match x's (B, N) = {(B, N)}, got "
                         f"{tuple(cls_attention.shape)} and {tuple(values.shape)}")
    check_positive_int("n_samples", n_samples)
    score = cls_attention * values.norm(dim=-1)
    cdf = torch.cumsum(score / score.sum(dim=-1, keepdim=True), dim=-1)
    u = (torch.arange(n_samples, dtype=cdf.dtype, device=x.device) + 0.5) / n_samples
    picked = torch.searchsorted(cdf.contiguous(), u.expand(B, -1).contiguous()).clamp_max(N - 1)
    keep = torch.zeros(B, N, dtype=torch.bool, device=x.device)
    keep.scatter_(1, picked, True)
    return x * keep[..., None], keep


def lz_vocab_size(vocab_size: int, *, window: int = 64, max_len: int = 16, min_len: int = 2) -> int:
    """The extended vocabulary of :func:`lz_tokens_encode`: literals plus one meta-token per (offset, length)."""
    _check_lz(vocab_size, window, max_len, min_len)
    return vocab_size + window * (max_len - min_len + 1)


def _check_lz(vocab_size, window, max_len, min_len):
    check_positive_int("vocab_size", vocab_size)
    check_positive_int("window", window)
    check_positive_int("min_len", min_len)
    if check_positive_int("max_len", max_len) < min_len:
        raise ValueError(f"max_len must be at least min_len={min_len}, got {max_len}")


def lz_tokens_encode(ids: list[int], vocab_size: int, *, window: int = 64, max_len: int = 16, min_len: int = 2
                     ) -> list[int]:
    r"""LZ77 with meta-tokens: replace a repeated span by one token that says "copy ``length`` tokens from ``offset`` back".

    Left to right, the longest earlier match (start within ``window`` tokens back, copies may overlap the
    current position) of length $\ell \ge$ ``min_len`` becomes the meta-token
    $V + (o - 1)(L_{\max} - L_{\min} + 1) + (\ell - L_{\min})$, otherwise the token is kept as a literal ($< V$).
    ``ids`` (ints in ``[0, vocab_size)``) -> a list no longer than ``ids``; :func:`lz_tokens_decode` inverts it
    exactly. Attention over the compressed sequence costs $(1 - r)^2$ of the original, $r$ the length
    reduction. See :cite:`harvill2025metatokens`.
    """
    _check_lz(vocab_size, window, max_len, min_len)
    ids = [int(t) for t in ids]
    if any(not 0 <= t < vocab_size for t in ids):
        raise ValueError(f"ids must be ints in [0, vocab_size={vocab_size})")
    out, i, span = [], 0, max_len - min_len + 1
    while i < len(ids):
        best_len, best_off = 0, 0
        for start in range(max(0, i - window), i):
            length = 0
            while length < max_len and i + length < len(ids) and ids[start + length] == ids[i + length]:
                length += 1
            if length > best_len:
                best_len, best_off = length, i - start
        if best_len >= min_len:
            out.append(vocab_size + (best_off - 1) * span + best_len - min_len)
            i += best_len
        else:
            out.append(ids[i])
            i += 1
    return out


def lz_tokens_decode(codes: list[int], vocab_size: int, *, window: int = 64, max_len: int = 16, min_len: int = 2
                     ) -> list[int]:
    """Exact inverse of :func:`lz_tokens_encode` (same ``vocab_size``, ``window``, ``max_len``, ``min_len``)."""
    _check_lz(vocab_size, window, max_len, min_len)
    out, span = [], max_len - min_len + 1
    for code in codes:
        code = int(code)
        if 0 <= code < vocab_size:
            out.append(code)
            continue
        offset, length = divmod(code - vocab_size, span)
        offset, length = offset + 1, length + min_len
        if code < 0 or offset > window or offset > len(out):
            raise ValueError(f"codes holds {code}, not a literal or a meta-token that points inside the output")
        for _ in range(length):
            out.append(out[-offset])
    return out


def bigram_entropies(train_ids: torch.Tensor, ids: torch.Tensor, vocab_size: int, *, smoothing: float = 0.5
                     ) -> torch.Tensor:
    r"""Next-token entropy under an add-$\lambda$ bigram model fitted on ``train_ids``: $H_t = H(p(\cdot \mid x_{t-1}))$.

    $p(j \mid i) = (c_{ij} + \lambda) / (\sum_k c_{ik} + V\lambda)$. ``train_ids, ids (L,)`` long -> ``(L,)`` nats;
    $H_0$ uses the unigram distribution. The small "entropy model" of BLT's patching :cite:`pagnoni2024blt`.
    """
    require_tensor("train_ids", train_ids, ndim=1)
    require_tensor("ids", ids, ndim=1)
    check_positive_int("vocab_size", vocab_size)
    smoothing = check_number("smoothing", smoothing, positive=True)
    for name, t in (("train_ids", train_ids), ("ids", ids)):
        if t.is_floating_point() or (t.numel() and (t.min() < 0 or t.max() >= vocab_size)):
            raise ValueError(f"{name} must hold integer ids in [0, vocab_size={vocab_size})")
    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.float64)
    counts.index_put_((train_ids[:-1], train_ids[1:]), torch.ones(max(train_ids.numel() - 1, 0), dtype=torch.float64),
                      accumulate=True)
    p = (counts + smoothing) / (counts.sum(-1, keepdim=True) + vocab_size * smoothing)
    h_rows = -(p * p.log()).sum(-1)
    uni = (counts.sum(0) + smoothing) / (counts.sum() + vocab_size * smoothing)
    h0 = -(uni * uni.log()).sum()
    return torch.cat([h0.reshape(1), h_rows[ids[:-1]]]) if ids.numel() else torch.zeros(0, dtype=torch.float64)


def entropy_patches(entropies: torch.Tensor, threshold: float) -> torch.Tensor:
    r"""BLT entropy patching: a new patch starts at every position whose next-byte entropy exceeds the threshold.

    $$ \text{start}_t = [\,t = 0\,] \ \lor\ [\,H_t > \theta\,] $$

    ``entropies (L,)`` ($H_t$ = entropy of the model's prediction *of* byte $t$) -> the patch start positions
    (long, ascending, first is 0). Patch lengths are the differences; the latent model runs one step per patch.
    See :cite:`pagnoni2024blt`.
    """
    require_tensor("entropies", entropies, ndim=1, floating=True)
    threshold = check_number("threshold", threshold)
    starts = entropies > threshold
    if starts.numel():
        starts[0] = True
    return torch.nonzero(starts).flatten()
