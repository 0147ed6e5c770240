r"""Relaxed recursion: a shared block looped over depth, each loop with its own low-rank (LoRA) correction."""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call

from minilib._checks import check_nonnegative_int, check_positive_int, require_tensor

__all__ = ["RelaxedRecursive"]


class RelaxedRecursive(nn.Module):
    r"""``n_layers`` layers that all use the weights of ``shared_blocks`` (cycled), plus a depth-wise LoRA per layer.

    Layer $\ell$ runs block $\ell \bmod K$ of the $K$ shared blocks with every linear weight replaced by

    $$ W^{(\ell)} = W + B_\ell A_\ell,\qquad A_\ell \in \mathbb R^{r \times d_\text{in}},\ B_\ell \in \mathbb R^{d_\text{out} \times r} $$

    ``lora_rank`` $r = 0$ is strict sharing (no extra parameter); $r = \min(d_\text{in}, d_\text{out})$ can express
    untied layers. $B_\ell$ starts at zero, so a new model starts as the strictly shared one.
    :meth:`from_layers` initialises from a trained stack as the paper does: each shared weight the mean of the layers
    it replaces, each LoRA the rank-$r$ truncated SVD of that layer's residual $W_\ell - W$.  Only linear weights are relaxed:
    other parameters (norm gains) stay the mean.
    ``x (B, T, d_model) -> (B, T, d_model)``. See :cite:`bae2025relaxed`.
    """

    def __init__(self, shared_blocks, n_layers: int, lora_rank: int):
        super().__init__()
        if isinstance(shared_blocks, nn.Module) and not isinstance(shared_blocks, nn.ModuleList):
            shared_blocks = [shared_blocks]
        if not isinstance(shared_blocks, (list, tuple, nn.ModuleList)) or not shared_blocks \
                or not all(isinstance(b, nn.Module) for b in shared_blocks):
            raise TypeError(f"shared_blocks must be a module or a non-empty list of modules, got {type(shared_blocks).__name__}")
        self.shared = nn.ModuleList(shared_blocks)
        self.n_layers = check_positive_int("n_layers", n_layers)
        if n_layers % len(self.shared):
            raise ValueError(f"n_layers={n_layers} must be a multiple of the number of shared blocks ({len(self.shared)})")
        self.lora_rank = check_nonnegative_int("lora_rank", lora_rank)
        self.lora_a, self.lora_b = nn.ParameterList(), nn.ParameterList()
        self._targets = []  # per layer: the names of the shared block's linear weights, in lora order
        for layer in range(n_layers if lora_rank else 0):
            block = self.shared[layer % len(self.shared)]
            for name, module in block.named_modules():
                if isinstance(module, nn.Linear):
                    d_out, d_in = module.weight.shape
                    like = {"dtype": module.weight.dtype, "device": module.weight.device}
                    self.lora_a.append(nn.Parameter(torch.randn(lora_rank, d_in, **like) / d_in ** 0.5))
                    self.lora_b.append(nn.Parameter(torch.zeros(d_out, lora_rank, **like)))
                    self._targets.append((layer, f"{name}.weight" if name else "weight"))

    @classmethod
    def from_layers(cls, layers, n_shared: int, lora_rank: int) -> "RelaxedRecursive":
        """Tie a trained stack of ``len(layers)`` identical-architecture blocks into ``n_shared`` looped blocks (cycled:
        layer ``l`` maps to block ``l % n_shared``), initialised from the layers' mean and the SVD of their residuals."""
        if not isinstance(layers, (list, tuple, nn.ModuleList)) or not layers:
            raise TypeError(f"layers must be a non-empty list of blocks, got {type(layers).__name__}")
        check_positive_int("n_shared", n_shared)
        if len(layers) % n_shared:
            raise ValueError(f"the number of layers ({len(layers)}) must be a multiple of n_shared={n_shared}")
        shared = []
        for j in range(n_shared):
            group = [layers[l] for l in range(j, len(layers), n_shared)]
            block = copy.deepcopy(group[0])
            states = [g.state_dict() for g in group]
            block.load_state_dict({key: torch.stack([s[key].double() for s in states]).mean(0).to(states[0][key].dtype)
                                   for key in states[0]})
            shared.append(block)
        model = cls(shared, len(layers), lora_rank)
        with torch.no_grad():
            for a, b, (layer, name) in zip(model.lora_a, model.lora_b, model._targets):
                residual = layers[layer].get_parameter(name) - model.shared[layer % n_shared].get_parameter(name)
                u, s, vh = torch.linalg.svd(residual.double(), full_matrices=False)
                r = min(lora_rank, s.numel())
                a.zero_(), b.zero_()
                a[:r] = (s[:r, None].sqrt() * vh[:r]).to(a.dtype)
                b[:, :r] = (u[:, :r] * s[:r].sqrt()).to(b.dtype)
        return model

    def layer_weights(self, layer: int) -> dict[str, torch.Tensor]:
        """The relaxed weights $W + B_\\ell A_\\ell$ of ``layer``, by parameter name of its shared block."""
        block = self.shared[layer % len(self.shared)]
        return {name: block.get_parameter(name) + b @ a
                for a, b, (lay, name) in zip(self.lora_a, self.lora_b, self._targets) if lay == layer}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_tensor("x", x, ndim=3, floating=True)
        for layer in range(self.n_layers):
            block = self.shared[layer % len(self.shared)]
            x = functional_call(block, self.layer_weights(layer), (x,)) if self.lora_rank else block(x)
        return x
