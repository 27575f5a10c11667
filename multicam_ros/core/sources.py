"""Camera source URLs: validation, secrets kept out of text, and OpenCV/FFmpeg open options.

ROS-free. ``validate_source`` turns the ``url`` parameter into a :class:`Source` that knows how
to open itself (``open_target`` + ``api_preference``) and how to describe itself safely
(``safe_url``, ``redact``). A bad setting is a ``ConfigError`` of ``url`` or ``password_env``
(``<key>: <problem>; accepted: <values>``); nothing here ever puts a password into a message.
``redact_process_output`` keeps it out of what OpenCV and FFmpeg print natively, whatever
debug variable is set (NATIVE_LEAK_CHECKS).
"""
from __future__ import annotations

from dataclasses import dataclass, field
import logging
import os
import re
from typing import Mapping, MutableMapping
from urllib.parse import quote, unquote, urlsplit

import cv2

from multicam_ros.core.settings import ConfigError

NETWORK_SCHEMES = ('rtsp', 'rtsps', 'http', 'https')
RTSP_SCHEMES = ('rtsp', 'rtsps')
RTSP_TRANSPORTS = ('tcp', 'udp')
CAPTURE_OPTIONS_ENV = 'OPENCV_FFMPEG_CAPTURE_OPTIONS'
MIN_LITERAL_SECRET_LEN = 4
FFMPEG_DEBUG_LOGLEVEL = 48  # AV_LOG_DEBUG

ACCEPTED_FORMS = (
    'rtsp://[user[:password]@]host[:port]/path, rtsps://..., http(s)://host[:port]/path, '
    'a path to an existing video file (or file:///path), /dev/videoN, or a camera index N'
)

# scheme://user:password@ -> the password is everything up to the last '@' before a '/' or
# whitespace, so passwords that contain a raw '@' or ':' are still covered (over-redacting a
# little is fine, leaking is not). A scheme starts where no scheme character precedes it, so a
# long run of them is scanned once, not once per character (linear, not quadratic).
_URL_CREDENTIALS = re.compile(
    r'(?P<head>(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://[^:@/\s]*):(?P<password>[^/\s]*)@')
# ...?password=secret&... as some HTTP cameras take it in the query string.
_QUERY_SECRET = re.compile(
    r'(?P<head>[?&;](?:password|passwd|pwd|pass|secret|token)=)(?P<value>[^&#\s]*)',
    re.IGNORECASE)
_URL_LIKE = re.compile(r'^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://')
_DEVICE_PATH = re.compile(r'^/dev/video(?P<index>\d+)$')
_HOST_LABEL = re.compile(r'^[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?$')
_ENV_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Return ``text`` with URL passwords replaced by ``***``.

    ``scheme://user:password@host`` becomes ``scheme://user:***@host`` and query parameters
    such as ``?password=...`` lose their value. Each string in ``secrets`` (for example a
    password that came from the environment) is also replaced wherever it appears, if it has at
    least MIN_LITERAL_SECRET_LEN characters (shorter ones would shred ordinary words).
    """
    text = _URL_CREDENTIALS.sub(r'\g<head>:***@', str(text))
    text = _QUERY_SECRET.sub(r'\g<head>***', text)
    for secret in secrets:
        if len(secret) >= MIN_LITERAL_SECRET_LEN:
            text = text.replace(secret, '***')
    return text


@dataclass(frozen=True)
class Source:
    """A validated camera source.

    ``open_target`` (what VideoCapture opens; it may hold the password) is left out of
    ``repr`` and ``str``; use ``safe_url`` or ``redact`` for anything a person may read.
    """

    kind: str  # 'network', 'file' or 'device'
    scheme: str  # rtsp, rtsps, http, https, file or v4l2
    safe_url: str
    open_target: str | int = field(repr=False, compare=False)
    api_preference: int = field(default=cv2.CAP_FFMPEG, repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __str__(self) -> str:
        return self.safe_url

    @property
    def is_network(self) -> bool:
        """True for rtsp/rtsps/http/https streams."""
        return self.kind == 'network'

    @property
    def is_rtsp(self) -> bool:
        """True for rtsp:// and rtsps:// streams (the ones ``rtsp_transport`` applies to)."""
        return self.scheme in RTSP_SCHEMES

    @property
    def is_file(self) -> bool:
        """True for a local video file (finite, seekable, paced at its own fps)."""
        return self.kind == 'file'

    @property
    def is_device(self) -> bool:
        """True for a V4L2 device (/dev/videoN or an index)."""
        return self.kind == 'device'

    def redact(self, text: str) -> str:
        """Redact URL credentials and this source's own secrets from ``text``."""
        return redact(text, self.secrets)


