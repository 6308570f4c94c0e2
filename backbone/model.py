"""The NemotronH hybrid language model: embeddings -> pre-norm residual blocks -> norm_f -> lm_head.

Each block is `x + mixer(RMSNorm(x))` with a Mamba-2, attention, MLP or MoE mixer. Module names follow
the released checkpoints (`backbone.layers.{i}.mixer.*`, `backbone.norm_f`, `lm_head`), so weights load
by name (see `weights.py` for the per-expert tensors).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from .attention import Attention, build_attention_mask
from .cache import HybridCache
from .checkpoint import DEFAULT_MAX_SHARD_BYTES, CheckpointReader, write_checkpoint
from .config import ATTENTION, MAMBA, MLP, MOE, HybridConfig
from .mamba2 import Mamba2Mixer
from .mlp import ReLU2MLP
from .moe import MoE
from .mtp import MultiTokenPredictor
from .norms import RMSNorm, add_and_norm
from .packing import PackedRows, packing_wanted
from .weights import checkpoint_tensors, load_weights

IGNORE_INDEX = -100


@dataclass
class LMOutput:
    """Result of `HybridLM.forward`: fp32 logits, the optional loss, the cache, the final hidden states."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    cache: HybridCache | None = None
    last_hidden_state: torch.Tensor | None = None


@dataclass
class _Context:
    """What every block of one forward needs besides the hidden states."""

    token_mask: torch.Tensor | None
    attn_mask: torch.Tensor | None
    is_causal: bool
    cache: HybridCache | None
    packed: PackedRows | None = None  # a padded first prefill's real tokens (see `backbone.packing`)


