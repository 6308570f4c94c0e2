"""Mixture-of-experts layer of NemotronH (`E` layers).

Router (fp32): s = sigmoid(x W^T); experts are chosen on s + e_score_correction_bias, first keeping the
`topk_group` best of `n_group` groups (a group scores the sum of its two best experts), then the top
`num_experts_per_tok`; the weights are the unbiased s of the chosen experts, divided by their sum when
`norm_topk_prob`, times `routed_scaling_factor`.

Output: fc2_latent(sum_k w_k expert_k(fc1_latent(x))) + shared_expert(x); the latent projections are
identities unless `moe_latent_size` is set. Experts are squared-ReLU MLPs held stacked as
`up_proj [E, I, in]` and `down_proj [E, in, I]`; tokens are sorted by expert and each expert runs one
matmul pair on its contiguous segment (`torch._grouped_mm` does all segments at once where usable).
On CUDA, the router selects on a Triton kernel (`router_triton`). A few tokens (decoding) skip the
sort: Triton kernels stream each chosen expert's matrices (`backbone.kernels.moe_triton`). More tokens
are laid out by expert by two Triton kernels (`moe_dispatch_triton`), run the grouped matmuls (on
Hopper, quack's kernels where that package is installed: `backbone.kernels.moe_quack`), and one Triton
kernel sums each token's weighted rows (`moe_combine_triton`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import HybridConfig
from .kernels import (
    dispatch_rows,
    experts_gemv,
    experts_gemv_usable,
    fast_paths_enabled,
    moe_quack,
    topk_combine,
)
from .mlp import ReLU2MLP, relu2

EXPERT_BACKENDS = ("auto", "grouped_mm", "segments", "loop")


class TopKRouter(nn.Module):
    """Sigmoid router with a selection-only correction bias and group-limited top-k."""

    def __init__(self, config: HybridConfig) -> None:
        super().__init__()
        self.num_experts = config.n_routed_experts
        self.top_k = config.num_experts_per_tok
        self.n_group = config.n_group
        self.topk_group = config.topk_group
        self.norm_topk_prob = config.norm_topk_prob
        self.scaling = config.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(self.num_experts, config.hidden_size))
        nn.init.normal_(self.weight, std=config.initializer_range)
        self.register_buffer("e_score_correction_bias", torch.zeros(self.num_experts, dtype=torch.float32))
        # Tokens routed to each expert while training with `count_load` on (see `ExpertBiasBalancer`).
        self.count_load = False
        self.routed_tokens: torch.Tensor | None = None

    def record_load(self, indices: torch.Tensor, token_mask: torch.Tensor | None) -> None:
        """Add this forward's choices (of real tokens only) to `routed_tokens`; no host synchronisation."""
        flat = indices.reshape(-1)
        if token_mask is None:
            ones = torch.ones(flat.shape, dtype=torch.float32, device=flat.device)
        else:  # each token's k choices count as its mask says
            ones = token_mask.reshape(-1, 1).float().expand(-1, indices.shape[-1]).reshape(-1)
        counts = torch.zeros(self.num_experts, dtype=torch.float32, device=flat.device)
        counts.scatter_add_(0, flat, ones)
        self.routed_tokens = counts if self.routed_tokens is None else self.routed_tokens + counts

    @torch.no_grad()
    def balance_bias(self, counts: torch.Tensor, step: float | torch.Tensor) -> None:
        """The family's load-balancing rule: ``b_e += step * sign(mean - count_e)`` for ``counts [E]``
        rows routed to each expert (up for experts below the mean load, down for those above)."""
        offset = torch.sign(counts.mean() - counts) * step
        self.e_score_correction_bias.add_(offset.to(self.e_score_correction_bias))

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - torch's signature
        # The correction bias stays fp32 whatever dtype the module is cast to (its values are small
        # offsets between close sigmoid scores); only its device follows.
        bias = self.e_score_correction_bias
        super()._apply(fn, recurse)
        moved = self.e_score_correction_bias
        if moved.dtype != torch.float32:
            if bias.device.type == "meta" or moved.device.type == "meta":
                self.e_score_correction_bias = moved.float()
            else:
                self.e_score_correction_bias = bias.to(device=moved.device, dtype=torch.float32)
        return self

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden [T, d] -> (weights [T, k] fp32, expert indices [T, k] int64).

        Without group-limited selection, the fast paths select on one Triton kernel (two launches in
        all, against about ten of the reference's).
        """
        if fast_paths_enabled(hidden, self.weight):
            from .kernels.router_triton import MAX_ROUTER_TOKENS, router_triton, router_usable

            if router_usable(hidden, self.top_k, self.n_group, self.topk_group):
                many = hidden.shape[0] > MAX_ROUTER_TOKENS
                return router_triton(
                    hidden,
                    self.weight,
                    self.e_score_correction_bias,
                    self.top_k,
                    self.norm_topk_prob,
                    self.scaling,
                    logits=router_logits(hidden, self.weight).contiguous() if many else None,
                )
        scores = router_logits(hidden, self.weight).sigmoid()
        choice = scores + self.e_score_correction_bias.float()
        if self.topk_group < self.n_group:
            tokens = choice.shape[0]
            per_group = choice.view(tokens, self.n_group, -1)
            group_scores = per_group.topk(2, dim=-1).values.sum(-1)
            keep = torch.zeros_like(group_scores, dtype=torch.bool)
            keep.scatter_(1, group_scores.topk(self.topk_group, dim=-1).indices, True)
            choice = per_group.masked_fill(~keep[..., None], float("-inf")).view(tokens, -1)
        indices = choice.topk(self.top_k, dim=-1).indices
        weights = scores.gather(1, indices)
        if self.norm_topk_prob:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return weights * self.scaling, indices


_MM_HAS_OUT_DTYPE = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 8)


def router_logits(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """fp32 router logits ``hidden @ weight.T`` for hidden [T, d], weight [E, d].

    The reference widens both to fp32 and multiplies on CUDA cores. When both are 16-bit (of one
    dtype) on the fast path, one tensor-core matmul with fp32 output takes the same products (each
    product of two 16-bit values is exact in fp32) and sums them in the tensor cores' fp32, which on
    Hopper is not quite IEEE: 3e-6 relative difference from the fp32 matmul on an H200, thirty times
    below a bf16 unit. It was 8.7 times faster there ([16144, 2688] x 128 experts: 0.042 against 0.365
    ms), about 7 ms of a 16,144-token prefill at full depth.
    """
    if (
        _MM_HAS_OUT_DTYPE
        and hidden.dim() == 2
        and hidden.dtype == weight.dtype
        and hidden.dtype in (torch.bfloat16, torch.float16)
        and fast_paths_enabled(hidden, weight)
    ):
        return torch.mm(hidden, weight.t(), out_dtype=torch.float32)
    return F.linear(hidden.float(), weight.float())


def grouped_mm_usable(x: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> bool:
    """Whether `torch._grouped_mm` has a kernel for these operands (CUDA sm80+, bf16, aligned widths)."""
    if not hasattr(torch, "_grouped_mm") or x.device.type != "cuda" or x.dtype != torch.bfloat16:
        return False
    if torch.cuda.get_device_capability(x.device) < (8, 0):
        return False
    return all(size % 8 == 0 for size in (up.shape[1], up.shape[2], down.shape[1]))


_COMBINE_ROWS = 32768


def experts_grouped(
    x: torch.Tensor,
    indices: torch.Tensor,
    weights: torch.Tensor,
    up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    use_grouped_mm: bool = False,
    addend: torch.Tensor | None = None,
) -> torch.Tensor:
    """Routed experts over tokens sorted by expert: one matmul pair per expert segment (or one grouped call).

    x [T, in]; indices / weights [T, k]; up_proj [E, I, in]; down_proj [E, in, I]. Returns [T, in] in x's
    dtype, accumulated in fp32, plus ``addend`` [T, in] where given (the shared expert's output). With grouped matmuls on the
    fast paths, Triton kernels lay the rows out by expert and combine them (`moe_dispatch_triton`,
    `moe_combine_triton`, which also adds the addend): four launches around the two matmuls instead of
    about twenty.
    """
    top_k = indices.shape[1]
    num_experts = up_proj.shape[0]
    if use_grouped_mm and fast_paths_enabled(x, up_proj, down_proj):
        routed, position, bounds = dispatch_rows(x, indices, num_experts)
        rows = grouped_expert_matmuls(routed, bounds, up_proj, down_proj)
        return topk_combine(rows, position, weights, addend)
    flat = indices.reshape(-1)
    order = torch.argsort(flat, stable=True)
    token_of = order // top_k
    # scatter_add_ rather than bincount: on CUDA bincount reads the largest index back to the host
    counts = torch.zeros(num_experts, dtype=torch.long, device=flat.device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    routed = x[token_of]
    if use_grouped_mm:
        bounds = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(torch.int32)
        out = grouped_expert_matmuls(routed, bounds, up_proj, down_proj)
    else:
        pieces, start = [], 0
        for expert, stop in enumerate(counts.cumsum(0).tolist()):  # one host sync per layer
            if stop > start:
                segment = routed[start:stop]
                pieces.append(F.linear(relu2(F.linear(segment, up_proj[expert])), down_proj[expert]))
            start = stop
        out = torch.cat(pieces, dim=0)
    combined = combine_expert_rows(out, order, weights)
    return combined + addend if addend is not None else combined


def grouped_expert_matmuls(
    routed: torch.Tensor, bounds: torch.Tensor, up_proj: torch.Tensor, down_proj: torch.Tensor
) -> torch.Tensor:
    """``down_e(relu(up_e(rows))^2)`` over each expert's segment ``routed[bounds[e]:bounds[e + 1]]``
    (bounds [E + 1] int32): quack's GEMMs where `moe_quack.usable` and `moe_quack.worthwhile`, else
    `torch._grouped_mm`."""
    worthwhile = moe_quack.worthwhile(routed.shape[0], up_proj.shape[0])
    if worthwhile and moe_quack.usable(routed, up_proj, down_proj):
        out = moe_quack.experts(routed, bounds, up_proj, down_proj)
        if out is not None:
            return out
    offsets = bounds[1:]
    hidden = relu2(torch._grouped_mm(routed, up_proj.transpose(1, 2), offs=offsets))
    return torch._grouped_mm(hidden, down_proj.transpose(1, 2), offs=offsets)


def combine_expert_rows(out: torch.Tensor, order: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_j weights[t, j] * (row of token t's choice j) for every token, in out's dtype, summed in fp32.

    out [T * k, d]: the expert outputs in expert order; order [T * k]: the flat (token * k + choice)
    index of each row. One Triton kernel where the fast paths are on; otherwise scaled rows are
    `index_add_`ed into an fp32 buffer a slice at a time (a whole [T * k, d] fp32 copy was the peak of
    long prefills). No host synchronisation either way.
    """
    if fast_paths_enabled(out, weights):
        from .kernels.moe_combine_triton import positions_of

        return topk_combine(out, positions_of(order), weights)
    tokens, top_k = weights.shape
    token_of = order // top_k
    scale = weights.reshape(-1)[order, None].float()
    combined = torch.zeros(tokens, out.shape[-1], dtype=torch.float32, device=out.device)
    for start in range(0, out.shape[0], _COMBINE_ROWS):
        rows = slice(start, start + _COMBINE_ROWS)
        combined.index_add_(0, token_of[rows], out[rows].float() * scale[rows])
    return combined.to(out.dtype)


def experts_loop(
    x: torch.Tensor,
    indices: torch.Tensor,
    weights: torch.Tensor,
    up_proj: torch.Tensor,
    down_proj: torch.Tensor,
) -> torch.Tensor:
    """Readable reference: every expert in turn over the tokens that chose it. Same contract as above."""
    combined = torch.zeros(x.shape[0], x.shape[-1], dtype=torch.float32, device=x.device)
    for expert in range(up_proj.shape[0]):
        token, slot = torch.where(indices == expert)
        if token.numel() == 0:
            continue
        y = F.linear(relu2(F.linear(x[token], up_proj[expert])), down_proj[expert])
        combined.index_add_(0, token, y.float() * weights[token, slot, None].float())
    return combined.to(x.dtype)


class RoutedExperts(nn.Module):
    """The stacked expert weights and the choice of how to run them (`backend`, see EXPERT_BACKENDS)."""

    def __init__(self, config: HybridConfig) -> None:
        super().__init__()
        width, inner = config.expert_input_size, config.moe_intermediate_size
        self.up_proj = nn.Parameter(torch.empty(config.n_routed_experts, inner, width))
        self.down_proj = nn.Parameter(torch.empty(config.n_routed_experts, width, inner))
        nn.init.normal_(self.up_proj, std=config.initializer_range)
        nn.init.normal_(self.down_proj, std=config.initializer_range)
        self.backend = "auto"

    def forward(
        self,
        x: torch.Tensor,
        indices: torch.Tensor,
        weights: torch.Tensor,
        addend: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The weighted top-k experts' sum for each row of x [T, in], plus ``addend`` [T, in] where given."""
        if self.backend not in EXPERT_BACKENDS:
            raise ValueError(f"experts backend {self.backend!r} is not one of {EXPERT_BACKENDS}")
        if self.backend == "grouped_mm":
            use_grouped = True
        elif self.backend == "auto" and not experts_gemv_usable(x, indices, self.up_proj):
            use_grouped = grouped_mm_usable(x, self.up_proj, self.down_proj)
        else:
            if self.backend == "loop":
                out = experts_loop(x, indices, weights, self.up_proj, self.down_proj)
            elif self.backend == "auto":
                out = experts_gemv(x, indices, weights, self.up_proj, self.down_proj)
            else:
                out = experts_grouped(x, indices, weights, self.up_proj, self.down_proj, False)
            return out + addend if addend is not None else out
        return experts_grouped(x, indices, weights, self.up_proj, self.down_proj, use_grouped, addend)


class MoE(nn.Module):
    """Router + routed experts (optionally in a latent width) + shared expert on the full-width input."""

    def __init__(self, config: HybridConfig) -> None:
        super().__init__()
        self.gate = TopKRouter(config)
        self.experts = RoutedExperts(config)
        self.shared_experts = (
            ReLU2MLP(config.hidden_size, config.moe_shared_expert_intermediate_size, bias=config.mlp_bias)
            if config.n_shared_experts > 0
            else None
        )
        if config.moe_latent_size is not None:
            self.fc1_latent_proj = nn.Linear(config.hidden_size, config.moe_latent_size, bias=config.mlp_bias)
            self.fc2_latent_proj = nn.Linear(config.moe_latent_size, config.hidden_size, bias=config.mlp_bias)
        else:
            self.fc1_latent_proj = None
            self.fc2_latent_proj = None

    def forward(self, hidden: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """hidden [..., d]; token_mask [...] (1 = real token) only decides which choices count as load.

        Without latent projections the shared expert's output is added where the routed experts' rows are
        summed (one kernel on the fast paths)."""
        shape = hidden.shape
        flat = hidden.reshape(-1, shape[-1])
        fused = self.shared_experts is not None and self.fc2_latent_proj is None
        shared = self.shared_experts(flat) if fused else None
        weights, indices = self.gate(flat)
        if self.gate.count_load and self.training:
            self.gate.record_load(indices, token_mask)
        routed_in = self.fc1_latent_proj(flat) if self.fc1_latent_proj is not None else flat
        routed = self.experts(routed_in, indices, weights, shared)
        if self.fc2_latent_proj is not None:
            routed = self.fc2_latent_proj(routed)
        out = routed.view(shape)
        if self.shared_experts is not None and not fused:
            out = out + self.shared_experts(hidden)
        return out


class ExpertBiasBalancer:
    """Auxiliary-loss-free load balancing of the routers' selection biases, as the model family was trained.

    While active, every router of ``model`` counts the (real) tokens it sends to each expert. After each
    optimizer step, `update` moves each expert's `e_score_correction_bias` by ``rate`` towards equal
    load: up for experts below the layer's mean count, down for those above
    (b_e += rate * sign(mean - count_e)). The bias only steers selection; the expert weights stay the
    unbiased scores. ``reduce`` (e.g. a sum over data-parallel ranks) sees the global counts.
    """

    def __init__(self, model: nn.Module, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"the expert bias update rate must be positive, got {rate}")
        self.rate = rate
        self.routers = [m for m in model.modules() if isinstance(m, TopKRouter)]
        for router in self.routers:
            router.count_load = True
            router.routed_tokens = None

    @torch.no_grad()
    def update(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Apply one step's bias update from the counted load, then start counting afresh."""
        for router in self.routers:
            counts = router.routed_tokens
            router.routed_tokens = None
            if counts is None:
                continue
            if reduce is not None:
                counts = reduce(counts)
            router.balance_bias(counts, self.rate)
