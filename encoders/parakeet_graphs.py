"""The Parakeet encoder's Conformer layers replayed from a CUDA graph, one graph per batch shape.

The layers are many small kernels: 10 minutes of audio (20 clips of 30 s, 7,520 positions) take about
760 launches and 27 ms of GPU time on an H200, and queueing them from Python takes the host about as
long. The encode was bound by the host, so its time followed the host's speed: 29 to 64 ms between
processes on one machine, with the same kernels. A graph queues them all in one call.

A shape gets its graph on its second encode (the first runs eagerly), as cuDNN's plans are kept for
shapes that recur: a service sees the same clip batches again (a clip is 30 s, so long audios share the
width), a one-off shape costs no capture. The graph reads its inputs from buffers of its own, which each
call fills. Graphs are dropped when a weight of the layers is replaced or changed in place (the
captured kernels point at the old memory, and folded operands were made from the old values), and
when more than `MAX_GRAPHS` shapes were captured (the oldest goes). Each cached graph keeps the memory
of one run of the layers at its shape reserved. ``OMNI_DISABLE_CUDA_GRAPHS=1`` keeps the layers eager,
as it does decoding.

Each call checks the layers' weights and hooks. Walking the module tree for them took the host about 4 ms
(768 tensors in 553 modules), longer than the subsampling's kernels, so the GPU sat idle before every
replay. The walk's lists are now kept until any module anywhere registers or replaces a parameter, buffer
or submodule (torch's global registration hooks count those); the check itself reads each kept tensor's
address and version counter, and each kept module's hooks. The encoder makes it (`check`) before it
queues the subsampling, so the GPU runs those kernels meanwhile.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from encoders.parakeet_attention import ClipLayout

logger = logging.getLogger(__name__)

GRAPHS_ENV = "OMNI_DISABLE_CUDA_GRAPHS"
MAX_GRAPHS = 4

# (x [B, T, d], positions, clips) -> the last layer's output [B, T, d]
LayerStack = Callable[[torch.Tensor, torch.Tensor, ClipLayout], torch.Tensor]


class _Registrations:
    """How many parameters, buffers and submodules any module registered or replaced since import."""

    count = 0


def _registered(*_args: object) -> None:
    _Registrations.count += 1


nn.modules.module.register_module_parameter_registration_hook(_registered)
nn.modules.module.register_module_buffer_registration_hook(_registered)
nn.modules.module.register_module_module_registration_hook(_registered)


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    x: torch.Tensor
    positions: torch.Tensor
    valid_lengths: torch.Tensor
    extents: torch.Tensor
    out: torch.Tensor


class LayerGraphs:
    """Captured runs of one encoder's layers, keyed by the shapes, dtype and device of their inputs."""

    def __init__(self, layers: nn.Module, max_graphs: int = MAX_GRAPHS) -> None:
        # kept out of `layers`' module tree: a plain attribute of the owner would register it
        self._layers = [layers]
        self.max_graphs = max_graphs
        self.graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self._seen: set[tuple] = set()
        self._failed: set[tuple] = set()
        self._weights: tuple = ()
        self._tree: tuple[int, list[nn.Module], list[torch.Tensor]] | None = None
        # one caller at a time fills the static inputs and replays (a demo may serve requests in threads)
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        # copies and pickles start without graphs: a graph belongs to the memory it was captured on
        return {"layers": self._layers[0], "max_graphs": self.max_graphs}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["layers"], state["max_graphs"])

    def usable(self, x: torch.Tensor) -> bool:
        """Whether `run` may capture or replay for ``x``: CUDA, inference (no gradients, eval mode),
        not inside another capture, no hooks on the layers, not switched off by the environment."""
        layers = self._layers[0]
        if not x.is_cuda or torch.is_grad_enabled() or layers.training:
            return False
        if os.environ.get(GRAPHS_ENV, "0") == "1" or torch.cuda.is_current_stream_capturing():
            return False
        return not any(m._forward_hooks or m._forward_pre_hooks for m in self._walk()[1])

    def _walk(self) -> tuple[int, list[nn.Module], list[torch.Tensor]]:
        """The layers' modules and their parameters and buffers, listed again only after a registration."""
        if self._tree is None or self._tree[0] != _Registrations.count:
            layers = self._layers[0]
            tensors = [*layers.parameters(), *layers.buffers()]
            self._tree = (_Registrations.count, list(layers.modules()), tensors)
        return self._tree

    def check(self, x: torch.Tensor) -> bool:
        """`usable` for ``x``, with the graphs of stale weights dropped: the host's checks, which a caller
        makes before it queues the kernels that make the layers' input, so the GPU runs those meanwhile.
        `run` with ``checked=True`` then skips them."""
        if not self.usable(x):
            return False
        with self._lock:
            self._drop_stale()
        return True

    def run(
        self,
        stack: LayerStack,
        x: torch.Tensor,
        positions: torch.Tensor,
        clips: ClipLayout,
        checked: bool = False,
    ) -> torch.Tensor | None:
        """``stack(x, positions, clips)`` replayed from this shape's graph (captured on the shape's second
        call), or None when the caller should run the layers itself: the shape's first call, a failed
        capture, or `usable` false. ``checked``: `check` passed for this call."""
        if not checked and not self.usable(x):
            return None
        with self._lock:
            if not checked:
                self._drop_stale()
            return self._run_locked(stack, x, positions, clips)

    def _drop_stale(self) -> None:
        weights = self._weights_signature()
        if weights != self._weights:  # new or changed weights: every graph reads stale memory
            self.graphs.clear()
            self._seen.clear()
            self._weights = weights

    def _run_locked(
        self, stack: LayerStack, x: torch.Tensor, positions: torch.Tensor, clips: ClipLayout
    ) -> torch.Tensor | None:
        key = (tuple(x.shape), tuple(positions.shape), x.dtype, x.device, clips.length)
        entry = self.graphs.get(key)
        if entry is None:
            if key not in self._seen or key in self._failed:
                self._seen.add(key)
                return None
            # normal tensors even under `torch.inference_mode`: a later call outside it must fill them
            with torch.inference_mode(False), torch.no_grad():
                entry = self._capture(key, stack, x, positions, clips)
            if entry is None:
                return None
        self.graphs.move_to_end(key)
        entry.x.copy_(x)
        entry.positions.copy_(positions)
        entry.valid_lengths.copy_(clips.valid_lengths)
        entry.extents.copy_(clips.extents)
        entry.graph.replay()
        return entry.out.clone()

    def _weights_signature(self) -> tuple:
        return tuple((t.data_ptr(), t._version) for t in self._walk()[2])

    def _capture(
        self, key: tuple, stack: LayerStack, x: torch.Tensor, positions: torch.Tensor, clips: ClipLayout
    ) -> _Graph | None:
        static_x, static_positions = x.clone(), positions.clone()
        valid_lengths, extents = clips.valid_lengths.clone(), clips.extents.clone()

        def layout() -> ClipLayout:
            # a new layout per run: its derived masks and int32 copies are made inside the run, so the
            # captured ones are recomputed from the static lengths at every replay
            return ClipLayout(valid_lengths=valid_lengths, extents=extents, length=clips.length)

        try:
            side = torch.cuda.Stream(device=x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            # warm-up: builds the kernels and the cached operands, settles the allocator
            with torch.cuda.stream(side):
                stack(static_x, static_positions, layout())
            torch.cuda.current_stream(x.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = stack(static_x, static_positions, layout())
        except Exception as err:  # an operation that cannot be captured here: this shape stays eager
            self._failed.add(key)
            logger.warning("capturing the audio encoder's layers failed (%s); they run eagerly", err)
            return None
        entry = _Graph(graph, static_x, static_positions, valid_lengths, extents, out)
        self.graphs[key] = entry
        while len(self.graphs) > self.max_graphs:
            self.graphs.popitem(last=False)
        return entry
