"""EVS's compaction of a batch: the kept positions of each row, counted on the host before the encoders
run, equal those of the keep mask the GPU builds; the compacted rows are the kept positions in order,
left-padded, whether the host counted them or not."""

from __future__ import annotations

import torch

from omni.model import IGNORE_INDEX, VIDEO_TYPE, _compact_rows, _kept_lengths, _row_counts
from tokenreduce import evs_keep_mask

RATE = 0.5


def _batch(masked_video: bool = False):
    """Three rows of 24: two videos in the first, one in the left-padded second, none in the third."""
    grids = [(2, 2, 3), (1, 2, 2), (3, 2, 2)]
    types = torch.zeros(3, 24, dtype=torch.long)
    types[0, 2:14] = VIDEO_TYPE  # 2 x 2 x 3
    types[0, 15:19] = VIDEO_TYPE  # 1 x 2 x 2
    types[1, 10:22] = VIDEO_TYPE  # 3 x 2 x 2
    mask = torch.ones(3, 24, dtype=torch.long)
    mask[1, :8] = 0
    mask[2, :5] = 0
    if masked_video:
        mask[1, :11] = 0
    generator = torch.Generator().manual_seed(0)
    videos = [torch.randn(t, r, c, 16, generator=generator) for t, r, c in grids]
    keep = torch.ones(3, 24, dtype=torch.bool)
    keep.view(-1)[(types.view(-1) == VIDEO_TYPE).nonzero().view(-1)] = torch.cat(
        [evs_keep_mask(v, RATE).reshape(-1) for v in videos]
    )
    keep &= mask.bool()
    return types, mask, grids, keep


def test_host_counts_equal_the_keep_mask():
    types, mask, grids, keep = _batch()
    assert _kept_lengths(_row_counts(types, mask), grids, RATE) == keep.sum(1).tolist()
    assert _kept_lengths(_row_counts(types, None), grids, RATE) == (keep | ~mask.bool()).sum(1).tolist()


def test_host_cannot_count_a_video_under_the_mask():
    types, mask, grids, _ = _batch(masked_video=True)
    assert _kept_lengths(_row_counts(types, mask), grids, RATE) is None


def test_compacted_rows_are_the_kept_positions_left_padded():
    types, mask, grids, keep = _batch()
    embeds = torch.randn(3, 24, 8)
    labels = torch.randint(0, 50, (3, 24))
    lengths = keep.sum(1).tolist()
    width = max(lengths)
    for given in (None, lengths):
        out, out_mask, out_labels = _compact_rows(embeds, keep, labels, given)
        assert out.shape == (3, width, 8)
        for row, count in enumerate(lengths):
            pad = width - count
            assert torch.equal(out[row, pad:], embeds[row, keep[row]])
            assert torch.equal(out[row, :pad], torch.zeros(pad, 8))
            assert out_mask[row].tolist() == [0] * pad + [1] * count
            assert out_labels[row].tolist() == [IGNORE_INDEX] * pad + labels[row, keep[row]].tolist()


@torch.no_grad()
def test_one_prompt_after_evs_gives_the_language_model_no_mask(model, processor, make):
    """One prompt's rows all keep the same count, known on the host: the language model gets no mask
    (and reads nothing back), with the logits it gives for the all-ones mask; the output still
    reports that mask. Rows of different lengths keep theirs."""
    inputs = processor(text="<video> What moves?", videos=[make.frames(7, 90, 160)], return_tensors="pt")
    embedded = model.embed_inputs(**inputs, video_pruning_rate=0.5)
    assert embedded.full_rows and embedded.model_mask is None and bool(embedded.attention_mask.all())
    out = model(**inputs, video_pruning_rate=0.5)
    masked = model.language_model(
        inputs_embeds=embedded.inputs_embeds, attention_mask=embedded.attention_mask
    )
    assert torch.equal(out.logits, masked.logits)
    assert torch.equal(out.attention_mask, embedded.attention_mask)

    clips = [make.frames(6, 90, 160, seed=1), make.frames(5, 120, 120, seed=2)]
    batch = processor(text=["<video> What moves here?", "<video> And?"], videos=clips, return_tensors="pt")
    embedded = model.embed_inputs(**batch, video_pruning_rate=0.5)
    assert not embedded.full_rows and embedded.model_mask is embedded.attention_mask
    assert not bool(embedded.attention_mask.all())
