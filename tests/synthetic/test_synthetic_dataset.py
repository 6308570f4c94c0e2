"""build_dataset: JSONL schema, determinism, split disjointness, PDF pages, errors, command line."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from omni.errors import InputError
from omni.synthetic import TASK_NAMES, TASKS, build_dataset, sample_seed
from omni.synthetic.__main__ import main

QUESTIONS = {
    "shapes-count": "How many shapes are there?",
    "shape-color": "What color is the circle?",
    "read-number": "What number is written on the page?",
    "motion": "Which direction does the ball move?",
    "beeps": "How many beeps do you hear?",
    "video-beeps": "How many beeps are in the video?",
}
MEDIA = {  # expected content item apart from "path", and the file extension
    "shapes-count": ({"type": "image"}, ".png"),
    "shape-color": ({"type": "image"}, ".png"),
    "read-number": ({"type": "image"}, ".png"),
    "motion": ({"type": "video", "fps": 10}, ".mp4"),
    "beeps": ({"type": "audio"}, ".wav"),
    "video-beeps": ({"type": "video", "fps": 10, "use_audio": True}, ".mp4"),
}
VOCABULARY = {
    "shapes-count": {"1", "2", "3", "4", "5", "6"},
    "shape-color": {"red", "green", "blue", "yellow"},
    "motion": {"right", "left", "down", "up"},
    "beeps": {"1", "2", "3", "4", "5"},
    "video-beeps": {"1", "2", "3", "4", "5"},
}


def _content(path: Path) -> bytes:
    """A file's bytes; for MP4 its decoded content (raw YUV planes, audio samples): x264 need not give
    the same bytes twice in one process, but the video is lossless, so what decodes is exact."""
    if path.suffix != ".mp4":
        return path.read_bytes()
    import av

    parts = []
    with av.open(str(path)) as container:
        for frame in container.decode(*container.streams):
            parts.append(frame.to_ndarray().tobytes())
    return b"".join(parts)


def _files(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(_content(p)).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def train_and_eval(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    build_dataset(root, n_per_task=3, seed=11, split="train")
    build_dataset(root, n_per_task=3, seed=11, split="eval")
    return root


def test_jsonl_schema_is_exact(train_and_eval: Path) -> None:
    lines = (train_and_eval / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 * len(TASK_NAMES) and set(TASK_NAMES) == set(QUESTIONS)
    for line in lines:
        record = json.loads(line)
        task = record["task"]
        assert list(record) == ["task", "messages"]
        user, assistant = record["messages"]
        assert list(user) == ["role", "content"] and user["role"] == "user"
        media, text = user["content"]
        expected, suffix = MEDIA[task]
        path = media["path"]
        # exact keys, values and order: type, path, then the options
        assert list(media.items()) == [("type", expected["type"]), ("path", path)] + [
            (key, value) for key, value in expected.items() if key != "type"
        ]
        assert path.endswith(suffix) and not Path(path).is_absolute() and "\\" not in path
        assert (train_and_eval / path).is_file()
        assert text == {"type": "text", "text": QUESTIONS[task]}
        assert list(assistant) == ["role", "content"] and assistant["role"] == "assistant"
        answer = assistant["content"]
        assert isinstance(answer, str) and answer == answer.lower()
        if task == "read-number":
            assert len(answer) == 4 and answer.isdigit()
        else:
            assert answer in VOCABULARY[task]
        assert answer in TASKS[task].answers


def test_jsonl_line_text_matches_the_documented_form(train_and_eval: Path) -> None:
    first = (train_and_eval / "train.jsonl").read_text(encoding="utf-8").splitlines()[0]
    answer = json.loads(first)["messages"][1]["content"]
    assert first == (
        '{"task": "shapes-count", "messages": [{"role": "user", "content": [{"type": "image", "path": '
        '"media/train/shapes-count/000000.png"}, {"type": "text", "text": "How many shapes are there?"}]}, '
        '{"role": "assistant", "content": "' + answer + '"}]}'
    )


def test_same_seed_gives_same_bytes(train_and_eval: Path, tmp_path: Path) -> None:
    build_dataset(tmp_path, n_per_task=3, seed=11, split="train")
    again = _files(tmp_path)
    before = {
        k: v for k, v in _files(train_and_eval).items() if k.startswith(("train.jsonl", "media/train/"))
    }
    assert again == before and len(again) == 1 + 3 * len(TASK_NAMES)


def test_other_seed_changes_samples(train_and_eval: Path, tmp_path: Path) -> None:
    build_dataset(tmp_path, tasks=["shapes-count"], n_per_task=3, seed=12, split="train")
    other = _files(tmp_path / "media")
    ours = _files(train_and_eval / "media")
    assert not set(other.values()) & set(ours.values())


def test_splits_are_disjoint(train_and_eval: Path) -> None:
    files = _files(train_and_eval / "media")
    train = {digest for name, digest in files.items() if name.startswith("train/")}
    evaluation = {digest for name, digest in files.items() if name.startswith("eval/")}
    assert len(train) == len(evaluation) == 3 * len(TASK_NAMES)  # no duplicates within a split either
    assert not train & evaluation
    seeds = {
        split: {sample_seed(0, split, t, i) for t in TASK_NAMES for i in range(500)}
        for split in ("train", "eval")
    }
    assert len(seeds["train"]) == len(seeds["eval"]) == 500 * len(TASK_NAMES)
    assert not seeds["train"] & seeds["eval"]


def test_one_sample_does_not_depend_on_the_others(train_and_eval: Path, tmp_path: Path) -> None:
    build_dataset(tmp_path, tasks=["motion", "beeps"], n_per_task=2, seed=11, split="eval")
    ours, full = _files(tmp_path / "media"), _files(train_and_eval / "media")
    assert ours and all(full[name] == digest for name, digest in ours.items())


def test_pdf_pages_when_asked(tmp_path: Path) -> None:
    jsonl = build_dataset(
        tmp_path, tasks=["read-number"], n_per_task=2, seed=0, split="eval", document_format="pdf"
    )
    for line in jsonl.read_text().splitlines():
        item = json.loads(line)["messages"][0]["content"][0]
        assert item["type"] == "pdf" and item["path"].endswith(".pdf")
        assert (tmp_path / item["path"]).read_bytes().startswith(b"%PDF")


def test_single_task_name(tmp_path: Path) -> None:
    jsonl = build_dataset(tmp_path, tasks="shape-color", n_per_task=1, split="eval")
    assert json.loads(jsonl.read_text())["task"] == "shape-color"


def test_workers_give_the_same_bytes(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    build_dataset(one, tasks=["shape-color", "beeps"], n_per_task=2, seed=4, split="train", workers=1)
    build_dataset(two, tasks=["shape-color", "beeps"], n_per_task=2, seed=4, split="train", workers=2)
    assert _files(one) == _files(two)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tasks": ["shapes", "motion"]}, "unknown synthetic task"),
        ({"n_per_task": -1}, "n_per_task"),
        ({"split": "../x"}, "split"),
        ({"split": ""}, "split"),
        ({"document_format": "jpg"}, "document_format"),
        ({"workers": 0}, "workers"),
        ({"seed": "7"}, "seed"),
    ],
)
def test_bad_arguments_raise_input_error(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        build_dataset(tmp_path, **{"n_per_task": 1, **kwargs})
    assert not (tmp_path / "media").exists()


def test_command_line(tmp_path: Path, capsys) -> None:
    assert (
        main(
            [str(tmp_path), "--n-per-task", "1", "--seed", "3", "--split", "eval", "--tasks", "motion,beeps"]
        )
        == 0
    )
    lines = (tmp_path / "eval.jsonl").read_text().splitlines()
    assert [json.loads(line)["task"] for line in lines] == ["motion", "beeps"]
    assert "eval.jsonl" in capsys.readouterr().out
    assert main([str(tmp_path), "--tasks", "nope"]) == 2
    assert "unknown synthetic task" in capsys.readouterr().err


def test_module_help_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "omni.synthetic", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    assert "--n-per-task" in result.stdout and "--split" in result.stdout and "video-beeps" in result.stdout


def test_the_same_video_decodes_to_the_same_frames_every_time(tmp_path: Path) -> None:
    """Repeated encodes in one process decode to the very frames written (PyAV 18's own RGB conversion
    varied from call to call, and lossy x264 too with the process's history)."""
    from omni.synthetic.dataset import generate_sample, write_media
    from omni.synthetic.writers import rgb_to_yuv420p

    first, second = generate_sample("motion", 11, "eval", 0), generate_sample("motion", 11, "eval", 1)
    for i, sample in enumerate([first, second, first, second, first]):
        decoded = _content(write_media(sample, tmp_path / str(i), "png"))
        assert decoded == b"".join(rgb_to_yuv420p(frame).tobytes() for frame in sample.media.frames)


def test_counts_per_task_make_a_weighted_mixture(tmp_path: Path, capsys) -> None:
    """`--counts` draws each task's samples as the uniform split would: the same seeds, fewer or more."""
    assert (
        main([str(tmp_path / "mix"), "--counts", "motion=2,beeps=1", "--seed", "3", "--split", "eval"]) == 0
    )
    assert "wrote 3 samples" in capsys.readouterr().out
    lines = (tmp_path / "mix" / "eval.jsonl").read_text().splitlines()
    assert [json.loads(line)["task"] for line in lines] == ["motion", "motion", "beeps"]
    build_dataset(tmp_path / "even", tasks=["motion", "beeps"], n_per_task=2, seed=3, split="eval")
    mixed, even = _files(tmp_path / "mix" / "media"), _files(tmp_path / "even" / "media")
    assert len(mixed) == 3 and all(even[name] == digest for name, digest in mixed.items())


@pytest.mark.parametrize("counts", ["motion=two", "motion", "motion=1,motion=2", "nope=1"])
def test_bad_counts_are_a_clean_error(tmp_path: Path, capsys, counts: str) -> None:
    assert main([str(tmp_path), "--counts", counts]) == 2
    assert "error:" in capsys.readouterr().err
