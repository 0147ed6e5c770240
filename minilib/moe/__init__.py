r"""Mixtures of experts and the other feed-forward variants of chapter 09.

- :mod:`~minilib.moe.routing`: :func:`top_k_routing`, :func:`expert_capacity`, :func:`capacity_keep`,
  :func:`expert_choice_routing`, :func:`load_balancing_loss`, :func:`router_z_loss`;
- :mod:`~minilib.moe.layer`: :class:`MoE` (the ``"moe"`` FFN), :class:`Routing`, :func:`ffn_flops`;
- :mod:`~minilib.moe.plusplus`: :class:`MoEPlusPlus` (the ``"moe++"`` FFN), its zero-computation experts and
  gating residuals (:func:`link_gating_residuals`);
- :mod:`~minilib.moe.upcycling`: :func:`upcycle` (dense models' weights into an MoE, attention too with BAM);
- :mod:`~minilib.moe.attention_experts`: :class:`MixtureOfAttention` (the ``"moa"`` token mixer) and
  its decoding state :class:`ExpertCaches`;
- :mod:`~minilib.moe.parameter_tokens`: :func:`pattention`, :class:`Pattention` (the ``"pattention"`` FFN);
- :mod:`~minilib.moe.hashing`: :class:`HashMemoryLayer` (the ``"hash_memory"`` FFN);
- :mod:`~minilib.moe.structured`: :class:`LowRankLinear`, :class:`BlockDiagonalLinear`, :class:`SelfGuided`;
- :mod:`~minilib.moe.probes`: :func:`activation_sparsity`, :func:`topk_relu`;
- :mod:`~minilib.moe.hidden_dims`: :class:`MoHD` (the ``"mohd"`` FFN);
- :mod:`~minilib.moe.wide`: :class:`ActivatorBlock`, :class:`ActivatorClassifier`, :class:`WideNet`,
  :func:`vit_block_flops` (digits ViT variants).

Importing the package registers its FFNs with :func:`minilib.feedforward.register_ffn` and ``"moa"`` with
:func:`minilib.mixing.register_mixer`.
"""
from minilib.moe.attention_experts import ExpertCaches, MixtureOfAttention
from minilib.moe.hashing import HashMemoryLayer
from minilib.moe.hidden_dims import MoHD
from minilib.moe.layer import MoE, Routing, ffn_flops
from minilib.moe.parameter_tokens import Pattention, pattention
from minilib.moe.plusplus import ConstantExpert, CopyExpert, MoEPlusPlus, ZeroExpert, link_gating_residuals
from minilib.moe.probes import activation_sparsity, topk_relu
from minilib.moe.routing import (capacity_keep, expert_capacity, expert_choice_routing, load_balancing_loss,
                                 router_z_loss, top_k_routing)
from minilib.moe.structured import BlockDiagonalLinear, LowRankLinear, SelfGuided
from minilib.moe.upcycling import upcycle
from minilib.moe.wide import ActivatorBlock, ActivatorClassifier, WideNet, vit_block_flops

__all__ = ["MoE", "Routing", "ffn_flops", "capacity_keep", "expert_capacity", "expert_choice_routing",
           "load_balancing_loss", "router_z_loss", "top_k_routing", "MoEPlusPlus", "ZeroExpert", "CopyExpert",
           "ConstantExpert", "link_gating_residuals", "upcycle", "MixtureOfAttention", "ExpertCaches", "Pattention", "pattention", "HashMemoryLayer", "LowRankLinear",
           "BlockDiagonalLinear", "SelfGuided", "activation_sparsity", "topk_relu", "MoHD", "ActivatorBlock",
           "ActivatorClassifier", "WideNet", "vit_block_flops"]
