"""Time to first token and peak GPU memory for image, video and audio prompts: ours vs transformers.

Model: the Nemotron 3 Nano Omni architecture with random bf16 weights: RADIO ViT-H/16 (32 layers,
1280 wide, 16 heads, MLP 5120), Parakeet (24 layers, 1024 wide, 128 mels), both projectors at their
released sizes, and the 30B-A3B language model at full width (all 128 experts) cut to ``--layers``
(default ``MEM*EMEM``). ``--full-depth`` runs all 52 layers (about 66 GB: built on the meta device,
then allocated and filled on the GPU). transformers 5.23 loads the same weights, our released-layout
tensors, with ``NemotronH_Omni_Reasoning_V3.from_pretrained``; it copies only the experts it stacks
(another 59 GB at full depth: both fit a 141 GB H200, not an 80 GB H100, where the run reports
transformers as not run, with the error, and times ours alone).

Inputs are model-ready tensors already on the device, random values in the processor's shapes
(preprocessing is not timed):

- image: preprocessed pixel values of one 1664 x 2048 px image, 104 x 128 = 13,312 patches
  (3,328 tokens after the 2 x 2 pixel shuffle);
- video: 128 normalised frames at the processor's default size for 16:9 (1,024-patch budget:
  24 x 42 patches, 384 x 672 px), encoded as 64 two-frame tubelets, 16,128 tokens before EVS, at
  each ``--evs`` rate;
- audio: log-mel features of 10 minutes at 16 kHz as 20 clips of 30 s (7,501 tokens);
- video-2min (``--video-2min``): 240 frames (2 minutes at 2 fps) of the same size, ours only.

Time to first token: encoders + projectors + EVS + language-model prefill + the first greedy token
(``argmax`` of the last position's logits), median of ``--repeats`` runs after a warm-up. All of
ours' runs come first, then all of transformers' (``--order sequential``, the default): each side is
timed after its own load, as a service that answers one request after another runs. ``--order
alternate`` takes turns instead, one run of each a round, the order reversed every other round. On a
card at its power limit a run then depends on the run before it: on an H200 our image's first token
took 127-128 ms after one of transformers' (whose pure-PyTorch Mamba-2 draws less power) and 140 ms
after one of ours, against 137-139 ms back to back; each run's time is kept in the JSON. Also
timed: ``encode`` (everything before the language model) and ``prefill`` (both language models on
the same embeddings, ours). transformers' video ``forward`` raises in 5.23 (it ``torch.cat``s one
tensor; its EVS also assumes square frames), so where it raises, its row times its own building
blocks instead (``get_video_features``, its ``compute_retention_mask`` on the true grid, its
language model on the result) and says so.

Steady state: the warm-up runs each case once before the timed runs (alternating: twice, the first
call also finding the path that runs). Attention whose plans are built per shape (cuDNN in the ViT,
the Parakeet encoder and, without FlashAttention 4, long language-model prefills) takes cuDNN from a
shape's second call on, and the Parakeet encoder's layers replay from a CUDA graph captured on a
shape's second call, so the medians of ``--repeats`` 3 or more run on cuDNN with its plan already built
and on the captured graph, as a service that sees the same sizes again does.

Peak memory: the model's own weights plus the most ``torch.cuda.max_memory_allocated`` rose above
what was allocated before the timed runs (the inputs and the other model's weights excluded).

Routing (``--routing``): random routers do not spread tokens as trained ones do. On an H200 run (the
first and last three MoE layers), one expert took 1,518 to 2,510 of the image's 20,064 routed rows and 2
to 19 of the 128 got none; in the audio case one expert took 5,598 to 7,502 of 45,102 rows and 16 to 73
got none. ``balanced`` (the default) first brings the routers' selection biases to even load with the
family's own training rule, on a separate random draw of the inputs (`omni.bench.routing`), as a trained
checkpoint's are; both sides then load those weights. ``random`` keeps the random routers.

Two compute floors of the same FLOPs. ``floor``: FLOPs / the bf16 rate of a burst of 8192^3 matmuls
at the start of the run, at the card's boost clock. ``timed floor``: the same FLOPs as back-to-back
8192^3 matmuls, timed right after the case's own timed runs and as they are (median of ``--repeats``
after a warm-up), so in the clock state the first token was timed in: a card at its power limit cannot
hold the boost clock for the length of a first token (`common.matmul_seconds`).

FLOPs: 2 x weights x tokens for every linear (the ViT, the audio encoder with its subsampling
convolutions, both projectors, the language model's active weights: routed top-k and shared experts),
plus attention: 4 L^2 d per layer and sequence in the encoders (the audio encoder's relative-position
scores add 2 L^2 d), 2 L (L + 1) heads head_dim per language-model attention layer (causal); the Mamba
scan is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from backbone import PRESETS_DIR
from encoders import ParakeetConfig, RadioConfig
from encoders.audio_clips import AudioClipper, subsampled_length
from encoders.mel import LogMelFrontEnd
from omni.bench import TTFT_CASES, add_ttft_arguments
from omni.bench.common import (
    GIB,
    Measurement,
    format_table,
    matmul_rate,
    matmul_seconds,
    measure,
    measure_alternating,
    release_memory,
    run_info,
    write_json,
)
from omni.bench.routing import RoutingReport, balance_routers
from omni.checkpoint import released_config, released_tensors
from omni.errors import InputError
from omni.model import OmniModel

IMAGE_TOKEN, VIDEO_TOKEN, AUDIO_TOKEN = 18, 23, 27  # released checkpoints put video frames on <image> rows
PRESET = os.path.join(PRESETS_DIR, "nemotron-3-nano-30b-a3b.json")
BALANCE_PASSES, BALANCE_PASSES_TINY = 30, 3
OUT_OF_MEMORY = "out of memory"

VISION = dict(model_type="radio", hidden_size=1280, num_hidden_layers=32, num_attention_heads=16,
              intermediate_size=5120, patch_size=16, max_img_size=2048, num_cls_tokens=3, num_registers=7,
              video_temporal_patch_size=2)  # fmt: skip
AUDIO = dict(model_type="parakeet_encoder", hidden_size=1024, num_hidden_layers=24, num_attention_heads=8,
             intermediate_size=4096, num_mel_bins=128, subsampling_conv_channels=256, subsampling_factor=8,
             conv_kernel_size=9, projection_hidden_size=4096, projection_bias=False)  # fmt: skip
PROJECTOR_HIDDEN = 20480
TINY_TEXT = dict(vocab_size=256, hidden_size=64, num_attention_heads=4, head_dim=16, mamba_num_heads=4,
                 mamba_head_dim=16, ssm_state_size=16, n_groups=2, n_routed_experts=8, num_experts_per_tok=2,
                 moe_intermediate_size=32, moe_shared_expert_intermediate_size=48, intermediate_size=48,
                 chunk_size=16)  # fmt: skip
TINY_VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
TINY_AUDIO = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  num_mel_bins=16, subsampling_conv_channels=8, projection_hidden_size=48)  # fmt: skip


# ---------------------------------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class Sizes:
    """Input sizes of the cases."""

    image_grid: tuple[int, int]  # patches (rows, cols)
    frame_hw: tuple[int, int]  # video frame pixels (height, width)
    frames: int
    long_frames: int  # the 2-minute video
    audio_seconds: float
    clip_seconds: float


def input_sizes(tiny: bool, frames: int | None = None) -> Sizes:
    """The benchmark's sizes (``tiny``: a few patches, frames and seconds); ``frames`` overrides."""
    if tiny:
        sizes = Sizes((8, 12), (64, 128), 8, 16, 8.0, 4.0)
    else:
        from omni.image_sizing import video_frame_grid
        from omni.processor_settings import ProcessorSettings

        settings = ProcessorSettings()
        rows, cols = video_frame_grid(
            1080, 1920, target_patches=settings.video_target_num_patches, merge=settings.merge
        )
        patch = settings.patch_size
        sizes = Sizes((104, 128), (rows * patch, cols * patch), 128, 240, 600.0, 30.0)
    return replace(sizes, frames=frames) if frames else sizes


