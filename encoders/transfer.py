"""Row indices made on the host and sent to the device without waiting for it.

Selecting rows with a boolean mask on the GPU (``x[mask]``, ``mask.nonzero()``) reads the number of
selected rows back to the host, which waits for every kernel queued before it: at the end of an encoder,
the host then sits idle for the whole encoder and starts the language model with an empty queue. When
the host already knows which rows it wants, `range_rows` builds their indices on the host and copies them
through pinned memory, asynchronously, so the host keeps queuing work ahead of the GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def range_rows(ranges: Sequence[tuple[int, int]], device: torch.device | str) -> torch.Tensor:
    """int64 indices ``start, ..., stop - 1`` of each ``(start, stop)`` of ``ranges`` in turn, on ``device``."""
    pieces = [torch.arange(start, stop, dtype=torch.long) for start, stop in ranges if stop > start]
    rows = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)
    device = torch.device(device)
    if device.type == "cuda":
        return rows.pin_memory().to(device, non_blocking=True)
    return rows.to(device)
