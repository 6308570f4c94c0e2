"""``omni bench``: speed and memory benchmarks, ours against transformers 5.23 on the same random weights.

``omni bench decode``: language-model decode tokens/s (CUDA graphs, eager, transformers) and the
roofline. ``omni bench ttft``: time to first token and peak GPU memory for a 13,312-patch image, a
128-frame video at several EVS rates and 10 minutes of audio, with the compute floor. ``omni bench
all``: both, one after the other (``--json`` then holds ``{"decode": ..., "ttft": ...}``).
"""

from __future__ import annotations

import argparse

from omni.bench import add_decode_arguments, add_shared_arguments, add_ttft_arguments

DECODE_HELP = "language-model decode tokens/s: ours (CUDA graphs, eager) vs transformers, and the roofline"
TTFT_HELP = "time to first token and peak memory for image, video and audio prompts, and the compute floor"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    decode = sub.add_parser("decode", help=DECODE_HELP, description=DECODE_HELP)
    add_decode_arguments(decode)
    ttft = sub.add_parser("ttft", help=TTFT_HELP, description=TTFT_HELP)
    add_ttft_arguments(ttft)
    both = sub.add_parser("all", help="decode, then ttft", description="decode, then ttft")
    add_shared_arguments(both)
    add_decode_arguments(both, shared=False)
    add_ttft_arguments(both, shared=False)


def main(args: argparse.Namespace) -> int:
    from omni.bench import decode, ttft
    from omni.bench.common import write_json

    results = {}
    if args.benchmark in ("decode", "all"):
        results["decode"] = decode.run(args)
        decode.print_report(results["decode"])
    if args.benchmark in ("ttft", "all"):
        results["ttft"] = ttft.run(args)
        ttft.print_report(results["ttft"])
    if args.json:
        write_json(args.json, results if args.benchmark == "all" else results[args.benchmark])
    return 0