# ---------------------------------------------------------------------------------------------- models
def omni_config(layers: str | None, tiny: bool) -> dict[str, Any]:
    """The omni ``config.json``: released encoders and projectors, the text preset cut to ``layers``
    (None: all of its layers); ``tiny`` shrinks every width for smoke runs."""
    with open(PRESET) as handle:
        text = json.load(handle)
    if layers is not None:
        text.update(hybrid_override_pattern=layers, num_hidden_layers=len(layers))
    vision, audio = dict(VISION), dict(AUDIO)
    projector, vision_width = PROJECTOR_HIDDEN, VISION["hidden_size"]
    if tiny:
        text.update(TINY_TEXT)
        vision.update(TINY_VISION)
        audio.update(TINY_AUDIO)
        projector, vision_width = 48, TINY_VISION["hidden_size"]
    return dict(model_type="nemotron_h_omni", architectures=["NemotronH_Omni_Reasoning_V3"],
                image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN, audio_token_id=AUDIO_TOKEN,
                downsample_ratio=0.5, projector_hidden_size=projector, vision_hidden_size=vision_width,
                video_temporal_patch_size=2, text_config=text, vision_config=vision,
                audio_config=audio)  # fmt: skip


def build_ours(config: dict[str, Any], device: torch.device, dtype: torch.dtype) -> OmniModel:
    """Ours with random weights: built on the meta device, allocated on ``device`` in ``dtype`` and
    filled there, so no full copy ever exists on the host (the full depth is ~66 GB in bf16)."""
    from omni.config import OmniConfig

    with torch.device("meta"):
        model = OmniModel(OmniConfig.from_dict(config))
    model.to(dtype=dtype)
    model.to_empty(device=device)
    model.language_model.tie_weights()
    random_init(model)
    return model.eval()


def random_init(model: nn.Module, std: float = 0.02, seed: int = 0) -> None:
    """Fill every tensor in place: normal matrices, neutral vectors (unit scales, zero biases, Mamba's
    usual ``A_log`` and ``dt_bias``). Values do not change timings; these keep activations finite."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            _init_parameter(name.rsplit(".", 1)[-1], parameter, std)
        for name, buffer in model.named_buffers():
            buffer.fill_(1 if name.endswith("running_var") else 0)
    for module in model.modules():
        reset = getattr(module, "reset_non_persistent_buffers", None)
        if callable(reset):
            reset()


def _init_parameter(leaf: str, parameter: torch.Tensor, std: float) -> None:
    if parameter.dim() >= 2:
        parameter.normal_(0.0, std)
    elif leaf == "bias":
        parameter.zero_()
    elif leaf == "A_log":
        heads = torch.arange(1, parameter.numel() + 1, device=parameter.device, dtype=torch.float32)
        parameter.copy_(heads.log())
    elif leaf == "dt_bias":  # softplus^-1 of time steps spread over [1e-3, 1e-1]
        steps = torch.logspace(-3, -1, parameter.numel(), device=parameter.device)
        parameter.copy_(steps.expm1().log())
    else:  # norm weights, layer scales, D
        parameter.fill_(1.0)


def model_bytes(model: nn.Module) -> int:
    """Bytes of the model's weights and buffers."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' loading report (keys it initialised, deprecations) for a moment."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.set_verbosity(level)


