r"""Linear self-attention (LSA) on regression prompts, the weights that make it one gradient-descent step,
the same layer looped ``T`` times (``T`` steps), and the global minimum of a trained single layer.

Tokens are rows ``z_j = (x_j, y_j)`` of ``Z (B, n+1, d+1)``; the last row is the query with ``y = 0``. One layer:

$$ z_j \leftarrow z_j + \frac{1}{n} \sum_{i=1}^{n} (z_i^\top W_{KQ}\, z_j)\; W_{PV} z_i , $$

keys and values from the ``n`` examples only (the query is not a key), no softmax. The prediction is read from
the query's ``y`` slot with a minus sign, :math:`\hat y_q = -Z_{n+1, d+1}`, so that the layer with
:func:`lsa_gd_weights` turns each example's ``y_i`` into its residual ``y_i - w^\top x_i`` and the query slot into
``-w^\top x_q`` after every step :cite:`vonoswald2023transformers`.
"""
from __future__ import annotations

import torch
from torch import nn

from minilib._checks import (check_divisible, check_last_dim, check_nonnegative_int, check_number, check_positive_int,
                             require_tensor)
from minilib.attention import merge_heads, split_heads
from minilib.mixing import TokenMixer, register_mixer

__all__ = ["LinearSelfAttention", "CausalLinearSelfAttention", "LSACache", "lsa_forward", "lsa_gd_weights", "looped_lsa",
           "lsa_predict", "lsa_global_minimum"]


def _check_weights(z, w_kq, w_pv) -> None:
    require_tensor("z", z, ndim=3, floating=True)
    size = z.shape[-1]
    for name, w in (("w_kq", w_kq), ("w_pv", w_pv)):
        require_tensor(name, w, ndim=2, floating=True)
        if w.shape != (size, size):
            raise ValueError(f"{name} must be (d+1, d+1) = ({size}, {size}) for z of shape {tuple(z.shape)}, "
                             f"got {tuple(w.shape)}")
    if z.shape[1] < 2:
        raise ValueError(f"z needs at least one example and the query, got shape {tuple(z.shape)}")


def lsa_forward(z: torch.Tensor, w_kq: torch.Tensor, w_pv: torch.Tensor) -> torch.Tensor:
    r"""One LSA layer with a residual connection: ``z (B, n+1, d+1)`` -> same shape.

    $$ Z' = Z + \frac{1}{n}\,(Z W_{KQ}^\top Z_{1:n}^\top)\,(Z_{1:n} W_{PV}^\top), $$
    where row ``j`` of ``Z W_KQ^T Z_{1:n}^T`` holds the scores :math:`z_i^\top W_{KQ} z_j`.
    :cite:`vonoswald2023transformers`
    """
    _check_weights(z, w_kq, w_pv)
    context = z[:, :-1]
    scores = z @ w_kq.T @ context.transpose(1, 2)            # (B, n+1, n)
    return z + scores @ (context @ w_pv.T) / context.shape[1]


def lsa_predict(z: torch.Tensor) -> torch.Tensor:
    r"""The prediction at the query, :math:`\hat y_q = -Z_{n+1, d+1}`: ``(B, n+1, d+1)`` -> ``(B,)``."""
    require_tensor("z", z, ndim=3)
    return -z[:, -1, -1]


