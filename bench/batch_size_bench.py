"""The first batch of each size against the later ones: does a back-end stall when the batch
size changes? The detector's batches take whatever size the cameras give (1 to max_batch_size),
and a TorchScript model on CUDA may compile kernels for each new input shape (its fuser
specialises per shape), a stall that the steady figures of the other benchmarks never show.

The back-end is loaded and run five times at the largest size (infer_loop.py), then every
size from 1 to --max-batch runs in a shuffled order, --repeats times each; then the same order
once more. Writes bench/results/batch_size_bench_<device>.json and .png (the first and the
median of the later runs per size).

    python bench/batch_size_bench.py nanodet \
        --model /tmp/e2e_models/nanodet-g/nanodet-g.torchscript
    python bench/batch_size_bench.py torchvision            # Faster R-CNN, random weights
    python bench/batch_size_bench.py nanodet --device cpu --max-batch 4   # here, slowly
"""
import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / 'bench' / 'profiling'):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from infer_loop import detector_and_frames  # noqa: E402


def timed(detector, frames, device: str) -> float:
    """Milliseconds of one `infer` (which returns host detections, so the device is done)."""
    started_s = time.perf_counter()
    detector.infer(frames)
    if device.startswith('cuda'):
        import torch
        torch.cuda.synchronize()
    return (time.perf_counter() - started_s) * 1e3


def measure(backend: str, model: str, device: str, max_batch: int, repeats: int,
            seed: int) -> dict:
    detector, frames = detector_and_frames(backend, model, max_batch, device)
    order = list(range(1, max_batch + 1))
    random.Random(seed).shuffle(order)
    sizes = {}
    for size in order:
        runs = [timed(detector, frames[:size], device) for _ in range(repeats)]
        sizes[size] = {'first_ms': runs[0], 'later_ms': statistics.median(runs[1:])}
        print(f'batch {size:3d}: first {runs[0]:8.1f} ms, later {sizes[size]["later_ms"]:7.1f} '
              f'ms', flush=True)
    again = {size: timed(detector, frames[:size], device) for size in order}
    for size in order:
        sizes[size]['second_pass_ms'] = again[size]
    return {'backend': backend, 'model': model or 'fasterrcnn_mobilenet_v3_large_320_fpn',
            'description': detector.description, 'device': device, 'order': order,
            'repeats': repeats, 'sizes': {str(k): v for k, v in sorted(sizes.items())}}


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    sizes = sorted(int(k) for k in results['sizes'])
    figure, axes = plt.subplots(figsize=(7, 4))
    for key, label in (('first_ms', 'first batch of that size'),
                       ('later_ms', f'median of the next {results["repeats"] - 1}'),
                       ('second_pass_ms', 'once more, after all sizes')):
        axes.plot(sizes, [results['sizes'][str(s)][key] for s in sizes], marker='o', label=label)
    axes.set_xlabel('batch size')
    axes.set_ylabel('ms per batch')
    axes.set_yscale('log')
    axes.set_title(f'{results["description"]} on {results["device"]}', fontsize=9)
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
    parser.add_argument('--results-dir', type=Path, default=REPO / 'bench' / 'results')
    args = parser.parse_args()
    if args.max_batch < 1 or args.repeats < 2:
        parser.error('--max-batch wants 1 or more, --repeats 2 or more')
    results = measure(args.backend, args.model, args.device, args.max_batch, args.repeats,
                      args.seed)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f'batch_size_bench_{args.device.split(":")[0]}'
    stem.with_suffix('.json').write_text(json.dumps(results, indent=1) + '\n')
    plot(results, stem.with_suffix('.png'))
    print(f'wrote {stem}.json and .png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
