"""Routers of a random-weight benchmark model brought to the balanced load of a trained one.

The Nemotron 3 family trains its routers' selection biases (``e_score_correction_bias``) without an
auxiliary loss: after each step every expert's bias moves a fixed amount towards equal load
(`backbone.moe.ExpertBiasBalancer`). Trained checkpoints therefore spread a layer's tokens about evenly
over its experts. Random router weights do not: on the benchmark's inputs one expert of 128 took up to
a sixth of a layer's rows and dozens got none, which makes the experts' matmuls a few large groups
instead of 128 medium ones, for ours and for transformers alike.

`balance_routers` runs the same rule on calibration inputs (a separate random draw of the benchmark's
inputs, not the timed ones) for a number of prefill passes, with a step scaled to each layer's spread of
routing scores that shrinks each pass, and leaves the biases there. Both sides of the benchmark then
load those weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from backbone.moe import TopKRouter


@dataclass
class RoutingReport:
    """Load of the experts on the calibration inputs: the busiest expert's rows over the mean rows per
    expert (1.0 is perfectly even), and the experts that got no rows, both averaged over the MoE layers;
    on the first pass (before any update) and on the last."""

    passes: int
    max_over_mean_before: float
    max_over_mean_after: float
    empty_before: float
    empty_after: float


def _loads(counts: Sequence[torch.Tensor | None]) -> tuple[float, float]:
    """(mean over layers of max / mean count, mean over layers of the experts with no rows)."""
    ratios, empty = [], []
    for count in counts:
        if count is None:
            continue
        ratios.append(float(count.max() / count.mean().clamp_min(1e-9)))
        empty.append(float((count == 0).sum()))
    if not ratios:
        return float("nan"), float("nan")
    return sum(ratios) / len(ratios), sum(empty) / len(empty)


@torch.no_grad()
def balance_routers(
    language_model: nn.Module,
    calibration: Sequence[torch.Tensor],
    passes: int = 30,
    first_step: float = 0.5,
    shrink: float = 0.85,
) -> RoutingReport:
    """Move every router's selection bias towards equal load on ``calibration`` (language-model input
    embeddings ``[1, L, d]``): per pass, one prefill of each input counts each expert's rows, then each
    bias moves by its layer's step, up if its expert got fewer rows than the layer's mean, down if more.
    A layer's first step is ``first_step`` times the spread (standard deviation) of its routing scores
    on the first pass; the steps shrink by ``shrink`` each pass."""
    if passes < 1:
        raise ValueError(f"passes must be at least 1, got {passes}")
    routers = [m for m in language_model.modules() if isinstance(m, TopKRouter)]
    if not routers:
        raise ValueError("the model has no MoE routers to balance")
    spread: dict[TopKRouter, torch.Tensor] = {}

    def count(router: TopKRouter, inputs: tuple, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        router.record_load(output[1], None)
        if router not in spread:
            scores = torch.sigmoid(inputs[0].float() @ router.weight.float().t())
            spread[router] = scores.std()

    hooks = [router.register_forward_hook(count) for router in routers]
    try:
        before = after = (float("nan"), float("nan"))
        for index in range(passes):
            for embeds in calibration:
                language_model(inputs_embeds=embeds, logits_to_keep=1)
            counts = [router.routed_tokens for router in routers]
            after = _loads(counts)
            before = after if index == 0 else before
            step = first_step * shrink**index
            for router, load in zip(routers, counts):
                if load is not None:
                    router.balance_bias(load, step * spread[router])
                router.routed_tokens = None
    finally:
        for hook in hooks:
            hook.remove()
        for router in routers:
            router.routed_tokens = None
    return RoutingReport(passes, before[0], after[0], before[1], after[1])
