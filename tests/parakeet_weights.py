"""Random FastConformer weights for the tests: large enough that attention and both position biases
visibly shape the output, and BatchNorm statistics away from identity, so a wrong formula cannot pass."""

from __future__ import annotations

import torch


@torch.no_grad()
def randomise(module: torch.nn.Module, seed: int | None = None) -> None:
    """Fill ``module``'s linears, convolutions, BatchNorms and ``bias_u``/``bias_v`` in place (from torch's
    global generator, or from one seeded with ``seed``)."""
    g = None if seed is None else torch.Generator().manual_seed(seed)

    def normal(t: torch.Tensor, mean: float, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=g) * std + mean)

    for sub in module.modules():
        if isinstance(sub, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)):
            normal(sub.weight, 0.0, sub.weight[0].numel() ** -0.5)
            if sub.bias is not None:
                normal(sub.bias, 0.0, 0.1)
        if isinstance(sub, torch.nn.BatchNorm1d):
            normal(sub.running_mean, 0.0, 1.0)
            sub.running_var.copy_(torch.rand(sub.running_var.shape, generator=g) * 1.5 + 0.5)
            normal(sub.weight, 1.0, 0.3)
            normal(sub.bias, 0.0, 1.0)
        if hasattr(sub, "bias_u"):
            normal(sub.bias_u, 0.0, 1.0)
            normal(sub.bias_v, 0.0, 1.0)