_ENV_NAME_WORDS = 'an environment variable name: letters, digits and _, not starting with a digit'
_USER_ONLY_WORDS = ('a URL with a user and no password (scheme://user@host/path), the password '
                    'in the environment variable that password_env names')


def _invalid(reason: str, shown: str | None = None) -> ConfigError:
    """The error for a bad ``url`` (``shown`` must already be safe to print)."""
    got = f' (got {shown!r})' if shown is not None else ''
    return ConfigError.of('url', f'{reason}{got}', ACCEPTED_FORMS)


def _safe_echo(url: str) -> str:
    """A version of a rejected input that is safe to print even when it is malformed."""
    text = redact(url)
    if '@' in text:
        # Malformed inputs may hide credentials the URL pattern cannot see: keep the host only.
        text = '***@' + text.rpartition('@')[2]
    return text


def _validate_network(url: str, scheme: str, password_env: str,
                      environ: Mapping[str, str]) -> Source:
    shown = _safe_echo(url)
    if any(ch.isspace() for ch in url):
        raise _invalid('a URL may not contain whitespace', shown)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise _invalid('malformed URL', shown) from None
    netloc = parts.netloc
    userinfo, has_user, hostport = netloc.rpartition('@')
    if not has_user:
        userinfo = ''
    host_text = hostport
    port_text = ''
    if hostport.startswith('['):
        close = hostport.find(']')
        if close < 0:
            raise _invalid('unterminated IPv6 address', shown)
        host_text, port_text = hostport[1:close], hostport[close + 1:]
        if port_text and not port_text.startswith(':'):
            raise _invalid('garbage after IPv6 address', shown)
        port_text = port_text[1:]
        host_ok = bool(host_text) and all(c in '0123456789abcdefABCDEF:.' for c in host_text)
    else:
        host_text, colon, port_text = hostport.partition(':')
        if colon and not port_text:
            raise _invalid('empty port after ":"', shown)
        host_ok = all(_HOST_LABEL.match(label) for label in host_text.split('.'))
    if not host_text:
        raise _invalid(f'a {scheme}:// URL needs a host', shown)
    if not host_ok:
        raise _invalid(f'malformed host {host_text!r}', shown)
    if port_text and (not port_text.isdigit() or not 1 <= int(port_text) <= 65535):
        raise _invalid('the port must be a number from 1 to 65535', shown)

    user, has_password, password = userinfo.partition(':')
    secrets: tuple[str, ...] = ()
    open_netloc = netloc
    if has_password and password:
        secrets = (password, unquote(password))
    if password_env:
        if not _ENV_NAME.match(password_env):
            raise ConfigError.of('password_env', f'{password_env!r} is not an environment '
                                 'variable name', _ENV_NAME_WORDS)
        if not user:
            raise ConfigError.of('password_env', f'needs a user name in url (like '
                                 f'{scheme}://user@host/path), got {shown!r}', _USER_ONLY_WORDS)
        if has_password:
            raise ConfigError.of('url', 'already contains a password, and password_env names '
                                 'another', 'a password in the URL or in password_env, not both: '
                                 'remove it from the URL or leave password_env empty')
        secret = environ.get(password_env, '')
        if not secret:
            raise ConfigError.of('password_env', f'environment variable {password_env} is not '
                                 'set or is empty', 'the name of a set, non-empty environment '
                                 'variable holding the camera password')
        quoted = quote(secret, safe='')
        secrets = (secret, quoted)
        open_netloc = f'{user}:{quoted}@{hostport}'
    open_url = parts._replace(netloc=open_netloc).geturl()
    safe_netloc = f'{user}:***@{hostport}' if (has_password or password_env) else netloc
    safe_url = parts._replace(netloc=safe_netloc).geturl()
    return Source('network', scheme, safe_url, open_url, cv2.CAP_FFMPEG, secrets)


