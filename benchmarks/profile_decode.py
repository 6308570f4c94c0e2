"""Where one decode step's time goes: kernels per layer kind, their GPU time, and the graph replay time.

Builds the 30B-A3B text config (random bf16 weights; `--pattern` cuts the depth, "full" keeps all 52
layers), fills a static cache with a `--prompt`-token prompt, then

- times the captured decode step (median of `--steps` replays);
- runs the same step's layers eagerly under the profiler, one layer kind at a time (capture-safe
  experts, graph mode), and sums kernel count and kernel time per kind, plus the top kernels by time.

The gap between the replay time and the summed kernel time is launch latency between small kernels;
the kernel time against the weight bytes read shows how close the big kernels are to bandwidth.

Run: PYTHONPATH=. python benchmarks/profile_decode.py [--pattern full] [--batch 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from backbone.config import ATTENTION
from backbone.fast_decode import attention_step, capture_safe_experts, graph_decoder
from backbone.model import _Context
from omni.bench.common import format_table, write_json
from omni.bench.decode import build_model, decode_step_bytes, text_config


def kind_steps(model, cache, token: torch.Tensor) -> dict[str, Callable[[], None]]:  # noqa: ANN001
    """The captured step's work split by layer kind: each callable runs every layer of one kind once."""
    hidden = model.backbone.embeddings(token[:, None])
    mask = cache.step_mask()
    context = _Context(None, mask, False, cache)
    blocks: dict[str, list] = defaultdict(list)
    for block in model.backbone.layers:
        blocks[block.kind].append(block)

    def run(kind: str) -> None:
        for block in blocks[kind]:
            if kind == ATTENTION:
                hidden + attention_step(block.mixer, block.norm(hidden), cache, mask)
            else:
                block(hidden, context)

    def head() -> None:
        model.lm_head(model.backbone.norm_f(hidden)[:, -1]).float()

    steps = {kind: (lambda kind=kind: run(kind)) for kind in blocks}
    steps["head"] = head
    return steps


def kernel_events(fn: Callable[[], None]) -> list:
    """The GPU kernel events of one call of `fn` (after two warm-up calls)."""
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pattern", default="full")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--json", default=None)
    parser.add_argument("--compile", action="store_true", help="torch.compile the step before capturing it")
    parser.add_argument("--no-profile", action="store_true", help="only time the replays")
    args = parser.parse_args()
    device = torch.device("cuda")
    model = build_model(text_config(args.pattern, False), device)
    prompt = torch.randint(3, model.config.vocab_size, (args.batch, args.prompt), device=device)
    decoder = graph_decoder(model)
    if args.compile:
        decoder._step = torch.compile(decoder._step, dynamic=False)
    with torch.no_grad():
        cache = decoder.prepare(args.batch, args.prompt + args.steps + 8)
        model(input_ids=prompt, cache=cache)
        token = prompt[:, -1]
        for _ in range(3):
            decoder.step(cache, token)
        torch.cuda.synchronize()
        times = []
        for _ in range(args.steps):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            decoder.step(cache, token)
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) / 1e3)
        replay = statistics.median(times)
        print(f"replay median {replay * 1e3:.3f} ms ({args.batch / replay:.1f} tok/s)", flush=True)
        if args.no_profile:
            return

        cache.graph_mode = True
        kinds: dict[str, list[float]] = {}
        kernels: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        with capture_safe_experts(model):
            for kind, fn in kind_steps(model, cache, token).items():
                events = kernel_events(fn)
                kinds[kind] = [len(events), sum(e.device_time for e in events) / 1e6]
                for e in events:
                    kernels[f"{kind}: {e.name[:60]}"][0] += 1
                    kernels[f"{kind}: {e.name[:60]}"][1] += e.device_time / 1e6
        cache.graph_mode = False

    step_bytes = decode_step_bytes(model, args.batch, args.prompt)
    total_kernels = sum(v[0] for v in kinds.values())
    total_time = sum(v[1] for v in kinds.values())
    print(f"replay median {replay * 1e3:.3f} ms ({args.batch / replay:.1f} tok/s); "
          f"{total_kernels} kernels, kernel time {total_time * 1e3:.3f} ms; step reads {step_bytes / 1e9:.2f} GB")  # fmt: skip
    print(format_table(["layer kind", "kernels", "kernel ms"],
                       [[k, str(v[0]), f"{v[1] * 1e3:.3f}"] for k, v in sorted(kinds.items())]))  # fmt: skip
    top = sorted(kernels.items(), key=lambda kv: -kv[1][1])[:40]
    print(format_table(["kernel", "count", "ms"], [[k, str(int(v[0])), f"{v[1] * 1e3:.3f}"] for k, v in top]))
    if args.json:
        write_json(
            args.json, {"replay_s": replay, "kinds": kinds, "kernels": kernels, "step_bytes": step_bytes}
        )


if __name__ == "__main__":
    main()
