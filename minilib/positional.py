r"""Positional information: absolute sinusoids, rotary embeddings (RoPE) and their scaling, ALiBi biases,
the Toeplitz matrices of relative offsets, and Laplacian eigenvector positions for graphs.

URPE attention, which multiplies attention by a Toeplitz matrix, is an attention mechanism and lives in
:mod:`minilib.attention.urpe`; ``minilib.positional.urpe_attention`` and ``URPEAttention`` still work (deprecated).
"""
from __future__ import annotations

import math

import torch

from minilib._checks import check_nonnegative_int, check_number, check_positive_int, require_tensor
from minilib._moved import moved_names

__all__ = ["sinusoidal", "check_rope_scaling", "rope_angles", "rope", "alibi_slopes", "alibi_bias",
           "toeplitz_matrix", "laplacian_positional_encoding"]


def sinusoidal(T: int, d: int) -> torch.Tensor:
    r"""Fixed sinusoidal position table, even columns sine and odd columns cosine.

    $$ P_{p,2i} = \sin\!\big(p / 10000^{2i/d}\big),\qquad P_{p,2i+1} = \cos\!\big(p / 10000^{2i/d}\big) $$

    Returns ``(T, d)`` float32; an odd ``d`` ends with a sine column. See :cite:`vaswani2017attention`.
    """
    check_nonnegative_int("T", T)
    check_positive_int("d", d)
    pos = torch.arange(T, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    table = torch.zeros(T, d, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return table.float()


SCALINGS = ("pi", "ntk", "dynamic")


def check_rope_scaling(scaling, *, name: str = "scaling") -> None:
    """Raise ``ValueError`` naming ``name`` unless ``scaling`` is ``None`` or ``(method, factor)`` as :func:`rope_angles` takes it."""
    if scaling is None:
        return
    if not (isinstance(scaling, tuple) and len(scaling) == 2 and scaling[0] in SCALINGS
            and isinstance(scaling[1], (int, float)) and not isinstance(scaling[1], bool) and scaling[1] > 0):
        raise ValueError(f"{name} must be None or (method, factor) with method in {SCALINGS} and factor > 0, got {scaling!r}")


def rope_angles(positions: torch.Tensor, D: int, *, base: float = 10000.0, scaling: tuple | None = None) -> torch.Tensor:
    r"""Rotation angles $\phi_{t,i} = m_t\, \theta_i$ with $\theta_i = \text{base}^{-2i/D}$, shape ``(T, D/2)`` float64.

    ``scaling`` stretches RoPE to sequences longer than those seen in training, by a factor $s$:

    - ``("pi", s)``, position interpolation: $m \to m / s$, so positions up to $s L_\text{train}$
      land inside the trained range :cite:`chen2023extending`;
    - ``("ntk", s)``, NTK-aware scaling: the base grows to $\text{base}\cdot s^{D/(D-2)}$, which leaves the
      fastest pair ($i = 0$) untouched and divides the slowest ($i = D/2 - 1$) by exactly $s$ :cite:`peng2023yarn`;
    - ``("dynamic", L_train)``: NTK-aware with $s = \max(1, (\max_t m_t + 1) / L_\text{train})$, chosen from
      the positions at hand, so sequences no longer than training see plain RoPE. A KV cache stores keys
      already rotated, so while decoding each key keeps the scale of the step that wrote it.
    """
    require_tensor("positions", positions, ndim=1)
    require_tensor("positions", positions, ndim=1)
    check_number("base", base, positive=True)
    if check_positive_int("D", D) % 2:
        raise ValueError(f"rope needs an even last dimension, got D={D}")
    check_rope_scaling(scaling)
    pos = positions.to(torch.float64)
    method, factor = scaling if scaling is not None else ("pi", 1.0)
    if method == "dynamic":
        longest = pos.max().item() + 1 if pos.numel() else 0.0
        method, factor = "ntk", max(1.0, longest / factor)
    if method == "pi":
        pos = pos / factor
    elif D > 2:
        base = base * factor ** (D / (D - 2))
    theta = base ** (-torch.arange(0, D, 2, dtype=torch.float64, device=positions.device) / D)
    return pos[:, None] * theta[None, :]


def rope(x: torch.Tensor, positions: torch.Tensor, *, base: float = 10000.0, scaling: tuple | None = None) -> torch.Tensor:
    r"""Rotary position embedding: rotate each pair $(x_{2i}, x_{2i+1})$ by the angle $m\,\theta_i$.

    $$ \begin{pmatrix} x'_{2i} \\ x'_{2i+1} \end{pmatrix} =
       \begin{pmatrix} \cos m\theta_i & -\sin m\theta_i \\ \sin m\theta_i & \cos m\theta_i \end{pmatrix}
       \begin{pmatrix} x_{2i} \\ x_{2i+1} \end{pmatrix},\qquad \theta_i = \text{base}^{-2i/D} $$

    so $\langle \operatorname{rope}(q, m), \operatorname{rope}(k, n)\rangle$ depends on $m - n$ only.
    ``x (..., T, D)``, ``positions (T,)`` -> same shape as ``x``. ``scaling`` as in :func:`rope_angles`.
    See :cite:`su2021roformer`.
    """
    require_tensor("x", x, floating=True)
    require_tensor("positions", positions)
    if x.ndim < 2 or positions.ndim != 1 or positions.shape[0] != x.shape[-2]:
        raise ValueError(f"positions must have shape (T,) matching x (..., T, D); got positions "
                         f"{tuple(positions.shape)} and x {tuple(x.shape)}")
    angles = rope_angles(positions, x.shape[-1], base=base, scaling=scaling)
    cos, sin = torch.cos(angles).to(x.dtype), torch.sin(angles).to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    r"""ALiBi head slopes: the geometric sequence $m_i = 2^{-8i/n}$, $i = 1..n$.

    For ``n_heads`` not a power of two, the paper's rule: the slopes of the closest smaller power
    of two $n' = 2^{\lfloor \log_2 n \rfloor}$, followed by every other slope of $2n'$ until there are ``n_heads``.
    Returns ``(n_heads,)`` float32. See :cite:`press2022alibi`.
    """
    check_positive_int("n_heads", n_heads)

    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * i / n) for i in range(1, n + 1)]

    base = 2 ** int(math.floor(math.log2(n_heads)))
    slopes = geometric(base) + geometric(2 * base)[0::2][: n_heads - base]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(n_heads: int, T: int, S: int | None = None) -> torch.Tensor:
    r"""ALiBi attention bias $b_{h,t,s} = -m_h\,(t' - s)$ for past keys, where $t' = S - T + t$.

    Queries are the last ``T`` of ``S`` positions (bottom-right, as with a KV cache); future keys
    get bias 0 (the causal mask removes them). With ``T > S`` the first ``T - S`` queries sit before every key,
    so their rows are 0 and causal attention gives them no key (zero output rows, the rule of
    :mod:`minilib.attention`). Returns ``(n_heads, T, S)``. See :cite:`press2022alibi`.
    """
    T = check_nonnegative_int("T", T)
    S = T if S is None else check_nonnegative_int("S", S)
    distance = (torch.arange(S - T, S)[:, None] - torch.arange(S)[None, :]).clamp(min=0)
    return -alibi_slopes(n_heads)[:, None, None] * distance.float()


