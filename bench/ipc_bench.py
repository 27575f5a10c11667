"""IPC benchmark: moving the newest camera frame from one process to another on one host.

Candidates, each with a tiny announcement of which frame is new:
- `shm_frames`: this package's multicam_ros.core.shm_frames (a /dev/shm file per channel, a
  seqlock ring, a flock held by the writer; the reader polls one word);
- `stdlib_shm`: multiprocessing.shared_memory.SharedMemory with a minimal seqlock ring written
  here (the same mechanism without the package's lifetime handling; the reader polls);
- `posix_ipc`: posix_ipc 1.3.2 shared memory with the same ring, announced through a
  posix_ipc.MessageQueue the reader blocks on;
- `iceoryx2`: iceoryx2 0.10.0 publish-subscribe, a loaned u8 slice per frame with a user header;
  the subscriber polls `receive()`.
The rclpy image-message figures come from ../shared/ENVIRONMENT.md (same kind of 2-core box).

Per candidate and frame size (1280x720, 1920x1080 bgr8), a writer process paced at 30 Hz and a
reader process (polling every 1 ms unless the mechanism blocks) measure: writer CPU per frame,
reader CPU per frame (one copy into an array the reader owns; also a zero-copy view where the
mechanism offers one), the reader's idle CPU while it waits (% of a core), capture-to-copied
latency p50/p99, frames delivered, and the bytes the channel takes in /dev/shm. Then robustness
probes per candidate: a writer SIGKILLed while writing at full speed, torn frames accepted,
whether the reader learns the writer is gone, what stays in /dev/shm, whether a restarted writer
at another resolution starts and is followed by the same reader, what a clean exit leaves; and
the cost of polling 64 channels with nothing new.

Results: bench/results/ipc_bench.{json,png} (ipc_bench_quick.* with --quick).
Run: .venv/bin/python bench/ipc_bench.py [--quick] [--seconds S]
Needs `.venv/bin/pip install posix_ipc==1.3.2 iceoryx2==0.10.0` (benchmark only); a candidate
whose package is missing is reported as skipped.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import json
import mmap
import os
import platform
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / 'results'
MECHANISMS = ('shm_frames', 'stdlib_shm', 'posix_ipc', 'iceoryx2')
VIEW_MECHANISMS = ('shm_frames', 'iceoryx2')
SIZES = ((1280, 720), (1920, 1080))
RATE_HZ = 30.0
POLL_PERIOD_S = 0.001
POOL_SIZE = 4
SHM_DIR = '/dev/shm'
MQUEUE_DIR = '/dev/mqueue'
IOX_ROOT = '/tmp/iceoryx2'
OWN_PREFIXES = ('multicam_ros.', 'bench_', 'iox2_')  # what the candidates create
ROS_REFERENCE = {  # ../shared/ENVIRONMENT.md, rclpy + Fast DDS big-SHM profile, 2-core box
    '1280x720': {'writer_cpu_us': 2600, 'reader_cpu_us': 9800, 'latency_p50_ms': None},
    '1920x1080': {'writer_cpu_us': 4900, 'reader_cpu_us': 20000, 'latency_p50_ms': 21.0},
}


def frame_pool(width: int, height: int) -> Tuple[List[np.ndarray], List[int]]:
    """Distinct random frames and their CRC32s; frame seq uses pool[seq % POOL_SIZE]."""
    pool = [np.random.default_rng(i).integers(0, 256, (height, width, 3), np.uint8)
            for i in range(POOL_SIZE)]
    return pool, [zlib.crc32(image) for image in pool]


def shm_listing() -> Dict[str, int]:
    """What the candidates keep in /dev/shm, /dev/mqueue and iceoryx2's /tmp directory:
    path -> allocated bytes (other programs' files are left out)."""
    found = {}
    for root in (SHM_DIR, MQUEUE_DIR, IOX_ROOT):
        for dirpath, _, files in os.walk(root):
            for name in files:
                if root != IOX_ROOT and not name.startswith(OWN_PREFIXES):
                    continue
                path = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    found[path] = os.stat(path).st_blocks * 512
    return found


# -- a minimal seqlock ring, for the stdlib and posix_ipc candidates ------------------------

class MiniRing:
    """Header [latest_seq, slot_count, slot_bytes]; per slot [lock, stamp, w, h, tag]; the
    writer sets lock = 2*seq+1, copies, sets 2*seq, then publishes latest_seq."""

    HEADER = 4096
    SLOTS = 3

    def __init__(self, buf: Any, slot_bytes: int = 0) -> None:
        self.words = memoryview(buf)[:self.HEADER].cast('Q')
        if slot_bytes:
            self.words[1], self.words[2] = self.SLOTS, slot_bytes
        self.slot_bytes = int(self.words[2])
        data = np.frombuffer(buf, np.uint8)
        self.pixels = [data[self.HEADER + i * self.slot_bytes:self.HEADER
                            + (i + 1) * self.slot_bytes] for i in range(self.SLOTS)]
        self.seq = 0
        self.last_taken = 0

    @classmethod
    def size_for(cls, slot_bytes: int) -> int:
        return cls.HEADER + cls.SLOTS * slot_bytes

    def write(self, image: np.ndarray, stamp_ns: int, tag: int) -> None:
        seq = self.seq + 1
        slot = (seq - 1) % self.SLOTS
        base = 8 + slot * 8
        self.words[base] = 2 * seq + 1
        np.copyto(self.pixels[slot][:image.size], image.reshape(-1))
        self.words[base + 1], self.words[base + 2] = stamp_ns, image.shape[1]
        self.words[base + 3], self.words[base + 4] = image.shape[0], tag
        self.words[base] = 2 * seq
        self.words[0] = seq
        self.seq = seq

    def read_into(self, out: np.ndarray) -> Optional[Tuple[int, int]]:
        seq = self.words[0]
        if seq == 0 or seq == self.last_taken:
            return None
        slot = (seq - 1) % self.SLOTS
        base = 8 + slot * 8
        if self.words[base] != 2 * seq:
            return None
        stamp, width, height, tag = (self.words[base + 1], self.words[base + 2],
                                     self.words[base + 3], self.words[base + 4])
        nbytes = width * height * 3
        np.copyto(out[:nbytes], self.pixels[slot][:nbytes])
        if self.words[base] != 2 * seq:
            return None
        self.last_taken = seq
        return stamp, tag

    def release(self) -> None:
        self.words.release()
        self.pixels = []


# -- candidates: writer and reader sides ----------------------------------------------------

class ShmFramesIO:
    def __init__(self, channel: str, role: str, slot_bytes: int) -> None:
        from multicam_ros.core import shm_frames
        self.mod = shm_frames
        if role == 'writer':
            self.writer = shm_frames.FrameWriter(channel, max_bytes=slot_bytes)
        else:
            self.reader = shm_frames.FrameReader(channel)

    def write(self, image: np.ndarray, stamp_ns: int, tag: int) -> None:
        self.writer.write(image, stamp_ns, f'{tag:08x}')

    def read_into(self, out: np.ndarray) -> Optional[Tuple[int, int]]:
        info = self.reader.read_into(out)
        return None if info is None else (info.stamp_ns, int(info.frame_id, 16))

    def read_view(self) -> Optional[Tuple[int, int]]:
        got = self.reader.view_newest()
        if got is None:
            return None
        info, view = got
        _ = view[0, 0, 0]  # touch it, as a consumer would
        return (info.stamp_ns, int(info.frame_id, 16)) if self.reader.is_intact(info) else None

    def wait(self) -> None:
        time.sleep(POLL_PERIOD_S)

    def writer_alive(self) -> Optional[bool]:
        return self.reader.writer_alive()

    def close(self) -> None:
        (self.writer if hasattr(self, 'writer') else self.reader).close()


class StdlibIO:
    """multiprocessing.shared_memory as a user would use it (resource tracker included)."""

    def __init__(self, channel: str, role: str, slot_bytes: int) -> None:
        from multiprocessing import shared_memory
        self.name = 'bench_std_' + channel.replace('/', '_')
        self.role = role
        self.note = ''
        self.attach_races = 0  # segments found before their writer had initialised them
        if role == 'writer':
            try:
                self.shm = shared_memory.SharedMemory(self.name, create=True,
                                                      size=MiniRing.size_for(slot_bytes))
            except FileExistsError:
                self.note = 'FileExistsError: a stale segment blocks the name'
                old = shared_memory.SharedMemory(self.name)
                old.close()
                old.unlink()
                self.shm = shared_memory.SharedMemory(self.name, create=True,
                                                      size=MiniRing.size_for(slot_bytes))
            self.ring = MiniRing(self.shm.buf, slot_bytes)
        else:
            self.ring = None  # attached at the first read once the writer made the segment

    def _attach(self) -> bool:
        from multiprocessing import shared_memory
        if self.ring is None:
            try:
                self.shm = shared_memory.SharedMemory(self.name)
            except FileNotFoundError:
                return False
            except ValueError:  # 'cannot mmap an empty file': opened before its ftruncate
                self.attach_races += 1
                return False
            ring = MiniRing(self.shm.buf)
            if ring.slot_bytes == 0:  # attached between create and initialisation
                self.attach_races += 1
                ring.release()
                self.shm.close()
                return False
            self.ring = ring
        return True

    def write(self, image: np.ndarray, stamp_ns: int, tag: int) -> None:
        self.ring.write(image, stamp_ns, tag)

    def read_into(self, out: np.ndarray) -> Optional[Tuple[int, int]]:
        return self.ring.read_into(out) if self._attach() else None

    def wait(self) -> None:
        time.sleep(POLL_PERIOD_S)

    def writer_alive(self) -> Optional[bool]:
        return None  # the library has no notion of it

    def close(self) -> None:
        if self.ring is None:
            return
        self.ring.release()
        self.shm.close()
        if self.role == 'writer':
            with contextlib.suppress(FileNotFoundError):
                self.shm.unlink()


class PosixIO:
    """posix_ipc shared memory + the same ring; a message queue carries the announcement."""

    def __init__(self, channel: str, role: str, slot_bytes: int) -> None:
        import posix_ipc
        self.ipc = posix_ipc
        self.name = '/bench_pipc_' + channel.replace('/', '_')
        self.role = role
        self.note = ''
        self.attach_races = 0
        flags = posix_ipc.O_CREX if role == 'writer' else 0
        if role == 'writer':
            try:
                memory = posix_ipc.SharedMemory(self.name, flags,
                                                size=MiniRing.size_for(slot_bytes))
            except posix_ipc.ExistentialError:
                self.note = 'ExistentialError: a stale segment blocks the name'
                posix_ipc.unlink_shared_memory(self.name)
                with contextlib.suppress(posix_ipc.ExistentialError):
                    posix_ipc.unlink_message_queue(self.name)
                memory = posix_ipc.SharedMemory(self.name, flags,
                                                size=MiniRing.size_for(slot_bytes))
            self.mq = posix_ipc.MessageQueue(self.name, posix_ipc.O_CREAT, max_messages=1,
                                             max_message_size=8)
            self._map(memory, slot_bytes)
        else:
            self.ring = None  # attached at the first read once the writer made the segment

    def _map(self, memory: Any, slot_bytes: int) -> None:
        self.map = mmap.mmap(memory.fd, memory.size)
        memory.close_fd()
        self.ring = MiniRing(self.map, slot_bytes)

    def _attach(self) -> bool:
        if self.ring is None:
            try:
                memory = self.ipc.SharedMemory(self.name)
                self.mq = self.ipc.MessageQueue(self.name)
            except self.ipc.ExistentialError:
                return False
            self._map(memory, 0)
            if self.ring.slot_bytes == 0:  # attached between create and initialisation
                self.attach_races += 1
                self.ring.release()
                self.map.close()
                self.mq.close()
                self.ring = None
                return False
        return True

    def write(self, image: np.ndarray, stamp_ns: int, tag: int) -> None:
        self.ring.write(image, stamp_ns, tag)
        with contextlib.suppress(self.ipc.BusyError):
            self.mq.send(b'', timeout=0)  # full: the reader has an unread notice already

    def read_into(self, out: np.ndarray) -> Optional[Tuple[int, int]]:
        return self.ring.read_into(out) if self._attach() else None

    def wait(self) -> None:
        if self.ring is None:
            time.sleep(POLL_PERIOD_S)
            return
        with contextlib.suppress(self.ipc.BusyError):
            self.mq.receive(timeout=0.1)

    def writer_alive(self) -> Optional[bool]:
        return None

    def close(self) -> None:
        if self.ring is None:
            return
        self.ring.release()
        self.map.close()
        self.mq.close()
        if self.role == 'writer':
            with contextlib.suppress(self.ipc.ExistentialError):
                self.ipc.unlink_shared_memory(self.name)
            with contextlib.suppress(self.ipc.ExistentialError):
                self.mq.unlink()


class IoxHeader(ctypes.Structure):
    _fields_ = [('stamp_ns', ctypes.c_int64), ('tag', ctypes.c_uint64),
                ('width', ctypes.c_uint32), ('height', ctypes.c_uint32)]

    @staticmethod
    def type_name() -> str:
        return 'BenchFrameHeader'


class IoxIO:
    """iceoryx2 publish-subscribe: newest-only (buffer 1, safe overflow), loaned slices."""

    def __init__(self, channel: str, role: str, slot_bytes: int) -> None:
        import iceoryx2 as iox2
        self.iox2 = iox2
        self.note = ''
        iox2.set_log_level_from_env_or(iox2.LogLevel.Error)
        self.node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        if role == 'writer':
            cleaned = self.node.try_cleanup_dead_nodes()
            self.note = f'try_cleanup_dead_nodes: {cleaned}'
        self.service = (
            self.node.service_builder(iox2.ServiceName.new('bench/' + channel))
            .publish_subscribe(iox2.Slice[ctypes.c_uint8]).user_header(IoxHeader)
            .max_publishers(1).max_subscribers(2).subscriber_max_buffer_size(1)
            .subscriber_max_borrowed_samples(1).history_size(0).enable_safe_overflow(True)
            .open_or_create())
        if role == 'writer':
            self.pub = (self.service.publisher_builder().initial_max_slice_len(slot_bytes)
                        .allocation_strategy(iox2.AllocationStrategy.PowerOfTwo)
                        .max_loaned_samples(1).create())
        else:
            self.sub = self.service.subscriber_builder().buffer_size(1).create()

    def write(self, image: np.ndarray, stamp_ns: int, tag: int) -> None:
        sample = self.pub.loan_slice_uninit(image.size)
        target = np.ctypeslib.as_array((ctypes.c_uint8 * image.size).from_address(
            sample.payload_ptr))
        np.copyto(target, image.reshape(-1))
        header = sample.user_header().contents
        header.stamp_ns, header.tag = stamp_ns, tag
        header.width, header.height = image.shape[1], image.shape[0]
        sample.assume_init().send()

    def _receive(self) -> Any:
        return self.sub.receive()

    def read_into(self, out: np.ndarray) -> Optional[Tuple[int, int]]:
        sample = self._receive()
        if sample is None:
            return None
        header = sample.user_header().contents
        payload = sample.payload()
        nbytes = payload.len()
        np.copyto(out[:nbytes], np.ctypeslib.as_array(
            (ctypes.c_uint8 * nbytes).from_address(payload.data_ptr)))
        result = (header.stamp_ns, header.tag)
        sample.delete()
        return result

    def read_view(self) -> Optional[Tuple[int, int]]:
        sample = self._receive()
        if sample is None:
            return None
        header = sample.user_header().contents
        payload = sample.payload()
        view = np.ctypeslib.as_array((ctypes.c_uint8 * payload.len()).from_address(
            payload.data_ptr))
        _ = view[0]  # touch it; the sample is ours until deleted: no validation needed
        result = (header.stamp_ns, header.tag)
        del view
        sample.delete()
        return result

    def wait(self) -> None:
        time.sleep(POLL_PERIOD_S)

    def writer_alive(self) -> Optional[bool]:
        states = self.iox2.Node.list(self.iox2.ServiceType.Ipc,
                                     self.iox2.config.global_config())
        dead = sum(type(state).__name__ == 'Dead' for state in states)
        publishers = self.service.dynamic_config.number_of_publishers
        return publishers > 0 and dead == 0

    def close(self) -> None:
        for name in ('pub', 'sub'):
            if hasattr(self, name):
                getattr(self, name).delete()
        self.service = None
        self.node = None


IO_CLASSES = {'shm_frames': ShmFramesIO, 'stdlib_shm': StdlibIO, 'posix_ipc': PosixIO,
              'iceoryx2': IoxIO}


# -- the two processes ----------------------------------------------------------------------

def proc_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def writer_main(args: argparse.Namespace) -> None:
    """Write pool frames paced at RATE_HZ (or as fast as possible with --rate 0)."""
    pool, crcs = frame_pool(args.width, args.height)
    io = IO_CLASSES[args.mech](args.channel, 'writer', args.width * args.height * 3)
    print(json.dumps({'ready': os.getpid(), 'note': getattr(io, 'note', '')}), flush=True)
    if args.rate == 0:  # hammer until killed (robustness probes); SIGTERM: a clean exit
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        seq = 0
        try:
            while True:
                seq += 1
                io.write(pool[seq % POOL_SIZE], time.monotonic_ns(), crcs[seq % POOL_SIZE])
        finally:
            io.close()
    cpu_ns: List[int] = []
    cpu0_s = proc_cpu_s()
    period_s = 1.0 / args.rate
    next_s = time.monotonic()
    for seq in range(1, int(args.seconds * args.rate) + 1):
        next_s += period_s
        time.sleep(max(0.0, next_s - time.monotonic()))
        stamp_ns = time.monotonic_ns()
        t0 = time.thread_time_ns()
        io.write(pool[seq % POOL_SIZE], stamp_ns, crcs[seq % POOL_SIZE])
        cpu_ns.append(time.thread_time_ns() - t0)
    proc_s = proc_cpu_s() - cpu0_s
    footprint = {k: v for k, v in shm_listing().items() if args.channel.replace('/', '_') in k
                 or 'iox2_' in k}
    time.sleep(0.3)  # let the reader take the last frame before the writer goes
    io.close()
    print(json.dumps({'frames': len(cpu_ns), 'cpu_us_median': float(np.median(cpu_ns)) / 1e3,
                      'proc_cpu_us_per_frame': proc_s * 1e6 / max(1, len(cpu_ns)),
                      'shm_bytes': sum(footprint.values())}), flush=True)


def reader_main(args: argparse.Namespace) -> None:
    """Poll (or block) for new frames for --seconds, copying (or viewing) each one."""
    io = IO_CLASSES[args.mech](args.channel, 'reader', 0)
    out = np.empty(args.width * args.height * 3, np.uint8)
    print(json.dumps({'ready': os.getpid()}), flush=True)
    latency_ms: List[float] = []
    cpu_ns: List[int] = []
    read = io.read_view if args.view else (lambda: io.read_into(out))
    cpu0_s = proc_cpu_s()
    end_s = time.monotonic() + args.seconds
    while time.monotonic() < end_s:
        t0 = time.thread_time_ns()
        got = read()
        if got is None:
            io.wait()
            continue
        cpu_ns.append(time.thread_time_ns() - t0)
        latency_ms.append((time.monotonic_ns() - got[0]) / 1e6)
    proc_s = proc_cpu_s() - cpu0_s
    io.close()
    print(json.dumps({
        'frames': len(cpu_ns),
        'cpu_us_median': float(np.median(cpu_ns)) / 1e3 if cpu_ns else None,
        'proc_cpu_us_per_frame': proc_s * 1e6 / max(1, len(cpu_ns)),
        'idle_cpu_percent': 100 * (proc_s - sum(cpu_ns) / 1e9) / args.seconds,
        'attach_races': getattr(io, 'attach_races', 0),
        'latency_ms_p50': float(np.percentile(latency_ms, 50)) if latency_ms else None,
        'latency_ms_p99': float(np.percentile(latency_ms, 99)) if latency_ms else None,
    }), flush=True)


class Child:
    """A role of this script in its own process; JSON lines on stdout."""

    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, *argv], stdout=subprocess.PIPE,
                                     text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)
        self.proc.stdout.close()

    def message(self, timeout_s: float = 60.0) -> Dict[str, Any]:
        line = self.lines.get(timeout=timeout_s)
        if line is None:
            raise RuntimeError(f'child {self.proc.args[2:]} ended (rc {self.proc.wait()})')
        return json.loads(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def measure(mech: str, width: int, height: int, seconds: float, view: bool) -> Dict[str, Any]:
    """One writer + one reader process at RATE_HZ."""
    channel = f'ipcb_{uuid.uuid4().hex[:8]}'
    common = ['--mech', mech, '--channel', channel, '--width', str(width), '--height',
              str(height)]
    reader = Child('--role', 'reader', *common, '--seconds', str(seconds + 2.5),
                   *(['--view'] if view else []))
    reader.message()
    writer = Child('--role', 'writer', *common, '--seconds', str(seconds),
                   '--rate', str(RATE_HZ))
    try:
        writer.message()
        wrote = writer.message(timeout_s=seconds + 60)
        got = reader.message(timeout_s=seconds + 60)
    finally:
        writer.kill()
        reader.kill()
    return {'mechanism': mech, 'size': f'{width}x{height}', 'reader_mode':
            'zero-copy view' if view else 'copy', 'frames_written': wrote['frames'],
            'frames_read': got['frames'],
            'writer_cpu_us_per_frame': wrote['cpu_us_median'],
            'writer_proc_cpu_us_per_frame': wrote['proc_cpu_us_per_frame'],
            'reader_cpu_us_per_frame': got['cpu_us_median'],
            'reader_proc_cpu_us_per_frame': got['proc_cpu_us_per_frame'],
            'reader_idle_cpu_percent_of_core': got['idle_cpu_percent'],
            'reader_attach_races': got['attach_races'],
            'latency_ms_p50': got['latency_ms_p50'], 'latency_ms_p99': got['latency_ms_p99'],
            'shm_bytes_per_channel': wrote['shm_bytes']}


def in_memory_copy_us(width: int, height: int) -> float:
    """The floor: one copy of a frame within a process, rotating over POOL_SIZE sources and 3
    targets as the candidates do (so, like them, mostly not from the CPU caches)."""
    pool, _ = frame_pool(width, height)
    targets = [np.empty_like(pool[0]) for _ in range(3)]
    times = []
    for i in range(60):
        t0 = time.thread_time_ns()
        np.copyto(targets[i % 3], pool[i % POOL_SIZE])
        times.append(time.thread_time_ns() - t0)
    return float(np.median(times[6:])) / 1e3


# -- robustness probes ----------------------------------------------------------------------

def new_entries(before: Dict[str, int]) -> Dict[str, int]:
    return {k: v for k, v in shm_listing().items() if k not in before}


def probe(mech: str) -> Dict[str, Any]:
    """SIGKILL a full-speed VGA writer, then start a 720p writer; one reader object throughout
    (in this process) checks every frame's CRC."""
    channel = f'ipcp_{uuid.uuid4().hex[:8]}'
    out: Dict[str, Any] = {'mechanism': mech}
    reader = IO_CLASSES[mech](channel, 'reader', 0)  # first, so its own files are not counted
    before = shm_listing()
    _, crcs_vga = frame_pool(640, 480)
    _, crcs_hd = frame_pool(1280, 720)
    good = set(crcs_vga) | set(crcs_hd)
    buffer = np.empty(1280 * 720 * 3, np.uint8)
    torn = {'count': 0}
    sizes_seen: List[int] = []

    def read_some(reader: Any, seconds: float, stop_on: Optional[int] = None) -> int:
        frames = 0
        end_s = time.monotonic() + seconds
        while time.monotonic() < end_s:
            got = reader.read_into(buffer)
            if got is None:
                time.sleep(POLL_PERIOD_S)
                continue
            frames += 1
            tag = got[1]
            nbytes = (640 * 480 * 3) if tag in crcs_vga else 1280 * 720 * 3
            if tag not in good or zlib.crc32(buffer[:nbytes]) != tag:
                torn['count'] += 1
            sizes_seen.append(nbytes)
            if stop_on is not None and nbytes == stop_on:
                break
        return frames

    common = ['--mech', mech, '--channel', channel, '--rate', '0']
    first = Child('--role', 'writer', *common, '--width', '640', '--height', '480')
    try:
        first.message()
        out['frames_before_kill'] = read_some(reader, 0.5)
        first.kill()
        out['left_right_after_sigkill'] = {os.path.basename(k): v
                                           for k, v in new_entries(before).items()}
        out['frames_after_kill'] = read_some(reader, 0.5)
        out['reader_sees_writer_gone'] = reader.writer_alive() is False
        if reader.writer_alive() is None:
            out['reader_sees_writer_gone'] = 'no notion of a writer in the library'
        time.sleep(0.5)  # e.g. a resource tracker acting on the death
        left = new_entries(before)
        out['left_after_reader_noticed'] = {os.path.basename(k): v for k, v in left.items()}
        second = Child('--role', 'writer', *common, '--width', '1280', '--height', '720')
        try:
            started = second.message()
            out['restart_note'] = started.get('note', '')
            sizes_seen.clear()
            out['frames_from_restarted_720p_writer'] = read_some(reader, 3.0,
                                                                 stop_on=1280 * 720 * 3)
            out['same_reader_follows_restart_and_resize'] = 1280 * 720 * 3 in sizes_seen
            left_now = new_entries(before)
            out['first_writer_leftovers_cleaned_by_restart'] = not (set(left) & set(left_now))
        finally:
            second.proc.send_signal(signal.SIGTERM)
            second.proc.wait()
        out['torn_frames_accepted'] = torn['count']
    finally:
        first.kill()
        reader.close()
    time.sleep(0.3)
    out['left_after_sigterm_of_restarted_writer'] = {
        os.path.basename(k): v for k, v in new_entries(before).items()}
    cleanup_probe_leftovers(mech, channel, before)
    return out


def cleanup_probe_leftovers(mech: str, channel: str, before: Dict[str, int]) -> None:
    """Remove what a probe left, the way each mechanism allows."""
    if mech == 'shm_frames':
        from multicam_ros.core.shm_frames import remove_stale_segments
        remove_stale_segments(channel)
    elif mech == 'iceoryx2':
        import iceoryx2 as iox2
        node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        node.try_cleanup_dead_nodes()
        del node
    for path in new_entries(before):
        if os.path.basename(path).startswith(('bench_', 'mq')):
            with contextlib.suppress(OSError):
                os.unlink(path)
    with contextlib.suppress(Exception):
        import posix_ipc
        posix_ipc.unlink_message_queue('/bench_pipc_' + channel)


def stdlib_reader_exit_probe() -> Dict[str, Any]:
    """Python 3.11's resource tracker: does a reader that merely attached and exited cleanly
    take a live writer's segment with it?"""
    channel = f'ipct_{uuid.uuid4().hex[:8]}'
    writer = Child('--role', 'writer', '--mech', 'stdlib_shm', '--channel', channel, '--rate',
                   '0', '--width', '64', '--height', '64')
    try:
        writer.message()
        name = 'bench_std_' + channel
        code = ('from multiprocessing import shared_memory as s; m = s.SharedMemory(%r); '
                'm.close()' % name)
        done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
        time.sleep(0.3)
        exists = os.path.exists(os.path.join(SHM_DIR, name))
        return {'python': platform.python_version(),
                'segment_survives_a_reader_exit': exists,
                'reader_stderr': done.stderr.strip().splitlines()[-1:] if done.stderr else []}
    finally:
        writer.kill()
        time.sleep(0.3)
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(SHM_DIR, 'bench_std_' + channel))


