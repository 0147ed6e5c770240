r"""Mixtures of experts and the other feed-forward variants of chapter 09.

- :mod:`~minilib.moe.routing`: :func:`top_k_routing`, :func:`expert_capacity`, :func:`capacity_keep`,
  :func:`expert_choice_routing`, :func:`load_balancing_loss`, :func:`router_z_loss`;
- :mod:`~minilib.moe.layer`: :class:`MoE` (the ``"moe"`` FFN), :class:`Routing`, :func:`ffn_flops`.

Importing the package registers its FFNs with :func:`minilib.feedforward.register_ffn`.
"""
from minilib.moe.layer import MoE, Routing, ffn_flops
from minilib.moe.routing import (capacity_keep, expert_capacity, expert_choice_routing, load_balancing_loss,
                                 router_z_loss, top_k_routing)

__all__ = ["MoE", "Routing", "ffn_flops", "capacity_keep", "expert_capacity", "expert_choice_routing",
           "load_balancing_loss", "router_z_loss", "top_k_routing"]