def load_reference(ours: OmniModel, device: torch.device, dtype: torch.dtype) -> Any:
    """transformers' model holding our weights: our released-layout tensors handed to its own loader
    (``from_pretrained(None, state_dict=...)``), which keeps them where they are and applies its key
    conversions. Only the tensors it converts (the stacked experts) become copies, so the full depth
    of both fits one 141 GB card."""
    from transformers import NemotronH_Omni_Reasoning_V3

    config = NemotronH_Omni_Reasoning_V3.config_class.from_dict(released_config(ours))
    with _quiet_transformers():
        reference = NemotronH_Omni_Reasoning_V3.from_pretrained(
            None, config=config, state_dict=released_tensors(ours), dtype=dtype
        )
    return reference.to(device).eval()


# ---------------------------------------------------------------------------------------------- FLOPs
def vit_flops(config: RadioConfig, patches: Sequence[int], video: bool = False) -> float:
    """FLOPs of the RADIO ViT over independent sequences of ``patches`` patches each (images or
    tubelets): the patch linear, per block ``qkv``/``proj``/``fc1``/``fc2`` over every token (prefix
    tokens included) and attention scores and values, 4 L^2 d."""
    d, mlp = config.hidden_size, config.intermediate_size
    embed = config.video_patch_dim if video else config.patch_dim
    per_token = 2 * (4 * d * d + 2 * d * mlp)
    total = 0.0
    for count in patches:
        length = count + config.num_prefix_tokens
        total += 2 * embed * d * count
        total += config.num_hidden_layers * (per_token * length + 4 * length * length * d)
    return total


def projector_flops(sizes: tuple[int, int, int], tokens: int) -> float:
    """FLOPs of an adapter ``in -> hidden -> out`` (two linears) over ``tokens`` tokens."""
    inner, hidden, outer = sizes
    return 2.0 * tokens * (inner * hidden + hidden * outer)


def _subsampling_flops(config: ParakeetConfig, frames: int) -> tuple[float, int]:
    """(FLOPs, output length) of the conv subsampling of one clip of ``frames`` mel frames."""
    k, s, c = (
        config.subsampling_conv_kernel_size,
        config.subsampling_conv_stride,
        config.subsampling_conv_channels,
    )
    time, mels = frames, config.num_mel_bins
    total = 0.0
    for stage in range(config.stride_stages):
        time, mels = subsampled_length(time, k, s, 1), subsampled_length(mels, k, s, 1)
        positions = time * mels
        total += 2 * c * k * k * positions  # the first full conv (1 channel in), then depthwise
        if stage:
            total += 2 * c * c * positions  # pointwise
    total += 2 * c * mels * config.hidden_size * time  # the linear to the model width
    return total, time


def parakeet_flops(config: ParakeetConfig, clip_frames: Sequence[int]) -> float:
    """FLOPs of the Parakeet encoder over clips of ``clip_frames`` valid mel frames: subsampling, then
    per layer the two feed-forwards, q/k/v/o, the relative-position projection of 2L - 1 distances,
    the convolution module, and attention: 4 L^2 d for scores and values, 2 L^2 d for position scores."""
    d, ff = config.hidden_size, config.intermediate_size
    inner = config.num_attention_heads * config.attention_head_dim
    per_token = 2 * (2 * 2 * d * ff + 4 * d * inner + 2 * d * d + d * config.conv_kernel_size + d * d)
    total = 0.0
    for frames in clip_frames:
        flops, length = _subsampling_flops(config, frames)
        layer = per_token * length + 2 * d * inner * (2 * length - 1) + 6 * length * length * inner
        total += flops + config.num_hidden_layers * layer
    return total


def lm_flops(model: nn.Module, tokens: int) -> float:
    """Prefill FLOPs of the language model for one sequence: 2 x active weights x tokens (routed
    experts at top-k / experts, embeddings free, the head for the last position only) plus causal
    attention, 2 L (L + 1) heads head_dim per attention layer."""
    cfg = model.config
    share = cfg.num_experts_per_tok / cfg.n_routed_experts
    active = 0.0
    for name, p in model.named_parameters():
        if p.dim() < 2 or name.startswith(("mtp.", "lm_head.")) or name.endswith("embeddings.weight"):
            continue
        active += p.numel() * (share if ".experts." in name else 1.0)
    head = model.get_output_embeddings().weight.numel()
    attention = cfg.layer_types.count("attention") * 2 * tokens * (tokens + 1) * cfg.num_attention_heads
    return 2 * active * tokens + 2 * head + attention * cfg.head_dim


def _linear_sizes(first: nn.Linear, second: nn.Linear) -> tuple[int, int, int]:
    return first.in_features, first.out_features, second.out_features


# ---------------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One prompt, ready on the device, and how each side answers it."""

    name: str
    ours: dict[str, Any]  # OmniModel.forward inputs
    encoder_flops: float  # encoders and projectors, for the compute floor
    reference: list[tuple[str, Callable[[], Any]]] = field(default_factory=list)  # (path, first token)
    reference_encode: Callable[[], Any] | None = None
    repeats: int | None = None  # None: --repeats
    breakdown: bool = True  # also time encode and prefill


