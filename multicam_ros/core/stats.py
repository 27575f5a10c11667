"""Small thread-safe meters for rates, latencies and rate caps. ROS-free."""
import collections
import threading
import time
from typing import Deque, Dict, Optional

import numpy as np


class RateMeter:
    """Events per second over a sliding window."""

    def __init__(self, window_s: float = 2.0) -> None:
        self._window_s = window_s
        self._times_s: Deque[float] = collections.deque()
        self._lock = threading.Lock()
        self.count = 0

    def tick(self, now_s: Optional[float] = None) -> None:
        now_s = time.monotonic() if now_s is None else now_s
        with self._lock:
            self._times_s.append(now_s)
            self.count += 1
            self._trim(now_s)

    def _trim(self, now_s: float) -> None:
        while self._times_s and self._times_s[0] < now_s - self._window_s:
            self._times_s.popleft()

    def rate_hz(self, now_s: Optional[float] = None) -> float:
        now_s = time.monotonic() if now_s is None else now_s
        with self._lock:
            self._trim(now_s)
            return len(self._times_s) / self._window_s


class LatencyWindow:
    """The last `size` latency samples, summarised as percentiles in milliseconds."""

    def __init__(self, size: int = 300) -> None:
        self._samples_s: Deque[float] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, latency_s: float) -> None:
        with self._lock:
            self._samples_s.append(latency_s)

    def percentiles_ms(self, *percents: float) -> Dict[float, float]:
        """{percent: milliseconds}; NaN for every percent while there is no sample."""
        with self._lock:
            samples = np.array(self._samples_s, dtype=np.float64)
        if samples.size == 0:
            return {p: float('nan') for p in percents}
        values = np.percentile(samples * 1000.0, percents)
        return {p: float(v) for p, v in zip(percents, values)}


class RateLimiter:
    """Lets events through at most `max_hz` times a second on average; 0 lets all through.

    Frames arrive with jitter, so an event up to a quarter period early still passes; the
    schedule then advances by whole periods, which keeps the average at `max_hz` instead of
    aliasing down to half of it when the source rate is close to the cap.
    """

    def __init__(self, max_hz: float) -> None:
        self._period_s = 1.0 / max_hz if max_hz > 0 else 0.0
        self._next_s: Optional[float] = None

    def allow(self, now_s: float) -> bool:
        if self._period_s == 0.0:
            return True
        if self._next_s is not None and now_s < self._next_s - 0.25 * self._period_s:
            return False
        if self._next_s is None or now_s > self._next_s + self._period_s:
            self._next_s = now_s  # first event, or after a gap: restart the schedule
        self._next_s += self._period_s
        return True
