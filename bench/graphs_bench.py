"""Back-end variants benchmark: one back-end's `infer`, two ways, in one process.

`--compare cuda_graphs` (default): the nanodet or torchscript back-end run plainly and replayed
as CUDA graphs (the `cuda_graphs` setting). `--compare torchvision_batched`: torchvision's
fasterrcnn_mobilenet_v3_large_320_fpn (random weights) with torchvision's own per-image loops
and with the batched ones the back-end installs (`core/models/torchvision_batched.py`).

Per batch size, on 1280x720 frames already on the device (as the shared-memory path hands them
over): images per second, wall and CPU time of the calling thread per batch (the point of both
variants is the CPU time: with many cameras the inference thread is bound by it; where the
batch ends in a spinning device synchronisation, CPU time equals wall time), and the one-off
time of the first batch (with graphs: warm-up and capture of its bucket).

Results: bench/results/graphs_bench.{json,md,png} or torchvision_batched_bench.* (`--out`;
`--replot FILE.json` rewrites the table and plot from a result file).
Run (GPU machine): python bench/graphs_bench.py --model-backend nanodet \
    --model /tmp/e2e_models/nanodet-g/nanodet-g.torchscript [--batches 1,8,16,32]
    python bench/graphs_bench.py --compare torchvision_batched
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


# --compare: (result file stem, label of the first variant, label of the second)
COMPARISONS = {'cuda_graphs': ('graphs_bench', 'plain', 'cuda_graphs'),
               'torchvision_batched': ('torchvision_batched_bench', 'per_image', 'batched')}


def make_detector(args: argparse.Namespace, second: bool) -> Any:
    """The back-end as the first (False) or the second (True) variant of --compare."""
    from multicam_ros.core.models import ModelConfig, load_detector
    if args.compare == 'cuda_graphs':
        return load_detector(ModelConfig(backend=args.model_backend, path=args.model,
                                         device='cuda', input_size=args.input_size,
                                         cuda_graphs=second))
    detector = load_detector(ModelConfig(backend='torchvision', weights='none', device='cuda',
                                         name='fasterrcnn_mobilenet_v3_large_320_fpn'))
    if not second:
        from multicam_ros.core.models import torchvision_batched
        torchvision_batched.uninstall(detector.model)
    return detector


def run(args: argparse.Namespace) -> Dict[str, Any]:
    import torch
    batches = [int(b) for b in args.batches.split(',')]
    generator = torch.Generator(device='cuda').manual_seed(0)
    frames_all = [torch.randint(0, 256, (720, 1280, 3), dtype=torch.uint8, device='cuda',
                                generator=generator) for _ in range(max(batches))]
    results: Dict[str, Any] = {
        'created': datetime.datetime.now().isoformat(timespec='seconds'),
        'host': {'gpu': torch.cuda.get_device_name(), 'torch': torch.__version__,
                 'python': platform.python_version()},
        'settings': {'compare': args.compare, 'backend': args.model_backend, 'model': args.model,
                     'input_size': args.input_size, 'seconds': args.seconds}, 'runs': {}}
    for second, label in enumerate(COMPARISONS[args.compare][1:]):
        detector = make_detector(args, bool(second))
        backend = detector.description
        entries = {}
        for batch in batches:
            frames = frames_all[:batch]
            started = time.perf_counter()
            detector.infer(frames)  # with graphs: warm-up and capture of its bucket
            first_ms = round(1000 * (time.perf_counter() - started), 1)
            entries[str(batch)] = dict(rate(detector, frames, args.seconds),
                                       first_batch_ms=first_ms)
            print(f'{label} batch {batch}: {entries[str(batch)]}', flush=True)
        results['runs'][label] = {'batches': entries, 'backend': backend,
                                  'cuda_reserved_mb': round(
                                      torch.cuda.memory_reserved() / 2**20, 1)}
        del detector
        torch.cuda.empty_cache()
    return results


def markdown(results: Dict[str, Any]) -> str:
    settings = results['settings']
    (a, first), (b, second) = results['runs'].items()
    described = first.get('backend') or f"{settings['backend']} {settings['model']}, input " \
        f"{settings['input_size']}"
    lines = [f"# {a} against {b} ({results['created']}, {results['host']['gpu']}, torch "
             f"{results['host']['torch']})", '',
             f"Back-end {described}, frames 1280x720 on the device, {settings['seconds']} s "
             'per point.', '',
             f'| batch | {a} images/s | {b} images/s | {a} CPU ms/batch | {b} CPU ms/batch | '
             f'{a} wall ms/batch | {b} wall ms/batch | {a} first batch ms | '
             f'{b} first batch ms |', '|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for batch, p in first['batches'].items():
        g = second['batches'][batch]
        lines.append(f"| {batch} | {p['images_per_s']} | {g['images_per_s']} | "
                     f"{p['cpu_ms_per_batch']} | {g['cpu_ms_per_batch']} | "
                     f"{p['wall_ms_per_batch']} | {g['wall_ms_per_batch']} | "
                     f"{p['first_batch_ms']} | {g['first_batch_ms']} |")
    lines += ['', f"GPU memory reserved by torch after the run: {a} "
              f"{first['cuda_reserved_mb']} MB, {b} {second['cuda_reserved_mb']} MB."]
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
    parser.add_argument('--compare', choices=sorted(COMPARISONS), default='cuda_graphs',
                        help='the two variants (default cuda_graphs)')
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
        if args.compare == 'cuda_graphs' and not args.model:
            raise SystemExit('graphs_bench: --model is needed (the model file)')
        results = run(args)
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / COMPARISONS[args.compare][0]
        stem.with_suffix('.json').write_text(json.dumps(results, indent=1) + '\n')
    stem.with_suffix('.md').write_text(markdown(results))
    plotted = plot(results, stem.with_suffix('.png'))
    print(f'wrote {stem}.json, .md{", .png" if plotted else ""}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
