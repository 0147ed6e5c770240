"""What the mixer modules share: the input check and the registration of a mixer that reads ``causal`` from the config."""
from __future__ import annotations

from typing import Callable

import torch

from minilib._checks import require_tensor
from minilib.mixing import TokenMixer, register_mixer


def check_x(x: torch.Tensor) -> None:
    """``x`` must be a floating ``(B, L, C)`` tensor."""
    require_tensor("x", x, ndim=3, floating=True)


def register_causal(name: str, build: Callable[[object, bool, dict], TokenMixer]) -> None:
    """Register ``name`` as ``build(config, causal, kwargs)``: ``causal`` is ``config.mixer_kwargs["causal"]``
    (default ``True``, since a language model needs it), ``kwargs`` the other mixer keywords."""
    def factory(config, layer: int) -> TokenMixer:
        kwargs = dict(config.mixer_kwargs)
        return build(config, kwargs.pop("causal", True), kwargs)
    register_mixer(name, factory)