def _validate_file(path: str, shown: str) -> Source:
    if not os.path.isfile(path):
        raise _invalid('no such video file', shown)
    return Source('file', 'file', path, path, cv2.CAP_FFMPEG)


def validate_source(url: str | int, password_env: str = '',
                    environ: Mapping[str, str] | None = None) -> Source:
    """Check the ``url`` parameter and return the :class:`Source` to open.

    Accepted: rtsp://, rtsps://, http://, https:// with a host (and optional port 1-65535);
    an existing video file, as a path or file:///path; /dev/videoN or an integer index N.

    Password from the environment (the one mechanism): set ``password_env`` to the NAME of an
    environment variable and give the URL a user but no password (``rtsp://admin@cam/stream``);
    the variable's value, percent-encoded, is inserted into ``open_target`` only (FFmpeg decodes
    it again, so any character works). ``environ`` defaults to ``os.environ``.

    Raises ``ConfigError`` of ``url`` (listing the accepted forms) or ``password_env``; the
    message never contains the password.
    """
    environ = os.environ if environ is None else environ
    if isinstance(url, bool) or not isinstance(url, (str, int)):
        raise _invalid(f'expected a string, got {type(url).__name__}')
    if isinstance(url, int):
        url = str(url)
    url = url.strip()
    if not url:
        raise _invalid('empty')
    source = _classify(url, password_env, environ)
    if password_env and not source.is_network:
        raise ConfigError.of('password_env', f'applies only to rtsp/http URLs in url, which '
                             f'names a {source.kind} here', "'' (empty) for files and devices")
    return source


def _classify(url: str, password_env: str, environ: Mapping[str, str]) -> Source:
    if url.isdigit():
        index = int(url)
        return Source('device', 'v4l2', f'/dev/video{index}', index, cv2.CAP_V4L2)
    device = _DEVICE_PATH.match(url)
    if device:
        index = int(device.group('index'))
        return Source('device', 'v4l2', url, index, cv2.CAP_V4L2)
    match = _URL_LIKE.match(url)
    if match:
        scheme = match.group('scheme').lower()
        if scheme in NETWORK_SCHEMES:
            return _validate_network(url, scheme, password_env, environ)
        if scheme == 'file':
            parts = urlsplit(url)
            if parts.netloc not in ('', 'localhost'):
                raise _invalid('file:// URLs must name a local path (file:///path)',
                               _safe_echo(url))
            return _validate_file(unquote(parts.path), _safe_echo(url))
        raise _invalid(f'unsupported scheme {scheme!r}', _safe_echo(url))
    if re.match(r'^[A-Za-z][A-Za-z0-9+.\-]*:/?[^/]', url) and not os.path.exists(url):
        # 'rtsp:/host', 'rtsp:host', 'cam.local:554/x': a URL typo, not a file name.
        raise _invalid('malformed URL (expected scheme://host...)', _safe_echo(url))
    return _validate_file(url, _safe_echo(url))


def capture_params(source: Source, open_timeout_s: float, read_timeout_s: float,
                   decode_threads: int = 0) -> list[int]:
    """VideoCapture ``params`` (flat [key, value, ...]) with FFmpeg open and read timeouts and,
    unless ``decode_threads`` is 0, the decoder's thread count.

    OpenCV's FFmpeg backend aborts a blocking open or grab through an interrupt callback once
    the timeout passes (its default is 30 s for both); after a read timeout the capture is
    unusable and must be reopened. Devices get no params: backends other than FFmpeg refuse
    an open with parameters they do not use.
    """
    if not source.is_network and not source.is_file:
        return []
    for key, value in (('open_timeout_s', open_timeout_s), ('read_timeout_s', read_timeout_s)):
        if not value > 0:
            raise ConfigError.of(key, f'{value!r} is not > 0', 'a number of seconds > 0')
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, max(1, int(round(open_timeout_s * 1000))),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, max(1, int(round(read_timeout_s * 1000))),
    ]
    return params + ([cv2.CAP_PROP_N_THREADS, int(decode_threads)] if decode_threads else [])


