"""CUDA-graph decoding: one captured decode step (all layers) per batch size, replayed per token.

A graph replays fixed kernels on fixed addresses, so everything a decode step touches lives in static
buffers of a `StaticDecodeCache`: Mamba conv/SSM states (updated in place anyway), key/value buffers of
a fixed capacity written at a position held on the device, and a key mask over the whole capacity
(positions not yet written are masked out). Parts of the eager step that are not capturable get a
capture-safe variant: the key/value append (a Python position and growing slices) becomes a write at
the device position, attention runs over the whole buffer under that mask, and the routed experts
(`bincount` / `.tolist()` synchronise with the host) count tokens per expert with `searchsorted` on
the sorted expert ids instead.

The prompt is still run eagerly (through `HybridLM.forward`) into the same static cache; token choice
(argmax or sampling) also stays outside the graph, on the graph's static logits.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .attention import Attention
from .cache import HybridCache, KVState, MambaState
from .kernels import (
    DISABLE_ENV,
    decode_attention,
    experts_gemv,
    experts_gemv_usable,
    fast_paths_enabled,
)
from .mlp import relu2
from .moe import RoutedExperts, combine_expert_rows, grouped_mm_usable

if TYPE_CHECKING:
    from .model import HybridBlock, HybridLM

GRAPHS_ENV = "OMNI_DISABLE_CUDA_GRAPHS"
# Gathering one expert's weights per routed row (the capture-safe path without grouped matmuls)
# is only worth it for small models; beyond this many bytes decoding stays eager.
_GATHER_LIMIT_BYTES = 1 << 30
_MASKED_BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
# Capacities are rounded up to a multiple of this, so nearby lengths share one graph.
_CAPACITY_STEP = 256


def experts_capture_safe(
    x: torch.Tensor,
    indices: torch.Tensor,
    weights: torch.Tensor,
    up_proj: torch.Tensor,
    down_proj: torch.Tensor,
) -> torch.Tensor:
    """Routed experts without host synchronisation (same contract as `moe.experts_grouped`).

    A few tokens run on the Triton gathered matrix-vector kernels where the fast paths are on. Otherwise
    tokens are sorted by expert; segment offsets come from `searchsorted` on the device. With
    `torch._grouped_mm` usable all segments run in one grouped call, otherwise every routed row
    gathers its expert's matrices and runs a batched matrix-vector product.
    """
    if experts_gemv_usable(x, indices, up_proj):
        return experts_gemv(x, indices, weights, up_proj, down_proj)
    top_k = indices.shape[1]
    num_experts = up_proj.shape[0]
    sorted_experts, order = torch.sort(indices.reshape(-1), stable=True)
    token_of = order // top_k
    routed = x[token_of]
    if grouped_mm_usable(x, up_proj, down_proj):
        bounds = torch.arange(1, num_experts + 1, device=x.device, dtype=sorted_experts.dtype)
        offsets = torch.searchsorted(sorted_experts, bounds, out_int32=True)
        hidden = relu2(torch._grouped_mm(routed, up_proj.transpose(1, 2), offs=offsets))
        out = torch._grouped_mm(hidden, down_proj.transpose(1, 2), offs=offsets)
    else:
        hidden = relu2(torch.bmm(up_proj[sorted_experts], routed[:, :, None]))
        out = torch.bmm(down_proj[sorted_experts], hidden)[..., 0]
    return combine_expert_rows(out, order, weights)


@contextlib.contextmanager
def capture_safe_experts(model: torch.nn.Module) -> Iterator[None]:
    """Route every `RoutedExperts` of `model` through `experts_capture_safe` inside the block."""
    patched = []
    for module in model.modules():
        if isinstance(module, RoutedExperts):

            def forward(x, indices, weights, addend=None, module=module):  # noqa: ANN001, ANN202
                out = experts_capture_safe(x, indices, weights, module.up_proj, module.down_proj)
                return out + addend if addend is not None else out

            module.forward = forward
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


def attention_step(
    attention: Attention, hidden: torch.Tensor, cache: StaticDecodeCache, mask: torch.Tensor
) -> torch.Tensor:
    """One-token attention over the whole static key buffer (same result as `Attention.forward`).

    The query heads sharing a key/value head are laid out as that head's query rows, so the masked
    attention needs neither `enable_gqa` nor expanded keys (the masked kernels would otherwise copy
    the keys of every query head, which made batch-64 graph decoding slower than eager decoding). On the
    fast paths (16-bit models) a Triton split-key kernel reads only the written, unmasked keys.
    """
    batch = hidden.shape[0]
    kv_heads, dim = attention.num_kv_heads, attention.head_dim
    groups = attention.num_heads // kv_heads
    q = attention.q_proj(hidden).view(batch, kv_heads, groups, dim)  # head h = kv * groups + r
    k = attention.k_proj(hidden).view(batch, kv_heads, 1, dim)
    v = attention.v_proj(hidden).view(batch, kv_heads, 1, dim)
    keys, values = cache.append_kv(attention.layer_index, k, v)
    if q.dtype in (torch.bfloat16, torch.float16) and fast_paths_enabled(q, keys):
        out = decode_attention(q, keys, values, cache.key_mask, dim**-0.5)
    else:
        with sdpa_kernel(_MASKED_BACKENDS) if hidden.is_cuda else contextlib.nullcontext():
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=dim**-0.5)
    return attention.o_proj(out.reshape(batch, 1, attention.num_heads * dim))


class StaticDecodeCache(HybridCache):
    """A `HybridCache` of fixed capacity whose buffers never move, for graph capture.

    Outside `graph_mode` it behaves as a plain cache (the prompt fills it). In `graph_mode` keys and
    values of one new token are written at `position` (a device tensor) and the whole buffers are
    returned; `step_mask()` marks that position real and returns the [B, 1, 1, capacity] key mask.
    """

    def __init__(self, model: HybridLM, batch_size: int, capacity: int) -> None:
        super().__init__(model.config, batch_size, model.dtype, model.device, capacity)
        self.capacity = capacity
        self.position = torch.zeros(1, dtype=torch.long, device=self.device)
        self.graph_mode = False

    def reset(self) -> None:
        """Forget every sequence: zero the Mamba states and the key mask (stale keys stay masked)."""
        self.seen_tokens = 0
        self.has_padding = False
        self.key_mask.zero_()
        for state in self.layers.values():
            if isinstance(state, MambaState):
                state.conv.zero_()
                state.ssm.zero_()

    def append_kv(
        self, layer_index: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.graph_mode:
            if self.seen_tokens + keys.shape[2] > self.capacity:
                raise ValueError(f"the static cache holds {self.capacity} positions; more were written")
            return super().append_kv(layer_index, keys, values)
        state = self.layers[layer_index]
        assert isinstance(state, KVState)
        state.keys.index_copy_(2, self.position, keys)
        state.values.index_copy_(2, self.position, values)
        return state.keys, state.values

    def step_mask(self) -> torch.Tensor:
        self.key_mask.index_fill_(1, self.position, True)
        return self.key_mask[:, None, None, :]


@dataclass
class _Entry:
    cache: StaticDecodeCache
    token: torch.Tensor  # [B] static input of the captured step
    graph: torch.cuda.CUDAGraph
    logits: torch.Tensor  # [B, vocab] fp32 static output


class GraphDecoder:
    """Captured decode steps of one model, one per batch size (recaptured when a longer capacity is needed)."""

    def __init__(self, model: HybridLM) -> None:
        self.model = model
        self.entries: dict[int, _Entry] = {}
        self._weights_key = self._key()

    def _key(self) -> tuple:
        weight = self.model.lm_head.weight
        return (weight.data_ptr(), weight.dtype, weight.device)

    def _step(self, cache: StaticDecodeCache, token: torch.Tensor) -> torch.Tensor:
        from .model import _Context, run_layers

        model = self.model
        hidden = model.backbone.embeddings(token[:, None])
        mask = cache.step_mask()
        context = _Context(None, mask, False, cache)

        def step(block: HybridBlock, normed: torch.Tensor) -> torch.Tensor:
            return attention_step(block.mixer, normed, cache, mask)

        hidden = run_layers(model.backbone, hidden, context, step)
        return model.lm_head(hidden[:, -1]).float()

    def _capture(self, batch: int, capacity: int) -> _Entry:
        cache = StaticDecodeCache(self.model, batch, capacity)
        token = torch.zeros(batch, dtype=torch.long, device=cache.device)
        cache.graph_mode = True
        try:
            with capture_safe_experts(self.model), torch.no_grad():
                side = torch.cuda.Stream(device=cache.device)
                side.wait_stream(torch.cuda.current_stream(cache.device))
                with torch.cuda.stream(side):  # warm-up: compiles kernels, settles the allocator
                    for _ in range(2):
                        self._step(cache, token)
                torch.cuda.current_stream(cache.device).wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    logits = self._step(cache, token)
        finally:
            cache.graph_mode = False
        cache.reset()
        return _Entry(cache, token, graph, logits)

    def prepare(self, batch: int, length: int) -> StaticDecodeCache:
        """An empty static cache for `batch` rows and at least `length` positions, with its captured step."""
        if self._key() != self._weights_key:  # the model was moved or cast: old graphs point elsewhere
            self.entries.clear()
            self._weights_key = self._key()
        entry = self.entries.get(batch)
        if entry is None or entry.cache.capacity < length:
            self.entries.pop(batch, None)
            capacity = -(-length // _CAPACITY_STEP) * _CAPACITY_STEP
            # normal tensors even under `torch.inference_mode`: a later generate outside it writes into
            # the cache and the step's input in place, which an inference tensor refuses there
            with torch.inference_mode(False), torch.no_grad():
                entry = self.entries[batch] = self._capture(batch, capacity)
        entry.cache.reset()
        return entry.cache

    def step(self, cache: StaticDecodeCache, token: torch.Tensor) -> torch.Tensor:
        """Replay the step for `token` [B] at the cache's next position; returns the static logits [B, V]."""
        entry = self.entries[cache.batch_size]
        if entry.cache is not cache:
            raise ValueError("this cache does not belong to the captured step")
        entry.token.copy_(token)
        cache.position.fill_(cache.seen_tokens)
        entry.graph.replay()
        cache.advance(1)
        return entry.logits


