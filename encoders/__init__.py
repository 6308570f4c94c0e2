"""Vision (RADIO ViT) and audio (Parakeet FastConformer, log-mel front end) encoders.

Names are imported on first use, so ``import encoders.errors`` (and ``import omni``) stays light:
the towers pull in timm, which takes seconds to import.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AudioClip": "encoders.audio_clips",
    "AudioClipper": "encoders.audio_clips",
    "audio_token_count": "encoders.audio_clips",
    "subsampled_length": "encoders.audio_clips",
    "EncoderInputError": "encoders.errors",
    "LogMelFrontEnd": "encoders.mel",
    "FastConformerEncoder": "encoders.parakeet",
    "ParakeetSoundEncoder": "encoders.parakeet",
    "ParakeetConfig": "encoders.parakeet_config",
    "RadioEncoder": "encoders.radio",
    "RadioConfig": "encoders.radio_config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'encoders' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