def prompt(count: int, token: int, device: torch.device) -> torch.Tensor:
    """``[1, 8 + count + 8]`` ids: some text, ``count`` placeholders, some text."""
    text = torch.arange(100, 108)
    return torch.cat([text, torch.full((count,), token), text])[None].to(device)


def first_token(model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    """Prefill and the first greedy token (logits of the last position only)."""
    return model(**inputs, logits_to_keep=1).logits[:, -1].argmax(-1)


def image_case(ours: OmniModel, reference: Any, sizes: Sizes) -> Case:
    """One image of ``sizes.image_grid`` patches, as packed pixel values."""
    rows, cols = sizes.image_grid
    device, vision = ours.device, ours.vision_model.config
    pixels = torch.randn(rows * cols, vision.patch_dim, device=device, dtype=ours.dtype)
    grid = torch.tensor([[rows, cols]], device=device)
    tokens = rows * cols // ours.config.downsample_factor**2
    inputs = dict(input_ids=prompt(tokens, IMAGE_TOKEN, device), pixel_values=pixels, image_grid_hw=grid)
    flops = vit_flops(vision, [rows * cols]) + projector_flops(
        _linear_sizes(ours.mlp1[1], ours.mlp1[3]), tokens
    )
    case = Case(f"image {rows}x{cols} = {rows * cols:,} patches", inputs, flops)
    if reference is not None:
        case.reference = [("forward", lambda: first_token(reference, inputs))]
        case.reference_encode = lambda: reference.get_image_features(pixels, grid)
    return case


def video_frames(sizes: Sizes, count: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``[count, 3, H, W]`` normalised frames."""
    return torch.randn(count, 3, *sizes.frame_hw, device=device, dtype=dtype)


def reference_video_embeds(reference: Any, frames: torch.Tensor, rate: float) -> tuple[torch.Tensor, Any]:
    """transformers' video embeddings ``[tokens, d]`` and its EVS keep mask on the true grid (None at 0)."""
    from transformers.models.nemotron_h_omni.modeling_nemotron_h_omni import compute_retention_mask

    embeds = reference.get_video_features(frames).pooler_output
    embeds = embeds.reshape(-1, embeds.shape[-1])
    if rate <= 0:
        return embeds, None
    patch, temporal = reference.vision_model.patch_size, reference.video_temporal_patch_dim
    thw = (-(-frames.shape[0] // temporal), frames.shape[-2] // patch // 2, frames.shape[-1] // patch // 2)
    return embeds, compute_retention_mask(video_embeds=embeds, thw=thw, spatial_merge_size=1, q=rate)


def reference_video_blocks(reference: Any, ids: torch.Tensor, frames: torch.Tensor, rate: float) -> Any:
    """transformers' own blocks composed correctly: its tower and projector, its EVS, its language model."""
    embeds, keep_video = reference_video_embeds(reference, frames, rate)
    text = reference.get_input_embeddings()(ids)
    placeholders = ids == IMAGE_TOKEN
    text[placeholders] = embeds.to(text.dtype)
    keep = torch.ones_like(ids, dtype=torch.bool)
    if keep_video is not None:
        keep[placeholders] = keep_video
    logits = reference.language_model(inputs_embeds=text[keep][None], logits_to_keep=1).logits
    return logits[:, -1].argmax(-1)


def reference_video_forward(reference: Any, ids: torch.Tensor, frames: torch.Tensor, rate: float) -> Any:
    """transformers' ``forward`` on the video, its pruning rate set to ``rate``."""
    reference.video_pruning_rate = rate
    return first_token(reference, dict(input_ids=ids, pixel_values_videos=frames))


def video_case(ours: OmniModel, reference: Any, frames: torch.Tensor, rate: float, name: str) -> Case:
    """``frames`` as one video at EVS ``rate``."""
    vision, merge = ours.vision_model.config, ours.config.downsample_factor
    tubelets = -(-frames.shape[0] // vision.video_temporal_patch_size)
    rows, cols = frames.shape[-2] // vision.patch_size, frames.shape[-1] // vision.patch_size
    count = tubelets * (rows // merge) * (cols // merge)
    ids = prompt(count, IMAGE_TOKEN, frames.device)
    inputs = dict(input_ids=ids, pixel_values_videos=frames, video_pruning_rate=rate)
    flops = vit_flops(vision, [rows * cols] * tubelets, video=True)
    flops += projector_flops(_linear_sizes(ours.mlp1[1], ours.mlp1[3]), count)
    case = Case(name, inputs, flops)
    if reference is not None:
        case.reference = [
            ("forward", lambda: reference_video_forward(reference, ids, frames, rate)),
            ("building blocks", lambda: reference_video_blocks(reference, ids, frames, rate)),
        ]
        case.reference_encode = lambda: reference_video_embeds(reference, frames, rate)
    return case


def audio_case(ours: OmniModel, reference: Any, sizes: Sizes) -> Case:
    """``sizes.audio_seconds`` of audio as clips of log-mel features, cut as our processor cuts them."""
    config, device = ours.sound_encoder.config, ours.device
    front_end = LogMelFrontEnd(config.sampling_rate, n_mels=config.num_mel_bins)
    clipper = AudioClipper(sizes.clip_seconds, config.sampling_rate, front_end.hop_length,
                           config.subsampling_conv_kernel_size, config.subsampling_conv_stride,
                           config.stride_stages)  # fmt: skip
    plan = clipper.plan(int(sizes.audio_seconds * config.sampling_rate))
    frames = 1 + max(clip.num_samples for clip in plan) // front_end.hop_length
    valid = [front_end.num_frames(clip.num_samples) for clip in plan]
    mask = torch.arange(frames)[None, :] < torch.tensor(valid)[:, None]
    features = torch.randn(len(plan), frames, config.num_mel_bins) * mask[..., None]
    features, mask = features.to(device, ours.dtype), mask.to(device)
    tokens = sum(clip.num_tokens for clip in plan)
    inputs = dict(input_ids=prompt(tokens, AUDIO_TOKEN, device), input_features=features,
                  input_features_mask=mask, audio_clip_counts=torch.tensor([len(plan)], device=device))  # fmt: skip
    sound = ours.sound_projection
    flops = parakeet_flops(config, valid) + projector_flops(
        _linear_sizes(sound.linear1, sound.linear2), tokens
    )
    length = (
        f"{sizes.audio_seconds / 60:g} min" if sizes.audio_seconds >= 60 else f"{sizes.audio_seconds:g} s"
    )
    name = f"audio {length} ({len(plan)} clips of {sizes.clip_seconds:g} s)"
    case = Case(name, inputs, flops)
    if reference is not None:
        # transformers keeps subsampled(valid + 1) outputs of every clip (ours: of the last one only)
        count = sum(
            subsampled_length(v + 1, clipper.kernel_size, clipper.stride, clipper.stages) for v in valid
        )
        theirs = dict(input_ids=prompt(count, AUDIO_TOKEN, device), input_features=features,
                      input_features_mask=mask)  # fmt: skip
        case.reference = [("forward", lambda: first_token(reference, theirs))]
        case.reference_encode = lambda: reference.get_audio_features(features, mask)
    return case


def cases(
    ours: OmniModel, reference: Any, names: Sequence[str], rates: Sequence[float], sizes: Sizes
) -> Iterator[Case]:
    """The cases in order, each built when its turn comes (so its inputs are freed after it)."""
    device, dtype = ours.device, ours.dtype
    if "image" in names:
        yield image_case(ours, reference, sizes)
    if "video" in names:
        frames = video_frames(sizes, sizes.frames, device, dtype)
        for rate in rates:
            yield video_case(ours, reference, frames, rate, f"video {sizes.frames} frames 16:9, EVS {rate:g}")
        del frames
    if "video-2min" in names:
        frames = video_frames(sizes, sizes.long_frames, device, dtype)
        name = f"video {sizes.long_frames} frames 16:9 (2 min at 2 fps), ours only"
        yield replace(video_case(ours, None, frames, 0.0, name), repeats=1, breakdown=False)
        del frames
    if "audio" in names:
        yield audio_case(ours, reference, sizes)


# ---------------------------------------------------------------------------------------------- running
def _error_text(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200] if lines else ''}"


@dataclass
class Failed:
    """What a run raised, as text."""

    text: str


def _attempt(fn: Callable[[], Any], device: torch.device) -> Any:
    """``fn()``, or ``Failed`` with the text of what it raised (out of memory included)."""
    try:
        return fn()
    except torch.OutOfMemoryError:
        failed = Failed(OUT_OF_MEMORY)
    except Exception as err:  # noqa: BLE001 - a failing run is a result to report, not a crash
        failed = Failed(_error_text(err))
    release_memory(device)  # after the except block: the traceback no longer holds the run's tensors
    return failed


def _try_measure(fn: Callable[[], Any], device: torch.device, repeats: int) -> Measurement | Failed:
    return _attempt(lambda: measure(fn, device, repeats), device)


def _record_peak(
    row: dict[str, Any], who: str, result: Measurement, weights: int, device: torch.device
) -> None:
    if device.type == "cuda":
        row[f"{who}_peak_gib"] = (result.peak_above_bytes + weights) / GIB
        row[f"{who}_peak_total_gib"] = result.peak_total_bytes / GIB


def _store_time(
    row: dict[str, Any], who: str, path: str, result: Measurement, weights: int, device: torch.device
) -> None:
    row[f"{who}_ttft_s"], row[f"{who}_path"], row[f"{who}_times_s"] = result.seconds, path, result.times
    _record_peak(row, who, result, weights, device)


def time_first_token(
    row: dict[str, Any],
    who: str,
    attempts: Sequence[tuple[str, Callable[[], Any]]],
    device: torch.device,
    repeats: int,
    weights: int,
) -> bool:
    """Time the first of ``attempts`` that runs into ``row``; True when one did. Out of memory ends the
    attempts (a result, not a broken path); other errors move on to the next one."""
    found = _first_success(row, who, attempts, lambda fn: _try_measure(fn, device, repeats))
    if found is not None:
        path, _, result = found
        _store_time(row, who, path, result, weights, device)
    return found is not None


def _first_success(
    row: dict[str, Any],
    who: str,
    attempts: Sequence[tuple[str, Callable[[], Any]]],
    run: Callable[[Callable[[], Any]], Any],
) -> tuple[str, Callable[[], Any], Any] | None:
    """The first of ``attempts`` for which ``run(fn)`` is not `Failed`, as (path, fn, result); the failures
    before it go into ``row`` (a note, or the error when none succeeds). Out of memory ends the attempts."""
    failures = []
    for path, fn in attempts:
        result = run(fn)
        if not isinstance(result, Failed):
            if failures:
                row[f"{who}_note"] = "; ".join(failures)
            return path, fn, result
        failures.append(f"{path}: {result.text}")
        if result.text == OUT_OF_MEMORY:
            break
    row[f"{who}_error"] = "; ".join(failures)
    return None


def time_parts(
    row: dict[str, Any], who: str, parts: dict[str, Callable[[], Any]], device: torch.device, repeats: int
) -> None:
    """Median seconds of each part (``encode``, ``prefill``) into ``row``, or its error."""
    for part, fn in parts.items():
        result = _try_measure(fn, device, repeats)
        if isinstance(result, Measurement):
            row[f"{who}_{part}_s"] = result.seconds
        else:
            row[f"{who}_{part}_error"] = result.text


def _prefill(language_model: nn.Module, embeds: torch.Tensor) -> torch.Tensor:
    return language_model(inputs_embeds=embeds, logits_to_keep=1).logits[:, -1].argmax(-1)


def time_alternating(
    row: dict[str, Any],
    sides: Sequence[tuple[str, Sequence[tuple[str, Callable[[], Any]]], int]],
    device: torch.device,
    repeats: int,
) -> None:
    """Time each side's first-token path in alternating rounds (`measure_alternating`) into ``row``;
    ``sides``: (who, attempts, weight bytes). A side whose every attempt fails gets its error and the
    others are timed without it; if the rounds themselves fail, each side is timed alone."""
    chosen = []
    for who, attempts, weights in sides:  # one untimed call of each finds the path that runs
        found = _first_success(row, who, attempts, lambda fn: _attempt(fn, device))
        if found is not None:
            chosen.append((who, found[:2], weights))
    if not chosen:
        return
    result = _attempt(lambda: measure_alternating([fn for _, (_, fn), _ in chosen], device, repeats), device)
    if isinstance(result, Failed):  # out of memory with both sides' activations about, say
        row["alternating_error"] = result.text
        for who, picked, weights in chosen:
            time_first_token(row, who, [picked], device, repeats, weights)
        return
    for (who, (path, _), weights), measurement in zip(chosen, result, strict=True):
        _store_time(row, who, path, measurement, weights, device)


def _ours_counts(
    row: dict[str, Any],
    case: Case,
    ours: OmniModel,
    device: torch.device,
    repeats: int,
    rate: float,
    matmul_size: int,
) -> torch.Tensor | None:
    """Once ours' first token is timed: the token count, both floors and ours' parts into ``row``; returns
    the language model's input embeddings for the reference's prefill (None when ours failed)."""
    if "ours_ttft_s" not in row:
        return None
    embeds = _attempt(lambda: ours.embed_inputs(**case.ours).inputs_embeds, device)
    if isinstance(embeds, Failed):
        row["ours_embed_error"] = embeds.text
        return None
    row["lm_tokens"] = embeds.shape[1]
    row["flops"] = case.encoder_flops + lm_flops(ours.language_model, embeds.shape[1])
    row["floor_s"] = row["flops"] / rate
    row["ours_over_floor"] = row["ours_ttft_s"] / row["floor_s"]
    # right after the timed first tokens, so in the clock state they ran in
    row["timed_floor_s"] = matmul_seconds(row["flops"], device, repeats, matmul_size)
    row["ours_over_timed_floor"] = row["ours_ttft_s"] / row["timed_floor_s"]
    if case.breakdown:
        parts = {"encode": lambda: ours.embed_inputs(**case.ours),
                 "prefill": lambda: _prefill(ours.language_model, embeds)}  # fmt: skip
        time_parts(row, "ours", parts, device, repeats)
    return embeds


def _reference_parts(
    row: dict[str, Any],
    case: Case,
    reference: Any,
    embeds: torch.Tensor | None,
    device: torch.device,
    repeats: int,
) -> None:
    """Once transformers' first token is timed: its parts (its prefill on ours' embeddings) and the ratio."""
    if "transformers_ttft_s" not in row:
        return
    if case.breakdown:
        parts = {"encode": case.reference_encode}
        if embeds is not None:
            parts["prefill"] = lambda: _prefill(reference.language_model, embeds)
        time_parts(row, "transformers", parts, device, repeats)
    if "ours_ttft_s" in row:
        row["transformers_over_ours"] = row["transformers_ttft_s"] / row["ours_ttft_s"]


@torch.no_grad()
def run_case(
    case: Case,
    ours: OmniModel,
    reference: Any,
    device: torch.device,
    repeats: int,
    rate: float,
    matmul_size: int = 8192,
    alternate: bool = False,
) -> dict[str, Any]:
    """One row: both sides' time to first token, peak memory and parts, the token count and the floors
    (``rate``: the burst matmul rate; ``matmul_size``: the timed floor's matmuls). ``alternate``: the two
    sides' first tokens timed in alternating rounds; otherwise all of ours' runs, then all of theirs."""
    repeats = case.repeats or repeats
    row: dict[str, Any] = {"case": case.name}
    release_memory(device)
    ours_attempts = [("forward", lambda: first_token(ours, case.ours))]
    theirs = case.reference if reference is not None else []
    if alternate and theirs:
        sides = [("ours", ours_attempts, model_bytes(ours)), ("transformers", theirs, model_bytes(reference))]
        time_alternating(row, sides, device, repeats)
    else:
        time_first_token(row, "ours", ours_attempts, device, repeats, model_bytes(ours))
    embeds = _ours_counts(row, case, ours, device, repeats, rate, matmul_size)
    if theirs:
        if not alternate:
            time_first_token(row, "transformers", theirs, device, repeats, model_bytes(reference))
        _reference_parts(row, case, reference, embeds, device, repeats)
    print({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items() if not k.endswith("_times_s")},
          flush=True)  # fmt: skip
    return row


@torch.no_grad()
def calibration_embeds(
    ours: OmniModel, names: Sequence[str], rates: Sequence[float], sizes: Sizes
) -> list[torch.Tensor]:
    """Language-model inputs of a separate random draw of the cases (the video at its first EVS rate; the
    2-minute video left out), for `balance_routers`."""
    kept = [name for name in names if name != "video-2min"]
    return [
        ours.embed_inputs(**case.ours).inputs_embeds
        for case in cases(ours, None, kept, list(rates)[:1], sizes)
    ]


def one_case(
    name: str,
    layers: str,
    tiny: bool,
    device: torch.device,
    evs: float = 0.0,
    frames: int | None = None,
    balanced: bool = True,
) -> tuple[OmniModel, Case, RoutingReport | None]:
    """Ours (``layers``, random bf16 weights) and one case, for the scripts that look inside one run: the
    routers first balanced as the benchmark balances them (``balanced``). Returns the model, the case and
    the balancing's report (None when not balanced)."""
    model = build_ours(omni_config(layers, tiny), device, torch.bfloat16)
    sizes = input_sizes(tiny, frames)
    report = None
    if balanced:
        calibration = calibration_embeds(model, [name], [evs], sizes)
        passes = BALANCE_PASSES_TINY if tiny else BALANCE_PASSES
        report = balance_routers(model.language_model, calibration, passes=passes)
    return model, next(cases(model, None, [name], [evs], sizes)), report


def check_arguments(args: argparse.Namespace) -> tuple[list[str], list[float]]:
    """The case names and EVS rates asked for; InputError on a bad option."""
    names = [n.strip() for n in args.cases.split(",") if n.strip()]
    if args.video_2min and "video-2min" not in names:
        names.append("video-2min")
    unknown = sorted(set(names) - set(TTFT_CASES))
    if unknown or not names:
        raise InputError(
            f"--cases: unknown {unknown or 'nothing given'} (use some of {', '.join(TTFT_CASES)})"
        )
    try:
        rates = [float(r) for r in args.evs.split(",")]
    except ValueError:
        raise InputError(f"--evs: {args.evs!r} is not a comma-separated list of rates") from None
    if any(not 0.0 <= r < 1.0 for r in rates):
        raise InputError(f"--evs: every rate must be in [0, 1), got {args.evs}")
    if args.repeats < 1 or (args.frames is not None and args.frames < 1):
        raise InputError("--repeats and --frames must be at least 1")
    if args.memory_limit_gib is not None and args.memory_limit_gib <= 0:
        raise InputError(f"--memory-limit-gib must be positive, got {args.memory_limit_gib:g}")
    _check_layers(args.layers)
    return names, rates


def _check_layers(layers: str) -> None:
    from backbone.config import ConfigError, parse_layer_kinds

    try:
        parse_layer_kinds(layers, "--layers")
    except ConfigError as err:
        raise InputError(str(err)) from None
    if not layers:
        raise InputError("--layers: give at least one layer (M Mamba-2, * attention, E MoE, - MLP)")


def limit_memory(device: torch.device, gib: float) -> None:
    """Let torch's allocator hand out at most ``gib`` GiB on ``device`` (a smaller card, emulated)."""
    if device.type != "cuda":
        raise InputError(f"--memory-limit-gib needs a CUDA device, not {device}")
    index = device.index if device.index is not None else torch.cuda.current_device()
    total = torch.cuda.get_device_properties(index).total_memory
    if gib * GIB > total:
        raise InputError(f"--memory-limit-gib {gib:g}: the device has only {total / GIB:.1f} GiB")
    # the fraction's device must carry an index ("cuda" alone is refused)
    torch.cuda.set_per_process_memory_fraction(gib * GIB / total, index)


def _load_reference_or_none(ours: OmniModel, device: torch.device, meta: dict[str, Any]) -> Any:
    """transformers' model, or None (the reason in ``meta``) when it cannot be loaded: ours still runs."""
    reference = _attempt(lambda: load_reference(ours, device, ours.dtype), device)
    if isinstance(reference, Failed):
        meta["reference_error"] = reference.text
        print(f"transformers: not run: {reference.text}", flush=True)
        return None
    return reference


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; returns ``{"meta": ..., "rows": [...]}`` (one row per case)."""
    names, rates = check_arguments(args)
    device, dtype = torch.device(args.device), torch.bfloat16
    if args.memory_limit_gib is not None:
        limit_memory(device, args.memory_limit_gib)
    sizes = input_sizes(args.tiny, args.frames)
    ours = build_ours(omni_config(None if args.full_depth else args.layers, args.tiny), device, dtype)
    size = 512 if args.tiny else 8192
    rate = matmul_rate(device, size, dtype)
    meta = run_info(device)
    meta["routing"] = {"mode": args.routing}
    if args.routing == "balanced":
        report = balance_routers(ours.language_model, calibration_embeds(ours, names, rates, sizes),
                                 passes=BALANCE_PASSES_TINY if args.tiny else BALANCE_PASSES)  # fmt: skip
        meta["routing"].update(asdict(report))
        print(f"routing balanced in {report.passes} passes: busiest expert {report.max_over_mean_before:.2f}x "
              f"-> {report.max_over_mean_after:.2f}x the mean, experts with no rows {report.empty_before:.1f} "
              f"-> {report.empty_after:.1f} per layer", flush=True)  # fmt: skip
    reference = None
    if not args.skip_reference:
        reference = _load_reference_or_none(ours, device, meta)
    alternate = args.order == "alternate"
    rows = [run_case(case, ours, reference, device, args.repeats, rate, size, alternate)
            for case in cases(ours, reference, names, rates, sizes)]  # fmt: skip
    text = ours.language_model.config
    if reference is None:
        meta["transformers"] = None
    meta.update(
        dtype="bfloat16",
        layers=text_pattern(text.layer_types),
        num_layers=text.num_hidden_layers,
        full_depth=args.full_depth,
        matmul_size=size,
        matmul_flop_s=rate,
        repeats=args.repeats,
        order=args.order if reference is not None else "ours only",
        tiny=args.tiny,
        weights_gib=model_bytes(ours) / GIB,
        memory_limit_gib=args.memory_limit_gib,
        sizes=asdict(sizes),
        inputs="preprocessed pixel values and log-mel features, random, in the processor's shapes",
    )
    return {"meta": meta, "rows": rows}


def text_pattern(kinds: Sequence[str]) -> str:
    """The ``hybrid_override_pattern`` of layer kinds."""
    from backbone.config import layer_pattern

    return layer_pattern(list(kinds))


# ---------------------------------------------------------------------------------------------- report
def _seconds(row: dict[str, Any], key: str, error_key: str) -> str:
    value = row.get(key)
    if value is not None:
        return f"{value:.3f}"
    return "error" if error_key in row else "-"


def _number(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _main_cells(row: dict[str, Any]) -> list[str]:
    reference = _seconds(row, "transformers_ttft_s", "transformers_error")
    if row.get("transformers_path", "forward") != "forward":
        reference += "*"
    return [row["case"], _seconds(row, "ours_ttft_s", "ours_error"), reference,
            _number(row.get("transformers_over_ours"), ".2f", "x"), _number(row.get("ours_peak_gib"), ".2f"),
            _number(row.get("transformers_peak_gib"), ".2f"), _number(row.get("lm_tokens"), ","),
            _number(row.get("floor_s"), ".3f"), _number(row.get("ours_over_floor"), ".2f", "x"),
            _number(row.get("timed_floor_s"), ".3f"), _number(row.get("ours_over_timed_floor"), ".2f", "x")]  # fmt: skip


def _part_cells(row: dict[str, Any]) -> list[str]:
    cells = [row["case"]]
    for who in ("ours", "transformers"):
        cells += [_seconds(row, f"{who}_{part}_s", f"{who}_{part}_error") for part in ("encode", "prefill")]
    return cells


def _notes(row: dict[str, Any]) -> list[str]:
    """What the tables cannot show: substitute paths and errors."""
    notes = []
    if row.get("transformers_path", "forward") != "forward":
        reason = row.get("transformers_note", "")
        notes.append(f"* transformers timed as its {row['transformers_path']}; its {reason}")
    notes += [f"{key}: {row[key]}" for key in sorted(k for k in row if k.endswith("_error"))]
    return [f"{row['case']}: {note}" for note in notes]


def print_report(result: dict[str, Any]) -> None:
    """The table of times, memory, tokens and floors, the encode/prefill table, and the notes."""
    meta, rows = result["meta"], result["rows"]
    encoders = "tiny" if meta["tiny"] else "full-size"
    print(f"\n{meta['device']}, torch {meta['torch']}, transformers {meta['transformers']}, {meta['date']}")
    if "encoder_attention" in meta:
        print(f"our encoders' attention: {meta['encoder_attention']}")
    print(f"bf16; language model {meta['layers']} ({meta['num_layers']} layers), {encoders} encoders, "
          f"{meta['weights_gib']:.1f} GiB of weights; matmul {meta['matmul_flop_s'] / 1e12:.1f} TFLOP/s "
          f"({meta['matmul_size']}^3, a burst at the start: the floor); time to first token: median of "
          f"{meta['repeats']} after a warm-up, {meta.get('order', 'sequential')}; timed floor: its FLOPs as {meta['matmul_size']}^3 matmuls, "
          f"timed the same way right after it")  # fmt: skip
    headers = ["case", "ours TTFT s", "tf TTFT s", "tf/ours", "ours peak GiB", "tf peak GiB",
               "LM tokens", "floor s", "ours/floor", "timed floor s", "ours/timed"]  # fmt: skip
    print(format_table(headers, [_main_cells(r) for r in rows]))
    headers = ["case", "ours encode s", "ours prefill s", "tf encode s", "tf prefill s"]
    print("\n" + format_table(headers, [_part_cells(r) for r in rows]))
    if meta.get("memory_limit_gib") is not None:
        print(f"GPU memory capped at {meta['memory_limit_gib']:g} GiB (--memory-limit-gib)")
    if "reference_error" in meta:
        print(f"transformers: not run: {meta['reference_error']}")
    for row in rows:
        for note in _notes(row):
            print(note)


def main(argv: list[str] | None = None) -> int:
    """``benchmarks/bench_ttft.py``: parse, run, print, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_ttft_arguments(parser)
    args = parser.parse_args(argv)
    try:
        result = run(args)
    except InputError as err:
        parser.error(str(err))
    print_report(result)
    if args.json:
        write_json(args.json, result)
    return 0
