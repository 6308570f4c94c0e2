"""Reading and writing omni checkpoints in the released layout.

One directory: ``config.json``, ``model.safetensors`` (or shards + index) and the processor files.
Top-level key prefixes: ``language_model.`` (the hybrid LM, one tensor per expert),
``vision_model.`` (RADIO), ``mlp1.`` (vision adapter), ``vision_final_layernorm.`` (MTP-bearing
checkpoints only), ``sound_encoder.`` (Parakeet) and ``sound_projection.`` (audio adapter).
The model is built on the ``meta`` device and every tensor is read straight to its target device
and dtype, so the only full copy of the weights is the one on the device.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from backbone.checkpoint import CheckpointError, CheckpointReader, write_checkpoint
from backbone.weights import load_weights
from omni.config import OmniConfig
from omni.errors import InputError

if TYPE_CHECKING:
    from omni.model import OmniModel

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _parts(model: OmniModel) -> list[tuple[str, nn.Module, tuple[str, ...], tuple[str, ...]]]:
    """(key prefix, module, ignored key patterns, optional key patterns) of every part but the LM."""
    parts: list[tuple[str, nn.Module, tuple[str, ...], tuple[str, ...]]] = [
        (
            "vision_model.",
            model.vision_model,
            tuple(model.vision_model.IGNORED_CHECKPOINT_KEYS),
            tuple(model.vision_model.OPTIONAL_CHECKPOINT_KEYS),
        ),
        ("mlp1.", model.mlp1, (), ()),
    ]
    if model.vision_final_layernorm is not None:
        parts.append(("vision_final_layernorm.", model.vision_final_layernorm, (), ()))
    if model.sound_encoder is not None and model.sound_projection is not None:
        parts.append(
            ("sound_encoder.", model.sound_encoder, tuple(model.sound_encoder.IGNORED_CHECKPOINT_KEYS), ())
        )
        parts.append(("sound_projection.", model.sound_projection, (), ()))
    return parts


def _default_dtype(config: OmniConfig) -> torch.dtype:
    name = config.raw.get("dtype") or config.raw.get("torch_dtype") or "float32"
    return _DTYPES.get(str(name).removeprefix("torch."), torch.float32)


def load_omni_checkpoint(
    cls: type[OmniModel],
    path: str | os.PathLike,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> OmniModel:
    """Build ``cls`` from ``path/config.json`` and fill it from the safetensors files."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: no such model directory")
    config = OmniConfig.from_pretrained(path)
    dtype = dtype or _default_dtype(config)
    device = torch.device(device or "cpu")
    with torch.device("meta"):
        model = cls(config)
    model.to(dtype=dtype)
    model.to_empty(device=device)
    model.language_model.tie_weights()
    with CheckpointReader(path) as reader:
        prefixes = ["language_model."]
        model.language_model.load_from_reader(reader, prefix="language_model.", device=device)
        for prefix, module, ignore, optional in _parts(model):
            prefixes.append(prefix)
            absent = load_weights(
                module, reader, prefix=prefix, device=device, ignore=ignore, optional=optional
            )
            _fill_absent_optional(module, absent)
        stray = [k for k in reader.keys() if not k.startswith(tuple(prefixes))]
        if stray:
            shown = ", ".join(repr(k) for k in sorted(stray)[:8])
            raise CheckpointError(f"checkpoint {path} has keys this model does not use: {shown}")
    _init_non_persistent_buffers(model)
    model.default_eos_token_id = _generation_eos(path)
    return model.eval()


def _generation_eos(path: Path) -> int | list[int] | None:
    """The eos id(s) of ``generation_config.json``, when the checkpoint has one."""
    file = path / "generation_config.json"
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text()).get("eos_token_id")
    except json.JSONDecodeError as err:
        raise InputError(f"{file}: not valid JSON ({err})") from err


def _fill_absent_optional(module: nn.Module, keys: list[str]) -> None:
    """Optional weights absent from a checkpoint are layer scales: identity (1.0)."""
    state = module.state_dict(keep_vars=True)
    with torch.no_grad():
        for key in keys:
            state[key].data.fill_(1.0)


def _init_non_persistent_buffers(model: nn.Module) -> None:
    """Buffers that are not saved were left uninitialised by ``to_empty``: let modules recompute them."""
    for module in model.modules():
        reset = getattr(module, "reset_non_persistent_buffers", None)
        if callable(reset):
            reset()


def released_tensors(model: OmniModel) -> dict[str, torch.Tensor]:
    """The model's weights under the released checkpoint keys (the model's own tensors or views of them,
    not copies)."""
    tensors = model.language_model.checkpoint_state(prefix="language_model.")
    for prefix, module, _, _ in _parts(model):
        tensors.update({prefix + k: v for k, v in module.state_dict().items()})
    return tensors


def released_config(model: OmniModel) -> dict:
    """``config.json``'s contents for the model, with its dtype."""
    config = model.config.to_dict()
    config["dtype"] = str(model.dtype).removeprefix("torch.")
    return config


def save_omni_checkpoint(
    model: OmniModel, path: str | os.PathLike, max_shard_bytes: int = 5 * 1024**3
) -> None:
    """Write ``config.json``, ``generation_config.json`` and the weights in the released layout."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_checkpoint(path, released_tensors(model), max_shard_bytes=max_shard_bytes)
    config = released_config(model)
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    text = model.language_model.config
    generation = {key: getattr(text, key, None) for key in ("bos_token_id", "eos_token_id", "pad_token_id")}
    (path / "generation_config.json").write_text(
        json.dumps({k: v for k, v in generation.items() if v is not None}, indent=2) + "\n"
    )