def toeplitz_matrix(c: torch.Tensor, T: int, S: int | None = None, *, causal: bool = False) -> torch.Tensor:
    r"""The Toeplitz matrix $C_{ts} = c_{t' - s}$ of relative offsets, $t' = S - T + t$ (queries are the last ``T`` positions).

    Non-causal: ``c (..., 2S - 1)`` holds $c_{-(S-1)}, \dots, c_{S-1}$ in that order, so $c_\delta$ sits at
    index $\delta + S - 1$, and needs ``T <= S``. Causal: ``c (..., S)`` holds $c_0, \dots, c_{S-1}$ and
    $C_{ts} = 0$ for $s > t'$; with ``T > S`` the first ``T - S`` rows are zero (those queries see no key).
    Returns ``(..., T, S)``. See :cite:`luo2022urpe`.
    """
    require_tensor("c", c, floating=True)
    S = T if S is None else check_positive_int("S", S)
    if check_positive_int("T", T) > S and not causal:
        raise ValueError(f"T must be at most S without causal (queries are the last T of S positions), got T={T}, S={S}")
    need = S if causal else 2 * S - 1
    if c.ndim == 0 or c.shape[-1] != need:
        raise ValueError(f"c must end in {need} entries ({'S' if causal else '2S - 1'} for S={S}, causal={causal}), "
                         f"got shape {tuple(c.shape)}")
    offset = torch.arange(S - T, S, device=c.device)[:, None] - torch.arange(S, device=c.device)[None, :]
    if causal:
        return c[..., offset.clamp(min=0)] * (offset >= 0).to(c.dtype)
    return c[..., offset + S - 1]


