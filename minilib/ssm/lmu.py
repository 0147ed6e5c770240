r"""The Legendre Memory Unit as a token mixer :cite:`voelker2019lmu`, trained in its convolution form (LMUFormer
:cite:`liu2024lmuformer`) and decoded by its recurrence.

Each of ``units`` scalar signals $u_t = W_u x_t$ feeds its own Legendre memory of ``order`` coefficients,
$m_t = \bar A m_{t-1} + \bar B u_t$ (:func:`~minilib.ssm.lmu_matrices`, zero-order hold, a window of ``theta``
tokens), and the output mixes the memory with the current token, $y_t = \mathrm{GELU}(W_m m_t + W_x x_t)$.
$\bar A, \bar B$ are fixed: only the projections learn, and the state is ``units * order`` numbers whatever the length.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minilib._checks import check_number, check_positive_int
from minilib.mixing import TokenMixer, register_mixer
from minilib.ssm.lti import lmu_conv, lmu_recurrent
from minilib.ssm.mixers import SSMCache, _check_ssm_call

__all__ = ["LMUMixer"]


class LMUMixer(TokenMixer):
    r"""``(B, T, d_model) -> (B, T, d_model)``: Legendre memories of a ``theta``-token window over ``units`` projections.

    Training (no cache) runs :func:`~minilib.ssm.lmu_conv` (FFT convolution); with a cache from ``new_cache()``
    each call continues :func:`~minilib.ssm.lmu_recurrent` from the stored ``(B, units, order)`` state.
    """

    causal = True

    def __init__(self, d_model: int, *, units: int = 4, order: int = 8, theta: float = 64.0):
        super().__init__()
        for name, value in (("d_model", d_model), ("units", units), ("order", order)):
            check_positive_int(name, value)
        self.d_model, self.units, self.order = d_model, units, order
        self.theta = check_number("theta", theta, positive=True)
        self.encode = nn.Linear(d_model, units)
        self.memory_out = nn.Linear(units * order, d_model, bias=False)
        self.token_out = nn.Linear(d_model, d_model)

    def new_cache(self) -> SSMCache:
        return SSMCache()

    def forward(self, x: torch.Tensor, *, cache: SSMCache | None = None) -> torch.Tensor:
        _check_ssm_call(x, self.d_model, cache)
        u = self.encode(x).transpose(1, 2)  # (B, units, T)
        kw = dict(order=self.order, theta=self.theta, dt=1.0)
        if cache is None:
            m = lmu_conv(u, **kw)
        else:
            m, cache.state = lmu_recurrent(u, state=cache.state, return_state=True, **kw)
            cache.length += x.shape[1]
        m = m.transpose(1, 2).flatten(2)  # (B, T, units * order)
        return F.gelu(self.memory_out(m) + self.token_out(x))


register_mixer("lmu", lambda config, layer: LMUMixer(config.d_model, **config.mixer_kwargs))
