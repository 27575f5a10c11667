"""Source URL validation, password handling, OpenCV/FFmpeg open options and the redaction of
this process's output (no mocks)."""
import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import cv2
import pytest

from multicam_ros.core.sources import (ACCEPTED_FORMS, apply_rtsp_transport, CAPTURE_OPTIONS_ENV,
                                       capture_params, ffmpeg_capture_options, native_log_warning,
                                       output_secrets, parse_capture_options, redact,
                                       validate_source)
from multicam_ros.core.settings import ConfigError

PASSWORD = 'S3cr3t-pw'


@pytest.fixture
def video_file(tmp_path):
    """Any existing file will do for validation: OpenCV is not asked to open it here."""
    path = tmp_path / 'clip.mp4'
    path.write_bytes(b'\0' * 16)
    return str(path)


# -- accepted ------------------------------------------------------------------------------

@pytest.mark.parametrize('url, scheme', [
    ('rtsp://cam.local/stream1', 'rtsp'),
    ('rtsp://10.0.0.5:554/h264', 'rtsp'),
    ('RTSP://Cam-1.example.com:8554/a/b?x=1', 'rtsp'),
    ('rtsps://cam.example.com:322/s', 'rtsps'),
    ('http://127.0.0.1:8080/video.mjpg', 'http'),
    ('https://cam.example.com/live.m3u8', 'https'),
    ('rtsp://[::1]:8554/cam0', 'rtsp'),
    ('rtsp://admin@cam.local/s', 'rtsp'),
    ('  rtsp://cam.local/s  ', 'rtsp'),
])
def test_network_urls_are_accepted(url, scheme):
    source = validate_source(url)
    assert source.is_network and not source.is_file and not source.is_device
    assert source.scheme == scheme
    assert source.api_preference == cv2.CAP_FFMPEG
    assert source.open_target.lower() == url.strip().lower()  # urlsplit lower-cases the scheme
    assert source.is_rtsp == (scheme in ('rtsp', 'rtsps'))


def test_video_file_path_and_file_url(video_file):
    by_path = validate_source(video_file)
    assert by_path.is_file and by_path.open_target == video_file
    by_url = validate_source('file://' + quote(video_file))
    assert by_url.is_file and by_url.open_target == video_file
    assert validate_source('file://localhost' + video_file).open_target == video_file


def test_devices_path_and_index():
    for url, index in (('/dev/video0', 0), ('/dev/video12', 12), ('3', 3), (2, 2)):
        source = validate_source(url)
        assert source.is_device and source.open_target == index
        assert source.api_preference == cv2.CAP_V4L2
        assert capture_params(source, 1.0, 1.0) == []  # V4L2 refuses unused params


# -- rejected ------------------------------------------------------------------------------

@pytest.mark.parametrize('url, reason', [
    ('', 'empty'),
    ('   ', 'empty'),
    ('ftp://host/video.mp4', "unsupported scheme 'ftp'"),
    ('udp://239.0.0.1:1234', "unsupported scheme 'udp'"),
    ('rtsp://', 'needs a host'),
    ('rtsp:///stream', 'needs a host'),
    ('http://:8080/x', 'needs a host'),
    ('rtsp://user:pw@/stream', 'needs a host'),
    ('rtsp://cam.local:abc/s', 'port'),
    ('rtsp://cam.local:0/s', 'port'),
    ('rtsp://cam.local:65536/s', 'port'),
    ('rtsp://cam.local:/s', 'empty port'),
    ('rtsp://cam..local/s', 'malformed host'),
    ('rtsp://cam local/s', 'whitespace'),
    ('rtsp://[::1/s', 'malformed URL'),
    ('rtsp://[fe80::zz]/s', 'malformed'),
    ('rtsp://-cam.local/s', 'malformed host'),
    ('rtsp:/cam.local/s', 'malformed URL'),
    ('cam.local:554/stream', 'malformed URL'),
    ('/no/such/file.mp4', 'no such video file'),
    ('file:///no/such/file.mp4', 'no such video file'),
    ('file://otherhost/x.mp4', 'local path'),
    (-1, 'no such video file'),
    (1.5, 'expected a string'),
    (None, 'expected a string'),
])
def test_bad_urls_name_the_parameter_and_the_accepted_forms(url, reason):
    with pytest.raises(ConfigError) as info:
        validate_source(url)
    message = str(info.value)
    assert message.startswith('url: ')
    assert reason in message
    assert message.endswith(f'; accepted: {ACCEPTED_FORMS}')