def parse_capture_options(text: str) -> dict[str, str]:
    """Parse ``key;value|key;value`` (the OPENCV_FFMPEG_CAPTURE_OPTIONS format)."""
    options: dict[str, str] = {}
    for item in text.split('|'):
        key, _, value = item.partition(';')
        if key.strip():
            options[key.strip()] = value.strip()
    return options


def ffmpeg_capture_options(rtsp_transport: str, existing: str = '') -> str:
    """Return ``existing`` OPENCV_FFMPEG_CAPTURE_OPTIONS with ``rtsp_transport`` set.

    The RTSP transport has no VideoCapture param; it reaches FFmpeg only through this
    process-wide environment variable, which OpenCV reads at every open. Note that setting the
    variable at all turns off OpenCV's built-in default (``rtsp_flags;prefer_tcp``: TCP first,
    then UDP), so ``tcp`` here means TCP only.
    """
    if rtsp_transport not in RTSP_TRANSPORTS:
        raise ConfigError.of('rtsp_transport', f'{rtsp_transport!r} is not a choice',
                             'one of ' + ', '.join(repr(name) for name in RTSP_TRANSPORTS))
    options = parse_capture_options(existing)
    options['rtsp_transport'] = rtsp_transport
    return '|'.join(f'{key};{value}' for key, value in options.items())


def apply_rtsp_transport(rtsp_transport: str,
                         environ: MutableMapping[str, str] | None = None) -> str:
    """Set ``rtsp_transport`` in OPENCV_FFMPEG_CAPTURE_OPTIONS, keeping the user's other keys.

    Writes only when the value changes. Process-global: every capture in the process opened
    after this uses the same transport (one camera per camera_node process makes that moot).
    """
    environ = os.environ if environ is None else environ
    value = ffmpeg_capture_options(rtsp_transport, environ.get(CAPTURE_OPTIONS_ENV, ''))
    if environ.get(CAPTURE_OPTIONS_ENV) != value:
        environ[CAPTURE_OPTIONS_ENV] = value
    return value


# -- native output: OpenCV's and FFmpeg's debug paths -----------------------------------------

# Checked with opencv-python-headless 5.0 (FFmpeg 62): these print the URL with its password
# (or an HTTP Basic Authorization header, the base64 of user:password) to stdout or stderr,
# from native code that `redact` cannot reach. OPENCV_LOG_LEVEL=DEBUG/VERBOSE, OPENCV_TRACE
# and OPENCV_FFMPEG_DEBUG=1 (FFmpeg at AV_LOG_VERBOSE) were checked not to.
NATIVE_LEAK_CHECKS = (
    ('OPENCV_VIDEOIO_DEBUG', 'OpenCV logs "trying capture filename=\'<url>\'"'),
    ('OPENCV_VIDEOCAPTURE_DEBUG', 'OpenCV logs "trying capture filename=\'<url>\'"'),
    ('OPENCV_FFMPEG_LOGLEVEL', 'FFmpeg at debug level (48 and up) logs "Opening \'<url>\'" and '
     'HTTP Authorization headers'),
)


def _native_leaks(environ: Mapping[str, str]) -> list[str]:
    """NAME=value of each variable in ``environ`` that makes OpenCV or FFmpeg print URLs."""
    found = []
    for name, _ in NATIVE_LEAK_CHECKS:
        value = environ.get(name, '').strip()
        if not value:
            continue
        if name == 'OPENCV_FFMPEG_LOGLEVEL':
            try:
                if int(value) < FFMPEG_DEBUG_LOGLEVEL:
                    continue
            except ValueError:
                continue
        elif value.lower() in ('0', 'false', 'off', 'no'):
            continue
        found.append(f'{name}={value}')
    return found


