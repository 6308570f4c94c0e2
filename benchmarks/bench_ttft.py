"""Time to first token and peak GPU memory for image, video and audio prompts: ours vs transformers.

Model: the Nemotron 3 Nano Omni architecture with random bf16 weights: RADIO ViT-H/16 (32 layers,
1280 wide), the Parakeet encoder (24 layers, 1024 wide, 128 mels), both projectors at full size, and
the 30B-A3B language model at full width with all 128 experts cut to ``--pattern`` (default
``MEM*EMEM``). transformers 5.23 reads the same weights from our released-layout save.

Inputs (model-ready tensors already on the GPU, so preprocessing is not timed):
- image: one image of 104 x 128 patches = 13,312 patches (3,328 tokens);
- video: 128 frames of 384 x 672 px (16:9 at the default 1,024-patch frame budget), 64 tubelets of
  24 x 42 patches = 16,128 tokens before EVS, at each ``--evs`` rate;
- audio: 10 minutes at 16 kHz as 20 clips of 30 s of log-mel features (7,500 tokens).
Time to first token = encoders + projection + token reduction + language-model prefill + the first
token's logits and argmax (median of ``--repeats`` runs after a warm-up). transformers' video
``forward`` fails in 5.23, so its video row times its own building blocks (``get_video_features``,
its EVS ``compute_retention_mask`` on the true 16:9 grid, the language model on the embeddings).

Compute floor: FLOPs of the run (encoders and projectors counted by ``torch.utils.flop_counter`` on
our forward; the language model as 2 x active parameters x tokens plus causal attention) divided by
the bf16 matmul rate measured in the same run (8192^3).

Run: PYTHONPATH=. python benchmarks/bench_ttft.py [--json out.json] [--skip-reference] [--tiny --device cpu]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_decode import device_name, sync  # the sibling script (this folder is first on sys.path)

IMAGE_TOKEN, VIDEO_TOKEN, AUDIO_TOKEN = 18, 18, 27
PRESET = Path(__file__).resolve().parents[1] / "backbone" / "presets" / "nemotron-3-nano-30b-a3b.json"


def omni_config(pattern: str, tiny: bool) -> dict[str, Any]:
    """The omni config: released encoder and projector sizes, the text preset cut to ``pattern``."""
    text = json.loads(PRESET.read_text())
    text.update(hybrid_override_pattern=pattern, num_hidden_layers=len(pattern))
    vision = dict(model_type="radio", hidden_size=1280, num_hidden_layers=32, num_attention_heads=16,
                  intermediate_size=5120, patch_size=16, max_img_size=2048, num_cls_tokens=3,
                  num_registers=7, video_temporal_patch_size=2)  # fmt: skip
    audio = dict(model_type="parakeet_encoder", hidden_size=1024, num_hidden_layers=24, num_attention_heads=8,
                 intermediate_size=4096, num_mel_bins=128, subsampling_conv_channels=256, subsampling_factor=8,
                 conv_kernel_size=9, projection_hidden_size=4096, projection_bias=False)  # fmt: skip
    config = dict(model_type="nemotron_h_omni", architectures=["NemotronH_Omni_Reasoning_V3"],
                  image_token_id=IMAGE_TOKEN, video_token_id=23, audio_token_id=AUDIO_TOKEN, downsample_ratio=0.5,
                  projector_hidden_size=20480, vision_hidden_size=1280, video_temporal_patch_size=2,
                  text_config=text, vision_config=vision, audio_config=audio)  # fmt: skip
    if tiny:
        text.update(vocab_size=256, hidden_size=64, num_attention_heads=4, head_dim=16, mamba_num_heads=4,
                    mamba_head_dim=16, ssm_state_size=16, n_groups=2, n_routed_experts=8, num_experts_per_tok=2,
                    n_group=1, topk_group=1, moe_intermediate_size=32, moe_shared_expert_intermediate_size=48,
                    intermediate_size=48)  # fmt: skip
        vision.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
        audio.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     num_mel_bins=16, subsampling_conv_channels=8, projection_hidden_size=48)  # fmt: skip
        config.update(projector_hidden_size=48, vision_hidden_size=32)
    return config


def build_ours(config: dict[str, Any], device: torch.device) -> Any:
    """Our model with random weights, built directly on ``device`` and cast to bf16."""
    from omni.config import OmniConfig
    from omni.model import OmniModel

    torch.manual_seed(0)
    with torch.device(device):
        model = OmniModel(OmniConfig.from_dict(config))
        model.vision_model.reset_parameters()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "pos_embed" not in name:
                p.normal_(0.0, 0.02)  # random weights; values do not change the timing
    return model.to(torch.bfloat16).eval()


def load_reference(ours: Any, device: torch.device) -> Any:
    """transformers' model from our released-layout save (RAM disk when it has room)."""
    from transformers import NemotronH_Omni_Reasoning_V3

    size = sum(p.numel() * p.element_size() for p in ours.parameters())
    shm = (
        "/dev/shm" if os.path.isdir("/dev/shm") and shutil.disk_usage("/dev/shm").free > 1.3 * size else None
    )
    with tempfile.TemporaryDirectory(dir=shm) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours.save_pretrained(tmp)
        reference = NemotronH_Omni_Reasoning_V3.from_pretrained(tmp, dtype=torch.bfloat16)
    return reference.to(device).eval()


