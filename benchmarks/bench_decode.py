"""Decode throughput of the hybrid LM on one GPU: ours (CUDA graphs, eager) vs transformers' NemotronHForCausalLM.

Model: a reduced-depth copy of the Nemotron 3 Nano 30B-A3B text config (full width, all 128 experts;
pattern --pattern, default "MEM*EMEM") with random bf16 weights, the same weights in both
implementations (written once by ours, read by transformers). Each batch size gets a --prompt token
random prompt and --new greedy tokens; decode tokens/s = batch * (new - 1) / (time(new) - time(1)),
so the prompt's prefill cancels out. Prints a table with the ratios and the weight-bytes roofline,
writes JSON with --json.

Run: python benchmarks/bench_decode.py [--batches 1,8,64] [--json out.json] [--skip-reference]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from backbone import HybridLM, load_preset
from backbone.fast_decode import GRAPHS_ENV, release_graphs


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:  # noqa: ANN001
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def copy_bandwidth(device: torch.device, nbytes: int = 2 << 30) -> float:
    """Device-to-device copy rate in bytes/s, counting bytes read and written."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync(device)
    start = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    sync(device)
    return 10 * 2 * nbytes / (time.perf_counter() - start)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def decode_step_bytes(model: HybridLM, batch: int, context: int) -> int:
    """Bytes one decode step must move at least: weights it reads (dense ones, the embedding rows of the
    batch, the experts the batch is expected to hit with uniform routing), Mamba states read and written,
    and the keys/values of `context` positions read."""
    cfg = model.config
    experts, top_k = cfg.n_routed_experts, cfg.num_experts_per_tok
    hit = experts * (1.0 - (1.0 - top_k / experts) ** batch)  # expected distinct experts per layer
    total = 0.0
    for name, p in model.named_parameters():
        size = p.numel() * p.element_size()
        if name.endswith("embeddings.weight"):
            total += batch * size / p.shape[0]
        elif ".experts." in name:
            total += size * hit / experts
        else:
            total += size
    mamba = cfg.layer_types.count("mamba")
    attention = cfg.layer_types.count("attention")
    ssm = cfg.mamba_num_heads * cfg.mamba_head_dim * cfg.ssm_state_size * 4
    conv = cfg.mamba_conv_dim * (cfg.conv_kernel - 1) * 2
    total += batch * mamba * 2 * (ssm + conv)
    total += batch * attention * 2 * cfg.num_key_value_heads * context * cfg.head_dim * 2
    return int(total)


