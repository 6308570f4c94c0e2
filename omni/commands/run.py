"""``omni run``: answer one prompt about image, document, video and audio files, streaming the answer.

This module also holds the answering path the other faces share (``omni chat``, ``omni demo`` and
``python -m omni.examples``): :class:`AnswerSettings`, media content items checked up front,
:func:`stream_answer` (the answer as text pieces, as they are generated) and :func:`load`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from omni.commands.common import (
    add_generation_arguments,
    add_model_arguments,
    generation_kwargs,
    load_model_and_processor,
    parse_pages,
)
from omni.errors import InputError

MEDIA_KINDS = ("image", "pdf", "video", "audio")  # order of the items in a user message
THINK_END = "</think>"


@dataclasses.dataclass
class AnswerSettings:
    """How one answer is produced: sampling, reasoning and media sampling options."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    thinking: bool = False
    use_audio_in_video: bool = False
    fps: float | None = None
    num_frames: int | None = None
    evs: float | None = None
    pages: Any = None  # None (all), a page number or (first, last)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AnswerSettings:
        """The settings of parsed command-line options (``--pages`` text parsed, everything checked)."""
        try:
            pages = parse_pages(args.pages)
        except ValueError as err:
            raise InputError(f"--pages {args.pages!r}: expected a page number or a range like 2-5") from err
        settings = cls(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            seed=args.seed,
            thinking=bool(args.thinking),
            use_audio_in_video=bool(getattr(args, "audio_in_video", False)),
            fps=args.fps,
            num_frames=args.num_frames,
            evs=args.evs,
            pages=pages,
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Raise ``InputError`` for values generation or media loading cannot use."""
        if self.max_new_tokens < 1:
            raise InputError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise InputError(f"--temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise InputError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise InputError(f"--top-k must be >= 0, got {self.top_k}")
        if self.fps is not None and not (self.fps > 0 and math.isfinite(self.fps)):
            raise InputError(f"--fps must be a positive number, got {self.fps}")
        if self.num_frames is not None and self.num_frames < 1:
            raise InputError(f"--num-frames must be at least 1, got {self.num_frames}")
        if self.fps is not None and self.num_frames is not None:
            raise InputError("--fps and --num-frames are exclusive: give one way of sampling video frames")
        if self.evs is not None and not 0.0 <= self.evs < 1.0:
            raise InputError(f"--evs must be in [0, 1) (the share of video tokens dropped), got {self.evs}")
        if isinstance(self.pages, int) and self.pages < 1:
            raise InputError(f"--pages: pages are numbered from 1, got {self.pages}")
        if isinstance(self.pages, tuple) and not 1 <= self.pages[0] <= self.pages[1]:
            raise InputError(f"--pages: expected first-last with 1 <= first <= last, got {self.pages}")

    def generation_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``OmniModel.generate`` (sampling, seed, EVS rate)."""
        return generation_kwargs(self)  # type: ignore[arg-type]  # reads the same attribute names


def media_item(kind: str, path: str | Path, settings: AnswerSettings | None = None) -> dict[str, Any]:
    """The content item of a media file; the file must exist (checked now, before any model loads)."""
    if kind not in MEDIA_KINDS:
        raise InputError(f"{path}: unknown media kind {kind!r} (expected one of {', '.join(MEDIA_KINDS)})")
    file = Path(path).expanduser()
    if not file.exists():
        raise InputError(f"{kind} {path}: no such file")
    if not file.is_file():
        raise InputError(f"{kind} {path}: not a file")
    item: dict[str, Any] = {"type": kind, "path": str(file)}
    settings = settings or AnswerSettings()
    if kind == "video":
        if settings.fps is not None:
            item["fps"] = settings.fps
        if settings.num_frames is not None:
            item["num_frames"] = settings.num_frames
    if kind == "pdf" and settings.pages is not None:
        item["pages"] = settings.pages
    return item


def user_message(text: str, items: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """A user turn: the media items, then the text."""
    if not text.strip() and not items:
        raise InputError("the prompt is empty and no media is attached")
    return {"role": "user", "content": [*items, {"type": "text", "text": text}]}


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning, answer) of a generated text; the reasoning is empty when no ``</think>`` was produced."""
    if THINK_END not in text:
        return "", text.strip()
    reasoning, answer = text.split(THINK_END, 1)
    return reasoning.replace("<think>", "").strip(), answer.strip()


def assistant_message(text: str) -> dict[str, Any]:
    """The assistant turn to keep in a conversation's history for a generated text."""
    reasoning, answer = split_reasoning(text)
    message: dict[str, Any] = {"role": "assistant", "content": answer}
    if reasoning:
        message["reasoning_content"] = reasoning
    return message


def prepare_inputs(
    processor: Any, messages: Sequence[Mapping[str, Any]], settings: AnswerSettings, device: Any = None
) -> Any:
    """The model inputs of a conversation that ends with a user turn (media loaded now).

    ``device``: where pixels are resized and normalised (the model's GPU: no host resize, no copy).
    """
    return processor.apply_chat_template(
        list(messages),
        add_generation_prompt=True,
        enable_thinking=settings.thinking,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        use_audio_in_video=settings.use_audio_in_video,
        device=device,
    )


class _Cancelled(Exception):
    """Raised inside generation when the reader of the stream has gone away."""


def stream_answer(
    model: Any, processor: Any, messages: Sequence[Mapping[str, Any]], settings: AnswerSettings
) -> Iterator[str]:
    """The answer to ``messages`` as text pieces, in the order they are generated.

    Whitespace before the first visible character is left out. Input errors (files, media,
    template) are raised here, before the first piece. Generation runs in a background thread;
    its errors are raised in the reading thread, and closing the iterator early stops the
    generation at the next token.
    """
    from backbone import TextStreamer

    device = getattr(model, "device", None)
    on_gpu = device is not None and device.type == "cuda"
    inputs = prepare_inputs(processor, messages, settings, device=device if on_gpu else None)
    kwargs = settings.generation_kwargs()
    cancelled = threading.Event()

    class Streamer(TextStreamer):
        def put(self, token_ids: Any) -> None:
            if cancelled.is_set():
                raise _Cancelled
            super().put(token_ids)

    streamer = Streamer(lambda ids: processor.decode(ids, skip_special_tokens=True))

    def work() -> None:
        try:
            model.generate(**inputs, streamer=streamer, **kwargs)
        except BaseException as error:  # handed to the reading thread
            streamer.on_text(error)  # type: ignore[arg-type]
            streamer.end()

    def pieces() -> Iterator[str]:
        thread = threading.Thread(target=work, name="omni-generate", daemon=True)
        thread.start()
        started = False
        try:
            for piece in streamer:
                if not started:
                    piece = piece.lstrip()
                    started = bool(piece)
                if piece:
                    yield piece
        finally:
            cancelled.set()
            thread.join()

    return pieces()


def answer(
    model: Any, processor: Any, messages: Sequence[Mapping[str, Any]], settings: AnswerSettings
) -> str:
    """The whole generated text (reasoning included when thinking is on)."""
    return "".join(stream_answer(model, processor, messages, settings))


def load(args: argparse.Namespace) -> tuple[Any, Any]:
    """Model and processor of ``--model`` (default: the bundled model), with clear errors when absent."""
    if args.model is None:
        import omni

        try:
            omni.BUNDLED_MODEL  # noqa: B018 - raises, naming the training recipe, when not trained yet
        except (FileNotFoundError, AttributeError) as err:
            raise InputError(str(err) or "the bundled model is not installed; pass --model DIR") from err
    elif not Path(args.model).is_dir():
        raise InputError(f"--model {args.model}: no such model directory")
    return load_model_and_processor(args)


def add_media_arguments(parser: argparse.ArgumentParser) -> None:
    """--image, --video, --audio, --pdf (each repeatable) and --audio-in-video."""
    for kind, what in (
        ("image", "an image file"),
        ("video", "a video file"),
        ("audio", "an audio file"),
        ("pdf", "a PDF document (each page becomes an image; see --pages)"),
    ):
        parser.add_argument(
            f"--{kind}", action="append", default=[], metavar="FILE", help=f"{what}; repeat for more"
        )
    parser.add_argument(
        "--audio-in-video", action="store_true", help="also give the model each video's sound track"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``omni run``."""
    parser.add_argument("prompt", help="the question or instruction; the media come before it")
    add_media_arguments(parser)
    add_model_arguments(parser)
    add_generation_arguments(parser)


def _check_option_targets(args: argparse.Namespace) -> None:
    """Media options given without the media they apply to are mistakes worth naming."""
    if args.pages is not None and not args.pdf:
        raise InputError("--pages applies to PDF documents, but no --pdf was given")
    video_options = [
        name
        for name, value in (("--fps", args.fps), ("--num-frames", args.num_frames), ("--evs", args.evs))
        if value is not None
    ]
    if args.audio_in_video:
        video_options.append("--audio-in-video")
    if video_options and not args.video:
        raise InputError(f"{', '.join(video_options)} apply to videos, but no --video was given")


def main(args: argparse.Namespace) -> int:
    """Answer the prompt, printing the answer as it is generated."""
    settings = AnswerSettings.from_args(args)
    _check_option_targets(args)
    items = [media_item(kind, path, settings) for kind in MEDIA_KINDS for path in getattr(args, kind)]
    messages = [user_message(args.prompt, items)]
    model, processor = load(args)
    for piece in stream_answer(model, processor, messages, settings):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0
