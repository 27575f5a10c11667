"""`multicam-ros demo` (`make demo`): the whole system on four live test streams.

Serves the RTSP test streams, then runs `multicam-ros launch` on config/demo.yaml until Ctrl-C.
The demo model is torchvision's COCO Faster R-CNN. `--weights auto` uses its published weights
when they are in the torch hub cache; otherwise it says so loudly and runs the same architecture
with random weights, so that every part of the pipeline still runs without a network.
`--weights default` makes torchvision download them (once, where a network exists).
ROS-free like the rest of system/: cli.py hands it the /diagnostics listener for the table.
"""
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

import yaml

from multicam_ros.system.executables import PACKAGE
from multicam_ros.system.supervisor import ListenerFactory, launch_main
from multicam_testbed import RtspServerError, RtspTestServer

DEMO_CONFIG = Path(__file__).resolve().parents[2] / 'config' / 'demo.yaml'
DEMO_PORT = 8554
WEIGHT_CHOICES = ('auto', 'default', 'none')  # see the module docstring


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


def cached_weights(model_name: str) -> Path:
    """Where torchvision keeps the downloaded DEFAULT weights of `model_name`."""
    import torch
    from torchvision.models import get_model_weights
    url = get_model_weights(model_name).DEFAULT.url
    return Path(torch.hub.get_dir()) / 'checkpoints' / os.path.basename(urlsplit(url).path)


def demo_main(port: int = DEMO_PORT, weights: str = 'auto',
              listen: Optional[ListenerFactory] = None) -> int:
    """Serve the test streams and run the demo configuration until Ctrl-C; `weights` is one
    of WEIGHT_CHOICES, `listen` as for launch_main."""
    config = yaml.safe_load(demo_config_path().read_text())
    model = config['detector']['model']
    cached = cached_weights(model['name'])
    if weights == 'none' or (weights == 'auto' and not cached.is_file()):
        model['weights'] = 'none'
        print('[demo] ' + '!' * 72 + f'\n[demo] The published COCO weights are not at {cached}.'
              '\n[demo] Running with RANDOM weights: the pipeline runs, detections mean '
              'nothing.\n[demo] For real boxes: `multicam-ros demo --weights default` once '
              'where a network exists\n[demo] (torchvision downloads them), or copy the file '
              'there.\n[demo] ' + '!' * 72, flush=True)
    for camera in config['cameras']:
        camera['url'] = camera['url'].replace(f':{DEMO_PORT}/', f':{port}/')
    server = RtspTestServer(count=len(config['cameras']), port=port, width=640, height=480,
                            fps=15)
    try:
        server.start()
    except (RtspServerError, ValueError) as exc:
        print(f'[demo] cannot serve the test streams: {exc}', file=sys.stderr, flush=True)
        return 1
    print(f'[demo] serving {len(server.urls)} test streams at {server.url(0)} ...', flush=True)
    print('[demo] watch /camN/image_annotated (rqt_image_view, RViz, Foxglove); '
          'Ctrl-C stops everything.', flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix='multicam-demo-') as folder:
            path = Path(folder) / 'demo.yaml'
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            return launch_main(str(path), listen=listen)
    finally:
        server.stop()
