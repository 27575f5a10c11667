"""Detector benchmark: one shared, batched model against one model per camera. ROS-free.

N synthetic cameras (1280x720 BGR, 30 fps each, unsynchronised) feed the package's own core, the
same code detector_node runs, without ROS:

- A, "one shared model, batched" (this package): every camera puts its frames into ONE
  `BatchCollector`; ONE `InferenceWorker` runs the newest frame of every camera as one batch
  (max_batch_size = N) through ONE detector.
- B, "one model per camera" (the usual alternative): N detectors, each with its own collector
  and its own worker thread taking that camera's newest frame (batch 1).
- C, "one shared model, no batching": ONE detector called once per frame by N threads (one a
  camera, batch 1), as a thread pool would call it.

The model is torchvision's fasterrcnn_mobilenet_v3_large_320_fpn with random weights
(`weights='none'`: no download; the cost of a forward pass does not depend on the weights).
For each scenario and N, after a warm-up, it measures over a fixed window: frames processed per
second (total and per camera), the fraction of arriving frames dropped (replaced in a camera's
newest-frame slot before the model took them), latency from a frame's arrival to its result
callback (p50, p95), the mean batch size, and on CUDA the peak GPU memory allocated and reserved
by PyTorch (peak statistics reset before the models are built) and the device memory in use.

Results: bench/results/detector_bench_<device>{.json,.md,.png} (detector_bench_<device>_quick.*
for --quick). `--replot FILE.json` rewrites the table and plot from a JSON file (e.g. where the
run happened on a machine without matplotlib).

Run: python bench/detector_bench.py [--device cuda|cpu] [--quick]
"""
import argparse
import collections
import dataclasses
import datetime
import gc
import json
import math
import platform
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO))

MODEL_NAME = 'fasterrcnn_mobilenet_v3_large_320_fpn'
CONFIDENCE = 0.3
WIDTH, HEIGHT = 1280, 720
CAMERA_FPS = 30.0
FRAME_POOL = 8  # distinct synthetic frames, cycled through by every camera
SCENARIOS: Dict[str, str] = {
    'A': 'one shared model, batched',
    'B': 'one model per camera',
    'C': 'one shared model, no batching',
}
FULL_COUNTS = (1, 2, 4, 8, 16)
QUICK_COUNTS = (1, 2)
MIB = 2 ** 20


@dataclass(frozen=True)
class Settings:
    """What one run measures."""

    device: str
    counts: Tuple[int, ...]
    scenarios: Tuple[str, ...]
    warmup_s: float
    window_s: float
    quick: bool


@dataclass
class Rig:
    """One scenario's running parts: camera -> the collector holding its slot, the workers,
    and the distinct detectors."""

    collectors: Dict[str, Any]
    workers: List[Any]
    detectors: List[Any]
    load_s: float = 0.0


@dataclass
class ResultSink:
    """The result callback: latency and counts of the results that land inside the window."""

    start_s: float = math.inf
    end_s: float = math.inf
    latencies_s: List[float] = field(default_factory=list)
    per_camera: Dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))
    detections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, camera: str, frame: Any, detections: Any) -> None:
        now_s = time.monotonic()
        if self.start_s <= now_s < self.end_s:
            with self.lock:
                self.latencies_s.append(now_s - frame.received_s)
                self.per_camera[camera] += 1
                self.detections += len(detections)