def lsa_gd_weights(d: int, lr: float, *, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(w_kq, w_pv)``, each ``(d+1, d+1)``: the LSA layer that performs one GD step of size ``lr``.

    $$ W_{KQ} = \begin{pmatrix} I_d & 0 \\ 0 & 0 \end{pmatrix}, \qquad
       W_{PV} = \begin{pmatrix} 0 & 0 \\ 0 & -\eta \end{pmatrix}. $$
    Then example ``j``'s ``y`` slot becomes :math:`y_j - \frac{\eta}{n}\sum_i y_i x_i^\top x_j = y_j - \Delta w^\top x_j`
    with :math:`\Delta w = \frac{\eta}{n} X^\top y` the GD step from 0, and the query slot becomes
    :math:`-\Delta w^\top x_q`. Applied again, the residuals take the next step. :cite:`vonoswald2023transformers`
    """
    check_positive_int("d", d)
    check_number("lr", lr, positive=True)
    w_kq = torch.zeros(d + 1, d + 1, dtype=dtype)
    w_kq[:d, :d] = torch.eye(d, dtype=dtype)
    w_pv = torch.zeros(d + 1, d + 1, dtype=dtype)
    w_pv[d, d] = -lr
    return w_kq, w_pv


def looped_lsa(z: torch.Tensor, w_kq: torch.Tensor, w_pv: torch.Tensor, steps: int) -> torch.Tensor:
    r"""The same LSA layer applied ``steps`` times (a looped linear Transformer): ``(B, n+1, d+1)`` -> same.

    $$ Z^{(t+1)} = \mathrm{LSA}(Z^{(t)}), \quad t = 0..T-1; $$
    with :func:`lsa_gd_weights` this is ``T`` steps of GD :cite:`chen2024bypassing`.
    """
    _check_weights(z, w_kq, w_pv)
    check_nonnegative_int("steps", steps)
    for _ in range(steps):
        z = lsa_forward(z, w_kq, w_pv)
    return z


def lsa_global_minimum(cov: torch.Tensor, n: int) -> torch.Tensor:
    r"""The matrix :math:`\Gamma^*` of the global minimum of one LSA layer trained on noiseless prompts with
    ``x ~ N(0, cov)``, ``w ~ N(0, I)`` and ``n`` examples: ``(d, d)``.

    The trained layer predicts :math:`\hat y_q = x_q^\top \Gamma \frac1n \sum_i y_i x_i`, and the population loss
    is minimised by :math:`\Gamma^* = \big((1 + \tfrac1n)\Lambda + \tfrac{\operatorname{tr}\Lambda}{n} I\big)^{-1}`
    :cite:`zhang2024trained`.
    """
    require_tensor("cov", cov, ndim=2, floating=True)
    if cov.shape[0] != cov.shape[1]:
        raise ValueError(f"cov must be square (d, d), got {tuple(cov.shape)}")
    check_positive_int("n", n)
    eye = torch.eye(cov.shape[0], dtype=cov.dtype)
    return torch.linalg.inv((1 + 1 / n) * cov + torch.trace(cov) / n * eye)


class LinearSelfAttention(nn.Module):
    r"""``depth`` LSA layers (see :func:`lsa_forward`), each with its own ``(w_kq, w_pv)``, or one layer applied
    ``depth`` times when ``looped=True``. ``forward(z)`` returns the prediction :math:`-Z_{n+1,d+1}` ``(B,)``.

    Weights start at ``init_scale * N(0, 1)``. :cite:`vonoswald2023transformers,zhang2024trained`
    """

    def __init__(self, d: int, depth: int = 1, *, looped: bool = False, init_scale: float = 0.01):
        super().__init__()
        check_positive_int("d", d)
        self.depth = check_positive_int("depth", depth)
        self.looped = looped
        check_number("init_scale", init_scale, low=0.0)
        layers = 1 if looped else depth
        self.w_kq = nn.Parameter(init_scale * torch.randn(layers, d + 1, d + 1))
        self.w_pv = nn.Parameter(init_scale * torch.randn(layers, d + 1, d + 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for t in range(self.depth):
            i = 0 if self.looped else t
            z = lsa_forward(z, self.w_kq[i], self.w_pv[i])
        return lsa_predict(z)


class LSACache:
    r"""The decoding state of :class:`CausalLinearSelfAttention`: ``state (B, H, D, D)`` = :math:`\sum_s k_s v_s^\top`
    over the ``length`` positions seen so far."""

    def __init__(self):
        self.state: torch.Tensor | None = None
        self.length = 0


class CausalLinearSelfAttention(TokenMixer):
    r"""Linear self-attention as a causal token mixer (registered as ``"lsa"``): ``(B, T, d_model)`` -> same.

    $$ y_t = W_O\, \frac{1}{t+1} \sum_{s \le t} (q_t^\top k_s)\, v_s , \qquad q = W_Q x,\ k = W_K x,\ v = W_V x, $$
    per head, no softmax and no feature map: the layer of :func:`lsa_forward` run over a sequence, each position
    attending to itself and the positions before it. With :math:`W_Q = W_{KQ}`, :math:`W_K = I`,
    :math:`W_O W_V = W_{PV}` (one head) its output at a prompt's query is :math:`\frac{n}{n+1}` times the update
    :func:`lsa_forward` makes there (the query's own key carries ``y = 0``). Recurrent form for decoding:
    :math:`S_t = S_{t-1} + k_t v_t^\top`, :math:`y_t = W_O\, q_t^\top S_t / (t+1)`. :cite:`vonoswald2023transformers`
    """

    def __init__(self, d_model: int, n_heads: int = 1):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("n_heads", n_heads)
        check_divisible("d_model", d_model, "n_heads", n_heads)
        self.d_model, self.n_heads = d_model, n_heads
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d_model, d_model, bias=False) for _ in range(4))

    def new_cache(self) -> LSACache:
        """An empty :class:`LSACache`."""
        return LSACache()

    def forward(self, x: torch.Tensor, *, cache: LSACache | None = None) -> torch.Tensor:
        require_tensor("x", x, ndim=3, floating=True)
        check_last_dim("x", x, self.d_model)
        if cache is not None and not isinstance(cache, LSACache):
            raise TypeError(f"cache must be an LSACache (from new_cache()) or None, got {type(cache).__name__}")
        q, k, v = (split_heads(w(x), self.n_heads) for w in (self.wq, self.wk, self.wv))   # (B, H, T, D)
        T = x.shape[1]
        start = 0 if cache is None else cache.length
        scores = (q @ k.transpose(-1, -2)).tril()                                          # s <= t within the piece
        out = scores @ v
        if cache is not None:
            if cache.state is not None:
                out = out + q @ cache.state                                                # the positions before
            update = k.transpose(-1, -2) @ v
            cache.state = update if cache.state is None else cache.state + update
            cache.length += T
        counts = torch.arange(start + 1, start + T + 1, device=x.device, dtype=x.dtype)[:, None]
        return self.wo(merge_heads(out / counts))


register_mixer("lsa", lambda config, layer: CausalLinearSelfAttention(config.d_model, config.n_heads,
                                                                       **config.mixer_kwargs))