def output_secrets(source: Source) -> tuple[str, ...]:
    """Every form in which ``source``'s password can reach native output: the source's own
    secrets (as typed, percent-encoded, decoded) and the base64 of ``user:password`` that an
    HTTP Basic Authorization header carries."""
    import base64
    secrets = list(source.secrets)
    if source.is_network and secrets and isinstance(source.open_target, str):
        user = unquote(urlsplit(source.open_target).username or '')
        for password in set(source.secrets):
            for credentials in (f'{user}:{password}', f'{user}:{unquote(password)}'):
                secrets.append(base64.b64encode(credentials.encode()).decode())
    return tuple(dict.fromkeys(s for s in secrets if len(s) >= MIN_LITERAL_SECRET_LEN))


# The redactor process (stdlib only, run with -I -S): reads a JSON header line (literal
# secrets, regex patterns, the descriptor of the stdout pipe) from fd 0, then forwards what
# arrives on fd 0 (this process's stderr) to fd 2 and on the stdout pipe to fd 1, secrets
# replaced by ***. A partial line is sent after 50 ms without a newline, minus any tail that
# could begin a secret (it waits for the rest).
_REDACTOR = r"""
import json, os, re, select, signal
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
header = b''
while not header.endswith(b'\n'):
    byte = os.read(0, 1)
    if not byte:
        raise SystemExit(0)
    header += byte
spec = json.loads(header)
secrets = [s.encode('utf-8', 'surrogateescape') for s in spec['secrets']]
patterns = [(re.compile(p.encode()), r.encode()) for p, r in spec['patterns']]

def clean(data):
    for pattern, replacement in patterns:
        data = pattern.sub(replacement, data)
    for secret in secrets:
        data = data.replace(secret, b'***')
    return data

def safe_cut(data):
    if not secrets:
        return len(data)
    for start in range(max(0, len(data) - max(map(len, secrets)) + 1), len(data)):
        tail = data[start:]
        if any(secret.startswith(tail) for secret in secrets):
            return start
    return len(data)

routes = {0: 2, spec['stdout_fd']: 1}
pending = {fd: b'' for fd in routes}
alive = {fd: True for fd in routes}
broken = set()

def emit(fd, data):
    out = routes[fd]
    if out in broken or not data:
        return
    try:
        while data:
            data = data[os.write(out, data):]
    except OSError:
        broken.add(out)

while any(alive.values()):
    waiting = any(pending[fd] for fd in pending if alive[fd])
    ready, _, _ = select.select([fd for fd in alive if alive[fd]], [], [],
                                0.05 if waiting else None)
    for fd in ready:
        chunk = os.read(fd, 65536)
        if not chunk:
            alive[fd] = False
            emit(fd, clean(pending[fd]))
            pending[fd] = b''
            continue
        data = pending[fd] + chunk
        complete, newline, rest = data.rpartition(b'\n')
        if newline:
            emit(fd, clean(complete + newline))
        pending[fd] = rest
    if not ready:
        for fd in pending:
            if pending[fd]:
                cut = safe_cut(pending[fd])
                emit(fd, clean(pending[fd][:cut]))
                pending[fd] = pending[fd][cut:]
"""


class OutputRedactor:
    """Everything this process writes to file descriptors 1 and 2 from now on (Python, rclpy's
    logging, OpenCV and FFmpeg natively) goes through a small redactor process that passes it
    on to the real stdout and stderr with each secret replaced by ``***``.

    A separate process, not a thread: it needs no GIL (a native writer holding it can never
    block the forwarding), it outlives the interpreter's teardown (whatever is written last,
    a crash report included, still arrives, redacted), and it ends by itself at end of input,
    when this process and its children have exited, however they exited. It ignores SIGINT,
    SIGTERM and SIGHUP, so the stop signals of a launcher's process group do not cut the
    output off, and gets an empty environment (no password, no marker variables). Output
    loses its terminal: nothing is written in colour any more.
    """

    def __init__(self, secrets: tuple[str, ...]) -> None:
        import json
        import subprocess
        import sys
        self.secrets = secrets
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        err_read, err_write = os.pipe()
        out_read, out_write = os.pipe()
        header = json.dumps({'secrets': list(secrets), 'stdout_fd': out_read, 'patterns': [
            (_URL_CREDENTIALS.pattern, r'\g<head>:***@'),
            ('(?i)' + _QUERY_SECRET.pattern, r'\g<head>***'),
        ]}) + '\n'
        try:
            self.process = subprocess.Popen(
                [sys.executable, '-I', '-S', '-c', _REDACTOR], stdin=err_read, stdout=1,
                stderr=2, pass_fds=(out_read,), env={}, start_new_session=True)
        except (OSError, ValueError) as exc:
            for fd in (err_read, err_write, out_read, out_write):
                os.close(fd)
            raise OSError(f'cannot start the output redactor: {exc}') from None
        os.close(err_read)
        os.close(out_read)
        os.write(err_write, header.encode())
        for fd, write_end in ((1, out_write), (2, err_write)):
            _grow_pipe(write_end)
            os.dup2(write_end, fd)
            os.close(write_end)


