"""minilib: the library of The Transformer Zoo.

`import minilib` loads the core families (`attention`, `norms`, `positional`), the composed
`models` and the `data` generators, so `minilib.attention.sdpa` works after it; other families
(`flash`, `grade`, ...) are imported by name.
"""
from minilib import attention, data, models, norms, positional  # noqa: F401
