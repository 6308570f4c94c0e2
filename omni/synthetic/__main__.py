"""``python -m omni.synthetic OUT_DIR --n-per-task N --seed S --split train``: write a synthetic split."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from omni.errors import InputError
from omni.synthetic.dataset import DOCUMENT_FORMATS, build_dataset
from omni.synthetic.tasks import TASK_NAMES, TASKS


def build_parser() -> argparse.ArgumentParser:
    tasks_help = "; ".join(f"{name}: {task.question!r}" for name, task in TASKS.items())
    parser = argparse.ArgumentParser(
        prog="python -m omni.synthetic",
        description="Generate synthetic multimodal question-answer tasks (media files + a JSONL of "
        "conversations) for fine-tuning and evaluation, fully offline.",
        epilog=f"Tasks: {tasks_help}.",
    )
    parser.add_argument(
        "out_dir", help="output directory; writes OUT_DIR/<split>.jsonl and OUT_DIR/media/<split>/"
    )
    parser.add_argument("--n-per-task", type=int, default=100, help="samples per task (default: 100)")
    parser.add_argument(
        "--counts",
        default=None,
        metavar="TASK=N,...",
        help="samples per task, task by task (a weighted mixture; replaces --tasks and --n-per-task)",
    )
    parser.add_argument("--seed", type=int, default=0, help="base seed (default: 0)")
    parser.add_argument("--split", default="train", help="split name, e.g. train or eval (default: train)")
    parser.add_argument(
        "--tasks",
        default=",".join(TASK_NAMES),
        help=f"comma-separated tasks (default: all: {','.join(TASK_NAMES)})",
    )
    parser.add_argument(
        "--document-format",
        choices=DOCUMENT_FORMATS,
        default="png",
        help="write read-number pages as PNG images or one-page PDFs (default: png)",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tasks = [name.strip() for name in args.tasks.split(",") if name.strip()]
    counts: int | dict[str, int] = args.n_per_task
    try:
        if args.counts is not None:
            counts = _parse_counts(args.counts)
            tasks = list(counts)
        jsonl = build_dataset(
            args.out_dir,
            tasks=tasks,
            n_per_task=counts,
            seed=args.seed,
            split=args.split,
            document_format=args.document_format,
            workers=args.workers,
        )
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    total = sum(counts.values()) if isinstance(counts, dict) else len(tasks) * counts
    print(f"wrote {total} samples to {jsonl}")
    return 0


def _parse_counts(text: str) -> dict[str, int]:
    """``"motion=4000,beeps=500"`` -> ``{"motion": 4000, "beeps": 500}``."""
    counts: dict[str, int] = {}
    for part in (piece.strip() for piece in text.split(",")):
        task, sep, number = part.partition("=")
        if not sep or not number.strip().isdigit():
            raise InputError(f"--counts wants TASK=N items separated by commas, got {part!r}")
        if task.strip() in counts:
            raise InputError(f"--counts names {task.strip()} twice")
        counts[task.strip()] = int(number)
    return counts


if __name__ == "__main__":
    sys.exit(main())