def _grow_pipe(fd: int, size: int = 1 << 20) -> None:
    """Make a pipe's buffer large (Linux F_SETPIPE_SZ), so that a burst of debug output is
    taken at once; a no-op where that is not possible."""
    try:
        import fcntl
        fcntl.fcntl(fd, getattr(fcntl, 'F_SETPIPE_SZ', 1031), size)
    except (OSError, ImportError):
        pass


# The file descriptors are the process's, so the redactor in front of them is too.
_process_redactor: OutputRedactor | None = None


def redact_process_output(source: Source) -> OutputRedactor | None:
    """When ``source`` has a password: from now on everything this process writes to stdout
    and stderr reaches them with every form of it (``output_secrets``) replaced by ``***``,
    native writes of OpenCV and FFmpeg included (OutputRedactor), so that no debug variable
    (NATIVE_LEAK_CHECKS) can print it. Call it once the source is known and before the capture
    opens. Returns the redactor in front of the output, or None when there is nothing to hide.

    Where no redactor can be started (not POSIX, or spawning fails), the variables that would
    print the password are removed from the environment instead (OpenCV reads them at its first
    capture), and ``native_log_warning`` says so.
    """
    global _process_redactor
    secrets = output_secrets(source)
    if not secrets:
        return None
    if _process_redactor is not None and set(secrets) <= set(_process_redactor.secrets):
        return _process_redactor
    try:
        if os.name != 'posix':
            raise OSError('needs POSIX pipes')
        # A second one (other secrets) writes into the first: both redact.
        _process_redactor = OutputRedactor(secrets)
    except OSError as exc:
        leaks = _native_leaks(os.environ)
        for leak in leaks:
            os.environ.pop(leak.partition('=')[0], None)
        if leaks:
            logging.getLogger(__name__).warning(
                f'cannot redact this process\'s output ({exc}): removed {", ".join(leaks)} '
                'from the environment, which would print the camera password')
        return None
    return _process_redactor


def output_redacted(source: Source) -> bool:
    """True when this process's output is redacted for ``source`` (redact_process_output)."""
    return (_process_redactor is not None
            and set(output_secrets(source)) <= set(_process_redactor.secrets))


def native_log_warning(source: Source, environ: Mapping[str, str] | None = None) -> str:
    """Return a warning if native logging would print this source's password, else ''.

    The variables of NATIVE_LEAK_CHECKS make OpenCV or FFmpeg write the URL (or an HTTP
    Authorization header) straight to stdout or stderr, where ``redact`` cannot reach it;
    once ``redact_process_output`` stands in front of the output they are harmless, and
    nothing is said.
    """
    environ = os.environ if environ is None else environ
    if not source.secrets or output_redacted(source):
        return ''
    leaks = _native_leaks(environ)
    if not leaks:
        return ''
    return (f'{", ".join(leaks)} make{"s" if len(leaks) == 1 else ""} OpenCV/FFmpeg print the '
            f'camera password to stdout/stderr; unset {"it" if len(leaks) == 1 else "them"} '
            f'(OPENCV_FFMPEG_LOGLEVEL: use a level below {FFMPEG_DEBUG_LOGLEVEL})')
