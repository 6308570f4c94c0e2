"""Write a split of the synthetic tasks to disk: media files plus one JSONL conversation per sample."""

from __future__ import annotations

import json
import multiprocessing
import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from omni.errors import InputError
from omni.synthetic.seeding import sample_rng
from omni.synthetic.tasks import TASK_NAMES, TASKS, AudioClip, Sample, VideoClip
from omni.synthetic.writers import write_mp4, write_pdf, write_png, write_wav

DOCUMENT_FORMATS = ("png", "pdf")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def generate_sample(task: str, seed: int, split: str, index: int) -> Sample:
    """Sample ``index`` of ``task`` in ``split``: the same arguments always give the same sample."""
    if task not in TASKS:
        raise InputError(f"unknown synthetic task {task!r}; known tasks: {', '.join(TASK_NAMES)}")
    return TASKS[task].sample(sample_rng(seed, split, task, index))


def media_item(sample: Sample, path: str, document_format: str = "png") -> dict[str, Any]:
    """The user-turn content item that points at the sample's media file ``path``."""
    kind = TASKS[sample.task].kind
    if kind == "document":
        return {"type": "pdf" if document_format == "pdf" else "image", "path": path}
    if kind == "image":
        return {"type": "image", "path": path}
    if kind == "audio":
        return {"type": "audio", "path": path}
    item: dict[str, Any] = {"type": "video", "path": path, "fps": sample.media.fps}
    if kind == "video+audio":
        item["use_audio"] = True
    return item


def conversation(sample: Sample, path: str, document_format: str = "png") -> dict[str, Any]:
    """The JSONL record of a sample whose media lives at ``path`` (relative to the JSONL file)."""
    user = [media_item(sample, path, document_format), {"type": "text", "text": sample.question}]
    return {
        "task": sample.task,
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": sample.answer}],
    }


def write_media(sample: Sample, stem: Path, document_format: str = "png") -> Path:
    """Write the sample's media next to ``stem`` with the extension its kind takes; returns the path."""
    media = sample.media
    if isinstance(media, Image.Image):
        if TASKS[sample.task].kind == "document" and document_format == "pdf":
            return write_pdf(media, stem.with_suffix(".pdf"))
        return write_png(media, stem.with_suffix(".png"))
    if isinstance(media, AudioClip):
        return write_wav(media.waveform, stem.with_suffix(".wav"), media.sample_rate)
    if isinstance(media, VideoClip):
        return write_mp4(media.frames, media.fps, stem.with_suffix(".mp4"), media.audio, media.sample_rate)
    raise TypeError(f"no writer for media of type {type(media).__name__}")


def _build_one(job: tuple[Path, str, int, str, int, str]) -> dict[str, Any]:
    """Generate, write and describe one sample (runs in worker processes too)."""
    out_dir, task, seed, split, index, document_format = job
    sample = generate_sample(task, seed, split, index)
    stem = out_dir / "media" / split / task / f"{index:06d}"
    path = write_media(sample, stem, document_format)
    return conversation(sample, path.relative_to(out_dir).as_posix(), document_format)


def _check_arguments(
    tasks: list[str], counts: dict[str, int], seed: int, split: str, document_format: str, workers: int
) -> None:
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        raise InputError(f"unknown synthetic task(s) {unknown}; known tasks: {', '.join(TASK_NAMES)}")
    if len(set(tasks)) != len(tasks):
        raise InputError(f"tasks must not repeat, got {tasks}")
    for task, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InputError(f"n_per_task for {task} must be a non-negative integer, got {count!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an integer, got {seed!r}")
    if not isinstance(split, str) or not _SPLIT_NAME.match(split):
        raise InputError(f"split must be a non-empty name of letters, digits, '-' or '_', got {split!r}")
    if document_format not in DOCUMENT_FORMATS:
        raise InputError(f"document_format must be one of {DOCUMENT_FORMATS}, got {document_format!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers!r}")


def build_dataset(
    out_dir: str | Path,
    tasks: str | Iterable[str] = TASK_NAMES,
    n_per_task: int | Mapping[str, int] = 100,
    seed: int = 0,
    split: str = "train",
    document_format: str = "png",
    workers: int = 1,
) -> Path:
    """Write ``n_per_task`` samples of every task to ``out_dir`` and return ``out_dir/<split>.jsonl``.

    Media go to ``out_dir/media/<split>/<task>/<index>.<ext>``; each JSONL line is one conversation
    whose media path is relative to ``out_dir``. Samples are seeded per (seed, split, task, index),
    so a split is reproducible, independent of ``workers``, and never shares a seed with another
    split. Read-number pages are PNG images, or one-page PDFs with ``document_format="pdf"``.
    Lines are ordered task by task, index by index. ``n_per_task`` may map tasks to their own counts
    (a weighted mixture); its tasks are then the ones written.
    """
    if isinstance(n_per_task, Mapping):
        tasks, counts = list(n_per_task), dict(n_per_task)
    else:
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        counts = dict.fromkeys(tasks, n_per_task)
    _check_arguments(tasks, counts, seed, split, document_format, workers)
    out_dir = Path(out_dir)
    for task in tasks:
        (out_dir / "media" / split / task).mkdir(parents=True, exist_ok=True)
    jobs = [
        (out_dir, task, int(seed), split, index, document_format)
        for task in tasks
        for index in range(counts[task])
    ]
    if workers == 1 or len(jobs) < 2:
        records = [_build_one(job) for job in jobs]
    else:
        # Fork where the platform has it (as torch's DataLoader workers do): workers start at once
        # and only run numpy / PIL / PyAV code. Elsewhere spawn.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            records = list(pool.map(_build_one, jobs, chunksize=max(1, len(jobs) // (8 * workers))))
    jsonl = out_dir / f"{split}.jsonl"
    with open(jsonl, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
    return jsonl
