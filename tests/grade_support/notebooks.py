"""Student notebooks that misbehave, built with nbformat for the CLI robustness tests."""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

SETUP = "import torch\nfrom minilib import grade"

CORRECT_RMS_NORM = '''
def rms_norm(x, weight, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight
grade.check("01.q6", rms_norm)
'''

CORRECT_MERGE_HEADS = '''
def merge_heads(x):
    B, H, T, Dh = x.shape
    return x.transpose(1, 2).reshape(B, T, H * Dh)
'''

# Each kind of failure in its own question, one correct answer, and cells that break.
FAILURES = [
    SETUP,
    "def stable_softmax(x, dim=-1):\n    return x.exp() / (x.exp().sum(dim, keepdim=True)",  # syntax error
    "raise RuntimeError('a cell that raises')",
    "from torch.nn.functional import scaled_dot_product_attention as attend\n"
    "def causal_attention(q, k, v):\n    return attend(q, k, v, is_causal=True)",  # forbidden, aliased
    "def split_heads(x, n_heads):\n    while True:\n        pass",  # never returns
    "def merge_heads(x):\n    return x.transpose(1, 2)",  # wrong shape
    "def apply_rope(x, positions, base=10000.0):\n    return x * float('nan')",  # NaN
    CORRECT_RMS_NORM,
]

# Everything a student might patch to make checks pass, then wrong answers.
TAMPERING = [
    SETUP,
    '''
import numpy, torch.testing, minilib.grade, minilib.grade.compare
def always_pass(*args, **kwargs):
    return True
torch.allclose = numpy.allclose = always_pass
torch.testing.assert_close = lambda *args, **kwargs: None
minilib.grade.check = grade.check = always_pass
minilib.grade.compare.verdict = always_pass
''',
    "def stable_softmax(x, dim=-1):\n    e = x.exp()\n    return e / e.sum(dim, keepdim=True)\n"
    "grade.check('01.q1', stable_softmax)",
    "def causal_attention(q, k, v):\n"
    "    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)",
    "def split_heads(x, n_heads):\n    B, T, D = x.shape\n    return x.reshape(B, n_heads, T, D // n_heads)",
    CORRECT_MERGE_HEADS,
    "while True:\n    pass",  # a cell that never ends: interrupted, the notebook goes on
    # Patches the checks inside the grader's child process too, then ends that process.
    "def apply_rope(x, positions, base=10000.0):\n    import numpy, os\n"
    "    numpy.allclose = torch.allclose = always_pass\n    os._exit(0)",
    "def rms_norm(x, weight, eps=1e-6):\n    return x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps) * weight",
]

# The kernel dies half-way: nothing can be extracted, every question scores 0.
KERNEL_DIES = [SETUP, CORRECT_RMS_NORM, "import os\nos._exit(1)"]


def write(path: Path, sources: list[str]) -> Path:
    nb = new_notebook(cells=[new_code_cell(s.strip("\n")) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path
