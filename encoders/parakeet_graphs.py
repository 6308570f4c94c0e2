"""The Parakeet encoder (conv subsampling and Conformer layers) replayed from a CUDA graph, one graph per
batch shape.

The encoder is many small kernels: 10 minutes of audio (20 clips of 30 s, 7,520 positions) take about
800 launches and 22 ms of GPU time on an H200, and queueing them from Python takes the host about as
long. The encode was bound by the host, so its time followed the host's speed: 29 to 64 ms between
processes on one machine, with the same kernels. A graph queues them all in one call.

A shape gets its graph on its second encode (the first runs eagerly), as cuDNN's plans are kept for
shapes that recur: a service sees the same clip batches again (a clip is 30 s, so long audios share the
width), a one-off shape costs no capture. The graph reads its inputs (features and frame counts) from
buffers of its own, which each call fills. Graphs are dropped when a weight of the captured modules is
replaced or changed in place (the captured kernels point at the old memory, and folded operands were
made from the old values), and when more than `MAX_GRAPHS` shapes were captured (the oldest goes). Each
cached graph keeps the memory of one run at its shape reserved. ``OMNI_DISABLE_CUDA_GRAPHS=1`` keeps the
encoder eager, as it does decoding.

Each call checks the modules' weights and hooks. The walk of the module tree for them took about 4 ms of
host time (timed on a CPU; 768 tensors in 553 modules), so its lists are kept until any module anywhere
registers or replaces a parameter, buffer or submodule (torch's global registration hooks count those);
the check reads each kept tensor's address and version counter, and each kept module's hooks.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

logger = logging.getLogger(__name__)

GRAPHS_ENV = "OMNI_DISABLE_CUDA_GRAPHS"
MAX_GRAPHS = 4

# (tensors ...) -> one output tensor, e.g. (features [B, F, mels], frame counts [B]) -> hidden [B, T, d]
Stack = Callable[..., torch.Tensor]


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
    inputs: list[torch.Tensor]
    out: torch.Tensor


class LayerGraphs:
    """Captured runs of modules (an encoder's subsampling and layers), keyed by the shapes, dtypes and
    device of their inputs."""

    def __init__(self, parts: Sequence[nn.Module], max_graphs: int = MAX_GRAPHS) -> None:
        # kept out of the owner's module tree: a plain attribute of the owner would register them
        self._parts = list(parts)
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
        return {"parts": self._parts, "max_graphs": self.max_graphs}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["parts"], state["max_graphs"])

    def usable(self, x: torch.Tensor) -> bool:
        """Whether `run` may capture or replay for ``x``: CUDA, inference (no gradients, eval mode),
        not inside another capture, no hooks on the modules, not switched off by the environment."""
        if not x.is_cuda or torch.is_grad_enabled() or any(part.training for part in self._parts):
            return False
        if os.environ.get(GRAPHS_ENV, "0") == "1" or torch.cuda.is_current_stream_capturing():
            return False
        return not any(m._forward_hooks or m._forward_pre_hooks for m in self._walk()[1])

    def _walk(self) -> tuple[int, list[nn.Module], list[torch.Tensor]]:
        """The modules and their parameters and buffers, listed again only after a registration."""
        if self._tree is None or self._tree[0] != _Registrations.count:
            modules = [m for part in self._parts for m in part.modules()]
            tensors = [t for part in self._parts for t in (*part.parameters(), *part.buffers())]
            self._tree = (_Registrations.count, modules, tensors)
        return self._tree

    def run(self, stack: Stack, inputs: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """``stack(*inputs)`` replayed from this shape's graph (captured on the shape's second call), or
        None when the caller should run it itself: the shape's first call, a failed capture, or `usable`
        false for the first input."""
        if not self.usable(inputs[0]):
            return None
        with self._lock:
            self._drop_stale()
            return self._run_locked(stack, list(inputs))

    def _drop_stale(self) -> None:
        weights = self._weights_signature()
        if weights != self._weights:  # new or changed weights: every graph reads stale memory
            self.graphs.clear()
            self._seen.clear()
            self._weights = weights

    def _run_locked(self, stack: Stack, inputs: list[torch.Tensor]) -> torch.Tensor | None:
        key = (inputs[0].device, *((tuple(t.shape), t.dtype) for t in inputs))
        entry = self.graphs.get(key)
        if entry is None:
            if key not in self._seen or key in self._failed:
                self._seen.add(key)
                return None
            # normal tensors even under `torch.inference_mode`: a later call outside it must fill them
            with torch.inference_mode(False), torch.no_grad():
                entry = self._capture(key, stack, inputs)
            if entry is None:
                return None
        self.graphs.move_to_end(key)
        for static, given in zip(entry.inputs, inputs, strict=True):
            static.copy_(given)
        entry.graph.replay()
        return entry.out.clone()

    def _weights_signature(self) -> tuple:
        return tuple((t.data_ptr(), t._version) for t in self._walk()[2])

    def _capture(self, key: tuple, stack: Stack, inputs: list[torch.Tensor]) -> _Graph | None:
        static = [t.clone() for t in inputs]
        device = static[0].device
        try:
            side = torch.cuda.Stream(device=device)
            side.wait_stream(torch.cuda.current_stream(device))
            # warm-up: builds the kernels and the cached operands, settles the allocator
            with torch.cuda.stream(side):
                stack(*static)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = stack(*static)
        except Exception as err:  # an operation that cannot be captured here: this shape stays eager
            self._failed.add(key)
            logger.warning("capturing the audio encoder failed (%s); it runs eagerly", err)
            return None
        entry = _Graph(graph, static, out)
        self.graphs[key] = entry
        while len(self.graphs) > self.max_graphs:
            self.graphs.popitem(last=False)
        return entry
