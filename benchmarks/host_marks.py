"""Where one time-to-first-token case waits on the host, measured without the profiler.

The profiler slows the host several times over, so its idle gaps (`profile_ttft.py`) mostly show its own
cost. This script instead marks named points of one plain first-token forward: at each, the host's clock
and a CUDA event queued there. ``gpu ms`` is when the GPU reached the point, ``host ms`` when the host
queued it, both from the start of the call. Where ``ahead ms`` (gpu - host) is near zero the GPU got to
that point as soon as the host queued it: it had been waiting on the host. Where it is large, the host
was that far ahead and the GPU's own work set the pace.

Marks: the start and end of the input embedding, of its placeholder types and of its images, the
ViT's input checks, its patch embedding and the attention of its first, second and last blocks, the
vision projector, the audio embedding with its encoder's graph replay and projector, the mixer of every
``--every``-th language-model layer (and the last), and the LM head. They wrap the modules' ``forward``
as instance attributes, not as hooks: a hook on a language-model block would switch it to its unfused
path.

The model and the case are `omni bench ttft`'s (routers balanced first). ``--repeats`` runs are timed
after three warm-ups; the table is the last run's, the wall times all of them.

Run: PYTHONPATH=. python benchmarks/host_marks.py --case audio --layers MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME
Smoke run on the CPU (no GPU columns): ... --tiny --device cpu
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from omni.bench.common import format_table, write_json
from omni.bench.ttft import first_token, one_case

# a point whose GPU arrival trails its queueing by less than this counts as the GPU waiting there
WAITING_MS = 0.05


class Marks:
    """Named points of one run: the host's clock and, on CUDA, an event queued there."""

    def __init__(self, on_gpu: bool) -> None:
        self.on_gpu = on_gpu
        self.points: list[tuple[str, float, Any]] = []

    def mark(self, label: str) -> None:
        event = None
        if self.on_gpu:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
        self.points.append((label, time.perf_counter(), event))

    def wrap(self, owner: Any, name: str, label: str) -> None:
        """Mark before and after every call of ``owner.name`` (set on the instance)."""
        inner: Callable[..., Any] = getattr(owner, name)

        def marked(*args: Any, **kwargs: Any) -> Any:
            self.mark(f"{label} >")
            out = inner(*args, **kwargs)
            self.mark(f"{label} <")
            return out

        setattr(owner, name, marked)

    def rows(self) -> list[dict[str, Any]]:
        """Each point's host and GPU milliseconds from the first point (GPU None off CUDA)."""
        _, host0, event0 = self.points[0]
        out = []
        for label, host, event in self.points:
            gpu = event0.elapsed_time(event) if self.on_gpu else None
            out.append({"mark": label, "host_ms": (host - host0) * 1e3, "gpu_ms": gpu})
        return out


def place_marks(marks: Marks, model: Any, every: int) -> None:
    """Wrap the points the module docstring lists (those the model has)."""
    marks.wrap(model, "embed_inputs", "embed")
    marks.wrap(model, "_placeholder_types", "placeholder types")
    vision = model.vision_model
    if vision is not None:
        marks.wrap(model, "image_embeddings", "image")
        marks.wrap(vision, "_check_images", "vit input checks")
        marks.wrap(vision.patch_generator, "embed_packed_images", "vit patch embed")
        last = len(vision.blocks) - 1
        for index in sorted({0, min(1, last), last}):
            marks.wrap(vision.blocks[index].attn, "forward", f"vit attention {index}")
        marks.wrap(model.mlp1, "forward", "vision projector")
    if model.sound_encoder is not None:
        marks.wrap(model, "audio_embeddings", "audio")
        marks.wrap(model.sound_encoder.encoder.layer_graphs, "run", "audio encoder graph")
        marks.wrap(model.sound_projection, "forward", "audio projector")
    layers = model.language_model.backbone.layers
    for index, block in enumerate(layers):
        if index % every == 0 or index == len(layers) - 1:
            marks.wrap(block.mixer, "forward", f"lm {index} {block.kind}")
    marks.wrap(model.language_model.lm_head, "forward", "lm head")


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The GPU's wait for the host before the first point it reached late, and the points it waited at."""
    if rows[0]["gpu_ms"] is None:
        return {"end_host_ms": rows[-1]["host_ms"]}
    waited = [r["mark"] for r in rows[1:] if r["gpu_ms"] - r["host_ms"] < WAITING_MS]
    lead_in = 0.0
    for row in rows[1:]:
        if row["gpu_ms"] - row["host_ms"] >= WAITING_MS:
            break
        lead_in = row["gpu_ms"]
    return {
        "end_host_ms": rows[-1]["host_ms"],
        "end_gpu_ms": rows[-1]["gpu_ms"],
        "gpu_waited_until_ms": lead_in,
        "gpu_waited_at": waited,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["image", "video", "audio"], default="image")
    parser.add_argument("--evs", type=float, default=0.0, help="EVS rate of the video case")
    parser.add_argument("--layers", default="MEM*EMEM", help="language-model layer pattern")
    parser.add_argument("--every", type=int, default=1, help="mark every n-th language-model layer")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny widths and inputs (smoke run)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.every < 1 or args.repeats < 1:
        parser.error("--every and --repeats must be at least 1")
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    model, case, _ = one_case(args.case, args.layers, args.tiny, device, args.evs)
    marks = Marks(on_gpu)
    place_marks(marks, model, args.every)

    def sync() -> None:
        if on_gpu:
            torch.cuda.synchronize(device)

    walls = []
    with torch.no_grad():
        for _ in range(3):
            first_token(model, case.ours)
        for _ in range(args.repeats):
            marks.points.clear()
            sync()
            start = time.perf_counter()
            marks.mark("start")
            first_token(model, case.ours)
            marks.mark("end")
            sync()
            walls.append(time.perf_counter() - start)
    rows = marks.rows()
    result = {"case": case.name, "wall_ms": [w * 1e3 for w in walls], "marks": rows, **summary(rows)}

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    print(
        f"{case.name}: wall median {statistics.median(walls) * 1e3:.2f} ms over {len(walls)} runs (marks on)"
    )
    print(format_table(["mark", "host ms", "gpu ms", "ahead ms"],
                       [[r["mark"], cell(r["host_ms"]), cell(r["gpu_ms"]),
                         cell(None if r["gpu_ms"] is None else r["gpu_ms"] - r["host_ms"])] for r in rows]))  # fmt: skip
    if on_gpu:
        print(f"the GPU waited on the host until {result['gpu_waited_until_ms']:.2f} ms; points it reached as soon"
              f" as they were queued: {len(result['gpu_waited_at'])}")  # fmt: skip
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
