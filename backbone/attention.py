"""Grouped-query causal self-attention of NemotronH (`*` layers). No positional encoding is applied:
the Mamba layers carry position, and the released model uses none (its `rope_theta` is inert)."""

from __future__ import annotations

import inspect
import os

import torch
import torch.nn.functional as F
from torch import nn

from .cache import HybridCache
from .config import HybridConfig
from .kernels import DISABLE_ENV, flash4_prefill
from .packing import PackedRows

_SDPA_HAS_GQA = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 5)
try:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # cuDNN's attention backend builds a new plan for every new key length, which made bf16 decoding
    # about six times slower on an H100 (torch 2.11); the flash / memory-efficient / math kernels do not.
    _CUDA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    _CUDNN_FIRST = [SDPBackend.CUDNN_ATTENTION, *_CUDA_BACKENDS]
    # the list order is the priority only where sdpa_kernel takes set_priority (torch >= 2.6)
    _PRIORITY = {"set_priority": True} if "set_priority" in inspect.signature(sdpa_kernel).parameters else {}
except ImportError:  # torch < 2.3
    sdpa_kernel = None

# Long causal prefills take FlashAttention 4 where it is installed (`kernels.flash4_prefill`: faster still,
# with no buckets or plans); otherwise cuDNN's attention. On an H200 (32 query / 2 key-value heads of 128,
# bf16, plan built) cuDNN took 3.45 ms at 16,144 tokens against 6.32 ms for the flash kernel, 0.770 against
# 1.486 at 7,517 and 0.208 against 0.393 at 3,344 (in the whole image prefill 0.24 against 0.45 ms a layer).
# But each new shape costs a plan of about 50 ms (1.2 s for the first in a process). So the length is padded
# up to a bucket (`cudnn_bucket`: 1/32 of the length's power-of-two ceiling, at least 256 tokens; padding
# rows come after every real row and causal attention never lets a real row see them), and a layer takes
# cuDNN only from the second prefill of a bucket on: a one-off length keeps the flash kernel, a service sees
# its buckets recur. Buckets that grow with the length pad at most 1/16 of the rows (16 plans an octave);
# fixed buckets of 1,024 padded 16,144 tokens to 17,408 (16% more causal work) and 4,097 to 5,120.
# Below 2,048 tokens the flash kernel stays: the gain is a few microseconds a layer there.
# Taking cuDNN from 2,048 rather than 4,096 tokens brought the image prefill (3,344 tokens, full depth) from
# 0.061 to 0.059 s on an H200.
CUDNN_MIN_LENGTH = 2048
CUDNN_MIN_BUCKET = 256
CUDNN_BUCKET_FRACTION = 32  # a bucket is this fraction of the length's power-of-two ceiling
_BUCKETS_SEEN: dict[tuple, int] = {}
_BUCKETS_LIMIT = 4096  # (shape, layer) keys remembered; the count starts over beyond it


def build_attention_mask(
    key_valid: torch.Tensor | None, query_length: int, past_length: int
) -> tuple[torch.Tensor | None, bool]:
    """The (mask, is_causal) pair for `scaled_dot_product_attention`.

    `key_valid` [B, past + L] marks real tokens (None: no padding). Returns a boolean mask
    [B, 1, L, past + L] only when one is needed. A query always sees itself, so rows of padding
    never attend to nothing (their outputs are unused but stay finite).
    """
    total = past_length + query_length
    if key_valid is None:
        if past_length == 0:
            return None, query_length > 1
        if query_length == 1:
            return None, False
    device = key_valid.device if key_valid is not None else None
    query_pos = torch.arange(past_length, total, device=device)[:, None]
    key_pos = torch.arange(total, device=device)[None, :]
    allowed = key_pos <= query_pos  # [L, total]
    if key_valid is None:
        return allowed[None, None], False
    allowed = allowed[None] & key_valid[:, None, :].bool()
    allowed = allowed | (key_pos == query_pos)[None]
    return allowed[:, None], False


def padded_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, bucket: int
) -> torch.Tensor:
    """Causal attention over ``[B, heads, L, head_dim]`` with L padded up to a multiple of ``bucket``
    (zeros after the last row) and the result cut back to L: the same rows as without padding."""
    length = q.shape[2]
    pad = -length % bucket
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    extra = {"enable_gqa": True} if q.shape[1] != k.shape[1] else {}
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, **extra)
    return out[:, :, :length]