class Feeder(threading.Thread):
    """One synthetic camera: puts a frame every 1/fps s, stamped with its arrival time.

    A slot missed because the thread ran late is skipped, as a live camera would not wait."""

    def __init__(self, camera: str, frames: Sequence[np.ndarray], put: Callable[[str, Any], None],
                 fps: float, phase_s: float, offset: int, stop: threading.Event) -> None:
        super().__init__(name=f'feeder-{camera}', daemon=True)
        self._camera = camera
        self._frames = frames
        self._put = put
        self._period_s = 1.0 / fps
        self._phase_s = phase_s
        self._index = offset
        self._halt = stop

    def run(self) -> None:
        from multicam_ros.core.frames import InputFrame

        next_s = time.monotonic() + self._phase_s
        while True:
            delay_s = next_s - time.monotonic()
            if delay_s > 0 and self._halt.wait(delay_s):
                return
            if self._halt.is_set():
                return
            now_s = time.monotonic()
            image = self._frames[self._index % len(self._frames)]
            self._index += 1
            self._put(self._camera, InputFrame(image=image, stamp_ns=time.time_ns(),
                                               received_s=now_s))
            next_s += self._period_s
            if now_s - next_s > self._period_s:  # far behind: drop the missed slots
                next_s += self._period_s * math.floor((now_s - next_s) / self._period_s)


def make_frames(count: int, width: int, height: int, seed: int = 7) -> List[np.ndarray]:
    """Synthetic BGR frames: gradients, coloured rectangles and a little noise."""
    rng = np.random.default_rng(seed)
    xs = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    ys = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    frames = []
    for index in range(count):
        frame = np.empty((height, width, 3), np.uint8)
        frame[..., 0] = (xs * 0.5 + ys * 0.5 + index * 20) % 256
        frame[..., 1] = np.broadcast_to(ys, (height, width))
        frame[..., 2] = np.broadcast_to(255 - xs, (height, width))
        for _ in range(12):
            x, y = int(rng.integers(0, width - 100)), int(rng.integers(0, height - 100))
            w, h = int(rng.integers(40, 300)), int(rng.integers(40, 300))
            frame[y:y + h, x:x + w] = rng.integers(0, 256, 3, dtype=np.uint8)
        noise = rng.integers(0, 16, (height, width, 1), dtype=np.uint8)
        frames.append(frame + noise)  # uint8 wrap-around is fine for a test pattern
    return frames


def model_config(device: str) -> Any:
    """The detector every scenario uses."""
    from multicam_ros.core.models import ModelConfig

    return ModelConfig(backend='torchvision', name=MODEL_NAME, weights='none', device=device,
                       confidence_threshold=CONFIDENCE)


def build_rig(scenario: str, cameras: Sequence[str], device: str, sink: ResultSink) -> Rig:
    """Load the model(s) and wire collectors and workers for `scenario` (not started)."""
    from multicam_ros.core.batching import BatchCollector
    from multicam_ros.core.inference import InferenceWorker
    from multicam_ros.core.models import load_detector

    config = model_config(device)
    started_s = time.monotonic()
    if scenario == 'A':
        detector = load_detector(config)
        collector = BatchCollector(cameras)
        worker = InferenceWorker(collector, detector, sink, max_batch_size=len(cameras))
        return Rig({camera: collector for camera in cameras}, [worker], [detector],
                   time.monotonic() - started_s)
    shared = load_detector(config) if scenario == 'C' else None
    rig = Rig({}, [], [] if shared is None else [shared])
    for camera in cameras:
        detector = shared if shared is not None else load_detector(config)
        if shared is None:
            rig.detectors.append(detector)
        collector = BatchCollector([camera])
        rig.collectors[camera] = collector
        rig.workers.append(InferenceWorker(collector, detector, sink, max_batch_size=1))
    rig.load_s = time.monotonic() - started_s
    return rig


def warm_up_models(rig: Rig, frames: Sequence[np.ndarray], batch: int) -> None:
    """Run each detector on its largest batch and on one frame, twice, before timing."""
    for detector in rig.detectors:
        for _ in range(2):
            detector.infer([frames[i % len(frames)] for i in range(batch)])
            detector.infer([frames[0]])


def received_dropped(rig: Rig) -> Tuple[int, int]:
    """Frames received and dropped so far, summed over cameras."""
    received = dropped = 0
    for camera, collector in rig.collectors.items():
        counts = collector.counts(camera)
        received += counts.received
        dropped += counts.dropped
    return received, dropped


