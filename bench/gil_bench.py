"""GIL benchmark: does the detector's per-camera result work (tracking, Detection2DArray bytes,
publishing), done on a thread of the detector process, lengthen the inference thread's batches,
and does the same work in a process of its own leave them alone?

The inference thread runs a stand-in for a launch-bound model: per batch, a TorchScript
function of `--script-ops` small CPU ops (run with the GIL released, like a TorchScript
forward), then `--python-ops` small torch ops called from Python (each gives the GIL up and
takes it back, like a back-end's post-processing). Each batch's `--batch` results, cycling over
`--cameras` cameras with `--objects` moving objects each (bench/tracking_bench.py's scene), get
the detector's result work: the package's Tracker.update, keep_published, detection_array_bytes
and a real rclpy publish on `<camera>/detections`, which a subscriber process receives. Modes:

- quiet:   batches alone (the model's own time);
- thread:  the results go to the package's ResultStage, as in detector_node;
- inline:  the inference thread does the result work itself after each batch;
- process: the inference thread sends each batch's detections through a pipe to a child
           process, which does the result work.

Reported per mode: batches per second, batch time (the model part only) p50, results handled
per second, the inference thread's CPU per batch. Modes alternate over `--repeats` rounds, since
these machines are shared and noisy; compare modes within one run.

With `--backend nanodet` (or `torchvision`) the package's own back-end runs instead of the
stand-in, on random 1280x720 frames already on `--device`: on the GPU machine that measures the
node's case itself (pin it as the node would be, e.g. `taskset -c 0-3`).

Run: .venv/bin/python bench/gil_bench.py [--seconds 8] [--objects 0,10] [--repeats 2]
     taskset -c 0-3 python bench/gil_bench.py --backend nanodet --model .../nanodet-g.torchscript
Results: bench/results/gil_bench.json and .png
"""
import argparse
import datetime
import json
import multiprocessing
import os
import pickle
import platform
import random
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

BENCH = Path(__file__).resolve().parent
if str(BENCH.parent) not in sys.path:
    sys.path.insert(0, str(BENCH.parent))
RESULTS = BENCH / 'results'
MODES = ('quiet', 'thread', 'inline', 'process')
SCENE_FRAMES = 300  # per camera, replayed in a loop
CONFIDENCE = 0.5


def scenes(cameras: int, objects: int) -> List[list]:
    """Per camera, SCENE_FRAMES frames of detections (bench/tracking_bench.py's scene)."""
    sys.path.insert(0, str(BENCH))
    from tracking_bench import make_scene
    from multicam_ros.core.models.base import Detections
    if objects == 0:
        empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                           np.zeros(0, np.int64))
        return [[empty] * SCENE_FRAMES for _ in range(cameras)]
    return [[d for d, _ in make_scene(objects, SCENE_FRAMES, seed)] for seed in range(cameras)]


class ResultWork:
    """The detector_node's per-result work without drawing: one tracker and publisher per
    camera. Owned by one thread."""

    def __init__(self, node, cameras: int) -> None:
        from vision_msgs.msg import Detection2DArray
        from multicam_ros.core.stats import LatencyWindow, RateMeter
        from multicam_ros.core.tracking import Tracker, TrackerConfig
        self._trackers = [Tracker(TrackerConfig()) for _ in range(cameras)]
        self._pubs = [node.create_publisher(Detection2DArray, f'cam{i}/detections', 10)
                      for i in range(cameras)]
        self._latency = [LatencyWindow() for _ in range(cameras)]
        self._processed = [RateMeter() for _ in range(cameras)]
        self.handled = 0

    def __call__(self, camera: int, stamp_ns: int, detections) -> None:
        from multicam_ros.core.models.base import Detections
        from multicam_ros.core.tracking import NO_TRACK_ID
        from multicam_ros.ros.detections_cdr import detection_array_bytes
        from multicam_ros.ros.detector_node import keep_published
        track_ids = self._trackers[camera].update(detections, stamp_ns / 1e9).track_ids
        keep = keep_published(detections, track_ids, CONFIDENCE)
        detections = Detections(detections.boxes_xyxy[keep], detections.scores[keep],
                                detections.class_ids[keep])
        labels = [str(c) for c in detections.class_ids.tolist()]
        ids = [str(t) if t != NO_TRACK_ID else '' for t in track_ids[keep].tolist()]
        self._pubs[camera].publish(detection_array_bytes(
            stamp_ns, f'cam{camera}', detections.boxes_xyxy, detections.scores, labels, ids))
        self._latency[camera].add((time.time_ns() - stamp_ns) / 1e9)
        self._processed[camera].tick()
        self.handled += 1


def _ros_node(name: str):
    import rclpy
    rclpy.init()
    return rclpy.create_node(name)


