"""Fault suite, secrets in native debug output: camera_node run by hand with OpenCV's and
FFmpeg's debug variables set never shows the camera password on its stdout or stderr (issue
12: OPENCV_VIDEOIO_DEBUG=1 printed the URL with its password; core/sources.py
redact_process_output).

Real processes and real streams: the RTSP test server (the password is sent and ignored), an
HTTP camera on loopback that asks for Basic authentication (FFmpeg's debug output then carries
the Authorization header, the base64 of user:password), and a closed port. Each run also
checks that the debug path it is about did print (redacted), so that a test never passes
because nothing was printed at all.
"""
import base64
import http.server
import socket
import threading

import pytest

from ros_helpers import wait_for

pytestmark = pytest.mark.timeout(300)

USER = 'admin'
PASSWORD = 'Pw4-Debug-Leak'
BASIC = base64.b64encode(f'{USER}:{PASSWORD}'.encode()).decode()
SECRETS = (PASSWORD, BASIC)
TRIED = ('-> streaming', '-> reconnecting')  # camera_node's state log: the open was tried
DEBUG_VARIABLES = [
    ({'OPENCV_VIDEOIO_DEBUG': '1'}, "trying capture filename='rtsp://admin:***@"),
    ({'OPENCV_VIDEOCAPTURE_DEBUG': '1'}, "trying capture filename='rtsp://admin:***@"),
    ({'OPENCV_LOG_LEVEL': 'DEBUG'}, '[DEBUG:'),
    ({'OPENCV_LOG_LEVEL': 'VERBOSE'}, '[DEBUG:'),
    ({'OPENCV_FFMPEG_DEBUG': '1'}, '[OPENCV:FFMPEG:'),
    ({'OPENCV_FFMPEG_LOGLEVEL': '48'}, '[OPENCV:FFMPEG:48]'),
    ({'OPENCV_FFMPEG_LOGLEVEL': '56'}, '[OPENCV:FFMPEG:56] Sending:'),
]
ALL_DEBUG = {name: value for variables, _ in DEBUG_VARIABLES for name, value in
             variables.items() if name != 'OPENCV_FFMPEG_LOGLEVEL'}
ALL_DEBUG['OPENCV_FFMPEG_LOGLEVEL'] = '56'


class BasicAuthCamera:
    """An HTTP 'camera' on loopback that answers every request with 401 and a Basic
    challenge, so that FFmpeg sends (and at debug level prints) an Authorization header."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.send_response(401)
                self.send_header('WWW-Authenticate', 'Basic realm="camera"')
                self.send_header('Content-Length', '0')
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_camera():
    camera = BasicAuthCamera()
    yield camera
    camera.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run_camera(node_launcher, url: str, env: dict, name: str, params=()) -> str:
    """camera_node on `url` with `env`, until its first open was tried; its whole output."""
    proc = node_launcher.start(['camera_node', '--ros-args', '-r',
                                '__ns:=/cam0', '-p', f'url:={url}', *params], name=name,
                               env=env)
    assert wait_for(lambda: any(mark in proc.output() for mark in TRIED) or not proc.running,
                    60.0), proc.output()
    assert proc.stop() == 0, proc.output()
    return proc.output()


def assert_no_secret(output: str, shown: str) -> None:
    for secret in SECRETS:
        assert secret not in output, f'{secret!r} leaked:\n{output[-6000:]}'
    assert shown in output, f'the debug output {shown!r} did not show up:\n{output[-6000:]}'


@pytest.mark.parametrize('variables, shown', DEBUG_VARIABLES,
                         ids=['='.join(*v.items()) for v, _ in DEBUG_VARIABLES])
def test_debug_variable_never_shows_the_password_of_a_live_rtsp_camera(
        rtsp_server, node_launcher, variables, shown):
    url = rtsp_server.url(0).replace('rtsp://', f'rtsp://{USER}:{PASSWORD}@')
    output = run_camera(node_launcher, url, variables, 'camera')
    assert_no_secret(output, shown)


def test_http_basic_authorization_header_never_shows(node_launcher, http_camera):
    url = f'http://{USER}:{PASSWORD}@127.0.0.1:{http_camera.port}/video.mjpg'
    output = run_camera(node_launcher, url, ALL_DEBUG, 'http_camera')
    assert_no_secret(output, 'Authorization: Basic ***')


def test_unreachable_camera_with_every_debug_variable(node_launcher):
    url = f'rtsp://{USER}:{PASSWORD}@127.0.0.1:{closed_port()}/x'
    output = run_camera(node_launcher, url, ALL_DEBUG, 'closed_port')
    assert_no_secret(output, f"trying capture filename='rtsp://{USER}:***@127.0.0.1")


def test_password_from_the_environment_never_shows(rtsp_server, node_launcher):
    url = rtsp_server.url(0).replace('rtsp://', f'rtsp://{USER}@')
    output = run_camera(node_launcher, url, {**ALL_DEBUG, 'CAM_PASSWORD': PASSWORD},
                        'password_env', params=('-p', 'password_env:=CAM_PASSWORD'))
    assert_no_secret(output, f"trying capture filename='rtsp://{USER}:***@")