def batch_counts(rig: Rig) -> collections.Counter:
    """Batches run so far, by size, summed over workers."""
    total: collections.Counter = collections.Counter()
    for worker in rig.workers:
        total.update(worker.batch_summary()['histogram'])
    return total


def gpu_state(device: str) -> Dict[str, Optional[float]]:
    """PyTorch's peak and reserved memory and the device memory in use, MiB (None on CPU)."""
    import torch

    if not device.startswith('cuda'):
        return {'max_allocated_mb': None, 'reserved_mb': None, 'device_used_mb': None}
    free, total = torch.cuda.mem_get_info(device)
    return {'max_allocated_mb': torch.cuda.max_memory_allocated(device) / MIB,
            'reserved_mb': torch.cuda.memory_reserved(device) / MIB,
            'device_used_mb': (total - free) / MIB}


def release(device: str) -> None:
    """Free what the last configuration left behind, and reset the peak statistics."""
    import torch

    gc.collect()
    if device.startswith('cuda'):
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def run_config(scenario: str, count: int, settings: Settings,
               frames: Sequence[np.ndarray]) -> Dict[str, Any]:
    """Measure one scenario with `count` cameras; never raises (errors are recorded)."""
    record: Dict[str, Any] = {'scenario': scenario, 'label': SCENARIOS[scenario],
                              'cameras': count, 'offered_fps': count * CAMERA_FPS}
    cameras = [f'cam{index}' for index in range(count)]
    sink = ResultSink()
    stop = threading.Event()
    feeders: List[Feeder] = []
    rig: Optional[Rig] = None
    release(settings.device)
    try:
        rig = build_rig(scenario, cameras, settings.device, sink)
        record['models'] = len(rig.detectors)
        record['load_s'] = rig.load_s
        record['model_mb'] = sum(d.memory_bytes() for d in rig.detectors) / MIB
        warm_up_models(rig, frames, count if scenario == 'A' else 1)
        for worker in rig.workers:
            worker.start()
        rng = np.random.default_rng(count)
        for index, camera in enumerate(cameras):
            collector = rig.collectors[camera]
            feeders.append(Feeder(camera, frames, collector.put, CAMERA_FPS,
                                  float(rng.uniform(0, 1 / CAMERA_FPS)), index, stop))
        for feeder in feeders:
            feeder.start()
        time.sleep(settings.warmup_s)
        received0, dropped0 = received_dropped(rig)
        batches0 = batch_counts(rig)
        sink.start_s = time.monotonic()
        sink.end_s = sink.start_s + settings.window_s
        time.sleep(settings.window_s)
        received1, dropped1 = received_dropped(rig)
        batches1 = batch_counts(rig)
        with sink.lock:
            latencies_ms = np.array(sink.latencies_s) * 1000.0
            per_camera = [sink.per_camera.get(camera, 0) for camera in cameras]
            detections = sink.detections
        record.update(summarise(settings.window_s, received1 - received0, dropped1 - dropped0,
                                batches1 - batches0, latencies_ms, per_camera, detections))
        record['infer_ms_p50'] = float(np.median(
            [w.inference_time.percentiles_ms(50)[50] for w in rig.workers]))
        record.update(gpu_state(settings.device))
        record['status'] = 'ok'
    except Exception as exc:  # noqa: BLE001 - e.g. out of GPU memory: record it, go on
        record['status'] = 'error'
        record['error'] = f'{type(exc).__name__}: {" ".join(str(exc).split())[:300]}'
        try:
            record.update(gpu_state(settings.device))
        except Exception:  # noqa: BLE001 - the device may be unusable after the error
            pass
    finally:
        stop.set()
        for feeder in feeders:
            feeder.join(2.0)
        if rig is not None:
            for worker in rig.workers:
                worker.stop(timeout_s=60.0)
        rig = None
        release(settings.device)
    return record


