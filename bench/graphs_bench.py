"""CUDA graphs benchmark (the `cuda_graphs` setting of the nanodet and torchscript back-ends).

One back-end's `infer` on 1280x720 frames already on the device (as the shared-memory path
hands them over), per batch size, run plainly and replayed as CUDA graphs, in one process:
images per second, wall and CPU time of the calling thread per batch (the graphs' point is the
CPU time: with many cameras the inference thread is bound by it; where the batch ends in a
spinning device synchronisation, CPU time equals wall time), and the one-off time of the first
batch of each bucket (warm-up and capture).

Results: bench/results/graphs_bench.{json,md,png} (`--out` elsewhere; `--replot FILE.json`
rewrites the table and plot from a result file).
Run (GPU machine): python bench/graphs_bench.py --model-backend nanodet \
    --model /tmp/e2e_models/nanodet-g/nanodet-g.torchscript [--batches 1,8,16,32]
"""
import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO))


def rate(detector: Any, frames: Sequence[Any], seconds: float) -> Dict[str, float]:
    """Batches of `frames` through `detector.infer` for `seconds`: per-batch wall and CPU ms."""
    batches, wall_s, cpu_s = 0, 0.0, 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or batches < 3:
        started, started_cpu = time.perf_counter(), time.thread_time()
        detector.infer(frames)  # ends with the results' copy to the host: synchronous
        wall_s += time.perf_counter() - started
        cpu_s += time.thread_time() - started_cpu
        batches += 1
    return {'images_per_s': round(batches * len(frames) / wall_s, 1),
            'wall_ms_per_batch': round(1000 * wall_s / batches, 2),
            'cpu_ms_per_batch': round(1000 * cpu_s / batches, 2), 'batches': batches}


def run(args: argparse.Namespace) -> Dict[str, Any]:
    import torch
    from multicam_ros.core.models import ModelConfig, load_detector
    batches = [int(b) for b in args.batches.split(',')]
    generator = torch.Generator(device='cuda').manual_seed(0)
    frames_all = [torch.randint(0, 256, (720, 1280, 3), dtype=torch.uint8, device='cuda',
                                generator=generator) for _ in range(max(batches))]
    results: Dict[str, Any] = {
        'created': datetime.datetime.now().isoformat(timespec='seconds'),
        'host': {'gpu': torch.cuda.get_device_name(), 'torch': torch.__version__,
                 'python': platform.python_version()},
        'settings': {'backend': args.model_backend, 'model': args.model,
                     'input_size': args.input_size, 'seconds': args.seconds}, 'runs': {}}
    for graphs in (False, True):
        label = 'cuda_graphs' if graphs else 'plain'
        config = ModelConfig(backend=args.model_backend, path=args.model, device='cuda',
                             input_size=args.input_size, cuda_graphs=graphs)
        detector = load_detector(config)
        entries = {}
        for batch in batches:
            frames = frames_all[:batch]
            started = time.perf_counter()
            detector.infer(frames)  # with graphs: warm-up and capture of its bucket
            first_ms = round(1000 * (time.perf_counter() - started), 1)
            entries[str(batch)] = dict(rate(detector, frames, args.seconds),
                                       first_batch_ms=first_ms)
            print(f'{label} batch {batch}: {entries[str(batch)]}', flush=True)
        results['runs'][label] = {'batches': entries, 'cuda_reserved_mb': round(
            torch.cuda.memory_reserved() / 2**20, 1)}
        del detector
        torch.cuda.empty_cache()
    return results


def markdown(results: Dict[str, Any]) -> str:
    settings = results['settings']
    lines = [f"# CUDA graphs benchmark ({results['created']}, {results['host']['gpu']}, torch "
             f"{results['host']['torch']})", '',
             f"Back-end {settings['backend']} {settings['model']}, input "
             f"{settings['input_size']}, frames 1280x720 on the device, {settings['seconds']} s "
             'per point.', '',
             '| batch | plain images/s | graphs images/s | plain CPU ms/batch | graphs CPU '
             'ms/batch | plain wall ms/batch | graphs wall ms/batch | graphs first batch ms |',
             '|---:|---:|---:|---:|---:|---:|---:|---:|']
    plain, graphs = results['runs']['plain']['batches'], results['runs']['cuda_graphs']['batches']
    for batch in plain:
        p, g = plain[batch], graphs[batch]
        lines.append(f"| {batch} | {p['images_per_s']} | {g['images_per_s']} | "
                     f"{p['cpu_ms_per_batch']} | {g['cpu_ms_per_batch']} | "
                     f"{p['wall_ms_per_batch']} | {g['wall_ms_per_batch']} | "
                     f"{g['first_batch_ms']} |")
    lines += ['', 'GPU memory reserved by torch after the run: plain '
              f"{results['runs']['plain']['cuda_reserved_mb']} MB, graphs "
              f"{results['runs']['cuda_graphs']['cuda_reserved_mb']} MB."]
    return '\n'.join(lines) + '\n'


def plot(results: Dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, run in results['runs'].items():
        sizes = [int(b) for b in run['batches']]
        axes[0].plot(sizes, [e['images_per_s'] for e in run['batches'].values()], 'o-',
                     label=label)
        axes[1].plot(sizes, [e['cpu_ms_per_batch'] for e in run['batches'].values()], 'o-',
                     label=label)
    axes[0].set(xlabel='batch size', ylabel='images/s', title='throughput')
    axes[1].set(xlabel='batch size', ylabel='CPU ms per batch', title='calling thread CPU')
    for axis in axes:
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return True


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model-backend', default='nanodet',
                        help='nanodet or torchscript (default nanodet)')
    parser.add_argument('--model', help='the model file (model.path)')
    parser.add_argument('--input-size', type=int, default=416, help='model.input_size')
    parser.add_argument('--batches', default='1,8,16,32', help='batch sizes (default 1,8,16,32)')
    parser.add_argument('--seconds', type=float, default=3.0, help='seconds per point')
    parser.add_argument('--replot', type=Path, metavar='FILE.json',
                        help='rewrite the table and plot of FILE.json; runs nothing')
    parser.add_argument('--out', type=Path, default=REPO / 'bench' / 'results',
                        help='results folder (default bench/results)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.replot:
        results, stem = json.loads(args.replot.read_text()), args.replot.with_suffix('')
    else:
        if not args.model:
            raise SystemExit('graphs_bench: --model is needed (the model file)')
        results = run(args)
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / 'graphs_bench'
        stem.with_suffix('.json').write_text(json.dumps(results, indent=1) + '\n')
    stem.with_suffix('.md').write_text(markdown(results))
    plotted = plot(results, stem.with_suffix('.png'))
    print(f'wrote {stem}.json, .md{", .png" if plotted else ""}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