@pytest.mark.parametrize('url', [
    f'ftp://bob:{PASSWORD}@host/x',
    f'rtsp://bob:{PASSWORD}@cam.local:99999/s',
    f'rtsp://bob:{PASSWORD}@/s',
    f'rtsp//bob:{PASSWORD}@cam.local/s',  # malformed: the URL pattern cannot see the password
    f'rtsp:/bob:{PASSWORD}@cam.local/s',
    f'rtsp://bob:{PASSWORD}@cam local/s',
    f'http://cam local/cgi?user=bob&password={PASSWORD}&x=1',
    f'/no/such/dir/bob:{PASSWORD}@file.mp4',
])
def test_errors_never_contain_the_password(url):
    with pytest.raises(ConfigError) as info:
        validate_source(url)
    text = str(info.value) + repr(info.value)
    assert PASSWORD not in text
    assert PASSWORD not in str(info.value.__context__)  # nor in a chained exception


# -- passwords -----------------------------------------------------------------------------

def test_password_in_url_never_shows():
    source = validate_source(f'rtsp://admin:{PASSWORD}@cam.local:554/s')
    assert source.open_target == f'rtsp://admin:{PASSWORD}@cam.local:554/s'
    assert source.safe_url == 'rtsp://admin:***@cam.local:554/s'
    for text in (str(source), repr(source), f'{source}', source.safe_url):
        assert PASSWORD not in text
    assert 'open_target' not in repr(source)
    assert source.redact(f'failed: {PASSWORD} and {source.open_target}') == \
        'failed: *** and rtsp://admin:***@cam.local:554/s'


def test_password_from_environment_is_quoted_and_hidden():
    secret = 'p@ss:w/rd% x'
    env = {'CAM_PW': secret}
    source = validate_source('rtsp://admin@cam.local/s', password_env='CAM_PW', environ=env)
    assert source.open_target == f'rtsp://admin:{quote(secret, safe="")}@cam.local/s'
    assert source.safe_url == 'rtsp://admin:***@cam.local/s'
    assert secret not in repr(source) and quote(secret, safe='') not in repr(source)
    # Text that somehow carries the raw secret outside a URL is still cleaned.
    assert secret not in source.redact(f'server said: bad password {secret}')


def test_password_from_os_environ(monkeypatch):
    monkeypatch.setenv('MULTICAM_TEST_PW', PASSWORD)
    source = validate_source('rtsp://admin@cam.local/s', password_env='MULTICAM_TEST_PW')
    assert PASSWORD in source.open_target and PASSWORD not in repr(source)


@pytest.mark.parametrize('url, password_env, env, key, expected', [
    ('rtsp://admin@cam.local/s', 'CAM_PW', {}, 'password_env', 'CAM_PW is not set'),
    ('rtsp://admin@cam.local/s', 'CAM_PW', {'CAM_PW': ''}, 'password_env',
     'CAM_PW is not set or is empty'),
    ('rtsp://cam.local/s', 'CAM_PW', {'CAM_PW': 'x'}, 'password_env',
     "needs a user name in url (like rtsp://user@host/path), got 'rtsp://cam.local/s'"),
    (f'rtsp://admin:{PASSWORD}@cam.local/s', 'CAM_PW', {'CAM_PW': 'x'}, 'url',
     'already contains a password'),
    ('rtsp://admin@cam.local/s', '1BAD-NAME', {}, 'password_env',
     "'1BAD-NAME' is not an environment variable name"),
    ('/dev/video0', 'CAM_PW', {'CAM_PW': 'x'}, 'password_env',
     'applies only to rtsp/http URLs in url, which names a device here'),
])
def test_password_env_errors_name_password_env(url, password_env, env, key, expected):
    with pytest.raises(ConfigError) as info:
        validate_source(url, password_env=password_env, environ=env)
    message = str(info.value)
    assert message.startswith(f'{key}: ') and '; accepted: ' in message
    assert expected in message
    assert PASSWORD not in message


# -- redact ----------------------------------------------------------------------------------

