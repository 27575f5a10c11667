"""Time one back-end's `infer` on 1280x720 frames already on the device, in a loop, and print
wall and CPU milliseconds per batch every few seconds: to see whether other load on the host
slows the model's own thread (run it alone, then beside `bench/decode_bench.py`'s cameras).

Run (GPU machine):
    taskset -c 0-3 python bench/profiling/infer_loop.py nanodet --model .../nanodet-g.torchscript
    taskset -c 0-3 python bench/profiling/infer_loop.py torchvision     # Faster R-CNN, random
    python bench/decode_bench.py --clip .clips/720p/cam0.mp4 --cameras 64 --threads 0 \
        --seconds 40 --cpus 4-15 &   # then the same two commands again
"""
import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def detector_and_frames(backend: str, model: str, batch: int, device: str = 'cuda'):
    """The back-end (NanoDet-g from `model`, or Faster R-CNN with random weights) warmed up,
    and `batch` random 1280x720 frames for its `infer`: tensors on the device for CUDA, numpy
    arrays for the CPU."""
    import numpy as np
    import torch
    from multicam_ros.core.models import ModelConfig, load_detector
    if backend == 'nanodet':
        config = ModelConfig(backend='nanodet', device=device,
                             **({'path': model} if model else {}))
    else:
        config = ModelConfig(backend='torchvision', weights='none', device=device,
                             name='fasterrcnn_mobilenet_v3_large_320_fpn')
    detector = load_detector(config)
    if device.startswith('cuda'):
        generator = torch.Generator(device=device).manual_seed(0)
        frames = [torch.randint(0, 256, (720, 1280, 3), dtype=torch.uint8, device=device,
                                generator=generator) for _ in range(batch)]
    else:
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(batch)]
    for _ in range(5):
        detector.infer(frames)
    return detector, frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('backend', choices=('nanodet', 'torchvision'))
    parser.add_argument('--model', default='', help='model.path (nanodet)')
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--seconds', type=float, default=3.0, help='per printed figure')
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args()
    detector, frames = detector_and_frames(args.backend, args.model, args.batch)
    for _ in range(args.repeats):
        started_s, cpu_s, batches = time.perf_counter(), time.thread_time(), 0
        while time.perf_counter() - started_s < args.seconds:
            detector.infer(frames)
            batches += 1
        wall_ms = (time.perf_counter() - started_s) / batches * 1e3
        print(f'{args.backend} batch {args.batch}: {wall_ms:.1f} ms a batch, '
              f'{(time.thread_time() - cpu_s) / batches * 1e3:.1f} ms CPU', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