def laplacian_positional_encoding(adjacency: torch.Tensor, k: int, *, normalized: bool = True) -> torch.Tensor:
    r"""Laplacian eigenvector positions for graph nodes: the ``k`` eigenvectors after the trivial one.

    $$ \Delta = I - D^{-1/2} A D^{-1/2} \ \ (\text{``normalized``}),\qquad \Delta = D - A \ \ (\text{otherwise}),
       \qquad \Delta u_j = \lambda_j u_j,\ \ \lambda_0 \le \lambda_1 \le \dots $$

    and node $v$ gets the row $(u_1(v), \dots, u_k(v))$. For the path graph ($A$ of a sequence) the
    unnormalised eigenvectors are the cosines $u_j(v) \propto \cos\big(\pi j (v + \tfrac12) / n\big)$, the graph
    analogue of sinusoidal positions. An eigenvector's sign is arbitrary; here its first entry that is not
    (numerically) zero is made positive. Repeated eigenvalues leave any basis of their space.
    ``adjacency (n, n)`` symmetric, non-negative -> ``(n, k)`` float64. See :cite:`dwivedi2020generalization`.
    """
    require_tensor("adjacency", adjacency, ndim=2)
    n = adjacency.shape[0]
    A = adjacency.to(torch.float64)
    if adjacency.shape[1] != n or not torch.equal(A, A.T) or (A < 0).any():
        raise ValueError("adjacency must be a symmetric non-negative (n, n) matrix, "
                         f"got shape {tuple(adjacency.shape)}")
    if check_positive_int("k", k) > n - 1:
        raise ValueError(f"k must be an int in [1, n - 1] for adjacency of shape {tuple(adjacency.shape)}, got {k!r}")
    degree = A.sum(dim=1)
    if normalized:
        if (degree == 0).any():
            raise ValueError("the normalized Laplacian needs every node to have an edge; "
                             "adjacency has an isolated node")
        inv_sqrt = degree.rsqrt()
        lap = torch.eye(n, dtype=torch.float64) - inv_sqrt[:, None] * A * inv_sqrt[None, :]
    else:
        lap = torch.diag(degree) - A
    _, vectors = torch.linalg.eigh(lap)
    vectors = vectors[:, 1:k + 1]
    first = (vectors.abs() > 1e-9 * vectors.abs().amax(dim=0)).to(torch.int8).argmax(dim=0)
    return vectors * torch.sign(vectors[first, torch.arange(k)])


# names that moved to minilib.attention, imported only when asked for (no import cycle)
__getattr__ = moved_names(__name__, {"urpe_attention": "minilib.attention.urpe", "URPEAttention": "minilib.attention.urpe"})
