"""Plausible wrong answers to the chapter 09 questions, each with the text its failure must show."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def swiglu_gate_swapped(x, w1, w3, w2):
    """Applies SiLU to the value branch instead of the gate branch."""
    return ((x @ w1) * F.silu(x @ w3)) @ w2


def swiglu_gelu(x, w1, w3, w2):
    """GEGLU: GELU where SwiGLU has SiLU."""
    return (F.gelu(x @ w1) * (x @ w3)) @ w2


def swiglu_sigmoid_gate(x, w1, w3, w2):
    """The original GLU's sigmoid gate instead of SiLU."""
    return (torch.sigmoid(x @ w1) * (x @ w3)) @ w2


def swiglu_library(x, w1, w3, w2):
    from minilib.feedforward import FeedForward

    ffn = FeedForward(x.shape[-1], w1.shape[-1]).to(x.dtype)
    return ffn(x)


def gates_not_renormalised(logits, k):
    """Softmax before the top-k, but the kept probabilities are not renormalised."""
    p = torch.softmax(logits, -1)
    top, idx = p.topk(k, -1)
    return torch.zeros_like(p).scatter(-1, idx, top)


def gates_softmax_over_tokens(logits, k):
    """Softmax over the token axis (dim 0) instead of the experts."""
    p = torch.softmax(logits, 0)
    top, idx = p.topk(k, -1)
    return torch.zeros_like(p).scatter(-1, idx, top / top.sum(-1, keepdim=True))


def gates_one_hot(logits, k):
    """Marks the chosen experts with 1/k each, ignoring the router's confidence."""
    idx = logits.topk(k, -1).indices
    return torch.zeros_like(logits).scatter(-1, idx, 1.0 / k)


def gates_smallest(logits, k):
    """Keeps the k smallest probabilities."""
    p = torch.softmax(logits, -1)
    top, idx = p.topk(k, -1, largest=False)
    return torch.zeros_like(p).scatter(-1, idx, top / top.sum(-1, keepdim=True))


def combine_unweighted(x, gates, w1, w2):
    """Sums the outputs of the chosen experts without multiplying by their gates."""
    out = torch.zeros_like(x)
    for e in range(gates.shape[1]):
        idx = gates[:, e].nonzero()[:, 0]
        out.index_add_(0, idx, torch.relu(x[idx] @ w1[e]) @ w2[e])
    return out


def combine_gate_inside(x, gates, w1, w2):
    """Applies the gate twice: to the expert's input and to its output."""
    out = torch.zeros_like(x)
    for e in range(gates.shape[1]):
        idx = gates[:, e].nonzero()[:, 0]
        g = gates[idx, e, None]
        out.index_add_(0, idx, g * (torch.relu((g * x[idx]) @ w1[e]) @ w2[e]))
    return out


def combine_first_expert_only(x, gates, w1, w2):
    """Sends each token only to its highest-gated expert (top-1), dropping the others."""
    best = gates.argmax(-1)
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        e = best[t]
        out[t] = gates[t, e] * (torch.relu(x[t] @ w1[e]) @ w2[e])
    return out


def balance_counts_wrong_axis(probs, experts):
    """Takes f_e from the probabilities' mean over the experts axis instead of counting assignments."""
    n_experts = probs.shape[-1]
    return n_experts * (probs.mean(dim=1).mean() * probs.mean(dim=0)).sum()


def balance_divides_by_tokens(probs, experts):
    """Divides the counts by N instead of N k (f sums to k with top-k)."""
    n_experts = probs.shape[-1]
    fraction = torch.bincount(experts.reshape(-1), minlength=n_experts).to(probs.dtype) / probs.shape[0]
    return n_experts * (fraction * probs.mean(dim=0)).sum()


def balance_missing_e(probs, experts):
    """Forgets the factor E (the loss of a uniform router is then 1/E)."""
    n_experts = probs.shape[-1]
    fraction = torch.bincount(experts.reshape(-1), minlength=n_experts).to(probs.dtype) / experts.numel()
    return (fraction * probs.mean(dim=0)).sum()


def balance_library(probs, experts):
    from minilib.moe import load_balancing_loss

    return load_balancing_loss(probs, experts)


def pattention_softmax(x, keys, values, tau):
    """Standard softmax attention over the parameter tokens: zero keys get weight exp(0)."""
    s = x @ keys.T
    return torch.softmax(tau * s / s.norm(dim=-1, keepdim=True), -1) @ values


def pattention_no_norm(x, keys, values, tau):
    """Skips the L2 normalisation of the scores."""
    return F.gelu(tau * (x @ keys.T)) @ values


def pattention_column_norm(x, keys, values, tau):
    """Normalises each column (parameter token) instead of each row (input token)."""
    s = x @ keys.T
    return F.gelu(tau * s / s.norm(dim=0, keepdim=True)) @ values


def pattention_tau_from_size(x, keys, values, tau):
    """Recomputes tau = sqrt(m) from the number of parameter tokens: right until the layer grows, then appending
    zero tokens changes m and with it the output."""
    s = x @ keys.T
    return F.gelu(keys.shape[0] ** 0.5 * s / s.norm(dim=-1, keepdim=True)) @ values


WRONG = [
    ("09.q1", swiglu_gate_swapped, "case 1/4"),
    ("09.q1", swiglu_gelu, "max abs error"),
    ("09.q1", swiglu_sigmoid_gate, "max abs error"),
    ("09.q1", swiglu_library, "forbidden"),
    ("09.q2", gates_not_renormalised, "case 1/5"),
    ("09.q2", gates_softmax_over_tokens, "max abs error"),
    ("09.q2", gates_one_hot, "max abs error"),
    ("09.q2", gates_smallest, "max abs error"),
    ("09.q3", combine_unweighted, "case 1/4"),
    ("09.q3", combine_gate_inside, "max abs error"),
    ("09.q3", combine_first_expert_only, "max abs error"),
    ("09.q4", balance_counts_wrong_axis, "case 1/4"),
    ("09.q4", balance_divides_by_tokens, "case 2/4"),
    ("09.q4", balance_missing_e, "max abs error"),
    ("09.q4", balance_library, "forbidden"),
    ("09.q5", pattention_softmax, "case 1/4"),
    ("09.q5", pattention_no_norm, "max abs error"),
    ("09.q5", pattention_column_norm, "max abs error"),
    ("09.q5", pattention_tau_from_size, "case 3/4"),
]
