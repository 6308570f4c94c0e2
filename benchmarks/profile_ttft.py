"""Where one time-to-first-token case spends its time: kernel time per module kind, and the top kernels.

Builds the TTFT benchmark's model (`omni.bench.ttft`: full-size encoders and projectors, the language
model cut to `--layers`, random bf16 weights) and one of its cases (`--case image|video|audio`, `--evs`),
runs the first-token forward twice to warm up (kernels compiled, cuDNN plans built), then once under the
profiler. Every part of every encoder or language-model block (attention, MLP, convolution module,
Mamba-2 mixer, MoE ...) and the projectors and LM head carry a profiler range. The table sums, per
(tower, module kind), the kernels launched inside those ranges and their GPU time. "(rest)" is the
tower's time outside them: embeddings, position tables, EVS, padding and packing.
The floor column is the case's FLOPs / the bf16 matmul rate measured in the same run
(as in `omni bench ttft`), for the whole case only. "host ms" is the host's time inside each range
(beyond the range's kernel time, the GPU waits on the host). Two more tables say where the GPU sat idle
for 50 µs or more (by the range of the work that came next) and where the host read the GPU back
(each such read waits for every kernel queued before it).

Routers are balanced first as in `omni bench ttft` (``--routing random`` keeps them random).

Run: PYTHONPATH=. python benchmarks/profile_ttft.py --case audio [--layers MEM*EMEM] [--json out.json]
Smoke run on the CPU (times are CPU times): ... --tiny --device cpu
"""

from __future__ import annotations

import argparse
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from omni.bench.common import format_table, matmul_rate, write_json
from omni.bench.ttft import first_token, lm_flops, one_case

PREFIX = "omni::"
TOWERS = {"vision_model": "vision", "sound_encoder": "audio", "language_model": "lm"}


def _tower(name: str) -> str:
    return TOWERS.get(name.split(".", 1)[0], "other")


def ranges(model: nn.Module) -> dict[nn.Module, str]:
    """The modules that get a profiler range and its label ``tower: kind``: each part of each block of a
    ``ModuleList``, the projectors, the LM head, and each tower as a whole (``tower: (all)``)."""
    labels: dict[nn.Module, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList):
            for block in module:
                for part in block.children():
                    kind = getattr(block, "kind", None) if part is getattr(block, "mixer", None) else None
                    labels[part] = f"{_tower(name)}: {kind or type(part).__name__}"
    labels[model.mlp1] = "projector: vision"
    labels[model.sound_projection] = "projector: audio"
    head = model.language_model.get_output_embeddings()
    labels[head] = "lm: head"
    for name in ("sound_encoder", "language_model"):
        labels[getattr(model, name)] = f"{TOWERS[name]}: (all)"
    return labels


# called as methods, not through ``forward``: wrapped instead of hooked
METHODS = {"vision_model": ("encode_images", "encode_videos")}