class HybridBlock(nn.Module):
    """Pre-norm residual block around one mixer. The residual stays in the model dtype:
    `residual_in_fp32` is false in every released config, and transformers ignores it too."""

    def __init__(self, config: HybridConfig, index: int) -> None:
        super().__init__()
        self.index = index
        self.kind = config.layer_types[index]
        self.norm = RMSNorm(config.hidden_size, config.layer_norm_epsilon)
        if self.kind == MAMBA:
            self.mixer = Mamba2Mixer(config)
        elif self.kind == ATTENTION:
            self.mixer = Attention(config, layer_index=index)
        elif self.kind == MLP:
            self.mixer = ReLU2MLP(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        elif self.kind == MOE:
            self.mixer = MoE(config)
        else:  # HybridConfig validates the kinds; this guards direct misuse
            raise ValueError(f"layer {index}: unknown layer type {self.kind!r}")

    def forward(self, hidden: torch.Tensor, context: _Context) -> torch.Tensor:
        return hidden + self.mix(self.norm(hidden), context)

    def mix(self, normed: torch.Tensor, context: _Context) -> torch.Tensor:
        """The mixer's output for the normed input: what the block adds to the residual stream."""
        if self.kind == MAMBA:
            state = context.cache.mamba_state(self.index) if context.cache is not None else None
            out = self.mixer(normed, context.token_mask, state)
        elif self.kind == ATTENTION:
            out = self.mixer(normed, context.attn_mask, context.is_causal, context.cache, context.packed)
        elif self.kind in (MOE, MLP) and context.packed is not None:
            out = context.packed.scatter(self.mixer(context.packed.gather(normed)))  # the real tokens only
        elif self.kind == MOE:
            out = self.mixer(normed, context.token_mask)
        else:
            out = self.mixer(normed)
        return out


def run_layers(
    backbone: HybridBackbone,
    hidden: torch.Tensor,
    context: _Context,
    attention_step: Callable[[HybridBlock, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``norm_f`` of the residual stream after every block of ``backbone`` (`attention_step`, if given,
    computes the attention blocks' mix instead of the block itself: the static-cache decode step).

    Each residual add and the norm after it (the next block's, or ``norm_f``) form one seam (`add_and_norm`):
    one Triton pass on the fast paths. Blocks then run by parts, not through their ``__call__``; so if any
    block has forward hooks (FSDP's gathers of a sharded model, a user's probes), every block is called
    as a module instead."""
    layers = list(backbone.layers)

    def mix(block: HybridBlock, normed: torch.Tensor) -> torch.Tensor:
        if attention_step is not None and block.kind == ATTENTION:
            return attention_step(block, normed)
        return block.mix(normed, context)

    if not layers or any(block._forward_hooks or block._forward_pre_hooks for block in layers):
        for block in layers:
            if attention_step is not None and block.kind == ATTENTION:
                hidden = hidden + mix(block, block.norm(hidden))
            else:
                hidden = block(hidden, context)
        return backbone.norm_f(hidden)
    following = [*(block.norm for block in layers[1:]), backbone.norm_f]
    normed = layers[0].norm(hidden)
    for block, norm in zip(layers, following, strict=True):
        hidden, normed = add_and_norm(hidden, mix(block, normed), norm)
    return normed


class HybridBackbone(nn.Module):
    """Token embeddings, the blocks and the final norm (`backbone.*` in checkpoints)."""

    def __init__(self, config: HybridConfig) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        nn.init.normal_(self.embeddings.weight, std=config.initializer_range)
        self.layers = nn.ModuleList(HybridBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm_f = RMSNorm(config.hidden_size, config.layer_norm_epsilon)


def _check_inputs(
    config: HybridConfig,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor | None,
    past: int,
    logits_to_keep: int | torch.Tensor,
) -> None:
    """Raise a ValueError naming the argument and the problem for malformed inputs."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    if input_ids is not None:
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"input_ids must be an integer tensor [batch, length], got {input_ids.dtype} {list(input_ids.shape)}"
            )
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= config.vocab_size):
            raise ValueError(
                f"input_ids must lie in [0, {config.vocab_size}); got values in [{int(input_ids.min())}, {int(input_ids.max())}]"
            )
        batch, length = input_ids.shape
    else:
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != config.hidden_size:
            raise ValueError(
                f"inputs_embeds must be [batch, length, {config.hidden_size}], got {list(inputs_embeds.shape)}"
            )
        if not inputs_embeds.is_floating_point():
            raise ValueError(f"inputs_embeds must be floating point, got {inputs_embeds.dtype}")
        batch, length = inputs_embeds.shape[:2]
    if length == 0:
        raise ValueError("the input sequence is empty")
    if attention_mask is not None:
        if (
            attention_mask.dim() != 2
            or attention_mask.shape[0] != batch
            or attention_mask.shape[1] not in (length, past + length)
        ):
            raise ValueError(
                f"attention_mask must be [batch={batch}, {length}] or [batch, past+length={past + length}], "
                f"got {list(attention_mask.shape)}"
            )
    if labels is not None and tuple(labels.shape) != (batch, length):
        raise ValueError(f"labels must be [batch={batch}, length={length}], got {list(labels.shape)}")
    if labels is not None and not (isinstance(logits_to_keep, int) and logits_to_keep == 0):
        raise ValueError("labels need the logits of every position: leave logits_to_keep at 0")


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy: logits at t predict labels at t+1; labels of -100 are skipped."""
    shifted_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    shifted_labels = labels[:, 1:].reshape(-1).to(shifted_logits.device)
    total = F.cross_entropy(shifted_logits, shifted_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    count = (shifted_labels != IGNORE_INDEX).sum().clamp(min=1)
    return total / count


class HybridLM(nn.Module):
    """NemotronH causal language model (transformers `NemotronHForCausalLM` checkpoints)."""

    def __init__(self, config: HybridConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = HybridBackbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        nn.init.normal_(self.lm_head.weight, std=config.initializer_range)
        self.mtp = MultiTokenPredictor(config) if config.num_nextn_predict_layers > 0 else None
        self.gradient_checkpointing = False
        self.tie_weights()

    # ------------------------------------------------------------------ basics
    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.backbone.embeddings.weight

    def tied_checkpoint_keys(self) -> set[str]:
        """Checkpoint keys that may be absent because they alias another weight."""
        return {"lm_head.weight"} if self.config.tie_word_embeddings else set()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.backbone.embeddings

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def set_experts_backend(self, backend: str) -> None:
        """How routed experts run: "auto" (grouped matmul where the device supports it), "grouped_mm",
        "segments" (one matmul pair per hit expert) or "loop" (the readable reference)."""
        for module in self.modules():
            if isinstance(module, MoE):
                module.experts.backend = backend

    def new_cache(self, batch_size: int, max_length: int = 256) -> HybridCache:
        """An empty cache for `batch_size` rows, preallocated for `max_length` positions (it grows if needed)."""
        return HybridCache(self.config, batch_size, self.dtype, self.device, max_length)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: HybridCache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool = False,
        logits_to_keep: int | torch.Tensor = 0,
    ) -> LMOutput:
        """Run the model over new positions.

        `attention_mask` (1 = token, 0 = padding) covers either the new positions or the past and the new
        ones (transformers' convention); the past part is taken from the cache. Left padding gives each row
        the result it has alone. With `use_cache` (or a `cache`), the cache is created if needed, continued
        and returned. `logits_to_keep` > 0 keeps only the last positions' logits (a tensor: those indices).
        Logits are fp32; `loss` is the shifted next-token cross-entropy (labels of -100 ignored).
        """
        past = cache.seen_tokens if cache is not None else 0
        _check_inputs(self.config, input_ids, inputs_embeds, attention_mask, labels, past, logits_to_keep)
        hidden = (
            self.backbone.embeddings(input_ids) if inputs_embeds is None else inputs_embeds.to(self.dtype)
        )
        batch, length = hidden.shape[:2]
        if cache is None and use_cache:
            cache = self.new_cache(batch, length)
        if cache is not None and cache.batch_size != batch:
            raise ValueError(f"the cache holds {cache.batch_size} rows but the input has {batch}")

        new_mask = None
        if attention_mask is not None:
            new_mask = attention_mask[:, -length:].to(device=hidden.device).bool()
            if bool(new_mask.all()):
                new_mask = None
        key_valid = cache.extend_mask(new_mask, length) if cache is not None else new_mask
        attn_mask, is_causal = build_attention_mask(key_valid, length, past)
        packed = PackedRows.from_mask(new_mask) if packing_wanted(hidden, new_mask, past) else None
        if packed is not None and packed.tokens == 0:
            packed = None
        context = _Context(new_mask, attn_mask, is_causal, cache, packed)

        checkpointing = (
            self.gradient_checkpointing and self.training and cache is None and torch.is_grad_enabled()
        )
        if checkpointing:
            for block in self.backbone.layers:
                hidden = activation_checkpoint(block, hidden, context, use_reentrant=False)
            hidden = self.backbone.norm_f(hidden)
        else:
            hidden = run_layers(self.backbone, hidden, context)
        if cache is not None:
            cache.advance(length)

        if isinstance(logits_to_keep, torch.Tensor):
            kept = hidden[:, logits_to_keep.to(hidden.device)]
        elif logits_to_keep > 0:
            kept = hidden[:, -logits_to_keep:]
        else:
            kept = hidden
        logits = self.lm_head(kept).float()
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return LMOutput(
            logits=logits,
            loss=loss,
            cache=cache,
            last_hidden_state=hidden,
        )

    # ------------------------------------------------------------------ MTP
    def mtp_logits(
        self,
        last_hidden_state: torch.Tensor,
        next_input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        depth: int = 0,
    ) -> torch.Tensor:
        """Draft logits of the MTP head: position i combines the model's final hidden state at i with the
        embedding of token i+1 (`next_input_ids[:, i]`) and predicts token i+2. Returns fp32 [B, L, vocab]."""
        if self.mtp is None:
            raise ValueError(
                "this model has no MTP layers (num_nextn_predict_layers is 0 or the weights were absent)"
            )
        if next_input_ids.shape != last_hidden_state.shape[:2]:
            raise ValueError(
                f"next_input_ids {list(next_input_ids.shape)} must match the hidden states' [batch, length] "
                f"{list(last_hidden_state.shape[:2])}"
            )
        embeds = self.backbone.embeddings(next_input_ids)
        hidden = self.mtp(last_hidden_state.to(self.dtype), embeds, depth, attention_mask)
        return self.lm_head(hidden).float()

    # ------------------------------------------------------------------ generation
    def generate(self, input_ids: torch.LongTensor | None = None, **kwargs: Any) -> torch.LongTensor:
        """Greedy or sampled decoding; see `backbone.generation.generate` for the arguments."""
        from .generation import generate

        return generate(self, input_ids=input_ids, **kwargs)

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_config(
        cls, config: HybridConfig, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> HybridLM:
        """A randomly initialised model in `dtype` on `device`."""
        model = cls(config)
        return model.to(device=device or "cpu", dtype=dtype or torch.float32)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> HybridLM:
        """Load `config.json` + safetensors weights from a directory, shard by shard, onto `device` in `dtype`
        (default: the config's dtype, else float32). The module is built on the meta device first, so the
        only full copy of the weights is the one on `device`."""
        path = os.fspath(path)
        with open(os.path.join(path, "config.json")) as handle:
            config = HybridConfig.from_dict(json.load(handle))
        dtype = dtype or config.torch_dtype or torch.float32
        with torch.device("meta"):
            model = cls(config)
        model.to(dtype=dtype)
        with CheckpointReader(path) as reader:
            model.load_from_reader(reader, device=device or "cpu")
        return model.eval()

    def load_from_reader(
        self, reader: CheckpointReader, prefix: str = "", device: torch.device | str | None = None
    ) -> None:
        """Fill the weights from checkpoint keys `prefix + name` (e.g. prefix "language_model." inside an omni
        checkpoint). Parameters on the meta device are materialised on `device`; others keep their place."""
        load_weights(self, reader, prefix=prefix, device=device)

    def checkpoint_state(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Weights under the released checkpoint keys (experts unstacked), each prefixed with `prefix`."""
        tensors = checkpoint_tensors(self, prefix)
        for key in self.tied_checkpoint_keys():
            tensors.pop(prefix + key, None)
        return tensors

    def save_pretrained(
        self, path: str | os.PathLike, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
    ) -> None:
        """Write `config.json` and the safetensors weights (sharded above `max_shard_bytes`)."""
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        config = self.config.to_dict()
        config["dtype"] = str(self.dtype).removeprefix("torch.")
        with open(os.path.join(path, "config.json"), "w") as handle:
            json.dump(config, handle, indent=2, sort_keys=True)
            handle.write("\n")
        write_checkpoint(path, self.checkpoint_state(), max_shard_bytes=max_shard_bytes)
