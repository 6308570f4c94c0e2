"""``omni eval``: accuracy per task of a model on a JSONL of conversations or on fresh synthetic samples.

Every sample is answered through the public API (``apply_chat_template`` with the JSONL's question,
then greedy ``generate``); an answer counts when its stripped lowercase text equals the expected one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from omni.commands.common import add_model_arguments, load_model_and_processor

HELDOUT_SPLIT = "heldout"  # a split name never used for training: its samples have their own seeds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data", default=None, help="JSONL of conversations (last turn: the expected answer)"
    )
    source.add_argument(
        "--synthetic",
        type=int,
        default=None,
        metavar="N",
        help="generate N held-out samples per synthetic task",
    )
    parser.add_argument(
        "--seed", type=int, default=1234, help="seed of the --synthetic samples (default 1234)"
    )
    parser.add_argument("--tasks", default=None, help="comma-separated synthetic tasks (default: all)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N conversations")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts answered together")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=2, help="processes loading media")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the scores as JSON here")
    parser.add_argument("--answers", action="store_true", help="print every answer next to the expected one")


def main(args: argparse.Namespace) -> int:
    import torch

    from omni.errors import InputError
    from omni.finetune.data import read_jsonl
    from omni.finetune.evaluation import evaluate_accuracy, format_table, write_scores

    if args.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    with tempfile.TemporaryDirectory(prefix="omni-eval-") as tmp:
        if args.synthetic is not None:
            from omni.synthetic import TASK_NAMES, build_dataset

            if args.synthetic < 1:
                raise InputError("--synthetic needs at least 1 sample per task")
            tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else list(TASK_NAMES)
            path = build_dataset(
                tmp, tasks=tasks, n_per_task=args.synthetic, seed=args.seed, split=HELDOUT_SPLIT
            )
        else:
            path = args.data
        records = read_jsonl(path)[: args.limit]
        model, processor = load_model_and_processor(args)
        # fp32 weights on a GPU run under bf16 autocast unless float32 was asked for
        fast = model.device.type == "cuda" and model.dtype == torch.float32 and args.dtype is None
        autocast = torch.bfloat16 if fast else None
        answers: list[dict] = []
        scores = evaluate_accuracy(
            model,
            processor,
            records,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            autocast_dtype=autocast,
            answers_out=answers,
        )
    if args.answers:
        for a in answers:
            mark = "ok " if a["answer"].strip().lower() == a["expected"].strip().lower() else "BAD"
            print(f"{mark} {a['source']}  expected {a['expected']!r}  got {a['answer']!r}")
    print(format_table(scores))
    if args.json:
        write_scores(args.json, scores)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
