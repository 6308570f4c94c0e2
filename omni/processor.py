"""``OmniProcessor``: text, images, documents, videos and audio -> the model's input tensors.

It produces the tokens and tensors the released Nemotron 3 Nano Omni processor produces (prompt
expansion, image sizing, frame labels, log-mel features), without transformers at run time, and
adds what batches of several videos and long audio need. See :class:`OmniProcessor`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from encoders.mel import LogMelFrontEnd
from omni import chat
from omni.audio_inputs import AudioFeaturizer
from omni.chat_media import VIDEO_LOAD_OPTIONS, ConversationMedia
from omni.errors import InputError, raises_input_error
from omni.input_builder import InputBuilder, ProcessorOutput
from omni.media_inputs import as_item_list, is_file_source, prepare_audio, prepare_image, prepare_video
from omni.pixels import StreamingResize
from omni.processor_settings import ProcessorSettings, load_settings, to_processor_config
from omni.prompting import MarkerTokens
from omni.text_tokenizer import TextTokenizer

__all__ = ["OmniProcessor", "ProcessorOutput"]

_CALL_OPTIONS = frozenset(
    {
        *VIDEO_LOAD_OPTIONS,
        "video_metadata",
        "sampling_rate",
        "audio_clip_seconds",
        "min_num_patches",
        "max_num_patches",
        "max_model_len",
        "device",
    }
)
_LIMITS = ("min_num_patches", "max_num_patches", "max_model_len")
_TEMPLATE_OPTIONS = frozenset({"reasoning_budget", "truncate_history_thinking", "documents"})


class OmniProcessor:
    """Tokenizer, chat template and media preprocessing of a Nemotron 3 Nano Omni checkpoint.

    ``processor(text, images=..., videos=..., audio=...)`` and ``processor.apply_chat_template``
    return a :class:`ProcessorOutput` with these keys (present when the input has that modality):

    - ``input_ids`` ``[B, L]`` long, ``attention_mask`` ``[B, L]`` long: the expanded prompts, padded
      (on the left by default, for generation).
    - ``mm_token_type_ids`` ``[B, L]`` long: 0 text, 1 image, 2 video, 3 audio for every position;
      images and video frames share the ``<image>`` placeholder id, this tells them apart.
    - ``pixel_values`` ``[sum of patches, 3 * p * p]`` float32 and ``image_grid_hw`` ``[n_images, 2]``
      long (patch rows, cols per image): all images' patches concatenated, each patch row-major in
      its image and laid out channel-major ``(c, y, x)``. Image ``i`` takes ``rows * cols / 4``
      tokens. Documents (PDF pages) are images.
    - ``pixel_values_videos`` ``[sum of frames, 3, H, W]`` float32: all videos' frames in order.
      Videos of different sizes are zero-padded at the bottom/right to the largest ``H, W``; the
      real size of video ``v`` is ``video_grid_thw[v, 1:] * patch_size``.
    - ``video_grid_thw`` ``[n_videos, 3]`` long: tubelets (``ceil(frames / T)``, T = temporal patch
      size), patch rows and patch cols per frame; a tubelet takes ``rows * cols / 4`` tokens.
    - ``video_frame_counts`` ``[n_videos]`` long: real frames per video (the model repeats the
      last frame to fill the last tubelet).
    - ``input_features`` ``[clips, frames, mels]`` float32 and ``input_features_mask``
      ``[clips, frames]`` bool: log-mel features of every audio clip (long audio is cut into
      ``audio_clip_seconds`` clips; ``None`` keeps each audio whole, as transformers does).
    - ``audio_clip_counts`` ``[n_audios]`` long (clips per audio) and ``audio_clip_token_counts``
      ``[clips]`` long (encoder outputs the model keeps from each clip; they add up to the
      ``<so_embedding>`` run of each audio).

    Media order: images, videos and audios are each consumed in the order of their placeholders
    across the batch. With ``use_audio_in_video`` each video file's sound becomes an audio right
    after its frames (``<video><so_embedding>``); a video without a sound track adds nothing.
    """

    def __init__(
        self,
        tokenizer: TextTokenizer,
        settings: ProcessorSettings | None = None,
        chat_template: str | None = None,
        markers: MarkerTokens | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.settings = settings or ProcessorSettings()
        self.settings.validate()
        self.chat_template = chat_template
        self.markers = markers or MarkerTokens()
        s = self.settings
        self.audio = AudioFeaturizer(
            LogMelFrontEnd(
                sampling_rate=s.audio_sampling_rate,
                n_mels=s.audio_feature_size,
                n_fft=s.audio_n_fft,
                win_length=s.audio_win_length,
                hop_length=s.audio_hop_length,
                preemphasis=s.audio_preemphasis,
            ),
            subsampling_factor=s.audio_subsampling_factor,
            clip_seconds=s.audio_clip_seconds,
        )
        self.builder = InputBuilder(tokenizer, self.markers, self.audio)
        self.image_token_id = self.builder.image_token_id
        self.audio_token_id = self.builder.audio_token_id
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.markers.video)

    # loading and saving

    @classmethod
    def from_pretrained(cls, directory: str | Path, **settings: Any) -> OmniProcessor:
        """Load from a checkpoint or processor directory; ``settings`` override what the files say.

        Reads ``tokenizer.json`` (+ ``tokenizer_config.json``), ``processor_config.json`` or the
        legacy ``preprocessor_config.json``, ``config.json`` when present, and
        ``chat_template.jinja`` (else the chat template of ``tokenizer_config.json``, else the
        package's own template for this chat format).
        """
        root = Path(directory)
        if not root.is_dir():
            raise InputError(f"{directory}: not a directory")
        tokenizer = TextTokenizer.from_pretrained(root)
        loaded = load_settings(root)
        if settings:
            loaded = loaded.replace(**settings)
        template = None
        if (root / "chat_template.jinja").is_file():
            template = (root / "chat_template.jinja").read_text()
        elif isinstance(tokenizer.config.get("chat_template"), str):
            template = tokenizer.config["chat_template"]
        processor = cls(tokenizer, loaded, template)
        processor._check_model_token_ids(root / "config.json")
        return processor

    def _check_model_token_ids(self, config_path: Path) -> None:
        """The model's placeholder ids must be the tokenizer's, or embeddings land on the wrong rows."""
        if not config_path.is_file():
            return
        try:
            config = json.loads(config_path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{config_path}: not valid JSON ({err})") from err
        wanted = {
            "image": (config.get("image_token_id", config.get("img_context_token_id")), self.image_token_id),
            "audio": (
                config.get("audio_token_id", config.get("sound_context_token_id")),
                self.audio_token_id,
            ),
        }
        for what, (model_id, tokenizer_id) in wanted.items():
            if model_id is not None and tokenizer_id is not None and int(model_id) != tokenizer_id:
                raise InputError(
                    f"{config_path}: the model's {what} placeholder id is {model_id}, but the tokenizer's "
                    f"{what} token has id {tokenizer_id}"
                )

    def save_pretrained(self, directory: str | Path) -> None:
        """Write tokenizer files, ``processor_config.json`` and ``chat_template.jinja`` (loadable by transformers)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(out)
        config = to_processor_config(self.settings)
        (out / "processor_config.json").write_text(json.dumps(config, indent=2) + "\n")
        (out / "chat_template.jinja").write_text(self.template_source)

    @property
    def template_source(self) -> str:
        """The chat template in use (the checkpoint's, else the package's own)."""
        return self.chat_template if self.chat_template is not None else chat.default_chat_template()

    # decoding

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        """Text of one id sequence."""
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False) -> list[str]:
        """Text of each id sequence."""
        return self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens)

    # the main call

    @raises_input_error
    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        images: Any = None,
        videos: Any = None,
        audio: Any = None,
        use_audio_in_video: bool = False,
        return_tensors: str | None = "pt",
        padding: bool = True,
        padding_side: str | None = None,
        add_special_tokens: bool = True,
        **options: Any,
    ) -> ProcessorOutput:
        """Expand the placeholders of ``text`` for the given media and build the model inputs.

        ``text`` holds ``<image>``, ``<video>`` and ``<so_embedding>`` placeholders, one per item.
        ``images``: PIL images, uint8 arrays/tensors, paths. ``videos``: paths, ``VideoClip``s,
        uint8 frame tensors ``[T, 3, H, W]`` or lists of frames. ``audio``: paths or 1-D float
        arrays. Options: ``fps``, ``num_frames``, ``max_frames``, ``start``, ``end`` (sampling of
        video files), ``video_metadata`` (per in-memory video: ``fps`` and ``frames_indices``, for
        the frame labels), ``sampling_rate`` (of audio arrays, default the model's),
        ``audio_clip_seconds``, ``min_num_patches``, ``max_num_patches``, ``max_model_len``,
        ``device`` (resize and normalise images and video frames there, e.g. ``"cuda"``: the pixel
        tensors come back on it; default the CPU).
        """
        self._check_options(options, _CALL_OPTIONS)
        texts = self._texts(text)
        image_items = as_item_list(images)
        video_items = as_item_list(videos, frames_are_one_item=True)
        audio_items = as_item_list(audio, numbers_are_one_item=True)
        self.builder.check_counts(texts, len(image_items), len(video_items), len(audio_items))
        load_options = {k: options[k] for k in VIDEO_LOAD_OPTIONS if options.get(k) is not None}
        metadata = as_item_list(options.get("video_metadata"))
        if metadata and len(metadata) != len(video_items):
            raise InputError(f"video_metadata has {len(metadata)} entries for {len(video_items)} videos")
        prepared_images = [prepare_image(item, i) for i, item in enumerate(image_items)]
        make_resize = self._streaming_resize(options)
        prepared_videos = [
            prepare_video(
                item,
                i,
                load_options=load_options,
                metadata=metadata[i] if metadata else None,
                with_sound=use_audio_in_video and is_file_source(item),
                sampling_rate=self.settings.audio_sampling_rate,
                resize=make_resize() if make_resize is not None else None,
            )
            for i, item in enumerate(video_items)
        ]
        source_rate = options.get("sampling_rate")
        waveforms = [
            prepare_audio(item, i, sampling_rate=self.settings.audio_sampling_rate, source_rate=source_rate)
            for i, item in enumerate(audio_items)
        ]
        return self._build(
            texts,
            prepared_images,
            prepared_videos,
            waveforms,
            options,
            return_tensors=return_tensors,
            padding=padding,
            padding_side=padding_side,
            add_special_tokens=add_special_tokens,
        )

    # chat

    @raises_input_error
    def apply_chat_template(
        self,
        conversation: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
        add_generation_prompt: bool = True,
        enable_thinking: bool | None = None,
        tokenize: bool = False,
        return_dict: bool = False,
        return_tensors: str | None = None,
        use_audio_in_video: bool = False,
        chat_template: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Render conversations with the chat template; with ``tokenize=True`` also load their media.

        ``conversation``: a list of messages ``{"role", "content"}``, or a list of such lists (a
        batch). Content items: ``{"type": "text", "text": ...}`` and media items ``{"type":
        "image" | "video" | "audio" | "pdf", <type> or "path": source, options...}``: video
        ``fps``, ``num_frames``, ``max_frames``, ``start``, ``end``; pdf ``pages``, ``dpi`` (each
        page becomes an image); audio ``sampling_rate`` (of arrays), ``start``, ``end``.
        ``enable_thinking`` defaults to the template's (on). Template variables:
        ``reasoning_budget``, ``truncate_history_thinking``, ``tools``, ``chat_template_kwargs``.
        Processing options (with ``tokenize=True``) are those of ``__call__``; its video and audio
        options are defaults for the items that do not set their own.

        Returns the prompt (``tokenize=False``; a list for a batch), the ``input_ids``
        (``tokenize=True``), or the full :class:`ProcessorOutput` (``return_dict=True``).
        """
        variables = {k: options.pop(k) for k in list(options) if k in _TEMPLATE_OPTIONS}
        self._check_options(options, _CALL_OPTIONS - {"video_metadata"})
        variables.update(chat_template_kwargs or {})
        if enable_thinking is not None:
            variables["enable_thinking"] = bool(enable_thinking)
        if tools is not None:
            variables["tools"] = tools
        batch = self._conversations(conversation)
        template = chat_template if chat_template is not None else self.template_source
        media = ConversationMedia(
            sampling_rate=self.settings.audio_sampling_rate,
            use_audio_in_video=use_audio_in_video,
            load=tokenize,
            video_defaults={k: options[k] for k in VIDEO_LOAD_OPTIONS if options.get(k) is not None},
            audio_source_rate=options.get("sampling_rate"),
            make_resize=self._streaming_resize(options),
        )
        prompts = [
            chat.render(
                template, media.collect(conv, c), add_generation_prompt=add_generation_prompt, **variables
            )
            for c, conv in enumerate(batch)
        ]
        single = not (conversation and isinstance(conversation[0], (list, tuple)))
        if not tokenize:
            return prompts[0] if single else prompts
        bos = self.tokenizer.bos_token
        add_special = not (bos and all(p.startswith(bos) for p in prompts))
        if return_tensors is None and return_dict:
            return_tensors = "pt"  # the media are tensors; the ids follow
        out = self._build(
            prompts,
            media.images,
            media.videos,
            media.waveforms,
            options,
            return_tensors=return_tensors,
            add_special_tokens=add_special,
        )
        if return_dict:
            return out
        ids = out["input_ids"]
        return ids[0] if single and not isinstance(ids, torch.Tensor) else ids

    def _conversations(self, conversation: Any) -> list[list[Mapping[str, Any]]]:
        if not isinstance(conversation, (list, tuple)) or not conversation:
            raise InputError("conversation must be a non-empty list of messages (or a list of such lists)")
        if isinstance(conversation[0], (list, tuple)):
            return [list(c) for c in conversation]
        return [list(conversation)]

    # checks

    @staticmethod
    def _check_options(options: Mapping[str, Any], allowed: frozenset[str]) -> None:
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise InputError(
                f"unknown option(s): {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
            )

    def _texts(self, text: Any) -> list[str]:
        if text is None:
            raise InputError(
                "text is required: a string (or list of strings) with a placeholder per media item"
            )
        texts = [text] if isinstance(text, str) else text
        if not isinstance(texts, (list, tuple)) or not texts or not all(isinstance(t, str) for t in texts):
            raise InputError(
                f"text must be a string or a non-empty list of strings, got {type(text).__name__} "
                "(media go in images=, videos=, audio=)"
            )
        return list(texts)

    def _call_settings(self, options: Mapping[str, Any]) -> ProcessorSettings:
        """The settings with this call's limits applied."""
        limits = {k: options[k] for k in _LIMITS if k in options}
        return self.settings.replace(**limits) if limits else self.settings

    def _streaming_resize(self, options: Mapping[str, Any]) -> Callable[[], StreamingResize] | None:
        """With ``device`` a GPU: a maker of frame sinks that resize each video file's frames there
        while the rest of it decodes (the GPU works behind the decoder); else None. On the CPU the
        resize would compete with the decoder's threads for the same cores, so it stays after."""
        device = _pixel_device(options.get("device"))
        if device is None or device.type != "cuda":
            return None
        settings = self._call_settings(options)
        return lambda: self.builder.streaming_resize(settings, device)

    def _build(
        self,
        texts: list[str],
        images: list[Any],
        videos: list[Any],
        waveforms: list[Any],
        options: Mapping[str, Any],
        **kwargs: Any,
    ) -> ProcessorOutput:
        """Hand loaded media to the input builder with this call's limits applied."""
        return self.builder.build(
            texts,
            images,
            videos,
            waveforms,
            settings=self._call_settings(options),
            audio_clip_seconds=options.get("audio_clip_seconds", ...),
            device=_pixel_device(options.get("device")),
            **kwargs,
        )


def _pixel_device(device: Any) -> torch.device | None:
    """The ``device`` option as a ``torch.device`` (None: the CPU), checked to be usable."""
    if device is None:
        return None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"device={device!r} is not a torch device ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device={str(device)!r}: CUDA is not available on this machine")
    return device
