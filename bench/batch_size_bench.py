"""The first batch of each size against the later ones: does a back-end stall when the batch
size changes? The detector's batches take whatever size the cameras give (1 to max_batch_size),
and a TorchScript model on CUDA may compile kernels for each new input shape (its fuser
specialises per shape), a stall that the steady figures of the other benchmarks never show.

The back-end is loaded and run five times at the largest size (infer_loop.py), then every
size from 1 to --max-batch runs in a shuffled order, --repeats times each; then the same order
once more. Each of --variants runs in a fresh process (TorchScript's JIT settings are
process-wide): `default`; `dynamic`, the fuser told to compile shape-generic kernels from the
first shape on (`torch.jit.set_fusion_strategy([('DYNAMIC', 10)])`; the default compiles two
exact shapes, then up to ten generic ones); `no-fuser`, TorchScript's kernel fuser off. Writes
bench/results/batch_size_bench_<device>.json and .png (the first and the median of the later
runs per size, per variant).

    python bench/batch_size_bench.py nanodet \
        --model /tmp/e2e_models/nanodet-g/nanodet-g.torchscript
    python bench/batch_size_bench.py torchvision            # Faster R-CNN, random weights
    python bench/batch_size_bench.py nanodet --device cpu --max-batch 4   # here, slowly
"""
import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / 'bench' / 'profiling'):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from infer_loop import detector_and_frames  # noqa: E402
from jit_variants import VARIANTS, apply_variant  # noqa: E402


def timed(detector, frames, device: str) -> float:
    """Milliseconds of one `infer` (which returns host detections, so the device is done)."""
    started_s = time.perf_counter()
    detector.infer(frames)
    if device.startswith('cuda'):
        import torch
        torch.cuda.synchronize()
    return (time.perf_counter() - started_s) * 1e3


def measure(backend: str, model: str, device: str, max_batch: int, repeats: int,
            seed: int, variant: str) -> dict:
    apply_variant(variant)
    detector, frames = detector_and_frames(backend, model, max_batch, device)
    order = list(range(1, max_batch + 1))
    random.Random(seed).shuffle(order)
    sizes = {}
    for size in order:
        runs = [timed(detector, frames[:size], device) for _ in range(repeats)]
        sizes[size] = {'first_ms': runs[0], 'later_ms': statistics.median(runs[1:])}
        print(f'{variant}: batch {size:3d}: first {runs[0]:8.1f} ms, later '
              f'{sizes[size]["later_ms"]:7.1f} ms', flush=True)
    again = {size: timed(detector, frames[:size], device) for size in order}
    for size in order:
        sizes[size]['second_pass_ms'] = again[size]
    return {'description': detector.description, 'order': order,
            'sizes': {str(k): v for k, v in sorted(sizes.items())}}


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for index, (variant, result) in enumerate(results['variants'].items()):
        sizes = sorted(int(k) for k in result['sizes'])
        later = f'median of the next {results["repeats"] - 1}'
        for key, style, label in (('first_ms', '-', 'first batch of a size'),
                                  ('later_ms', '--', later)):
            axes.plot(sizes, [result['sizes'][str(s)][key] for s in sizes], style, marker='o',
                      markersize=3, color=f'C{index}', label=f'{variant}: {label}')
    axes.set_xlabel('batch size')
    axes.set_ylabel('ms per batch')
    axes.set_yscale('log')
    axes.set_title(f'{results["backend"]} ({Path(results["model"]).name}) on '
                   f'{results["device"]}: the first batch of each size', fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('backend', choices=('nanodet', 'torchvision'))
    parser.add_argument('--model', default='', help='model.path (nanodet)')
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--max-batch', type=int, default=32)
    parser.add_argument('--repeats', type=int, default=4, help='runs per size, at least 2')
    parser.add_argument('--seed', type=int, default=0, help='of the shuffled order')
    parser.add_argument('--variants', default=','.join(VARIANTS),
                        help=f'comma-separated, of {", ".join(VARIANTS)}')
    parser.add_argument('--results-dir', type=Path, default=REPO / 'bench' / 'results')
    parser.add_argument('--one', help=argparse.SUPPRESS)  # child: this variant, JSON to a file
    args = parser.parse_args()
    variants = [v for v in args.variants.split(',') if v]
    if args.max_batch < 1 or args.repeats < 2 or not set(variants) <= set(VARIANTS):
        parser.error(f'--max-batch wants 1 or more, --repeats 2 or more, --variants some of '
                     f'{", ".join(VARIANTS)}')
    if args.one:
        variant, out = args.one.split('=', 1)
        Path(out).write_text(json.dumps(measure(
            args.backend, args.model, args.device, args.max_batch, args.repeats, args.seed,
            variant)))
        return 0
    results = {'backend': args.backend, 'device': args.device, 'repeats': args.repeats,
               'model': args.model or 'fasterrcnn_mobilenet_v3_large_320_fpn', 'variants': {}}
    with tempfile.TemporaryDirectory() as scratch:
        for variant in variants:
            out = Path(scratch) / f'{variant}.json'
            child = [sys.executable, __file__, args.backend, '--model', args.model, '--device',
                     args.device, '--max-batch', str(args.max_batch), '--repeats',
                     str(args.repeats), '--seed', str(args.seed), '--one', f'{variant}={out}']
            if subprocess.run(child).returncode != 0 or not out.exists():
                print(f'{variant}: failed', file=sys.stderr)
                continue
            results['variants'][variant] = json.loads(out.read_text())
    if not results['variants']:
        return 1
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f'batch_size_bench_{args.device.split(":")[0]}'
    stem.with_suffix('.json').write_text(json.dumps(results, indent=1) + '\n')
    plot(results, stem.with_suffix('.png'))
    print(f'wrote {stem}.json and .png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
