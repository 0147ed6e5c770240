"""Plausible wrong answers to the chapter 13 questions, each with the text its failure must show."""
from __future__ import annotations

import torch


def ema_starts_at_x0(x, alpha):
    """Starts the state at the first token (y_0 = x_0) instead of at zero."""
    out, y = torch.empty_like(x), x[:, 0]
    out[:, 0] = y
    for t in range(1, x.shape[1]):
        y = alpha * x[:, t] + (1 - alpha) * y
        out[:, t] = y
    return out


def ema_swapped_weights(x, alpha):
    """alpha weighs the past and 1 - alpha the new token."""
    out, y = torch.empty_like(x), torch.zeros_like(x[:, 0])
    for t in range(x.shape[1]):
        y = (1 - alpha) * x[:, t] + alpha * y
        out[:, t] = y
    return out


def _ema(x, alpha):
    out, y = torch.empty_like(x), torch.zeros_like(x[:, 0])
    for t in range(x.shape[1]):
        y = alpha * x[:, t] + (1 - alpha) * y
        out[:, t] = y
    return out


def ema_backwards(x, alpha):
    """Runs the recurrence from the end: y_t reads the future (not causal)."""
    return _ema(x.flip(1), alpha).flip(1)


def ema_debiased(x, alpha):
    """Adam-style bias correction: divides by 1 - (1 - alpha)^(t+1), so y_0 = x_0."""
    t = torch.arange(1, x.shape[1] + 1, dtype=x.dtype)[:, None]
    return _ema(x, alpha) / (1 - (1 - alpha) ** t)


def ema_running_mean(x, alpha):
    """The running mean of x_0..x_t: equal weights, alpha ignored."""
    return x.cumsum(1) / torch.arange(1, x.shape[1] + 1, dtype=x.dtype)[:, None]


def bytes_keys_only(contexts, *, n_layers, n_heads, n_kv_heads, head_dim, element_size):
    """Counts the keys but forgets the values."""
    kv = n_layers * n_kv_heads * head_dim * contexts * element_size
    return torch.stack([kv, torch.full_like(contexts, n_layers * n_heads * head_dim ** 2 * element_size)], 1)


def bytes_query_heads(contexts, *, n_layers, n_heads, n_kv_heads, head_dim, element_size):
    """Caches one key/value pair per query head (ignores GQA/MQA sharing)."""
    kv = 2 * n_layers * n_heads * head_dim * contexts * element_size
    return torch.stack([kv, torch.full_like(contexts, n_layers * n_heads * head_dim ** 2 * element_size)], 1)


def bytes_state_grows(contexts, *, n_layers, n_heads, n_kv_heads, head_dim, element_size):
    """Treats the linear-attention state as growing with the context, like the cache."""
    kv = 2 * n_layers * n_kv_heads * head_dim * contexts * element_size
    return torch.stack([kv, n_layers * n_heads * head_dim * contexts * element_size], 1)


def bytes_state_vector(contexts, *, n_layers, n_heads, n_kv_heads, head_dim, element_size):
    """A state of D numbers per head instead of a D x D matrix."""
    kv = 2 * n_layers * n_kv_heads * head_dim * contexts * element_size
    return torch.stack([kv, torch.full_like(contexts, n_layers * n_heads * head_dim * element_size)], 1)


def accuracy_everywhere(logits, targets, mask):
    """Scores every position, queries or not."""
    return (logits.argmax(-1) == targets).to(logits.dtype).mean()


def accuracy_row_means(logits, targets, mask):
    """Averages each row's accuracy, then the rows: rows with fewer queries weigh more."""
    hit = (logits.argmax(-1) == targets) & mask
    per_row = hit.sum(1).to(logits.dtype) / mask.sum(1).clamp(min=1).to(logits.dtype)
    return per_row[mask.any(1)].mean()


def accuracy_probability(logits, targets, mask):
    """The mean probability of the answer instead of the share of exact answers."""
    p = logits.softmax(-1).gather(-1, targets[..., None])[..., 0]
    return p[mask].mean()


def accuracy_wrong_axis(logits, targets, mask):
    """argmax over the positions instead of the vocabulary."""
    return (logits.argmax(1)[:, None, :].expand_as(logits)[..., 0] == targets)[mask].to(logits.dtype).mean()


def accuracy_float64(logits, targets, mask):
    """Right value, but always float64."""
    return (logits.argmax(-1) == targets)[mask].double().mean()


def accuracy_uses_the_library(logits, targets, mask):
    from minilib.models.zoo import mqar_accuracy

    return torch.tensor(mqar_accuracy(logits, targets, mask), dtype=logits.dtype)


WRONG = [
    ("13.q1", ema_starts_at_x0, "case 1/6"),
    ("13.q1", ema_swapped_weights, "max abs error"),
    ("13.q1", ema_backwards, "max abs error"),
    ("13.q1", ema_debiased, "max abs error"),
    ("13.q1", ema_running_mean, "max abs error"),
    ("13.q2", bytes_keys_only, "case 1/4"),
    ("13.q2", bytes_query_heads, "case 2/4"),
    ("13.q2", bytes_state_grows, "max abs error"),
    ("13.q2", bytes_state_vector, "max abs error"),
    ("13.q3", accuracy_everywhere, "max abs error"),
    ("13.q3", accuracy_row_means, "case 1/5"),
    ("13.q3", accuracy_probability, "max abs error"),
    ("13.q3", accuracy_wrong_axis, "max abs error"),
    ("13.q3", accuracy_float64, "wrong dtype"),
    ("13.q3", accuracy_uses_the_library, "minilib.models.zoo"),
]
