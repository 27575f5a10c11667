"""Summarise py-spy's raw (collapsed) profiles that `bench/e2e_bench.py --profile-detector`
writes: per thread, its share of the samples and the functions it spends them in.

    python bench/profiling/summary.py bench/results/profiles/a_shm_n16_gil.txt [--top 12]

A `_gil` profile holds only the samples in which that thread held the GIL, so its shares say
which threads compete with the inference thread for it; a `_cpu` profile, which threads run.
"""
import argparse
import collections
import sys
from pathlib import Path
from typing import Dict, List, Tuple


def read(path: Path) -> List[Tuple[List[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(' ')
        if stack and count.isdigit():
            stacks.append((stack.split(';'), int(count)))
    return stacks


def short(frame: str) -> str:
    """'infer (multicam_ros/core/models/x.py:12)' -> 'infer (x.py)'."""
    name, _, where = frame.partition(' (')
    file = where.rstrip(')').rsplit(':', 1)[0].rsplit('/', 1)[-1]
    return f'{name} ({file})' if file else name


def split_thread(frames: List[str]) -> Tuple[str, List[str]]:
    """A sample's thread label and its stack. py-spy puts the thread first ('thread (TID):
    name'), with `--subprocesses` after one 'process PID:"command"' frame per process from the
    profiled one down to the sampled one: the label then names the innermost process."""
    for index, frame in enumerate(frames):
        if frame.startswith('thread ('):
            processes = [f for f in frames[:index] if f.startswith('process ')]
            if not processes:
                return frame, frames[index + 1:]
            return f'{process_name(processes[-1])}, {frame}', frames[index + 1:]
    return frames[0], frames[1:]


def process_name(frame: str) -> str:
    """'process 15216:"/usr/bin/python3 -m multicam_ros.core.model_process 24"' ->
    'pid 15216 (multicam_ros.core.model_process)'."""
    pid, _, command = frame[len('process '):].partition(':')
    words = command.strip('"').split()
    name = words[words.index('-m') + 1] if '-m' in words[:-1] else (
        words[0].rsplit('/', 1)[-1] if words else '?')
    return f'pid {pid} ({name})'


def summarise(path: Path, top: int) -> str:
    stacks = read(path)
    total = sum(count for _, count in stacks) or 1
    per_thread: Dict[str, int] = collections.Counter()
    leaves: Dict[str, Dict[str, int]] = collections.defaultdict(collections.Counter)
    inclusive: Dict[str, Dict[str, int]] = collections.defaultdict(collections.Counter)
    for frames, count in stacks:
        thread, stack = split_thread(frames)
        per_thread[thread] += count
        if stack:
            leaves[thread][short(stack[-1])] += count
            for frame in {short(f) for f in stack}:
                inclusive[thread][frame] += count
    lines = [f'{path.name}: {total} samples']
    for thread, count in sorted(per_thread.items(), key=lambda kv: -kv[1]):
        lines.append(f'\n{thread}: {count} samples ({100.0 * count / total:.1f} %)')
        lines.append('  innermost:  ' + '; '.join(
            f'{name} {100.0 * n / count:.0f}%' for name, n in leaves[thread].most_common(top)))
        lines.append('  inclusive:  ' + '; '.join(
            f'{name} {100.0 * n / count:.0f}%'
            for name, n in inclusive[thread].most_common(top)))
    return '\n'.join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('files', nargs='+', type=Path)
    parser.add_argument('--top', type=int, default=12)
    args = parser.parse_args()
    for path in args.files:
        print(summarise(path, args.top))
        print()
    return 0


if __name__ == '__main__':
    sys.exit(main())