def cudnn_bucket(length: int) -> int:
    """The multiple a cuDNN prefill of ``length`` tokens is padded up to (see CUDNN_MIN_LENGTH)."""
    ceiling = 1 << max(0, length - 1).bit_length()
    return max(CUDNN_MIN_BUCKET, ceiling // CUDNN_BUCKET_FRACTION)


def _cudnn_prefill_usable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer_index: int) -> bool:
    """Whether this causal prefill takes cuDNN (see CUDNN_MIN_LENGTH): CUDA, 16-bit, inference, long,
    fast paths on, and this layer's second prefill (or later) in the bucket."""
    if sdpa_kernel is None or not q.is_cuda or q.dtype not in (torch.bfloat16, torch.float16):
        return False
    length = q.shape[2]
    if length < CUDNN_MIN_LENGTH or k.shape[2] != length or os.environ.get(DISABLE_ENV, "0") == "1":
        return False
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return False  # training: backward plans cost far more, and lengths vary
    bucket = -(-length // cudnn_bucket(length)) * cudnn_bucket(length)
    key = (q.shape[0], q.shape[1], k.shape[1], q.shape[3], bucket, q.dtype, q.device, layer_index)
    if len(_BUCKETS_SEEN) >= _BUCKETS_LIMIT and key not in _BUCKETS_SEEN:
        _BUCKETS_SEEN.clear()
    _BUCKETS_SEEN[key] = _BUCKETS_SEEN.get(key, 0) + 1
    return _BUCKETS_SEEN[key] >= 2


# Capability majors with torch's flash kernel (Ampere and later); it takes fp16/bf16 heads up to 256 wide.
_FLASH_MIN_MAJOR = 8
_VARLEN_FAILED: set[tuple] = set()  # (device, dtype, head_dim) whose varlen kernel raised; masked from then


def _varlen_usable(q: torch.Tensor, packed: PackedRows | None) -> bool:
    """Whether the packed rows of this prefill can take torch's variable-length flash kernel."""
    if packed is None or not q.is_cuda or q.dtype not in (torch.bfloat16, torch.float16):
        return False
    head_dim = q.shape[-1]
    if head_dim % 8 or head_dim > 256 or (q.device, q.dtype, head_dim) in _VARLEN_FAILED:
        return False
    if not torch.backends.cuda.flash_sdp_enabled():
        return False
    return torch.cuda.get_device_capability(q.device)[0] >= _FLASH_MIN_MAJOR


def flash_varlen(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, longest: int, scale: float
) -> torch.Tensor:
    """torch's variable-length causal flash kernel: packed ``[N, heads, D]`` q and ``[N, kv_heads, D]``
    k/v, sequences at ``cu_seqlens``; ``[N, heads, D]`` out. Differentiable."""
    return torch.ops.aten._flash_attention_forward(
        q, k, v, cu_seqlens, cu_seqlens, longest, longest, 0.0, True, False, scale=scale
    )[0]


def varlen_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, packed: PackedRows, scale: float
) -> torch.Tensor | None:
    """Causal attention within each row's real tokens, ``[B, L, heads, D]`` views in, ``[B, L, heads, D]``
    out (zeros at the padding), as one `flash_varlen` call over the packed tokens; the key/value heads
    may be fewer than the query heads (GQA). None if the kernel raised (that configuration then keeps
    the masked path)."""
    try:
        out = flash_varlen(
            packed.gather(q), packed.gather(k), packed.gather(v), packed.cu_seqlens, packed.max_length, scale
        )
    except torch.cuda.OutOfMemoryError:
        raise
    except RuntimeError:  # a GPU or build without this kernel
        _VARLEN_FAILED.add((q.device, q.dtype, q.shape[-1]))
        return None
    return packed.scatter(out)


class Attention(nn.Module):
    """Causal GQA over `num_attention_heads` query heads sharing `num_key_value_heads` key/value heads."""

    def __init__(self, config: HybridConfig, layer_index: int) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)

    def forward(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor | None = None,
        is_causal: bool = True,
        cache: HybridCache | None = None,
        packed: PackedRows | None = None,
    ) -> torch.Tensor:
        """hidden [B, L, d]; mask / is_causal from `build_attention_mask`; cache to append keys to;
        `packed`: where the real tokens of a padded first prefill are (see `backbone.packing`)."""
        batch, length, _ = hidden.shape
        width = self.num_heads * self.head_dim
        scale = self.head_dim**-0.5
        q = self.q_proj(hidden).view(batch, length, self.num_heads, self.head_dim)
        k = self.k_proj(hidden).view(batch, length, self.num_kv_heads, self.head_dim)
        v = self.v_proj(hidden).view(batch, length, self.num_kv_heads, self.head_dim)
        keys, values = k.transpose(1, 2), v.transpose(1, 2)
        if cache is not None:
            keys, values = cache.append_kv(self.layer_index, keys, values)
        if _varlen_usable(q, packed):  # packed only with nothing cached before: these keys are all of them
            out = varlen_causal_attention(q, k, v, packed, scale)
            if out is not None:
                return self.o_proj(out.reshape(batch, length, width))
        causal = is_causal and mask is None
        if causal and keys.shape[2] == length and flash4_prefill.usable(q, k, v):  # nothing cached before
            out = flash4_prefill.causal_attention(q, k, v, scale)
            if out is not None:
                return self.o_proj(out.reshape(batch, length, width))
        q, k, v = q.transpose(1, 2), keys, values
        groups = self.num_heads // self.num_kv_heads
        if mask is not None and q.is_cuda and groups > 1:
            # of the kernels allowed here only math takes a mask with GQA, with fp32 [B, heads, L, S]
            # scores: 8 left-padded prompts of up to 4,096 tokens peaked at 39 GiB and took twice as long
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
            groups = 1
        if groups > 1 and not _SDPA_HAS_GQA:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        extra = {"enable_gqa": True} if groups > 1 and _SDPA_HAS_GQA else {}
        if causal and _cudnn_prefill_usable(q, k, v, self.layer_index):
            with sdpa_kernel(_CUDNN_FIRST, **_PRIORITY):
                out = padded_causal_attention(q, k, v, scale, cudnn_bucket(q.shape[2]))
        elif q.is_cuda and sdpa_kernel is not None:
            with sdpa_kernel(_CUDA_BACKENDS):
                out = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=mask, is_causal=causal, scale=scale, **extra
                )
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=causal, scale=scale, **extra
            )
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, width))