def poll_cost(channels: int = 64, passes: int = 2000) -> Dict[str, Any]:
    """Cost of asking N channels 'anything new?' with nothing new, and related checks."""
    from multicam_ros.core import shm_frames
    tag = uuid.uuid4().hex[:6]
    names = [f'ipcq_{tag}/cam{i}' for i in range(channels)]
    writers = [shm_frames.FrameWriter(name, max_bytes=64 * 64 * 3) for name in names]
    readers = [shm_frames.FrameReader(name) for name in names]
    image = np.zeros((64, 64, 3), np.uint8)
    buffer = np.empty(64 * 64 * 3, np.uint8)
    for writer, reader in zip(writers, readers):
        writer.write(image, 1, 'f')
        assert reader.read_into(buffer) is not None

    def per_pass_us(fn) -> float:
        t0 = time.perf_counter_ns()
        for _ in range(passes):
            fn()
        return (time.perf_counter_ns() - t0) / passes / 1e3

    result = {'channels': channels,
              'shm_frames_poll_all_us': per_pass_us(lambda: [r.poll() for r in readers]),
              'shm_frames_writer_alive_all_us': per_pass_us(
                  lambda: [r.writer_alive() for r in readers]) if passes else None}
    for writer in writers:
        writer.close()
    absent = [shm_frames.FrameReader(f'ipcq_{tag}/absent{i}') for i in range(channels)]
    result['shm_frames_channel_status_absent_all_us'] = per_pass_us(
        lambda: [shm_frames.channel_status(r.channel) for r in absent]) if passes else None
    for reader in readers + absent:
        reader.close()
    try:
        import iceoryx2 as iox2
    except ImportError:
        return result
    iox2.set_log_level_from_env_or(iox2.LogLevel.Error)
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    services, subs = [], []
    for name in names:
        service = (node.service_builder(iox2.ServiceName.new('bench/' + name))
                   .publish_subscribe(iox2.Slice[ctypes.c_uint8]).user_header(IoxHeader)
                   .max_publishers(1).max_subscribers(2).subscriber_max_buffer_size(1)
                   .subscriber_max_borrowed_samples(1).history_size(0).open_or_create())
        services.append(service)
        subs.append(service.subscriber_builder().buffer_size(1).create())
    result['iceoryx2_receive_all_us'] = per_pass_us(lambda: [s.receive() for s in subs])
    for sub in subs:
        sub.delete()
    services.clear()
    del node
    return result