@contextmanager
def annotated(model: nn.Module) -> Iterator[None]:
    """A profiler range around every call of each module `ranges` labels, and of the towers' methods."""
    labels = ranges(model)
    open_ranges: dict[int, list[Any]] = defaultdict(list)

    def enter(module: nn.Module, _args: Any) -> None:
        scope = record_function(PREFIX + labels[module])
        scope.__enter__()
        open_ranges[id(module)].append(scope)

    def leave(module: nn.Module, _args: Any, _out: Any) -> None:
        open_ranges[id(module)].pop().__exit__(None, None, None)

    def wrapped(method: Any, label: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            with record_function(PREFIX + label):
                return method(*args, **kwargs)

        return call

    handles = []
    for module in labels:
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    patched = []
    for name, methods in METHODS.items():
        tower = getattr(model, name)
        for method in methods:
            setattr(tower, method, wrapped(getattr(tower, method), f"{TOWERS[name]}: (all)"))
            patched.append((tower, method))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for tower, method in patched:
            delattr(tower, method)  # the instance attribute goes; the class's method shows again


def _kernels(event: Any) -> int:
    return len(event.kernels) + sum(_kernels(child) for child in event.cpu_children)


def per_range(events: list, on_gpu: bool) -> dict[str, list[float]]:
    """``label -> [calls, kernels, seconds]`` over the labelled ranges: calls from the CPU events; on CUDA
    the kernels and their GPU time from `kernels_in_spans`, otherwise the ranges' CPU time."""
    table: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for event in events:
        if not event.name.startswith(PREFIX) or event.device_type != torch.autograd.DeviceType.CPU:
            continue
        row = table[event.name[len(PREFIX) :]]
        row[0] += 1
        if not on_gpu:
            row[1] += _kernels(event)
            row[2] += event.cpu_time_total / 1e6
    if on_gpu:
        for label, (count, seconds) in kernels_in_spans(events).items():
            table[label][1:] = [count, seconds]
    return table


def host_seconds(events: list) -> dict[str, float]:
    """``label -> seconds`` the host spent inside the ranges of that label (launching, not waiting, unless a
    call in it reads the GPU back): where it exceeds the range's kernel time, the GPU waits on the host."""
    spent: dict[str, float] = defaultdict(float)
    for start, end, label in _spans(events, torch.autograd.DeviceType.CPU):
        spent[label] += (end - start) / 1e6
    return spent


def kernels_in_spans(events: list) -> dict[str, tuple[int, float]]:
    """``label -> (kernels, seconds)``: the kernels that start inside the GPU-timeline span of a range of
    that label (nested ranges count for each label around them).

    The profiler ties a kernel to a CPU range only when an ATen operator launched it; Triton's kernels are
    launched by the driver API and are tied to nothing, so the ranges' own GPU time left them out. The
    spans the profiler draws on the GPU timeline for each range cover every kernel queued inside it.
    """
    kernels = sorted((e for e in events if is_kernel(e)), key=lambda e: e.time_range.start)
    starts = [e.time_range.start for e in kernels]
    members: dict[str, set[int]] = defaultdict(set)
    for event in events:
        if event.device_type == torch.autograd.DeviceType.CUDA and event.name.startswith(PREFIX):
            lo = bisect_left(starts, event.time_range.start)
            hi = bisect_right(starts, event.time_range.end)
            members[event.name[len(PREFIX) :]].update(range(lo, hi))
    return {
        label: (len(indices), sum(kernels[i].device_time for i in indices) / 1e6)
        for label, indices in members.items()
    }


def with_rest(table: dict[str, list[float]]) -> dict[str, list[float]]:
    """Each tower's ``(all)`` row replaced by ``(rest)``: its time outside its labelled parts."""
    out = {label: row for label, row in table.items() if not label.endswith("(all)")}
    for label, row in table.items():
        if label.endswith("(all)"):
            tower = label.split(":")[0]
            parts = [r for name, r in out.items() if name.startswith(tower + ":")]
            out[f"{tower}: (rest)"] = [
                row[0],
                row[1] - sum(r[1] for r in parts),
                row[2] - sum(r[2] for r in parts),
            ]
    return out


def is_kernel(event: Any) -> bool:
    """A GPU kernel (or copy), not the GPU-timeline copy of one of our labelled ranges."""
    return event.device_type == torch.autograd.DeviceType.CUDA and not event.name.startswith(PREFIX)


def gpu_timeline(events: list) -> dict[str, float]:
    """Seconds from the first kernel's start to the last one's end (``span_s``), the time at least one
    kernel ran (``busy_s``), the idle rest (``idle_s``) and how much of it lay in gaps of 50 µs or more
    (``idle_long_s``): whether the case waits on the host or on its kernels."""
    kernels = sorted((e.time_range.start, e.time_range.end) for e in events if is_kernel(e))
    if not kernels:
        return {"span_s": 0.0, "busy_s": 0.0, "idle_s": 0.0, "idle_long_s": 0.0}
    busy = idle_long = 0.0
    end = kernels[0][0]
    for start, stop in kernels:
        gap = start - end
        if gap >= 50:
            idle_long += gap
        busy += max(0, stop - max(start, end))
        end = max(end, stop)
    span = end - kernels[0][0]
    return {
        "span_s": span / 1e6,
        "busy_s": busy / 1e6,
        "idle_s": (span - busy) / 1e6,
        "idle_long_s": idle_long / 1e6,
    }


def _innermost(spans: list[tuple[float, float, str]], time: float) -> str:
    """The label of the shortest span holding ``time`` ("(none)" outside them all)."""
    best, label = float("inf"), "(none)"
    for start, end, name in spans:
        if start <= time <= end and end - start < best:
            best, label = end - start, name
    return label


def _spans(events: list, device: Any) -> list[tuple[float, float, str]]:
    return [
        (e.time_range.start, e.time_range.end, e.name[len(PREFIX) :])
        for e in events
        if e.device_type == device and e.name.startswith(PREFIX)
    ]


def idle_owners(events: list, at_least_us: float = 50) -> dict[str, tuple[int, float]]:
    """``label -> (gaps, seconds)``: the GPU's idle gaps of ``at_least_us`` or more, each given to the
    innermost labelled range whose GPU span holds the kernel after it (the work that waited)."""
    kernels = sorted((e.time_range.start, e.time_range.end) for e in events if is_kernel(e))
    spans = _spans(events, torch.autograd.DeviceType.CUDA)
    owners: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    end = kernels[0][1] if kernels else 0.0
    for start, stop in kernels[1:]:
        if start - end >= at_least_us:
            row = owners[_innermost(spans, start)]
            row[0] += 1
            row[1] += (start - end) / 1e6
        end = max(end, stop)
    return {label: (int(n), s) for label, (n, s) in owners.items()}


# host calls that wait for the GPU: a tensor read back (.item(), .tolist(), int(t)) or an explicit sync
HOST_WAITS = ("aten::_local_scalar_dense", "aten::nonzero", "cudaStreamSynchronize", "cudaDeviceSynchronize",
              "cudaEventSynchronize", "cudaMemcpy")  # fmt: skip


def host_waits(events: list) -> dict[str, tuple[int, float]]:
    """``"call in range" -> (calls, host seconds)`` for the calls of `HOST_WAITS`, each placed in the
    innermost labelled range around it on the host."""
    spans = _spans(events, torch.autograd.DeviceType.CPU)
    found: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for event in events:
        if event.device_type == torch.autograd.DeviceType.CPU and event.name in HOST_WAITS:
            row = found[f"{event.name} in {_innermost(spans, event.time_range.start)}"]
            row[0] += 1
            row[1] += (event.time_range.end - event.time_range.start) / 1e6
    return {key: (int(n), s) for key, (n, s) in found.items()}


def top_kernels(events: list, count: int) -> list[tuple[str, int, float]]:
    """The ``count`` GPU kernels with the most total time: (name, launches, seconds)."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for event in events:
        if is_kernel(event):
            totals[event.name][0] += 1
            totals[event.name][1] += event.device_time / 1e6
    ranked = sorted(totals.items(), key=lambda kv: -kv[1][1])[:count]
    return [(name, int(v[0]), v[1]) for name, v in ranked]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["image", "video", "audio"], default="image")
    parser.add_argument("--evs", type=float, default=0.0, help="EVS rate of the video case")
    parser.add_argument("--frames", type=int, default=None, help="video frames (default: the benchmark's)")
    parser.add_argument("--layers", default="MEM*EMEM", help="language-model layer pattern")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny widths and inputs (smoke run)")
    parser.add_argument("--routing", choices=["balanced", "random"], default="balanced",
                        help="routers brought to even load first, as in omni bench ttft (default), or not")  # fmt: skip
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    model, case, report = one_case(
        args.case, args.layers, args.tiny, device, args.evs, args.frames, args.routing == "balanced"
    )
    if report is not None:
        print(f"routing balanced: busiest expert {report.max_over_mean_before:.2f}x -> "
              f"{report.max_over_mean_after:.2f}x the mean")  # fmt: skip
    rate = matmul_rate(device, 512 if args.tiny else 8192, torch.bfloat16)

    with torch.no_grad():
        tokens = model.embed_inputs(**case.ours).inputs_embeds.shape[1]
        for _ in range(2):
            first_token(model, case.ours)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
        with annotated(model), profile(activities=activities) as prof:
            first_token(model, case.ours)
            if on_gpu:
                torch.cuda.synchronize(device)
    events = list(prof.events())
    table = with_rest(per_range(events, on_gpu))
    kernel_seconds = sum(e.device_time for e in events if is_kernel(e)) / 1e6
    if on_gpu:
        total = kernel_seconds
        table["outside the towers"] = [1, 0, total - sum(r[2] for r in table.values())]
    else:
        total = sum(r[2] for r in table.values())
    floor = (case.encoder_flops + lm_flops(model.language_model, tokens)) / rate

    print(f"{case.name}: {tokens:,} LM tokens; kernel time {total * 1e3:.2f} ms"
          f" ({'GPU' if on_gpu else 'CPU'}); floor {floor * 1e3:.2f} ms ({total / floor:.2f}x)")  # fmt: skip
    rows = sorted(table.items(), key=lambda kv: -kv[1][2])
    host = host_seconds(events)
    print(format_table(["range", "calls", "kernels", "ms", "share", "host ms"],
                       [[k, str(int(v[0])), str(int(v[1])), f"{v[2] * 1e3:.2f}", f"{v[2] / total:.1%}",
                         f"{host[k] * 1e3:.2f}" if k in host else "-"] for k, v in rows]))  # fmt: skip
    timeline = gpu_timeline(events) if on_gpu else None
    idle = idle_owners(events) if on_gpu else {}
    waits = host_waits(events)
    if timeline:
        print(f"GPU timeline: {timeline['span_s'] * 1e3:.2f} ms from the first kernel to the last, busy"
              f" {timeline['busy_s'] * 1e3:.2f} ms, idle {timeline['idle_s'] * 1e3:.2f} ms"
              f" ({timeline['idle_long_s'] * 1e3:.2f} ms of it in gaps of 50 us or more)")  # fmt: skip
    if idle:
        print(format_table(["GPU idle >= 50 us, before work of", "gaps", "ms"],
                           [[k, str(n), f"{sec * 1e3:.2f}"]
                            for k, (n, sec) in sorted(idle.items(), key=lambda kv: -kv[1][1])]))  # fmt: skip
    if waits:
        print(format_table(["host waits on the GPU", "calls", "host ms"],
                           [[k, str(n), f"{sec * 1e3:.2f}"]
                            for k, (n, sec) in sorted(waits.items(), key=lambda kv: -kv[1][1])]))  # fmt: skip
    top = top_kernels(events, args.top) if on_gpu else []
    if top:
        print(
            format_table(
                ["kernel", "launches", "ms"], [[n[:90], str(c), f"{s * 1e3:.2f}"] for n, c, s in top]
            )
        )
    result = {"case": case.name, "lm_tokens": tokens, "kernel_s": total, "floor_s": floor,
              "ranges": {k: {"calls": v[0], "kernels": v[1], "seconds": v[2]} for k, v in table.items()},
              "top_kernels": top, "gpu_timeline": timeline, "host_seconds": host,
              "gpu_idle_before": idle, "host_waits": waits}  # fmt: skip
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
