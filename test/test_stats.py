"""Rate meters, latency percentiles and the fps cap."""
import math

import pytest

from multicam_ros.core.stats import LatencyWindow, RateLimiter, RateMeter


def test_rate_meter_counts_over_its_window():
    meter = RateMeter(window_s=2.0)
    for i in range(60):
        meter.tick(10.0 + i / 30.0)
    assert meter.rate_hz(12.0) == pytest.approx(30.0, abs=0.6)
    assert meter.rate_hz(20.0) == 0.0
    assert meter.count == 60


def test_latency_percentiles():
    window = LatencyWindow(size=100)
    assert all(math.isnan(v) for v in window.percentiles_ms(50, 99).values())
    for i in range(1, 101):
        window.add(i / 1000.0)
    result = window.percentiles_ms(50, 99)
    assert result[50] == pytest.approx(50.5)
    assert result[99] == pytest.approx(99.01)


@pytest.mark.parametrize('source_hz,cap_hz,expected_hz', [
    (30.0, 0.0, 30.0), (30.0, 10.0, 10.0), (30.0, 15.0, 15.0), (30.0, 29.0, 29.0),
    (30.0, 60.0, 30.0), (25.0, 7.5, 7.5)])
def test_rate_limiter_holds_the_average(source_hz, cap_hz, expected_hz):
    limiter = RateLimiter(cap_hz)
    passed = sum(limiter.allow(i / source_hz) for i in range(int(source_hz * 20)))
    assert passed / 20.0 == pytest.approx(expected_hz, rel=0.03)


def test_rate_limiter_restarts_after_a_gap():
    limiter = RateLimiter(10.0)
    assert limiter.allow(0.0) and not limiter.allow(0.01)
    assert limiter.allow(5.0) and not limiter.allow(5.05) and limiter.allow(5.1)
