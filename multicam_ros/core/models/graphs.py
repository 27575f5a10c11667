"""A model's forward pass replayed as CUDA graphs (`cuda_graphs`). ROS-free.

With many cameras the inference thread is bound by the CPU, not the GPU: launching the hundreds
of kernels of one forward pass costs more CPU time than the GPU needs to run them, and that
thread shares its CPUs with the rest of the detector (bench/NOTES.md). A CUDA graph records the
launches of one forward pass once and replays them with one call.

A graph has fixed shapes, and batches vary in size, so batches go up in buckets: the smallest
power of two that holds the batch (1, 2, 4, ... 32 for max_batch_size 32). A bucket's graph is
captured on its first batch (a warm-up pass and the capture: a few hundred milliseconds, once),
with its own input tensor and its own GPU memory; the batch is copied into the input's first
rows (rows past the batch keep what an earlier batch left there: their outputs are dropped).
A model that cannot be captured (a synchronising op, data-dependent shapes) is said once and
then runs as before.
"""
import logging
from typing import Any, Callable, Dict, Tuple

import torch

_LOG = logging.getLogger(__name__)
WARMUP_PASSES = 2  # before capture, on a side stream, as CUDA graph capture asks


def bucket(batch_size: int) -> int:
    """The smallest power of two holding `batch_size` (>= 1)."""
    return 1 << max(0, batch_size - 1).bit_length()


class GraphedForward:
    """`forward(batch)` for B x ... input tensors on one CUDA device, replayed from the CUDA
    graph of B's bucket; returns what `forward` returns (a tensor or a tuple of tensors), cut
    to the batch's B rows. Those tensors are the graph's own outputs: use them before the next
    call. One thread only."""

    def __init__(self, forward: Callable[[torch.Tensor], Any], description: str) -> None:
        self._forward = forward
        self._description = description
        self._graphs: Dict[Tuple[int, ...], Tuple[torch.cuda.CUDAGraph, torch.Tensor, Any]] = {}
        self._failed = False

    @property
    def buckets(self) -> Tuple[int, ...]:
        """Batch sizes captured so far."""
        return tuple(sorted(shape[0] for shape in self._graphs))

    def __call__(self, batch: torch.Tensor) -> Any:
        if self._failed:
            return self._forward(batch)
        rows = batch.shape[0]
        shape = (bucket(rows), *batch.shape[1:])
        graphed = self._graphs.get(shape)
        if graphed is None:
            graphed = self._capture(shape, batch)
            if graphed is None:
                return self._forward(batch)
        graph, static_input, static_output = graphed
        static_input[:rows].copy_(batch)
        graph.replay()
        if isinstance(static_output, torch.Tensor):
            return static_output[:rows]
        return tuple(output[:rows] for output in static_output)

    def _capture(self, shape: Tuple[int, ...], batch: torch.Tensor):
        static_input = torch.zeros(shape, dtype=batch.dtype, device=batch.device)
        static_input[:batch.shape[0]].copy_(batch)
        try:
            side = torch.cuda.Stream(batch.device)
            side.wait_stream(torch.cuda.current_stream(batch.device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP_PASSES):
                    self._forward(static_input)
            torch.cuda.current_stream(batch.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_output = self._forward(static_input)
        except Exception as exc:  # noqa: BLE001 - whatever capture refuses, run uncaptured
            self._failed = True
            self._graphs.clear()
            _LOG.warning('cuda_graphs: %s cannot be captured as a CUDA graph (%s: %s); '
                         'running it without', self._description, type(exc).__name__,
                         ' '.join(str(exc).split())[:300])
            return None
        outputs = static_output if isinstance(static_output, tuple) else (static_output,)
        if not all(isinstance(output, torch.Tensor) for output in outputs):
            self._failed = True
            _LOG.warning('cuda_graphs: %s returns %s, not tensors; running it without graphs',
                         self._description, type(static_output).__name__)
            return None
        self._graphs[shape] = (graph, static_input, static_output)
        _LOG.info('cuda_graphs: captured %s for batches up to %d', self._description, shape[0])
        return self._graphs[shape]
