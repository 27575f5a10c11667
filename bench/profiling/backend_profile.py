"""Where one batch of a back-end's `infer` spends its time, on the GPU machine.

torchvision's fasterrcnn_mobilenet_v3_large_320_fpn (random weights) on N 1280x720 frames
already on the device: after a warm-up, cProfile over 20 batches (the calling thread's Python
and the torch calls it makes, sorted by own and by cumulative time), then torch's profiler over
5 batches (CPU and CUDA time per operator, kernel launches by count). A synchronising call's
time includes the wait for the GPU work queued before it.

Run (GPU machine): python bench/profiling/backend_profile.py [--batch 32] > profile.txt
(bench/results/profiles/frcnn_b32_batched_quiet.txt is one such output).
"""
import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--batch', type=int, default=32, help='frames per batch (default 32)')
    parser.add_argument('--name', default='fasterrcnn_mobilenet_v3_large_320_fpn',
                        help='torchvision architecture (model.name)')
    args = parser.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile
    from multicam_ros.core.models import ModelConfig, load_detector
    detector = load_detector(ModelConfig(backend='torchvision', weights='none', device='cuda',
                                         name=args.name))
    generator = torch.Generator(device='cuda').manual_seed(0)
    frames = [torch.randint(0, 256, (720, 1280, 3), dtype=torch.uint8, device='cuda',
                            generator=generator) for _ in range(args.batch)]
    for _ in range(5):
        detector.infer(frames)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for _ in range(20):
        detector.infer(frames)
    profiler.disable()
    print(f'wall ms per batch {(time.perf_counter() - started) / 20 * 1000:.2f}')
    pstats.Stats(profiler).sort_stats('tottime').print_stats(25)
    pstats.Stats(profiler).sort_stats('cumulative').print_stats(30)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as torch_profile:
        for _ in range(5):
            detector.infer(frames)
        torch.cuda.synchronize()
    averages = torch_profile.key_averages()
    print(averages.table(sort_by='self_device_time_total', row_limit=12))
    print(averages.table(sort_by='count', row_limit=15))
    return 0


if __name__ == '__main__':
    sys.exit(main())