def summarise(window_s: float, received: int, dropped: int, batches: collections.Counter,
              latencies_ms: np.ndarray, per_camera: List[int],
              detections: int) -> Dict[str, Any]:
    """Rates, drop fraction, latency percentiles and batch sizes of one window."""
    processed = int(sum(per_camera))
    batch_total = sum(batches.values())
    frames_batched = sum(size * n for size, n in batches.items())
    p50, p95 = (np.percentile(latencies_ms, (50, 95)) if len(latencies_ms)
                else (math.nan, math.nan))
    return {
        'received_fps': received / window_s,
        'processed_fps': processed / window_s,
        'per_camera_fps': processed / window_s / len(per_camera),
        'min_camera_fps': min(per_camera) / window_s,
        'dropped_fraction': dropped / received if received else math.nan,
        'latency_ms_p50': float(p50),
        'latency_ms_p95': float(p95),
        'batch_mean': frames_batched / batch_total if batch_total else math.nan,
        'batches': batch_total,
        'detections_per_frame': detections / processed if processed else math.nan,
    }


def environment(device: str) -> Dict[str, Any]:
    """Machine, versions, model and frame settings, for the JSON file."""
    import torch
    import torchvision

    info: Dict[str, Any] = {
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'device': device, 'torch': torch.__version__, 'torchvision': torchvision.__version__,
        'cuda': torch.version.cuda, 'python': platform.python_version(),
        'cpu': cpu_name(), 'cpu_count': _cpu_count(), 'model': MODEL_NAME, 'weights': 'none',
        'confidence_threshold': CONFIDENCE, 'frame': f'{WIDTH}x{HEIGHT} BGR uint8',
        'camera_fps': CAMERA_FPS, 'gpu': None}
    if device.startswith('cuda'):
        free, total = torch.cuda.mem_get_info(device)
        info.update(gpu=torch.cuda.get_device_name(device), gpu_total_mb=total / MIB,
                    cuda_context_mb=(total - free) / MIB)  # in use before any tensor
    return info


