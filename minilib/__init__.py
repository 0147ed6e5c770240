"""minilib: the library of The Transformer Zoo.

`import minilib` loads the core (`attention`, `feedforward`, `mixing`, `norms`, `positional`), the
composed `models` and the `data` generators, so `minilib.attention.sdpa` works after it; other
families (`flash`, `signal_propagation`, `grade`, ...) are imported by name.
"""
from minilib import attention, data, feedforward, mixing, models, norms, positional  # noqa: F401
# the families that register token mixers by name (minilib.mixing) when imported
from minilib import icl, linear_attention, mixers, sparse, ssm  # noqa: F401
# the families that register feed-forward networks by name (minilib.feedforward)
from minilib import looped, moe  # noqa: F401