def measure(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, float]:
    """(median seconds, peak GiB above the memory held before) of ``fn`` after one warm-up."""
    fn()
    sync(device)
    gc.collect()
    base = 0
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**30 if device.type == "cuda" else 0.0
    return statistics.median(times), peak


def matmul_rate(device: torch.device, size: int) -> float:
    """Measured bf16 (CPU: fp32) matmul FLOP/s on ``size``^3."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(5):
        a @ b
    sync(device)
    return 5 * 2 * size**3 / (time.perf_counter() - start)


def lm_flops(model: Any, tokens: int) -> float:
    """Prefill FLOPs of the language model: 2 x active weights x tokens + causal attention scores/values."""
    cfg = model.language_model.config
    share = cfg.num_experts_per_tok / cfg.n_routed_experts
    active = 0.0
    for name, p in model.language_model.named_parameters():
        if name.endswith("embeddings.weight") or name.startswith("lm_head") or p.dim() < 2:
            continue
        active += p.numel() * (share if ".experts." in name else 1.0)
    attention = (
        cfg.layer_types.count("attention") * 2 * tokens * tokens * cfg.num_attention_heads * cfg.head_dim
    )
    return 2 * active * tokens + attention


def encoder_flops(model: Any, inputs: dict[str, Any]) -> float:
    """FLOPs of the encoders and projectors on ``inputs`` (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.embed_inputs(**inputs)
    return float(counter.get_total_flops())


def prompt(count: int, token: int, device: torch.device) -> torch.Tensor:
    """``[1, 8 + count + 8]`` ids: some text, ``count`` placeholders, some text."""
    text = torch.arange(100, 108)
    return torch.cat([text, torch.full((count,), token), text])[None].to(device)


def image_case(config: dict[str, Any], device: torch.device, tiny: bool) -> dict[str, Any]:
    rows, cols = (8, 12) if tiny else (104, 128)
    patch = config["vision_config"]["patch_size"]
    pixels = torch.randn(rows * cols, 3 * patch * patch, device=device, dtype=torch.bfloat16)
    grid = torch.tensor([[rows, cols]])
    ids = prompt(rows * cols // 4, IMAGE_TOKEN, device)
    return {"ours": dict(input_ids=ids, pixel_values=pixels, image_grid_hw=grid),
            "reference": dict(input_ids=ids, pixel_values=pixels, image_grid_hw=grid.to(device)),
            "media_tokens": rows * cols // 4}  # fmt: skip


def video_frames(device: torch.device, tiny: bool, frames: int) -> torch.Tensor:
    height, width = (64, 128) if tiny else (384, 672)
    return torch.randn(frames, 3, height, width, device=device, dtype=torch.bfloat16)


def video_inputs(model: Any, frames: torch.Tensor, rate: float) -> dict[str, Any]:
    patch = model.vision_model.config.patch_size
    tubelets = (frames.shape[0] + 1) // 2
    count = tubelets * (frames.shape[-2] // patch // 2) * (frames.shape[-1] // patch // 2)
    ids = prompt(count, VIDEO_TOKEN, frames.device)
    return dict(input_ids=ids, pixel_values_videos=frames, video_pruning_rate=rate), count


def reference_video_first_token(reference: Any, ids: torch.Tensor, frames: torch.Tensor, rate: float) -> Any:
    """transformers' own blocks: tower + projector, its EVS on the true grid, its language model."""
    from transformers.models.nemotron_h_omni.modeling_nemotron_h_omni import compute_retention_mask

    embeds = reference.get_video_features(frames).pooler_output
    patch = reference.vision_model.patch_size
    rows, cols = frames.shape[-2] // patch // 2, frames.shape[-1] // patch // 2
    embeds = embeds.reshape(-1, embeds.shape[-1])
    text = reference.get_input_embeddings()(ids)
    placeholders = ids == VIDEO_TOKEN
    text[placeholders] = embeds.to(text.dtype)
    keep = torch.ones_like(ids, dtype=torch.bool)
    if rate > 0:
        thw = ((frames.shape[0] + 1) // 2, rows, cols)
        keep[placeholders] = compute_retention_mask(
            video_embeds=embeds, thw=thw, spatial_merge_size=1, q=rate
        )
    logits = reference.language_model(inputs_embeds=text[keep][None], logits_to_keep=1).logits
    return logits[:, -1].argmax(-1)


def audio_case(model: Any, reference: Any, config: dict[str, Any], device: torch.device, tiny: bool) -> dict:
    clips, frames = (2, 400) if tiny else (20, 3000)
    mels = config["audio_config"]["num_mel_bins"]
    features = torch.randn(clips, frames, mels, device=device, dtype=torch.bfloat16)
    mask = torch.ones(clips, frames, dtype=torch.bool, device=device)
    counts = torch.tensor([clips])
    with torch.no_grad():
        ours_count = model.audio_embeddings(features, mask, counts).shape[0]
        ref_count = None
        if reference is not None:
            ref_count = reference.get_audio_features(features, mask).pooler_output.shape[0]
    ours = dict(input_ids=prompt(ours_count, AUDIO_TOKEN, device), input_features=features,
                input_features_mask=mask, audio_clip_counts=counts)  # fmt: skip
    ref = None
    if ref_count is not None:
        ref = dict(
            input_ids=prompt(ref_count, AUDIO_TOKEN, device),
            input_features=features,
            input_features_mask=mask,
        )
    return {"ours": ours, "reference": ref, "media_tokens": ours_count}


def first_token(model: Any, inputs: dict[str, Any]) -> torch.Tensor:
    """Prefill and the first greedy token (logits of the last position only)."""
    logits = model(**inputs, logits_to_keep=1).logits
    return logits[:, -1].argmax(-1)


def run_case(
    name: str, ours_fn: Callable, ref_fn: Callable | None, device: torch.device, repeats: int
) -> dict:
    row: dict[str, Any] = {"case": name}
    for who, fn in (("ours", ours_fn), ("transformers", ref_fn)):
        if fn is None:
            continue
        try:
            with torch.no_grad():
                row[f"{who}_s"], row[f"{who}_peak_gib"] = measure(fn, device, repeats)
        except torch.OutOfMemoryError:
            row[f"{who}_error"] = "out of memory"
        except Exception as err:  # noqa: BLE001 - a failing reference is a result, not a crash
            row[f"{who}_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pattern", default="MEM*EMEM")
    parser.add_argument("--cases", default="image,video,audio")
    parser.add_argument("--evs", default="0,0.5,0.75")
    parser.add_argument("--frames", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long-video-frames", type=int, default=240, help="ours only, peak memory (0: skip)")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a smoke run of this script")
    args = parser.parse_args()

    device = torch.device(args.device)
    cases = set(args.cases.split(","))
    config = omni_config(args.pattern, args.tiny)
    ours = build_ours(config, device)
    reference = None if args.skip_reference else load_reference(ours, device)
    rate = matmul_rate(device, 1024 if args.tiny else 8192)
    rows: list[dict[str, Any]] = []

    def floor(inputs: dict[str, Any], lm_tokens: int) -> float:
        return (encoder_flops(ours, inputs) + lm_flops(ours, lm_tokens)) / rate

    if "image" in cases:
        case = image_case(config, device, args.tiny)
        ref_fn = None if reference is None else (lambda: first_token(reference, case["reference"]))
        row = run_case(
            "image 13,312 patches", lambda: first_token(ours, case["ours"]), ref_fn, device, args.repeats
        )
        row["lm_tokens"] = case["ours"]["input_ids"].shape[1]
        row["floor_s"] = floor(case["ours"], row["lm_tokens"])
        rows.append(row)
    if "video" in cases:
        from tokenreduce import evs_retained_count

        frames = video_frames(device, args.tiny, args.frames)
        patch = config["vision_config"]["patch_size"]
        grid = (frames.shape[-2] // patch // 2, frames.shape[-1] // patch // 2)
        for evs in (float(r) for r in args.evs.split(",")):
            inputs, count = video_inputs(ours, frames, evs)
            ids = inputs["input_ids"]
            ref_fn = None
            if reference is not None:
                ref_fn = lambda ids=ids, evs=evs: reference_video_first_token(reference, ids, frames, evs)  # noqa: E731
            name = f"video {args.frames} frames 16:9, EVS {evs:g}"
            row = run_case(
                name, lambda inputs=inputs: first_token(ours, inputs), ref_fn, device, args.repeats
            )
            kept = evs_retained_count((args.frames + 1) // 2, *grid, evs) if evs > 0 else count
            row["lm_tokens"] = ids.shape[1] - count + kept
            row["floor_s"] = floor(inputs, row["lm_tokens"])
            rows.append(row)
        if args.long_video_frames:
            long_frames = video_frames(device, args.tiny, args.long_video_frames)
            inputs, count = video_inputs(ours, long_frames, 0.0)
            name = f"video {args.long_video_frames} frames (2 min at 2 fps), ours only"
            row = run_case(name, lambda: first_token(ours, inputs), None, device, 1)
            row["lm_tokens"] = inputs["input_ids"].shape[1]
            rows.append(row)
            del long_frames, inputs
    if "audio" in cases:
        case = audio_case(ours, reference, config, device, args.tiny)
        ref_fn = None
        if case["reference"] is not None:
            ref_fn = lambda: first_token(reference, case["reference"])  # noqa: E731
        row = run_case("audio 10 min", lambda: first_token(ours, case["ours"]), ref_fn, device, args.repeats)
        row["lm_tokens"] = case["ours"]["input_ids"].shape[1]
        row["floor_s"] = floor(case["ours"], row["lm_tokens"])
        rows.append(row)

    print_table(rows, device, rate, args.pattern)
    if args.json:
        meta = {"device": device_name(device), "torch": torch.__version__, "transformers": reference_version(),
                "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "pattern": args.pattern, "matmul_flop_s": rate}  # fmt: skip
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


def reference_version() -> str | None:
    try:
        import transformers

        return transformers.__version__
    except ImportError:
        return None


def print_table(rows: list[dict[str, Any]], device: torch.device, rate: float, pattern: str) -> None:
    print(f"\n{device_name(device)}, torch {torch.__version__}, transformers {reference_version()}, bf16, "
          f"LM pattern {pattern} at full width, full-size encoders; matmul rate {rate / 1e12:.0f} TFLOP/s")  # fmt: skip
    head = f"{'case':<44} {'ours s':>8} {'tf s':>8} {'tf/ours':>8} {'ours GiB':>9} {'tf GiB':>8}"
    print(head + f" {'LM tokens':>9} {'floor s':>8} {'ours/floor':>10}")
    for r in rows:
        ours, ref = r.get("ours_s"), r.get("transformers_s")
        ratio = f"{ref / ours:.2f}x" if ours and ref else "-"
        ref_text = f"{ref:.3f}" if ref else r.get("transformers_error", "-")[:8]
        ours_text = f"{ours:.3f}" if ours else r.get("ours_error", "-")[:8]
        floor = r.get("floor_s")
        print(
            f"{r['case']:<44} {ours_text:>8} {ref_text:>8} {ratio:>8} {r.get('ours_peak_gib', 0):>9.2f} "
            f"{r.get('transformers_peak_gib', 0):>8.2f} {r.get('lm_tokens', 0):>9} "
            f"{(f'{floor:.3f}' if floor else '-'):>8} {(f'{ours / floor:.2f}x' if ours and floor else '-'):>10}"
        )
    for r in rows:
        for who in ("ours", "transformers"):
            if f"{who}_error" in r:
                print(f"{r['case']}: {who}: {r[who + '_error']}")


if __name__ == "__main__":
    main()
