"""Tracking benchmark: what `Tracker.update` costs per frame as the number of objects grows.

A synthetic 1920x1080 scene at 30 fps: N objects (boxes of random size) move at constant
velocity and bounce off the frame's edges, so all N stay in view for the whole run. Each frame's
detections carry box noise, come in shuffled order, miss 5% of the objects at random and give
10% of them a low score (the second, low-score association runs too). For N in 10, 25, 50, 100
the tracker runs a warm-up, then `--frames` timed frames; only the `update` call is timed.
Detections are generated before timing starts.

Target (issue 6): under 1 ms per frame with 50 objects. Results: bench/results/tracking_bench.json
and tracking_bench.png (time per frame against the number of objects).

Run: .venv/bin/python bench/tracking_bench.py [--frames 1000] [--counts 10,25,50,100]
"""
import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from multicam_ros.core.models.base import Detections
from multicam_ros.core.tracking import NO_TRACK_ID, Tracker, TrackerConfig

RESULTS = Path(__file__).resolve().parent / 'results'
FRAME_W_PX, FRAME_H_PX = 1920, 1080
FPS = 30.0
WARMUP_FRAMES = 50
TARGET_MS = 1.0
TARGET_OBJECTS = 50
MISS_FRACTION = 0.05
WEAK_FRACTION = 0.10