def decode_rate(generate, batch: int, new: int, device: torch.device) -> tuple[float, float]:  # noqa: ANN001
    """(decode tokens/s, prefill + first token seconds) of `generate(max_new_tokens)`."""
    generate(4)  # warm-up: kernels compiled, graphs captured
    full = timed(lambda: generate(new), device)
    first = timed(lambda: generate(1), device)
    return batch * (new - 1) / (full - first), first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pattern", default="MEM*EMEM", help='layer pattern, or "full" for all 52 layers')
    parser.add_argument("--prompt", type=int, default=1024)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a tiny config (a smoke run of this script)")
    args = parser.parse_args()

    device = torch.device(args.device)
    config = load_preset("nemotron-3-nano-30b-a3b")
    if args.pattern != "full":
        config = config.replace(layer_types=args.pattern)
    if args.tiny:
        config = config.replace(
            vocab_size=256, hidden_size=64, num_attention_heads=4, head_dim=16, mamba_num_heads=4,
            mamba_head_dim=16, ssm_state_size=16, n_groups=2, n_routed_experts=16, moe_intermediate_size=32,
            moe_shared_expert_intermediate_size=48, intermediate_size=48,
        )  # fmt: skip
    torch.manual_seed(0)
    torch.set_default_dtype(
        torch.bfloat16
    )  # built in bf16 on the device: the full depth has no room for fp32
    with torch.device(device):
        ours = HybridLM(config).eval()
    torch.set_default_dtype(torch.float32)
    batches = [int(b) for b in args.batches.split(",")]
    prompts = {b: torch.randint(3, config.vocab_size, (b, args.prompt), device=device) for b in batches}
    rows = {b: {"batch": b} for b in batches}

    for mode in ("graphs", "eager"):
        os.environ[GRAPHS_ENV] = "1" if mode == "eager" else "0"
        for b in batches:

            def run(n: int, b: int = b) -> None:
                ours.generate(input_ids=prompts[b], max_new_tokens=n, eos_token_id=[])

            with torch.no_grad():
                rate, prefill = decode_rate(run, b, args.new, device)
            rows[b][f"ours_{mode}_tok_s"] = rate
            rows[b][f"ours_{mode}_prefill_s"] = prefill
            print(mode, rows[b], flush=True)
    os.environ.pop(GRAPHS_ENV, None)
    release_graphs(ours)

    if not args.skip_reference:
        import transformers

        weight_bytes = sum(p.numel() * p.element_size() for p in ours.parameters())
        shm = "/dev/shm"  # a RAM disk when it has room: the weights make a round trip through files
        if not os.path.isdir(shm) or shutil.disk_usage(shm).free < 1.2 * weight_bytes:
            shm = None
        with tempfile.TemporaryDirectory(dir=shm) as tmp:
            ours.save_pretrained(tmp)
            reference = transformers.NemotronHForCausalLM.from_pretrained(tmp, dtype=torch.bfloat16)
            reference = reference.to(device).eval()
        for b in batches:
            kw = dict(do_sample=False, pad_token_id=0)

            def run(n: int, b: int = b, kw: dict = kw) -> None:
                reference.generate(prompts[b], max_new_tokens=n, min_new_tokens=n, **kw)

            try:
                with torch.no_grad():
                    rate, prefill = decode_rate(run, b, args.new, device)
                rows[b]["transformers_tok_s"] = rate
                rows[b]["transformers_prefill_s"] = prefill
            except torch.OutOfMemoryError:  # its mamba prefill materialises [b, chunks, l, l, heads, state]
                rows[b]["transformers_tok_s"] = None
                rows[b]["transformers_note"] = "out of memory in its prefill"
                gc.collect()
                torch.cuda.empty_cache()
            print("transformers", rows[b], flush=True)
        rows_ref_version = transformers.__version__
        del reference
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    else:
        rows_ref_version = None

    bandwidth = copy_bandwidth(device, (2 << 30) if device.type == "cuda" else (64 << 20))
    context = args.prompt + args.new // 2
    print(
        f"\n{device_name(device)}, torch {torch.__version__}, transformers {rows_ref_version}, "
        f"pattern {args.pattern} ({config.num_hidden_layers} layers, full width, {config.n_routed_experts} "
        f"experts), bf16, prompt {args.prompt}, {args.new} new tokens, greedy"
    )
    header = f"{'batch':>5} {'graphs tok/s':>13} {'eager tok/s':>12} {'transformers':>13} {'graphs/tf':>10} "
    print(header + f"{'graphs/eager':>13} {'roofline tok/s':>15} {'of roofline':>12}")
    for b in batches:
        r = rows[b]
        step_bytes = decode_step_bytes(ours, b, context)
        r["step_bytes"] = step_bytes
        r["roofline_tok_s"] = b * bandwidth / step_bytes
        ref = r.get("transformers_tok_s")
        r["graphs_over_transformers"] = r["ours_graphs_tok_s"] / ref if ref else None
        r["graphs_over_eager"] = r["ours_graphs_tok_s"] / r["ours_eager_tok_s"]
        ref_text = f"{ref:.1f}" if ref else r.get("transformers_note", "-")[:13]
        ratio = f"{r['graphs_over_transformers']:.2f}x" if ref else "-"
        print(
            f"{b:>5} {r['ours_graphs_tok_s']:>13.1f} {r['ours_eager_tok_s']:>12.1f} {ref_text:>13} {ratio:>10} "
            f"{r['graphs_over_eager']:>12.2f}x {r['roofline_tok_s']:>15.0f} "
            f"{r['ours_graphs_tok_s'] / r['roofline_tok_s']:>11.1%}"
        )
    print(
        f"roofline: measured copy bandwidth {bandwidth / 1e12:.2f} TB/s / bytes a decode step must move "
        f"(batch 1: {rows[batches[0]]['step_bytes'] / 1e9:.2f} GB: weights incl. the experts hit, states, keys)"
    )
    if args.json:
        meta = {
            "device": device_name(device),
            "torch": torch.__version__,
            "transformers": rows_ref_version,
            "host": platform.node(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "pattern": args.pattern,
            "prompt": args.prompt,
            "new": args.new,
            "bandwidth_bytes_s": bandwidth,
        }
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": list(rows.values())}, indent=2))


if __name__ == "__main__":
    main()
