r"""Softmax attention as an RNN: the Aaren view :cite:`feng2024attention`.

The softmax attention of one query $q$ over keys $k_1..k_t$ and values $v_1..v_t$ is the last output of an RNN
whose state is a triple: the running maximum score $m_t$, the running denominator $\ell_t = \sum_{s\le t} e^{s_s - m_t}$
and the running numerator $a_t = \sum_{s\le t} e^{s_s - m_t} v_s$ (scores $s_s = \text{scale}\; q\cdot k_s$), so
$o_t = a_t / \ell_t$. Merging two such triples is associative,

$$ (m, \ell, a) \oplus (m', \ell', a') = \big(M,\ \ell e^{m-M} + \ell' e^{m'-M},\ a e^{m-M} + a' e^{m'-M}\big),
   \quad M = \max(m, m'), $$

so the outputs for *every* prefix (many-to-many) come from one parallel prefix scan
(:func:`minilib.scan.associative_scan`) in $O(\log L)$ depth, and a stream is processed in constant memory by
merging one token at a time (many-to-one). The state never grows: $O(D_v)$ per head, however long the prefix.
"""
from __future__ import annotations

import torch

from minilib._checks import default_scale, require_tensor
from minilib.scan import ScanCounter, associative_scan

__all__ = ["aaren_combine", "attention_scan", "attention_rnn_step"]


def aaren_combine(a, b):
    r"""Merge two attention summaries $(m, \ell, a) \oplus (m', \ell', a')$ (earlier first); see the module docstring.

    ``a = (m, l, acc)`` with ``m, l (...)`` and ``acc (..., Dv)``; returns the triple of the concatenated prefix.
    """
    m_a, l_a, acc_a = a
    m_b, l_b, acc_b = b
    m = torch.maximum(m_a, m_b)
    wa, wb = (m_a - m).exp(), (m_b - m).exp()
    return m, l_a * wa + l_b * wb, acc_a * wa[..., None] + acc_b * wb[..., None]


def _check_query(q, k, v):
    require_tensor("q", q, ndim=3, floating=True)
    require_tensor("k", k, ndim=4, floating=True)
    require_tensor("v", v, ndim=4, floating=True)
    if k.shape[:2] != q.shape[:2] or k.shape[-1] != q.shape[-1] or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"need q (B, H, D), k (B, H, L, D), v (B, H, L, Dv); got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")


def attention_scan(q, k, v, *, scale=None, method: str = "blelloch", counter: ScanCounter | None = None):
    r"""Softmax attention of one query per head over every prefix, by a parallel prefix scan of $(m, \ell, a)$.

    $$ o_t = \sum_{s\le t} \operatorname{softmax}_s(\text{scale}\; q\cdot k_s)\, v_s $$

    equals causal :func:`~minilib.attention.sdpa` with the query repeated at every position (Aaren's fixed,
    learned query). ``q (B, H, D)``, ``k (B, H, L, D)``, ``v (B, H, L, Dv)`` -> ``(B, H, L, Dv)``. ``method`` and
    ``counter`` go to :func:`~minilib.scan.associative_scan` (depth $2\lceil\log_2 L\rceil$ for Blelloch's).
    :cite:`feng2024attention`
    """
    _check_query(q, k, v)
    scores = (k @ q[..., None]).squeeze(-1) * default_scale(q.shape[-1], scale)
    m, l, acc = associative_scan(aaren_combine, (scores, torch.ones_like(scores), v), dim=2, method=method,
                                 counter=counter)
    return acc / l[..., None]


def attention_rnn_step(q, k, v, state=None, *, scale=None):
    r"""Many-to-one streaming: fold new tokens into the summary $(m, \ell, a)$ one at a time.

    ``q (B, H, D)``, ``k (B, H, T, D)``, ``v (B, H, T, Dv)`` (the new tokens), ``state`` a triple from a previous
    call (None: empty) -> ``(out (B, H, Dv), state)``, with ``out`` the attention output over everything seen.
    The state holds $2 + D_v$ numbers per head, whatever the number of tokens. :cite:`feng2024attention`
    """
    _check_query(q, k, v)
    scores = (k @ q[..., None]).squeeze(-1) * default_scale(q.shape[-1], scale)
    for t in range(k.shape[2]):
        token = (scores[..., t], torch.ones_like(scores[..., t]), v[:, :, t])
        state = token if state is None else aaren_combine(state, token)
    if state is None:
        raise ValueError(f"the first call needs at least one token, got k {tuple(k.shape)}")
    return state[2] / state[1][..., None], state