def make_scene(count: int, frames: int, seed: int) -> List[Tuple[Detections, float]]:
    """`frames` frames of `count` bouncing objects: (detections, stamp_s) each."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(30.0, 90.0, count)
    h = w * rng.uniform(1.2, 2.5, count)
    size = np.stack([w, h], axis=1)
    low, high = size / 2, np.array([FRAME_W_PX, FRAME_H_PX]) - size / 2
    pos = rng.uniform(low, high)
    angle = rng.uniform(0.0, 2.0 * np.pi, count)
    speed = rng.uniform(20.0, 250.0, count)  # px/s
    vel = np.stack([speed * np.cos(angle), speed * np.sin(angle)], axis=1)
    base_score = rng.uniform(0.6, 0.95, count)
    classes = rng.integers(0, 3, count)
    out = []
    dt = 1.0 / FPS
    for k in range(frames):
        pos = pos + vel * dt
        bounced = (pos < low) | (pos > high)
        vel = np.where(bounced, -vel, vel)
        pos = np.clip(pos, low, high)
        boxes = np.concatenate([pos - size / 2, pos + size / 2], axis=1)
        boxes += rng.normal(0.0, 1.5, boxes.shape)
        scores = np.clip(base_score + rng.normal(0.0, 0.03, count), 0.0, 1.0)
        weak = rng.random(count) < WEAK_FRACTION
        scores[weak] = rng.uniform(0.15, 0.45, int(weak.sum()))
        seen = np.flatnonzero(rng.random(count) >= MISS_FRACTION)
        order = rng.permutation(seen)
        out.append((Detections(boxes[order].astype(np.float32), scores[order].astype(np.float32),
                               classes[order].astype(np.int64)), k * dt))
    return out


def percentile_ms(times_ns: Sequence[int], q: float) -> float:
    return round(float(np.percentile(np.asarray(times_ns) / 1e6, q)), 4)


def run_count(count: int, frames: int, seed: int) -> Dict[str, object]:
    """Time `frames` tracker updates with `count` objects in view."""
    scene = make_scene(count, WARMUP_FRAMES + frames, seed)
    tracker = Tracker(TrackerConfig())
    times_ns: List[int] = []
    published = 0
    report_every = max(1, frames // 4)
    for k, (detections, stamp_s) in enumerate(scene):
        start = time.perf_counter_ns()
        tracked = tracker.update(detections, stamp_s)
        elapsed = time.perf_counter_ns() - start
        if k >= WARMUP_FRAMES:
            times_ns.append(elapsed)
            published += int(np.count_nonzero(tracked.track_ids != NO_TRACK_ID))
            done = k - WARMUP_FRAMES + 1
            if done % report_every == 0:
                print(f'  {count:>3} objects: {done}/{frames} frames, '
                      f'p50 so far {percentile_ms(times_ns, 50):.3f} ms', flush=True)
    detections_total = sum(len(d) for d, _ in scene[WARMUP_FRAMES:])
    return {
        'objects': count,
        'frames': frames,
        'p50_ms': percentile_ms(times_ns, 50),
        'p90_ms': percentile_ms(times_ns, 90),
        'p99_ms': percentile_ms(times_ns, 99),
        'mean_ms': round(float(np.mean(times_ns)) / 1e6, 4),
        'max_ms': round(float(np.max(times_ns)) / 1e6, 4),
        'published_fraction': round(published / max(1, detections_total), 4),
        'ids_given': tracker.next_id - 1,
        'tracks_alive_at_end': len(tracker),
    }


def cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as info:
            for line in info:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def versions() -> Dict[str, str]:
    out = {'python': platform.python_version()}
    for name in ('numpy', 'scipy'):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = 'missing'
    return out


def plot(results: Dict[str, object], path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    runs = results['runs']
    counts = [r['objects'] for r in runs]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, style in (('p50_ms', 'o-'), ('p90_ms', 's--'), ('p99_ms', '^-')):
        ax.plot(counts, [r[key] for r in runs], style, label=key.replace('_ms', ''))
    ax.axhline(TARGET_MS, color='red', linestyle=':', label=f'target {TARGET_MS:g} ms')
    ax.axvline(TARGET_OBJECTS, color='grey', linestyle=':', linewidth=0.8)
    ax.set_xlabel('objects in the frame')
    ax.set_ylabel('Tracker.update time per frame (ms)')
    ax.set_title(f'multicam_ros tracking, {results["frames_per_count"]} frames each\n'
                 f'{results["machine"]["cpu"]}, {results["machine"]["cpus"]} CPUs', fontsize=9)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=1000, help='timed frames per count')
    parser.add_argument('--counts', default='10,25,50,100',
                        help='comma-separated numbers of objects')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', type=Path, default=RESULTS / 'tracking_bench',
                        help='output path without extension (.json and .png are written)')
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(',') if c.strip()]
    if args.frames < 1 or not counts or min(counts) < 1:
        parser.error('--frames and every --counts entry must be >= 1')

    started = time.monotonic()
    runs = []
    for count in counts:
        print(f'{count} objects: {WARMUP_FRAMES} warm-up + {args.frames} timed frames', flush=True)
        run = run_count(count, args.frames, args.seed + count)
        runs.append(run)
        print(f'{count:>3} objects: p50 {run["p50_ms"]:.3f} ms, p99 {run["p99_ms"]:.3f} ms, '
              f'max {run["max_ms"]:.3f} ms; {run["published_fraction"]:.1%} of detections '
              f'got an id, {run["ids_given"]} ids given', flush=True)

    results = {
        'benchmark': 'tracking_bench',
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'machine': {'cpu': cpu_model(), 'cpus': os.cpu_count(), 'platform': platform.platform(),
                    **versions()},
        'scene': {'frame_px': [FRAME_W_PX, FRAME_H_PX], 'fps': FPS,
                  'miss_fraction': MISS_FRACTION, 'weak_fraction': WEAK_FRACTION,
                  'warmup_frames': WARMUP_FRAMES},
        'frames_per_count': args.frames,
        'target': {'objects': TARGET_OBJECTS, 'ms_per_frame': TARGET_MS},
        'runs': runs,
        'duration_s': round(time.monotonic() - started, 1),
    }
    at_target = next((r for r in runs if r['objects'] == TARGET_OBJECTS), None)
    if at_target is not None:
        results['target']['p50_ms'] = at_target['p50_ms']
        results['target']['p99_ms'] = at_target['p99_ms']
        results['target']['met'] = at_target['p99_ms'] < TARGET_MS
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix('.json').write_text(json.dumps(results, indent=2) + '\n')
    plot(results, args.out.with_suffix('.png'))

    if at_target is not None:
        verdict = 'meets' if results['target']['met'] else 'MISSES'
        print(f'tracking_bench: {TARGET_OBJECTS} objects p50 {at_target["p50_ms"]:.3f} ms, '
              f'p99 {at_target["p99_ms"]:.3f} ms per frame ({verdict} the {TARGET_MS:g} ms '
              f'target, p99); wrote {args.out}.{{json,png}}', flush=True)
    else:
        print(f'tracking_bench: wrote {args.out}.{{json,png}}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