def cuda_graphs_usable(model: HybridLM, batch: int) -> bool:
    """Whether decoding `model` can use captured steps: on CUDA, not disabled by the environment, outside
    autocast (captured steps run in the weights' dtype), and with routed experts that run without host
    synchronisation."""
    if model.device.type != "cuda" or model.training or torch.is_autocast_enabled("cuda"):
        return False
    if os.environ.get(GRAPHS_ENV, "0") == "1" or os.environ.get(DISABLE_ENV, "0") == "1":
        return False
    for module in model.modules():
        if isinstance(module, RoutedExperts):
            probe = torch.empty(0, module.up_proj.shape[2], dtype=module.up_proj.dtype, device=model.device)
            if not grouped_mm_usable(probe, module.up_proj, module.down_proj):
                per_row = module.up_proj[0].numel() * module.up_proj.element_size() * 2
                top_k = model.config.num_experts_per_tok
                if batch * top_k * per_row > _GATHER_LIMIT_BYTES:
                    return False
            break
    return True


def graph_decoder(model: HybridLM) -> GraphDecoder:
    """The model's `GraphDecoder`, created on first use and kept on the model."""
    decoder = model.__dict__.get("_graph_decoder")
    if decoder is None:
        decoder = GraphDecoder(model)
        model.__dict__["_graph_decoder"] = decoder
    return decoder


def release_graphs(model: HybridLM) -> None:
    """Drop the captured steps and static caches of `model` (frees their memory)."""
    model.__dict__.pop("_graph_decoder", None)


__all__ = [
    "GRAPHS_ENV",
    "GraphDecoder",
    "StaticDecodeCache",
    "capture_safe_experts",
    "cuda_graphs_usable",
    "experts_capture_safe",
    "graph_decoder",
    "release_graphs",
]
