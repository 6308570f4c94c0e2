"""Error measures the kernel tests share."""

from __future__ import annotations

import torch


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference, relative to the largest magnitude of ``b`` (in fp32)."""
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def max_ulps(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest difference in units of the last place of ``ref``'s dtype."""
    magnitude = ref.float().abs().clamp_min(torch.finfo(ref.dtype).tiny)
    ulp = torch.finfo(ref.dtype).eps * torch.exp2(torch.floor(torch.log2(magnitude)))
    return ((ours.float() - ref.float()).abs() / ulp).max().item()
