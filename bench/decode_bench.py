"""Decode benchmark: how many looping 720p30 cameras one host's CPUs decode, by decoder threads.

K processes each run the package's capture thread (`core.capture.CaptureWorker`, paced at the
clip's fps, `decode_threads` as given) on a clip and take every frame from its newest-frame slot,
as camera_node's publish thread does, for S seconds after a warm-up. Per point (K, threads) it
reports the frames captured per camera per second (the clip's fps is what a camera should
reach), CPU time per frame and the cores used. `--cpus` pins the processes (a cpu_affinity list),
as `bench/e2e_bench.py --camera-param cpu_affinity=...` does for camera_node.

Run: python bench/decode_bench.py --clip .clips/720p/cam0.mp4 --cameras 16,64 --threads 0,1,2
Results: bench/results/decode_bench.{json,md} (or --out-dir).
"""
import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _camera(clip: str, threads: int, warmup_s: float, seconds: float, results: Any) -> None:
    from multicam_ros.core.capture import CaptureOptions, CaptureWorker
    from multicam_ros.core.sources import validate_source
    worker = CaptureWorker(validate_source(clip), time.time_ns,
                           CaptureOptions(loop=True, decode_threads=threads)).start()
    taken = 0
    start_at = time.monotonic() + warmup_s
    stop_at = start_at + seconds
    started: Optional[tuple] = None
    while time.monotonic() < stop_at:
        if started is None and time.monotonic() >= start_at:
            cpu = os.times()
            started = (worker.snapshot().frames_captured, taken, cpu.user + cpu.system)
        if worker.slot.take(timeout_s=0.1) is not None:
            taken += 1
    cpu = os.times()
    captured = worker.snapshot().frames_captured
    worker.stop(timeout_s=1.0)
    if started is None:
        results.put(None)
        return
    results.put({'captured': captured - started[0], 'taken': taken - started[1],
                 'cpu_s': cpu.user + cpu.system - started[2]})


def measure(clip: str, cameras: int, threads: int, warmup_s: float,
            seconds: float) -> Dict[str, Any]:
    context = multiprocessing.get_context('spawn')
    results = context.Queue()
    processes = [context.Process(target=_camera, daemon=True,
                                 args=(clip, threads, warmup_s, seconds, results))
                 for _ in range(cameras)]
    for process in processes:
        process.start()
    rows = [results.get(timeout=warmup_s + seconds + 60) for _ in processes]
    for process in processes:
        process.join(timeout=10)
    rows = [row for row in rows if row]
    captured = sum(row['captured'] for row in rows)
    cpu_s = sum(row['cpu_s'] for row in rows)
    per_camera = sorted(row['captured'] / seconds for row in rows)
    return {
        'cameras': cameras, 'decode_threads': threads, 'reported': len(rows),
        'captured_fps_per_camera_mean': round(captured / seconds / max(1, len(rows)), 2),
        'captured_fps_slowest_camera': round(per_camera[0], 2) if per_camera else None,
        'taken_fraction': round(sum(row['taken'] for row in rows) / max(1, captured), 3),
        'cpu_ms_per_frame': round(1000 * cpu_s / max(1, captured), 2),
        'cores_used': round(cpu_s / seconds, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--clip', required=True, help='a video file (looped)')
    parser.add_argument('--cameras', default='16,64', help='comma-separated camera counts')
    parser.add_argument('--threads', default='0,1,2',
                        help='comma-separated decode_threads values (0: FFmpeg chooses)')
    parser.add_argument('--seconds', type=float, default=8.0)
    parser.add_argument('--warmup', type=float, default=3.0)
    parser.add_argument('--cpus', default='', help='pin the cameras, e.g. 4-15')
    parser.add_argument('--out-dir', type=Path, default=ROOT / 'bench' / 'results')
    args = parser.parse_args()
    from multicam_ros.core.process import pin_to_cpus
    pin_to_cpus(args.cpus, '--cpus')  # as camera_node's cpu_affinity; the cameras inherit it
    points = []
    for cameras in (int(n) for n in args.cameras.split(',')):
        for threads in (int(t) for t in args.threads.split(',')):
            point = measure(args.clip, cameras, threads, args.warmup, args.seconds)
            points.append(point)
            print(json.dumps(point), flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    meta = {'clip': args.clip, 'seconds': args.seconds, 'cpus': args.cpus or 'all',
            'host_cpus': os.cpu_count(), 'date': time.strftime('%Y-%m-%d %H:%M:%S')}
    (args.out_dir / 'decode_bench.json').write_text(json.dumps({'meta': meta, 'points': points},
                                                               indent=1) + '\n')
    lines = ['| cameras | decode_threads | captured fps per camera (slowest) | CPU ms per frame '
             '| cores |', '|---:|---:|---|---:|---:|']
    lines += [f"| {p['cameras']} | {p['decode_threads']} | {p['captured_fps_per_camera_mean']} "
              f"({p['captured_fps_slowest_camera']}) | {p['cpu_ms_per_frame']} | "
              f"{p['cores_used']} |" for p in points]
    (args.out_dir / 'decode_bench.md').write_text(
        f"Decode benchmark, {meta['date']}, {meta['host_cpus']} CPUs, cameras on "
        f"{meta['cpus']}, {args.seconds:g} s per point\n\n" + '\n'.join(lines) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