@pytest.mark.parametrize('text, expected', [
    ('rtsp://u:p@h/x', 'rtsp://u:***@h/x'),
    ('open rtsp://admin:hunter2@10.0.0.1:554/s failed', 'open rtsp://admin:***@10.0.0.1:554/s '
     'failed'),
    ('a https://x:y@a.b/ and rtsps://c:d@e.f/g', 'a https://x:***@a.b/ and rtsps://c:***@e.f/g'),
    ('rtsp://u:p@ss@host/x', 'rtsp://u:***@host/x'),  # raw '@' in a password
    ('rtsp://u:p%40ss@host/x', 'rtsp://u:***@host/x'),
    ("'rtsp://u:pw@h'", "'rtsp://u:***@h'"),
    ('rtsp://user@host/x', 'rtsp://user@host/x'),  # no password: unchanged
    ('rtsp://host:554/x', 'rtsp://host:554/x'),
    ('http://h/cgi?user=a&pwd=xyz&r=1', 'http://h/cgi?user=a&pwd=***&r=1'),
    ('http://h/cgi?PASSWORD=xyz', 'http://h/cgi?PASSWORD=***'),
    ('nothing secret here', 'nothing secret here'),
    ('x.rtsp://u:pw@h/s', 'x.rtsp://u:***@h/s'),  # the scheme run starts at the x
    ('_rtsp://u:pw@h/s', '_rtsp://u:***@h/s'),  # after a character that no scheme holds
    ('a.' * 5000 + 'rtsp://u:pw@h', 'a.' * 5000 + 'rtsp://u:***@h'),  # a long dotted run
])
def test_redact(text, expected):
    assert redact(text) == expected


def test_redact_literal_secrets_only_when_long_enough():
    assert redact('token abcd and ab', secrets=('abcd', 'ab')) == 'token *** and ab'


# -- FFmpeg options ------------------------------------------------------------------------

def test_capture_params_for_network_and_file(video_file):
    source = validate_source('rtsp://cam.local/s')
    assert capture_params(source, 2.5, 0.75) == [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 2500, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 750]
    assert len(capture_params(validate_source(video_file), 1, 1)) == 4
    # A bounded decoder: FFmpeg's own choice is a thread per core, for every camera.
    assert capture_params(validate_source(video_file), 1, 1, 2)[4:] == [
        cv2.CAP_PROP_N_THREADS, 2]
    with pytest.raises(ConfigError, match='^open_timeout_s: 0 is not > 0; accepted: '):
        capture_params(source, 0, 1)
    with pytest.raises(ConfigError, match='^read_timeout_s: -1 is not > 0; accepted: '):
        capture_params(source, 1, -1)


def test_ffmpeg_capture_options_merge():
    assert ffmpeg_capture_options('tcp') == 'rtsp_transport;tcp'
    assert ffmpeg_capture_options('udp', 'user_agent;x|rtsp_transport;tcp') == \
        'user_agent;x|rtsp_transport;udp'
    assert parse_capture_options('a;1|b;2|') == {'a': '1', 'b': '2'}
    with pytest.raises(ConfigError, match="^rtsp_transport: 'http' is not a choice; "
                                          "accepted: one of 'tcp', 'udp'$"):
        ffmpeg_capture_options('http')


def test_apply_rtsp_transport_keeps_other_keys():
    env = {CAPTURE_OPTIONS_ENV: 'user_agent;cam'}
    assert apply_rtsp_transport('udp', env) == 'user_agent;cam|rtsp_transport;udp'
    assert env[CAPTURE_OPTIONS_ENV] == 'user_agent;cam|rtsp_transport;udp'
    env = {}
    apply_rtsp_transport('tcp', env)
    assert env == {CAPTURE_OPTIONS_ENV: 'rtsp_transport;tcp'}
    assert CAPTURE_OPTIONS_ENV not in os.environ or os.environ is not env


def test_native_log_warning_only_for_ffmpeg_debug_with_a_password():
    secret = validate_source(f'rtsp://admin:{PASSWORD}@cam.local/s')
    plain = validate_source('rtsp://cam.local/s')
    assert native_log_warning(secret, {'OPENCV_FFMPEG_LOGLEVEL': '48'}).startswith(
        'OPENCV_FFMPEG_LOGLEVEL=48')
    assert PASSWORD not in native_log_warning(secret, {'OPENCV_FFMPEG_LOGLEVEL': '56'})
    assert native_log_warning(secret, {'OPENCV_FFMPEG_LOGLEVEL': '40'}) == ''
    assert native_log_warning(secret, {}) == ''
    assert native_log_warning(plain, {'OPENCV_FFMPEG_LOGLEVEL': '48'}) == ''


@pytest.mark.parametrize('environ', [
    {'OPENCV_VIDEOIO_DEBUG': '1'}, {'OPENCV_VIDEOCAPTURE_DEBUG': 'TRUE'},
    {'OPENCV_FFMPEG_LOGLEVEL': '48', 'OPENCV_VIDEOIO_DEBUG': '1'}])
