"""`multicam-ros demo` (`make demo`): the whole system on four cameras of real street footage.

1. renders the four demo cameras from vtest.avi into the cache, once (multicam_testbed/footage:
   different start offsets, crops and mirroring, each frame marked with its source index);
2. serves them as live, looping H.264 RTSP streams on loopback;
3. starts the live view in the browser (`view`, which cli.py hands in: it needs rclpy) and
   prints its URL;
4. runs `multicam-ros launch` on config/demo.yaml: four camera nodes and one detector with the
   default model (NanoDet-g, COCO; on the GPU where there is one) and tracking, with the
   status table, until Ctrl-C, which stops everything.
ROS-free like the rest of system/: cli.py also hands in the /diagnostics listener.
"""
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, Dict, Optional, Protocol, Sequence

import yaml

from multicam_ros.core.diagnostics import ServedCameraReport, parse
from multicam_ros.system.executables import PACKAGE
from multicam_ros.system.supervisor import Listener, ListenerFactory, launch_main
from multicam_ros.system.viewer import DEFAULT_HOST, DEFAULT_PORT, loopback_warning
from multicam_testbed import RtspServerError, footage_server
from multicam_testbed.footage import FootageError

DEMO_CONFIG = Path(__file__).resolve().parents[2] / 'config' / 'demo.yaml'
DEMO_PORT = 8554


class RunningView(Protocol):
    """What `view` returns: the live view, serving until closed."""

    url: str

    def close(self) -> None: ...


# view(camera namespaces, host, port) starts the live view (ros/viewer_node.Viewer).
ViewFactory = Callable[[Sequence[str], str, int], RunningView]


def demo_config_path() -> Path:
    """config/demo.yaml of this checkout, else of the installed package: share/multicam_ros
    under a prefix of AMENT_PREFIX_PATH (a colcon install) or under this interpreter's prefix
    (pip). Looked up by hand: ament_index_python is a ROS package, and system/ stays ROS-free."""
    if DEMO_CONFIG.is_file():
        return DEMO_CONFIG
    prefixes = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    candidates = [Path(prefix) / 'share' / PACKAGE / 'config' / 'demo.yaml'
                  for prefix in [*prefixes, sys.prefix]]
    return next((path for path in candidates if path.is_file()), candidates[-1])


def say(text: str) -> None:
    print(f'[demo] {text}', flush=True)


class _FirstDetections:
    """Wraps the /diagnostics listener: says once when the detector has served every camera,
    with the URL to look at."""

    def __init__(self, listen: Optional[ListenerFactory], cameras: Sequence[str],
                 url: str) -> None:
        self._listen = listen
        self._waiting = set(cameras)
        self._url = url
        self._lock = threading.Lock()

    def __call__(self, on_status: Callable[[str, Dict[str, str]], None]) -> Listener:
        def both(name: str, values: Dict[str, str]) -> None:
            on_status(name, values)
            self._note(name, values)
        if self._listen is None:
            raise ValueError('no listener')
        return self._listen(both)

    def _note(self, name: str, values: Dict[str, str]) -> None:
        camera = name.partition(': ')[2]
        with self._lock:
            if camera not in self._waiting:
                return
            report = parse(ServedCameraReport, values)
            if report is None or report.frames_processed == 0:
                return
            self._waiting.discard(camera)
            done = not self._waiting
        if done:
            where = f': watch them at {self._url}' if self._url else ''
            say(f'detections are coming in from every camera{where}')


def demo_main(port: int = DEMO_PORT, listen: Optional[ListenerFactory] = None,
              view: Optional[ViewFactory] = None, view_host: str = DEFAULT_HOST,
              view_port: int = DEFAULT_PORT) -> int:
    """Serve the footage, start the live view (`view`; None: no view) and run the demo
    configuration until Ctrl-C; `listen` as for launch_main. Exit code 0 after Ctrl-C (also
    while it is still starting), 1 when something it needs is missing or the detector stops."""
    try:
        code = _demo(port, listen, view, view_host, view_port)
    except KeyboardInterrupt:  # Ctrl-C before the launcher took the signals over
        code = 0
    say('stopped' + ('' if code == 0 else f' (exit code {code})'))
    return code


def _demo(port: int, listen: Optional[ListenerFactory], view: Optional[ViewFactory],
          view_host: str, view_port: int) -> int:
    config = yaml.safe_load(demo_config_path().read_text())
    for camera in config['cameras']:
        camera['url'] = camera['url'].replace(f':{DEMO_PORT}/', f':{port}/')
    try:
        server = footage_server(port=port, say=lambda text: say(text.split('] ', 1)[-1]))
    except (FootageError, RtspServerError, ValueError) as exc:
        say(f'cannot prepare the camera footage: {exc}')
        return 1
    if server.count < len(config['cameras']):
        say(f'{demo_config_path()} has more cameras than the test bed has footage cuts')
        return 1
    try:
        server.start()
    except (RtspServerError, ValueError) as exc:
        say(f'cannot serve the camera streams: {exc}')
        return 1
    running_view: Optional[RunningView] = None
    try:
        say(f'serving {len(config["cameras"])} cameras of real footage (vtest.avi, looping) at '
            f'{server.url(0)} ... /cam{len(config["cameras"]) - 1}')
        namespaces = ['/' + camera['name'] for camera in config['cameras']]
        if view is not None:
            try:
                running_view = view(namespaces, view_host, view_port)
            except OSError as exc:
                say(f'cannot serve the live view on {view_host}:{view_port}: '
                    f'{exc.strerror or exc} (choose another with --view-port)')
                return 1
            if loopback_warning(view_host):
                say(loopback_warning(view_host))
            say(f'live view: open {running_view.url} in a browser')
        else:
            say('no live view (--no-view); watch /camN/image_annotated in rqt_image_view, '
                'RViz or Foxglove')
        say('the detector loads NanoDet-g (first start on a CPU: about 10 s); '
            'Ctrl-C stops everything')
        url = running_view.url if running_view is not None else ''
        watcher = _FirstDetections(listen, namespaces, url) if listen is not None else None
        with tempfile.TemporaryDirectory(prefix='multicam-demo-') as folder:
            path = Path(folder) / 'demo.yaml'
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            return launch_main(str(path), listen=watcher)
    finally:
        if running_view is not None:
            running_view.close()
        server.stop()
