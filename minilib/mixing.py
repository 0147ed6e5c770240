r"""The token-mixer interface: what every sequence-mixing layer implements, so one model can hold any of them.

A *token mixer* moves information between positions; the channel MLP then works on each position alone.
Softmax attention is one mixer; linear attention, state space models, convolutions, pooling and Fourier
mixers (chapters 04-07) are others. Each is a :class:`TokenMixer`:

- ``forward(x, *, cache=None) -> y`` with ``x, y (B, T, d_model)``;
- a *causal* mixer (``causal = True``) makes $y_t$ depend on $x_{\le t}$ only, so it can model language;
- ``new_cache()`` returns an empty per-layer decoding state (a :class:`~minilib.attention.KVCache` for
  attention, a fixed-size state for a recurrent form), or ``None`` when the mixer has no incremental form;
- ``forward(x_new, cache=c)`` takes only the positions after those already in ``c``, updates ``c`` in
  place and returns the outputs of the new positions: feeding a sequence in pieces equals one full forward.
  A cache tells how many positions it holds in its ``length`` attribute (a model reads the position of
  the next token from it). A mixer whose ``new_cache()`` is ``None`` is decoded by recomputing the whole prefix.

A model names its mixer in its config (:class:`minilib.models.TransformerConfig`): a name registered here with :func:`register_mixer` (the module
that defines the mixer registers it when imported; ``"attention"`` is registered by
:mod:`minilib.attention`), or a factory. Either way the mixer is built as ``factory(config, layer)``, where
``config`` is the model's config (it has at least ``d_model``, ``n_heads``, ``n_kv_heads``, ``pos``,
``max_len`` and ``mixer_kwargs``) and ``layer`` the index of the block, so a factory reads the fields it needs.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from minilib.registry import Registry

__all__ = ["TokenMixer", "MixerFactory", "register_mixer", "mixer_factory", "registered_mixers"]

MixerFactory = Callable[[object, int], "TokenMixer"]

_REGISTRY = Registry("token mixer", "mixer")


class TokenMixer(nn.Module):
    r"""Base class of every token mixer: ``forward(x (B, T, d_model), *, cache=None) -> (B, T, d_model)``.

    Subclasses set ``causal`` and, where they have an incremental form, override :meth:`new_cache`. A mixer whose
    paper prescribes the initial scale of its layers sets ``owns_init = True``: a model's generic initialisation
    (:class:`~minilib.models.TransformerLM`'s $\mathcal N(0, 0.02^2)$ or ``"xavier"``) then leaves its parameters as
    its constructor drew them.
    """

    causal: bool = True
    owns_init: bool = False

    def new_cache(self):
        """An empty decoding state for one layer, or ``None`` (no incremental form: decode by recomputing)."""
        return None


def register_mixer(name: str, factory: MixerFactory) -> MixerFactory:
    """Make ``config.mixer = name`` build ``factory(config, layer)``; returns ``factory``. Names are unique."""
    return _REGISTRY.register(name, factory)


def mixer_factory(mixer: str | MixerFactory) -> MixerFactory:
    """The factory a config's ``mixer`` field stands for: a registered name, or a factory given directly."""
    return _REGISTRY.factory(mixer)


def registered_mixers() -> list[str]:
    """Names usable as ``config.mixer``, in registration order."""
    return _REGISTRY.names()
