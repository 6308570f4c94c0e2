"""Speed and memory benchmarks: ours against transformers 5.23 on the same random weights.

``omni.bench.decode``: language-model decode tokens/s and its roofline. ``omni.bench.ttft``: time to
first token and peak GPU memory for image, video and audio prompts, and their compute floor. Both
run as ``omni bench decode|ttft|all`` and as ``benchmarks/bench_*.py``.

This module only declares the options, without importing torch, so that ``omni --help`` stays fast.
"""

from __future__ import annotations

import argparse

TTFT_CASES = ("image", "video", "audio", "video-2min")


def add_shared_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every benchmark takes: --device, --tiny, --skip-reference, --json."""
    parser.add_argument("--device", default="cuda", help="device to run on (default: cuda)")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny model and inputs: a quick smoke run (e.g. on the CPU)"
    )
    parser.add_argument("--skip-reference", action="store_true", help="run ours only, not transformers")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON here")


def add_decode_arguments(parser: argparse.ArgumentParser, shared: bool = True) -> None:
    """Options of the decode benchmark (``shared``: also the options every benchmark takes)."""
    parser.add_argument("--pattern", default="MEM*EMEM", help='layer pattern, or "full" for all 52 layers')
    parser.add_argument("--prompt", type=int, default=1024, help="prompt tokens (default: 1024)")
    parser.add_argument("--new", type=int, default=32, help="new tokens per generate call (default: 32)")
    parser.add_argument("--batches", default="1,8,64", help="batch sizes (default: 1,8,64)")
    if shared:
        add_shared_arguments(parser)


def add_ttft_arguments(parser: argparse.ArgumentParser, shared: bool = True) -> None:
    """Options of the time-to-first-token benchmark (``shared``: also the options every benchmark takes)."""
    parser.add_argument(
        "--layers",
        default="MEM*EMEM",
        metavar="PATTERN",
        help="language-model layer pattern at full width (default: MEM*EMEM)",
    )
    parser.add_argument(
        "--full-depth",
        action="store_true",
        help="all 52 language-model layers (about 66 GB in bf16, built on the device; transformers beside it needs another 59 GB)",
    )
    parser.add_argument(
        "--cases",
        default="image,video,audio",
        help=f"comma-separated cases out of {','.join(TTFT_CASES)} (default: image,video,audio)",
    )
    parser.add_argument("--evs", default="0,0.5,0.75", help="video pruning rates (default: 0,0.5,0.75)")
    parser.add_argument("--frames", type=int, default=None, help="video frames (default: 128; --tiny: 8)")
    parser.add_argument(
        "--video-2min",
        action="store_true",
        help="add the 2-minute video case: 240 frames (2 fps), ours only, for its peak memory",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case after a warm-up")
    parser.add_argument(
        "--order",
        choices=["sequential", "alternate"],
        default="sequential",
        help="sequential: all of ours' timed runs, then all of transformers' (default); alternate: they "
        "take turns, the order reversed every other round (on a card at its power limit each run then "
        "depends on the one before it)",
    )
    parser.add_argument(
        "--routing",
        choices=["balanced", "random"],
        default="balanced",
        help="balanced: the routers' selection biases first brought to even expert load, as trained "
        "checkpoints have them (default); random: the random routers as built",
    )
    parser.add_argument(
        "--memory-limit-gib",
        type=float,
        default=None,
        metavar="GIB",
        help="cap the GPU memory torch may allocate (e.g. 78 to check on a larger card that the cases "
        "fit an 80 GB H100)",
    )
    if shared:
        add_shared_arguments(parser)