def test_native_log_warning_names_every_variable_that_prints_the_url(environ):
    secret = validate_source(f'rtsp://admin:{PASSWORD}@cam.local/s')
    warning = native_log_warning(secret, environ)
    for name, value in environ.items():
        assert f'{name}={value}' in warning
    assert PASSWORD not in warning
    assert native_log_warning(secret, {'OPENCV_VIDEOIO_DEBUG': '0'}) == ''
    assert native_log_warning(secret, {'OPENCV_LOG_LEVEL': 'VERBOSE'}) == ''  # checked: no URL


def test_output_secrets_cover_every_form_of_the_password(monkeypatch):
    source = validate_source(f'rtsp://admin:{quote("p@ss/w:rd", safe="")}@cam.local/s')
    secrets = output_secrets(source)
    assert 'p@ss/w:rd' in secrets and quote('p@ss/w:rd', safe='') in secrets
    assert base64.b64encode(b'admin:p@ss/w:rd').decode() in secrets  # HTTP Basic
    monkeypatch.setenv('CAM_PW', PASSWORD)
    from_env = output_secrets(validate_source('http://admin@cam.local/v', 'CAM_PW'))
    assert PASSWORD in from_env and base64.b64encode(f'admin:{PASSWORD}'.encode()).decode() \
        in from_env
    assert output_secrets(validate_source('rtsp://cam.local/s')) == ()


# A process that puts the redactor in front of its output, then writes the password in many
# ways: Python prints, native writes to both descriptors, a line cut in the middle of the
# password, output without a final newline, and a child process that inherits the output.
WRITER = r"""
import os, subprocess, sys, time
from multicam_ros.core.sources import redact_process_output, validate_source
source = validate_source(sys.argv[1])
redactor = redact_process_output(source)
print('redactor', redactor.process.pid, flush=True)
print('print', sys.argv[1], flush=True)
print('stderr', sys.argv[1], file=sys.stderr, flush=True)
os.write(2, b'cut ' + sys.argv[2][:4].encode())
time.sleep(0.3)
os.write(2, sys.argv[2][4:].encode() + b' end\n')
os.write(1, b'basic ' + sys.argv[3].encode() + b'\n')
subprocess.run(['/bin/echo', 'child', sys.argv[1]])
os.write(1, b'last ' + sys.argv[2].encode())
"""


def run_writer(url: str, password: str) -> subprocess.CompletedProcess:
    basic = base64.b64encode(f'admin:{password}'.encode()).decode()
    return subprocess.run([sys.executable, '-c', WRITER, url, password, basic],
                          capture_output=True, text=True, timeout=60,
                          cwd=str(Path(__file__).resolve().parent.parent))


def test_redacted_output_never_holds_the_password():
    done = run_writer(f'rtsp://admin:{PASSWORD}@cam.local/s', PASSWORD)
    assert done.returncode == 0, done.stderr
    both = done.stdout + done.stderr
    assert PASSWORD not in both and PASSWORD[:4] + PASSWORD[4:] not in both
    assert base64.b64encode(f'admin:{PASSWORD}'.encode()).decode() not in both
    assert 'print rtsp://admin:***@cam.local/s' in done.stdout
    assert 'stderr rtsp://admin:***@cam.local/s' in done.stderr
    assert 'cut *** end' in done.stderr  # held back until the rest of it came
    assert 'basic ***' in done.stdout and 'child rtsp://admin:***@' in done.stdout
    assert done.stdout.endswith('last ***')  # a last line without newline still arrives


def test_redactor_ends_with_its_process_and_ignores_stop_signals():
    """It outlives SIGINT/SIGTERM sent to it (a launcher's process-group stop must not cut the
    node's output off) and ends by itself when the process it serves is gone."""
    proc = subprocess.Popen(
        [sys.executable, '-c', WRITER.replace("os.write(1, b'last '", 'time.sleep(3); '
                                              "os.write(1, b'last '"),
         f'rtsp://admin:{PASSWORD}@cam.local/s', PASSWORD, 'x' * 8],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=str(Path(__file__).resolve().parent.parent))
    redactor = int(proc.stdout.readline().split()[1])
    for sig in (signal.SIGINT, signal.SIGTERM):
        os.kill(redactor, sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.endswith('last ***'), out
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and Path(f'/proc/{redactor}').exists():
        time.sleep(0.05)
    assert not Path(f'/proc/{redactor}').exists(), 'the redactor outlived its process'
