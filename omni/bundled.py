"""Where the bundled small model lives inside the installed package."""

from __future__ import annotations

from pathlib import Path

RECIPE = "scripts/train_bundled.sh"
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled" / "small"


def bundled_model_dir() -> Path:
    """``omni/bundled/small``: the small model trained by ``scripts/train_bundled.sh``.

    Raises ``FileNotFoundError`` (naming the recipe) when its weights are not there yet.
    """
    return checked_model_dir(BUNDLED_DIR)


def checked_model_dir(directory: Path) -> Path:
    """``directory`` when it holds a config and weights, else ``FileNotFoundError`` naming the recipe."""
    has_weights = (directory / "model.safetensors").is_file() or (
        directory / "model.safetensors.index.json"
    ).is_file()
    if not (directory / "config.json").is_file() or not has_weights:
        raise FileNotFoundError(
            f"the bundled small model is not in {directory} yet: train it with `bash {RECIPE}` "
            "(it writes the weights there), or pass --model DIR"
        )
    return directory
