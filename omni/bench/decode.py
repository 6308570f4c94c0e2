"""Decode throughput of the hybrid LM on one GPU: ours (CUDA graphs, eager) vs transformers' NemotronHForCausalLM.

Model: a reduced-depth copy of the Nemotron 3 Nano 30B-A3B text config (full width, all 128 experts;
pattern --pattern, default "MEM*EMEM") with random bf16 weights, the same weights in both
implementations (written once by ours, read by transformers). Each batch size gets a --prompt token
random prompt and --new greedy tokens; decode tokens/s = batch * (new - 1) / (time(new) - time(1)),
so the prompt's prefill cancels out. Prints a table with the ratios and the weight-bytes roofline,
writes JSON with --json.

Run: omni bench decode [--batches 1,8,64] [--json out.json] [--skip-reference]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from backbone import HybridConfig, HybridLM, load_preset
from backbone.fast_decode import GRAPHS_ENV, release_graphs
from omni.bench import add_decode_arguments
from omni.bench.common import copy_bandwidth, device_name, release_memory, timed, write_json

TINY = dict(
    vocab_size=256, hidden_size=64, num_attention_heads=4, head_dim=16, mamba_num_heads=4,
    mamba_head_dim=16, ssm_state_size=16, n_groups=2, n_routed_experts=16, moe_intermediate_size=32,
    moe_shared_expert_intermediate_size=48, intermediate_size=48,
)  # fmt: skip


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


def decode_rate(
    generate: Callable[[int], None], batch: int, new: int, device: torch.device
) -> tuple[float, float]:
    """(decode tokens/s, prefill + first token seconds) of `generate(max_new_tokens)`."""
    generate(4)  # warm-up: kernels compiled, graphs captured
    full = timed(lambda: generate(new), device)
    first = timed(lambda: generate(1), device)
    return batch * (new - 1) / (full - first), first


def text_config(pattern: str, tiny: bool) -> HybridConfig:
    """The 30B-A3B text config cut to `pattern` ("full": all layers), or its tiny version."""
    config = load_preset("nemotron-3-nano-30b-a3b")
    if pattern != "full":
        config = config.replace(layer_types=pattern)
    return config.replace(**TINY) if tiny else config


def build_model(config: HybridConfig, device: torch.device) -> HybridLM:
    """Ours with random weights, built in bf16 on the device: the full depth has no room for fp32."""
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            return HybridLM(config).eval()
    finally:
        torch.set_default_dtype(torch.float32)


def time_ours(ours: HybridLM, prompts: dict, rows: dict, new: int, device: torch.device) -> None:
    """Decode rates of ours with CUDA graphs and eager, into `rows`."""
    for mode in ("graphs", "eager"):
        os.environ[GRAPHS_ENV] = "1" if mode == "eager" else "0"
        for b, prompt in prompts.items():

            def run(n: int, prompt: torch.Tensor = prompt) -> None:
                ours.generate(input_ids=prompt, max_new_tokens=n, eos_token_id=[])

            with torch.no_grad():
                rate, prefill = decode_rate(run, b, new, device)
            rows[b][f"ours_{mode}_tok_s"] = rate
            rows[b][f"ours_{mode}_prefill_s"] = prefill
            print(mode, rows[b], flush=True)
    os.environ.pop(GRAPHS_ENV, None)
    release_graphs(ours)


def load_reference(ours: HybridLM, device: torch.device) -> Any:
    """transformers' NemotronHForCausalLM reading ours' weights from a save (a RAM disk when it has room)."""
    import transformers

    weight_bytes = sum(p.numel() * p.element_size() for p in ours.parameters())
    shm = "/dev/shm"  # a RAM disk when it has room: the weights make a round trip through files
    if not os.path.isdir(shm) or shutil.disk_usage(shm).free < 1.2 * weight_bytes:
        shm = None
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        ours.save_pretrained(tmp)
        reference = transformers.NemotronHForCausalLM.from_pretrained(tmp, dtype=torch.bfloat16)
        return reference.to(device).eval()


def time_reference(ours: HybridLM, prompts: dict, rows: dict, new: int, device: torch.device) -> str:
    """Decode rates of transformers on the same weights, into `rows`; returns its version."""
    import transformers

    reference = load_reference(ours, device)
    for b, prompt in prompts.items():
        kw = dict(do_sample=False, pad_token_id=0)

        def run(n: int, prompt: torch.Tensor = prompt, kw: dict = kw) -> None:
            reference.generate(prompt, max_new_tokens=n, min_new_tokens=n, **kw)

        try:
            with torch.no_grad():
                rate, prefill = decode_rate(run, b, new, device)
            rows[b]["transformers_tok_s"] = rate
            rows[b]["transformers_prefill_s"] = prefill
        except torch.OutOfMemoryError:  # its mamba prefill materialises [b, chunks, l, l, heads, state]
            rows[b]["transformers_tok_s"] = None
            rows[b]["transformers_note"] = "out of memory in its prefill"
            release_memory(device)
        print("transformers", rows[b], flush=True)
    return transformers.__version__


def add_rooflines(ours: HybridLM, rows: dict, bandwidth: float, context: int) -> None:
    """Bytes per step, roofline tokens/s and the ratios of every row."""
    for b, r in rows.items():
        step_bytes = decode_step_bytes(ours, b, context)
        r["step_bytes"] = step_bytes
        r["roofline_tok_s"] = b * bandwidth / step_bytes
        ref = r.get("transformers_tok_s")
        r["graphs_over_transformers"] = r["ours_graphs_tok_s"] / ref if ref else None
        r["graphs_over_eager"] = r["ours_graphs_tok_s"] / r["ours_eager_tok_s"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the decode benchmark; returns ``{"meta": ..., "rows": [...]}`` (one row per batch size)."""
    device = torch.device(args.device)
    config = text_config(args.pattern, args.tiny)
    ours = build_model(config, device)
    batches = [int(b) for b in args.batches.split(",")]
    prompts = {b: torch.randint(3, config.vocab_size, (b, args.prompt), device=device) for b in batches}
    rows: dict[int, dict[str, Any]] = {b: {"batch": b} for b in batches}

    time_ours(ours, prompts, rows, args.new, device)
    version = None if args.skip_reference else time_reference(ours, prompts, rows, args.new, device)
    release_memory(device)  # the reference is gone with time_reference's scope

    bandwidth = copy_bandwidth(device, (2 << 30) if device.type == "cuda" else (64 << 20))
    add_rooflines(ours, rows, bandwidth, args.prompt + args.new // 2)
    meta = {
        "device": device_name(device),
        "torch": torch.__version__,
        "transformers": version,
        "host": platform.node(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "pattern": args.pattern,
        "prompt": args.prompt,
        "new": args.new,
        "bandwidth_bytes_s": bandwidth,
        "layers": config.num_hidden_layers,
        "experts": config.n_routed_experts,
    }
    return {"meta": meta, "rows": list(rows.values())}


def print_report(result: dict[str, Any]) -> None:
    """The table of decode rates, ratios and rooflines."""
    meta, rows = result["meta"], result["rows"]
    print(
        f"\n{meta['device']}, torch {meta['torch']}, transformers {meta['transformers']}, "
        f"pattern {meta['pattern']} ({meta['layers']} layers, full width, {meta['experts']} "
        f"experts), bf16, prompt {meta['prompt']}, {meta['new']} new tokens, greedy"
    )
    header = f"{'batch':>5} {'graphs tok/s':>13} {'eager tok/s':>12} {'transformers':>13} {'graphs/tf':>10} "
    print(header + f"{'graphs/eager':>13} {'roofline tok/s':>15} {'of roofline':>12}")
    for r in rows:
        ref = r.get("transformers_tok_s")
        ref_text = f"{ref:.1f}" if ref else r.get("transformers_note", "-")[:13]
        ratio = f"{r['graphs_over_transformers']:.2f}x" if ref else "-"
        print(
            f"{r['batch']:>5} {r['ours_graphs_tok_s']:>13.1f} {r['ours_eager_tok_s']:>12.1f} {ref_text:>13} "
            f"{ratio:>10} {r['graphs_over_eager']:>12.2f}x {r['roofline_tok_s']:>15.0f} "
            f"{r['ours_graphs_tok_s'] / r['roofline_tok_s']:>11.1%}"
        )
    print(
        f"roofline: measured copy bandwidth {meta['bandwidth_bytes_s'] / 1e12:.2f} TB/s / bytes a decode step "
        f"must move (batch 1: {rows[0]['step_bytes'] / 1e9:.2f} GB: weights incl. the experts hit, states, keys)"
    )


def main(argv: list[str] | None = None) -> int:
    """``benchmarks/bench_decode.py``: parse, run, print, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_decode_arguments(parser)
    args = parser.parse_args(argv)
    result = run(args)
    print_report(result)
    if args.json:
        write_json(args.json, result)
    return 0
