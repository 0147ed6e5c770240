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

# Bypasses of the off-limits rules as a student notebook writes them (issue 10), one per question,
# and an answer that kills the grader's fork server; merge_heads is correct and must still pass.
HOSTILE = [
    SETUP + "\nimport os, signal, sys, threading\nimport torch.nn.functional as F",
    "def stable_softmax(x, dim=-1):\n    sys.setprofile(None)\n    return F.softmin(-x, dim)",
    "def causal_attention(q, k, v):\n    from minilib.grade.questions import get\n"
    "    return get('01.q2').reference(q.double(), k.double(), v.double()).to(q.dtype)",
    "def split_heads(x, n_heads):\n    os.kill(os.getppid(), signal.SIGKILL)",
    CORRECT_MERGE_HEADS,
    "import importlib\ndef apply_rope(x, positions, base=10000.0):\n"
    "    return getattr(importlib.import_module('minilib.posi' + 'tional'), 'ro' + 'pe')(x, positions, base=base)",
    "def rms_norm(x, weight, eps=1e-6):\n    box = []\n"
    "    t = threading.Thread(target=lambda: box.append(getattr(F, 'rms_' + 'norm')(x, x.shape[-1:], weight, eps)))\n"
    "    t.start(); t.join()\n    return box[0]",
]

# A top-level cell that swallows the interrupt, one that prints 40 MB and one that writes past
# Jupyter to the process's stdout (where the grader's JSON report goes); the answers around them
# must still be graded.
HANGS = [
    SETUP,
    CORRECT_MERGE_HEADS,
    "import time\ndone = False\nwhile not done:\n"
    "    try:\n        time.sleep(1)\n    except BaseException:\n        pass",
    "for _ in range(40):\n    print('x' * 1_000_000)",  # more output than the grader keeps
    "import os\nos.write(1, b'not the report\\n')",
    CORRECT_RMS_NORM,
]

# Correct answers that Jupyter runs and the grader must run too: a helper module next to the
# notebook, and torch operator objects (torch.ops.aten.rsqrt), which pickle cannot carry by value.
HELPER_MODULE = "import torch\n\ndef split(x, n_heads):\n    B, T, D = x.shape\n" \
    "    return x.view(B, T, n_heads, D // n_heads).transpose(1, 2)\n"
WITH_HELPERS = [
    SETUP,
    "from helpers import split\ndef split_heads(x, n_heads):\n    return split(x, n_heads)",
    "aten = torch.ops.aten\ndef rms_norm(x, weight, eps=1e-6):\n"
    "    return x * torch.ops.aten.rsqrt(aten.mean(x.pow(2), [-1], True) + eps) * weight",
]

# The kernel dies half-way: nothing can be extracted, every question scores 0.
KERNEL_DIES = [SETUP, CORRECT_RMS_NORM, "import os\nos._exit(1)"]

# The notebook kills its parent process (the grader's, were the kernel its child), then works on
# for longer than the grader takes to look whether the kernel is alive.
KILLS_PARENT = [SETUP, "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", "import time\ntime.sleep(3)",
                CORRECT_RMS_NORM]


def write(path: Path, sources: list[str]) -> Path:
    nb = new_notebook(cells=[new_code_cell(s.strip("\n")) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path