def _result_process(conn, cameras: int, ready) -> None:
    """The child of mode `process`: receives pickled batches until None, then sends back how
    many results it handled and when it finished (time.monotonic, one clock for all processes
    on Linux), so that a backlog left in the pipe counts at the time it took."""
    node = _ros_node('gil_bench_results')
    work = ResultWork(node, cameras)
    ready.set()
    while True:
        batch = pickle.loads(conn.recv_bytes())
        if batch is None:
            break
        for camera, stamp_ns, detections in batch:
            work(camera, stamp_ns, detections)
    conn.send((work.handled, time.monotonic()))
    node.destroy_node()


def _subscriber_process(cameras: int, stop, counter) -> None:
    """Receives every camera's detections (as the e2e benchmark's probe does) and counts."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from vision_msgs.msg import Detection2DArray
    node = _ros_node('gil_bench_listener')
    got = [0]
    for i in range(cameras):
        node.create_subscription(Detection2DArray, f'cam{i}/detections',
                                 lambda msg: got.__setitem__(0, got[0] + 1), 10, raw=True)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.1)
        counter.value = got[0]
    node.destroy_node()
    rclpy.shutdown()


class RealModel:
    """A back-end of the package (`--backend`) on `batch` random 1280x720 frames already on
    its device (bench/profiling/infer_loop.py), instead of the stand-in."""

    def __init__(self, backend: str, path: str, device: str, batch: int) -> None:
        sys.path.insert(0, str(BENCH / 'profiling'))
        from infer_loop import detector_and_frames
        self._detector, self._frames = detector_and_frames(backend, path, batch, device)

    def batch(self) -> None:
        self._detector.infer(self._frames)


class Model:
    """The stand-in for a launch-bound model (see the module docstring)."""

    def __init__(self, script_ops: int, python_ops: int) -> None:
        import torch
        torch.set_num_threads(1)

        @torch.jit.script
        def forward(x: torch.Tensor, n: int) -> torch.Tensor:
            for _ in range(n):
                x = torch.relu(x * 1.0001 - 0.0001)
            return x

        self._forward = forward
        self._x = torch.rand(64, 64)
        self._script_ops, self._python_ops = script_ops, python_ops

    def batch(self) -> None:
        y = self._forward(self._x, self._script_ops)
        for _ in range(self._python_ops):
            y = y + 1.0


def run_mode(mode: str, model: Model, node, frames: List[list], batch: int,
             seconds: float) -> Dict[str, float]:
    from multicam_ros.core.inference import ResultStage
    cameras = len(frames)
    handle, stage, child, conn = None, None, None, None
    if mode in ('thread', 'inline'):
        work = ResultWork(node, cameras)
        handle = work
        if mode == 'thread':
            stage = ResultStage(list(range(cameras)),
                                lambda camera, stamp_ns, d: work(camera, stamp_ns, d)).start()
    elif mode == 'process':
        ctx = multiprocessing.get_context('spawn')
        conn, child_conn = ctx.Pipe()
        ready = ctx.Event()
        child = ctx.Process(target=_result_process, args=(child_conn, cameras, ready))
        child.start()
        if not ready.wait(60):
            raise RuntimeError('the result process did not start in 60 s')
    times_s: List[float] = []
    cursor, k = 0, 0
    started_s, cpu_s = time.monotonic(), time.thread_time()
    while time.monotonic() - started_s < seconds:
        t0 = time.perf_counter()
        model.batch()
        times_s.append(time.perf_counter() - t0)
        now_ns = time.time_ns()
        results: List[Tuple[int, int, object]] = []
        for _ in range(batch):
            camera = cursor % cameras
            results.append((camera, now_ns, frames[camera][k % SCENE_FRAMES]))
            cursor += 1
            if camera == cameras - 1:
                k += 1
        if mode == 'thread':
            for camera, stamp_ns, d in results:
                stage.put(camera, stamp_ns, d)
        elif mode == 'inline':
            for camera, stamp_ns, d in results:
                handle(camera, stamp_ns, d)
        elif mode == 'process':
            conn.send_bytes(pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL))
    elapsed_s = time.monotonic() - started_s
    cpu_per_batch_ms = (time.thread_time() - cpu_s) / len(times_s) * 1e3
    handled, results_s = 0, elapsed_s
    if mode in ('thread', 'inline'):
        if stage is not None:
            stage.stop()
        handled = handle.handled
    elif mode == 'process':
        conn.send_bytes(pickle.dumps(None))
        handled, finished_s = conn.recv()
        results_s = finished_s - started_s
        child.join(10)
    return {'batches_per_s': round(len(times_s) / elapsed_s, 1),
            'batch_ms_p50': round(float(np.percentile(times_s, 50)) * 1e3, 3),
            'batch_ms_p90': round(float(np.percentile(times_s, 90)) * 1e3, 3),
            'results_per_s': round(handled / results_s, 1),
            'inference_cpu_ms_per_batch': round(cpu_per_batch_ms, 3)}


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    groups = sorted({r['objects'] for r in results['runs']})
    width = 0.8 / len(groups)
    for g, objects in enumerate(groups):
        for ax, key, label in ((axes[0], 'batch_ms_p50', 'model batch time p50 (ms)'),
                               (axes[1], 'results_per_s', 'results handled per second')):
            values = [np.mean([r[key] for r in results['runs']
                               if r['objects'] == objects and r['mode'] == m]) for m in MODES]
            ax.bar(np.arange(len(MODES)) + g * width, values, width,
                   label=f'{objects} objects per frame')
            ax.set_xticks(np.arange(len(MODES)) + width * (len(groups) - 1) / 2, MODES)
            ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle(f'multicam_ros gil_bench ({results["backend"]}): {results["cameras"]} '
                 f'cameras, batch {results["batch"]}, {results["machine"]["cpus"]} CPUs',
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cameras', type=int, default=64)
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--objects', default='0,10', help='objects per frame, comma-separated')
    parser.add_argument('--script-ops', type=int, default=400)
    parser.add_argument('--python-ops', type=int, default=150)
    parser.add_argument('--backend', choices=('standin', 'nanodet', 'torchvision'),
                        default='standin', help="the model: the stand-in, or the package's "
                        'NanoDet-g or Faster R-CNN (random weights) on --device')
    parser.add_argument('--model', default='', help='model.path for --backend nanodet')
    parser.add_argument('--device', default='cuda', help='device of a real --backend')
    parser.add_argument('--seconds', type=float, default=8.0, help='per mode and round')
    parser.add_argument('--repeats', type=int, default=2, help='rounds over all modes')
    parser.add_argument('--switch-interval', type=float, default=sys.getswitchinterval(),
                        help="sys.setswitchinterval of the bench's process, s")
    parser.add_argument('--out', type=Path, default=RESULTS / 'gil_bench')
    args = parser.parse_args(argv)
    if min(args.cameras, args.batch, args.repeats) < 1 or args.seconds <= 0:
        parser.error('--cameras, --batch, --repeats and --seconds must be positive')
    counts = [int(c) for c in args.objects.split(',') if c.strip()]
    sys.setswitchinterval(args.switch_interval)
    # A domain of its own, on this host only, for the bench and its children.
    os.environ['ROS_DOMAIN_ID'] = str(random.randint(100, 200))
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    ctx = multiprocessing.get_context('spawn')
    stop, counter = ctx.Event(), ctx.Value('q', 0)
    listener = ctx.Process(target=_subscriber_process, args=(args.cameras, stop, counter))
    listener.start()
    node = _ros_node('gil_bench')
    model = (Model(args.script_ops, args.python_ops) if args.backend == 'standin' else
             RealModel(args.backend, args.model, args.device, args.batch))
    for _ in range(20):
        model.batch()
    runs = []
    started = time.monotonic()
    try:
        for objects in counts:
            frames = scenes(args.cameras, objects)
            for round_ in range(args.repeats):
                for mode in MODES:
                    received_before = counter.value
                    run = run_mode(mode, model, node, frames, args.batch, args.seconds)
                    time.sleep(0.5)  # the last messages reach the listener
                    run.update(mode=mode, objects=objects, round=round_,
                               received_per_s=round((counter.value - received_before)
                                                    / args.seconds, 1))
                    runs.append(run)
                    print(f'{objects:>3} objects, round {round_ + 1}, {mode:>7}: '
                          f'batch p50 {run["batch_ms_p50"]:.2f} ms, '
                          f'{run["batches_per_s"]:.0f} batches/s, '
                          f'{run["results_per_s"]:.0f} results/s '
                          f'(listener {run["received_per_s"]:.0f}/s), inference thread CPU '
                          f'{run["inference_cpu_ms_per_batch"]:.2f} ms a batch', flush=True)
    finally:
        stop.set()
        listener.join(10)
        node.destroy_node()
    import torch
    results = {
        'benchmark': 'gil_bench',
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(),
                    'python': platform.python_version(), 'torch': torch.__version__},
        'backend': args.backend, 'model': args.model, 'device': args.device,
        'cameras': args.cameras, 'batch': args.batch, 'script_ops': args.script_ops,
        'python_ops': args.python_ops, 'seconds': args.seconds,
        'switch_interval_s': args.switch_interval,
        'duration_s': round(time.monotonic() - started, 1), 'runs': runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix('.json').write_text(json.dumps(results, indent=2) + '\n')
    plot(results, args.out.with_suffix('.png'))
    print(f'wrote {args.out.with_suffix(".json")} and .png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