def cpu_name() -> str:
    """The processor's model name, from /proc/cpuinfo where there is one."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as stream:
            for line in stream:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()


def _fmt(value: Optional[float], digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '-'
    return f'{value:.{digits}f}'


def markdown(results: Dict[str, Any]) -> str:
    """A README-ready table of every configuration."""
    env = results['environment']
    where = env['gpu'] or env['cpu']
    lines = [
        f"Detector benchmark on {where} ({env['device']}), torch {env['torch']}, "
        f"{env['date'][:10]}: {env['model']} (random weights), {env['frame']} frames at "
        f"{env['camera_fps']:g} fps per camera, {results['settings']['window_s']:g} s window "
        f"after {results['settings']['warmup_s']:g} s warm-up. "
        '`python bench/detector_bench.py'
        f"{' --quick' if results['settings']['quick'] else ''} --device "
        f"{'cuda' if env['device'].startswith('cuda') else 'cpu'}`",
        '',
        '| cameras | scenario | models | fps done (offered) | fps / camera | dropped | '
        'latency p50 / p95 ms | mean batch | GPU MB peak / reserved |',
        '|---:|---|---:|---:|---:|---:|---:|---:|---:|',
    ]
    for record in results['configs']:
        name = f"{record['scenario']}: {record['label']}"
        if record['status'] != 'ok':
            lines.append(f"| {record['cameras']} | {name} | {record.get('models', '-')} | "
                         f"failed: {record['error']} |  |  |  |  |  |")
            continue
        memory = (f"{_fmt(record['max_allocated_mb'], 0)} / {_fmt(record['reserved_mb'], 0)}"
                  if record['max_allocated_mb'] is not None else '-')
        lines.append(
            f"| {record['cameras']} | {name} | {record['models']} | "
            f"{_fmt(record['processed_fps'])} ({record['offered_fps']:g}) | "
            f"{_fmt(record['per_camera_fps'])} | {_fmt(100 * record['dropped_fraction'], 0)} % | "
            f"{_fmt(record['latency_ms_p50'])} / {_fmt(record['latency_ms_p95'])} | "
            f"{_fmt(record['batch_mean'], 2)} | {memory} |")
    lines += ['', 'Latency: from a frame reaching its newest-frame slot to its result callback. '
              'Dropped: frames replaced in their slot before the model took them. GPU MB: '
              "PyTorch's peak allocated and reserved memory for the whole configuration "
              '(models, activations, frames).']
    if env.get('cuda_context_mb') is not None:
        lines[-1] += (f" B runs its models as threads of one process; as one process per camera "
                      f"it would also pay one CUDA context each (here about "
                      f"{env['cuda_context_mb']:.0f} MB of device memory before any tensor).")
    done = [r for r in results['configs'] if r['status'] == 'ok']
    if done and all(r['detections_per_frame'] < 0.01 for r in done):
        lines[-1] += (' With random weights no box clears the confidence threshold, so the '
                      'per-detection steps handle empty sets; the proposal stages (RPN, NMS) '
                      'run in full.')
    return '\n'.join(lines + [''])


def plot(results: Dict[str, Any], path: Path) -> bool:
    """Throughput, latency, memory and drops against the number of cameras; False without
    matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print('matplotlib is not installed: no plot (use --replot FILE.json elsewhere)')
        return False
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    env = results['environment']
    gpu = env['device'].startswith('cuda')
    figure, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    styles = {'A': ('tab:green', 'o'), 'B': ('tab:red', 's'), 'C': ('tab:blue', '^')}
    for scenario, label in SCENARIOS.items():
        rows = [r for r in results['configs']
                if r['scenario'] == scenario and r['status'] == 'ok']
        if not rows:
            continue
        color, marker = styles[scenario]
        xs = [r['cameras'] for r in rows]
        kwargs = dict(color=color, marker=marker, label=f'{scenario}: {label}')
        axes[0, 0].plot(xs, [r['processed_fps'] for r in rows], **kwargs)
        axes[0, 1].plot(xs, [r['latency_ms_p50'] for r in rows], **kwargs)
        axes[0, 1].plot(xs, [r['latency_ms_p95'] for r in rows], color=color, marker=marker,
                        linestyle='--', alpha=0.6)
        memory = [r['max_allocated_mb'] if gpu else r['model_mb'] for r in rows]
        axes[1, 0].plot(xs, memory, **kwargs)
        axes[1, 1].plot(xs, [100 * r['dropped_fraction'] for r in rows], **kwargs)
    counts = sorted({r['cameras'] for r in results['configs']})
    axes[0, 0].plot(counts, [c * env['camera_fps'] for c in counts], color='grey',
                    linestyle=':', label='offered (all frames)')
    titles = (('frames processed per second (all cameras)', 'fps'),
              ('latency arrival -> result: p50 solid, p95 dashed', 'ms'),
              ('GPU memory, PyTorch peak allocated' if gpu else 'model parameters', 'MiB'),
              ('frames dropped', '%'))
    for axis, (title, unit) in zip(axes.flat, titles):
        axis.set_title(title)
        axis.set_ylabel(unit)
        axis.set_xlabel('cameras')
        axis.set_xscale('log', base=2)
        axis.set_xticks(counts, [str(c) for c in counts])
        axis.grid(True, alpha=0.3)
    axes[0, 1].set_yscale('log')
    axes[0, 0].legend(fontsize=8)
    where = env['gpu'] or env['cpu']
    figure.suptitle(f"{env['model']} (random weights), {env['frame']} at "
                    f"{env['camera_fps']:g} fps per camera\n{where}, torch {env['torch']}",
                    fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def write_outputs(results: Dict[str, Any], stem: Path) -> None:
    """JSON, markdown table and plot beside each other (`stem` + suffix)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix('.json').write_text(json.dumps(results, indent=2) + '\n')
    stem.with_suffix('.md').write_text(markdown(results))
    plot(results, stem.with_suffix('.png'))


def progress_line(record: Dict[str, Any]) -> str:
    """One line a configuration, printed as it finishes."""
    head = f"[{record['scenario']}] N={record['cameras']:>2}"
    if record['status'] != 'ok':
        return f"{head}  FAILED {record['error']}"
    memory = ('' if record['max_allocated_mb'] is None else
              f"  GPU peak {record['max_allocated_mb']:.0f} MB reserved "
              f"{record['reserved_mb']:.0f} MB")
    return (f"{head}  {record['processed_fps']:6.1f} fps of {record['offered_fps']:g} "
            f"({record['per_camera_fps']:.1f}/camera)  dropped "
            f"{100 * record['dropped_fraction']:4.0f} %  latency p50 "
            f"{record['latency_ms_p50']:.1f} p95 {record['latency_ms_p95']:.1f} ms  batch "
            f"{record['batch_mean']:.2f}  infer {record['infer_ms_p50']:.1f} ms  "
            f"models {record['models']} ({record['model_mb']:.0f} MB, "
            f"loaded in {record['load_s']:.1f} s){memory}")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cuda', help='cuda, cuda:N or cpu (default cuda)')
    parser.add_argument('--quick', action='store_true',
                        help=f'cameras {QUICK_COUNTS}, short windows (a smoke test)')
    parser.add_argument('--counts', type=int, nargs='+', help='numbers of cameras to run')
    parser.add_argument('--scenarios', nargs='+', choices=sorted(SCENARIOS),
                        default=sorted(SCENARIOS))
    parser.add_argument('--seconds', type=float, help='measurement window per configuration')
    parser.add_argument('--warmup', type=float, help='seconds of feeding before the window')
    parser.add_argument('--out', type=Path, default=REPO / 'bench' / 'results',
                        help='folder for the results (default bench/results)')
    parser.add_argument('--replot', type=Path, metavar='FILE.json',
                        help='only rewrite the .md and .png beside FILE.json from it')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.replot is not None:
        results = json.loads(args.replot.read_text())
        stem = args.replot.with_suffix('')
        stem.with_suffix('.md').write_text(markdown(results))
        plot(results, stem.with_suffix('.png'))
        print(f'wrote {stem}.md and .png')
        return 0
    settings = Settings(
        device=args.device,
        counts=tuple(args.counts or (QUICK_COUNTS if args.quick else FULL_COUNTS)),
        scenarios=tuple(args.scenarios),
        warmup_s=args.warmup if args.warmup is not None else (1.0 if args.quick else 3.0),
        window_s=args.seconds if args.seconds is not None else (3.0 if args.quick else 10.0),
        quick=args.quick)
    from multicam_ros.core.models import resolve_device

    device = resolve_device(settings.device)
    settings = dataclasses.replace(settings, device=device)
    kind = 'cuda' if device.startswith('cuda') else 'cpu'
    stem = args.out / f"detector_bench_{kind}{'_quick' if settings.quick else ''}"
    results: Dict[str, Any] = {'environment': environment(device),
                               'settings': dict(vars(settings)), 'configs': []}
    env = results['environment']
    print(f"{env['gpu'] or env['cpu']}, torch {env['torch']}, {env['model']}, "
          f"{env['frame']} at {CAMERA_FPS:g} fps/camera; cameras {settings.counts}, "
          f'scenarios {settings.scenarios}, warm-up {settings.warmup_s:g} s, '
          f'window {settings.window_s:g} s', flush=True)
    frames = make_frames(FRAME_POOL, WIDTH, HEIGHT)
    for count in settings.counts:
        for scenario in settings.scenarios:
            record = run_config(scenario, count, settings, frames)
            results['configs'].append(record)
            print(progress_line(record), flush=True)
            write_outputs(results, stem)  # after each, so a cut-off run keeps what it had
    print(f'wrote {stem}.json, .md and .png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