# -- report ---------------------------------------------------------------------------------

def plot(results: Dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = [r for r in results['runs'] if 'error' not in r]
    labels = sorted({f"{r['mechanism']}\n{r['reader_mode']}" for r in rows},
                    key=lambda s: (MECHANISMS.index(s.split('\n')[0]), s))
    metrics = (('writer_cpu_us_per_frame', 'writer CPU per frame (µs)'),
               ('reader_cpu_us_per_frame', 'reader CPU per frame (µs)'),
               ('latency_ms_p50', 'latency p50 (ms)'), ('latency_ms_p99', 'latency p99 (ms)'))
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    x = np.arange(len(labels))
    for ax, (key, title) in zip(axes.flat, metrics):
        for k, (width, height) in enumerate(SIZES):
            size = f'{width}x{height}'
            values = []
            for label in labels:
                mech, mode = label.split('\n')
                match = [r for r in rows if r['mechanism'] == mech and r['reader_mode'] == mode
                         and r['size'] == size]
                values.append(match[0][key] or 0 if match else 0)
            bars = ax.bar(x + (k - 0.5) * 0.38, values, 0.38, label=size)
            if 'cpu' in key:
                ax.axhline(results['in_memory_copy_us'][size], color=bars[0].get_facecolor(),
                           linestyle='--', linewidth=1,
                           label=f'{size} in-memory copy (one process)')
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_title(title)
        ax.legend(fontsize=7)
    ros = results['rclpy_reference_environment_md']
    fig.suptitle(f"Newest-frame IPC at {RATE_HZ:.0f} Hz, one run ({results['host']}). "
                 f"For scale, rclpy Image (ENVIRONMENT.md): publish "
                 f"{ros['1280x720']['writer_cpu_us'] / 1e3:.1f} / "
                 f"{ros['1920x1080']['writer_cpu_us'] / 1e3:.1f} ms, receive "
                 f"{ros['1280x720']['reader_cpu_us'] / 1e3:.1f} / "
                 f"{ros['1920x1080']['reader_cpu_us'] / 1e3:.0f} ms CPU per 720p / 1080p frame",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def print_table(results: Dict[str, Any]) -> None:
    print('| mechanism | reader | size | writer CPU/frame | reader CPU/frame | reader idle '
          'CPU | p50 | p99 | read/written | /dev/shm per channel |')
    print('|---|---|---|---:|---:|---:|---:|---:|---:|---:|')
    for r in results['runs']:
        if 'error' in r:
            print(f"| {r['mechanism']} | {r.get('reader_mode')} | {r.get('size')} | "
                  f"error: {r['error']} |")
            continue
        print(f"| {r['mechanism']} | {r['reader_mode']} | {r['size']} | "
              f"{r['writer_cpu_us_per_frame']:.0f} µs | {r['reader_cpu_us_per_frame']:.0f} µs | "
              f"{r['reader_idle_cpu_percent_of_core']:.1f} % | {r['latency_ms_p50']:.2f} ms | "
              f"{r['latency_ms_p99']:.2f} ms | {r['frames_read']}/{r['frames_written']} | "
              f"{r['shm_bytes_per_channel'] / 2**20:.1f} MiB |")


def available(mech: str) -> Optional[str]:
    module = {'posix_ipc': 'posix_ipc', 'iceoryx2': 'iceoryx2'}.get(mech)
    if module is None:
        return None
    try:
        __import__(module)
    except ImportError as exc:
        return f'not installed ({exc})'
    return None


def bench_main(args: argparse.Namespace) -> None:
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    versions = {}
    for name in ('numpy', 'posix_ipc', 'iceoryx2'):
        with contextlib.suppress(Exception):
            import importlib.metadata
            versions[name] = importlib.metadata.version(name.replace('_', '-'))
    results: Dict[str, Any] = {
        'when': datetime.datetime.now().isoformat(timespec='seconds'),
        'host': f'{platform.node()}, {os.cpu_count()} cores, {platform.machine()}',
        'python': platform.python_version(), 'versions': versions,
        'seconds_per_run': seconds, 'rate_hz': RATE_HZ, 'poll_period_s': POLL_PERIOD_S,
        'in_memory_copy_us': {f'{w}x{h}': in_memory_copy_us(w, h) for w, h in SIZES},
        'rclpy_reference_environment_md': ROS_REFERENCE, 'runs': [], 'probes': []}
    for mech in args.only:
        skip = available(mech)
        for width, height in SIZES:
            for view in (False, True) if mech in VIEW_MECHANISMS else (False,):
                if skip:
                    results['runs'].append({'mechanism': mech, 'size': f'{width}x{height}',
                                            'reader_mode': 'copy', 'error': skip})
                    continue
                print(f'run {mech} {width}x{height} {"view" if view else "copy"}', flush=True)
                try:
                    results['runs'].append(measure(mech, width, height, seconds, view))
                except Exception as exc:  # noqa: BLE001 - report and go on
                    results['runs'].append({'mechanism': mech, 'size': f'{width}x{height}',
                                            'reader_mode': 'copy', 'error': repr(exc)})
    for mech in args.only:
        if available(mech):
            continue
        print(f'probe {mech}', flush=True)
        try:
            results['probes'].append(probe(mech))
        except Exception as exc:  # noqa: BLE001
            results['probes'].append({'mechanism': mech, 'error': repr(exc)})
    results['stdlib_resource_tracker'] = stdlib_reader_exit_probe()
    results['poll_cost'] = poll_cost(passes=300 if args.quick else 2000)
    RESULTS.mkdir(exist_ok=True)
    stem = 'ipc_bench_quick' if args.quick else 'ipc_bench'
    (RESULTS / f'{stem}.json').write_text(json.dumps(results, indent=1) + '\n')
    plot(results, RESULTS / f'{stem}.png')
    print_table(results)
    print(json.dumps({'probes': results['probes'],
                      'stdlib_resource_tracker': results['stdlib_resource_tracker'],
                      'poll_cost': results['poll_cost'],
                      'in_memory_copy_us': results['in_memory_copy_us']}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='2 s runs, fewer poll passes')
    parser.add_argument('--seconds', type=float, default=0.0, help='seconds per run')
    parser.add_argument('--only', nargs='+', choices=MECHANISMS, default=list(MECHANISMS),
                        help='measure these mechanisms only')
    parser.add_argument('--role', choices=('writer', 'reader'), help=argparse.SUPPRESS)
    parser.add_argument('--mech', choices=MECHANISMS, help=argparse.SUPPRESS)
    parser.add_argument('--channel', help=argparse.SUPPRESS)
    parser.add_argument('--width', type=int, default=1280, help=argparse.SUPPRESS)
    parser.add_argument('--height', type=int, default=720, help=argparse.SUPPRESS)
    parser.add_argument('--rate', type=float, default=RATE_HZ, help=argparse.SUPPRESS)
    parser.add_argument('--view', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == 'writer':
        writer_main(args)
    elif args.role == 'reader':
        reader_main(args)
    else:
        bench_main(args)


if __name__ == '__main__':
    main()
