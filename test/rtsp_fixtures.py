"""Fixtures for a real RTSP server on loopback (GStreamer, run by Debian's /usr/bin/python3).

When GStreamer or its Python bindings are missing the fixtures FAIL, naming the Debian packages:
the RTSP test bed is part of the suite, and a silent skip would hide untested camera code.
"""
from typing import Callable, Iterator, List

import pytest

from multicam_testbed import RtspServerError, RtspTestServer, gstreamer_problem

__all__ = ['rtsp_gstreamer_ready', 'rtsp_server', 'rtsp_server_factory']

RtspServerFactory = Callable[..., RtspTestServer]


@pytest.fixture(scope='session')
def rtsp_gstreamer_ready() -> None:
    """Check once per session that the system Python can run the RTSP server."""
    problem = gstreamer_problem()
    if problem is not None:
        pytest.fail('RTSP test bed unavailable: ' + problem, pytrace=False)


@pytest.fixture
def rtsp_server_factory(rtsp_gstreamer_ready: None) -> Iterator[RtspServerFactory]:
    """Return make(count=4, width=640, height=480, fps=30, port=0) -> a started server.

    Every server made is stopped at teardown.
    """
    servers: List[RtspTestServer] = []

    def make(count: int = 4, width: int = 640, height: int = 480, fps: int = 30,
             port: int = 0) -> RtspTestServer:
        server = RtspTestServer(count=count, port=port, width=width, height=height, fps=fps)
        servers.append(server)
        try:
            return server.start()
        except RtspServerError as exc:
            pytest.fail(str(exc), pytrace=False)

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def rtsp_server(rtsp_server_factory: RtspServerFactory) -> RtspTestServer:
    """A started server with 4 live streams, 640x480 at 30 fps, on a free loopback port."""
    return rtsp_server_factory()
