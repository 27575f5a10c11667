"""Real footage as test cameras: cuts of vtest.avi, rendered once into JPEG sequences.

vtest.avi (OpenCV's sample footage: 768 x 576, 10 fps, 795 frames of pedestrians and cars) comes
from Debian's opencv-doc package into the cache (`multicam-ros models footage`, a step of
`make setup`). A `Cut` is one camera made from it: a stretch of frames from a start offset,
optionally cropped and mirrored, so that the four demo cameras look distinct. Every frame of a
cut carries its source frame index in a strip (frame_code.py), so that a frame received at the
far end of the system can be traced to the very source frame it shows.

`prepare` renders each cut once into `<cache>/media/testbed/<name>-<key>/%05d.jpg` (the key
changes with the cut, the code version and the footage, so a stale rendering is never used),
which the RTSP server (rtsp_server.py, under Debian's Python and GStreamer, which cannot
decode vtest.avi's MS-MPEG4 itself) loops as a live H.264 stream. `render` makes the same
frame in memory: what a test compares the received frames against.
"""
import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from multicam_testbed import frame_code

FOOTAGE_FPS = 10  # vtest.avi's rate: the streams play it at its own speed
JPEG_QUALITY = 92
RENDER_VERSION = 1  # bump when rendering changes: every cut is then rendered anew
DONE_FILE = 'done.json'
PATTERN = '%05d.jpg'  # multifilesrc location of a rendered cut, in its folder


class FootageError(RuntimeError):
    """The footage is missing or cannot be read; the message names the command that fixes it."""


@dataclass(frozen=True)
class Cut:
    """One test camera cut from the footage: `length` frames from `start` (then it loops),
    cropped to `crop` (x, y, width, height in source pixels; None: the whole frame) and
    mirrored left to right when `mirror`."""

    name: str
    start: int
    length: int
    crop: Optional[Tuple[int, int, int, int]] = None
    mirror: bool = False

    def source_index(self, position: int) -> int:
        """The source frame shown at `position` (0-based) of the looping stream."""
        return self.start + position % self.length

    def render(self, source_bgr: np.ndarray, index: int) -> np.ndarray:
        """This cut's frame made from source frame `index` (a new array, strip painted)."""
        frame = source_bgr
        if self.crop is not None:
            x, y, width, height = self.crop
            frame = frame[y:y + height, x:x + width]
        if self.mirror:
            frame = frame[:, ::-1]
        return frame_code.paint(np.ascontiguousarray(frame).copy(), index)

    def size(self, source_size: Tuple[int, int]) -> Tuple[int, int]:
        """(width, height) of this cut's frames for a source of `source_size`."""
        return self.crop[2:] if self.crop is not None else source_size


# Four cameras from one clip: the whole view, the whole view mirrored, and two crops (one of
# them mirrored), each starting elsewhere in the clip and looping over 30 s.
DEMO_CUTS: Tuple[Cut, ...] = (
    Cut('cam0', start=0, length=300),
    Cut('cam1', start=160, length=300, mirror=True),
    Cut('cam2', start=320, length=300, crop=(128, 0, 640, 480)),
    Cut('cam3', start=480, length=300, crop=(0, 96, 576, 432), mirror=True),
)


@dataclass(frozen=True)
class RenderedCut:
    """A cut rendered into a folder of JPEG files, ready for the RTSP server."""

    cut: Cut
    folder: Path
    width: int
    height: int
    fps: int = FOOTAGE_FPS

    @property
    def location(self) -> str:
        """The files as a multifilesrc location pattern."""
        return str(self.folder / PATTERN)


def footage_path() -> Path:
    """vtest.avi in the cache, checked; FootageError naming the fetch command otherwise."""
    from multicam_ros.system import model_store
    path = model_store.footage_path()
    if not path.is_file():
        raise FootageError(f'{path} is missing: run `{model_store.FOOTAGE_COMMAND}` '
                           '(make setup does it)')
    return path


def _key(cut: Cut, video: Path) -> str:
    stat = video.stat()
    record = {'cut': asdict(cut), 'version': RENDER_VERSION, 'quality': JPEG_QUALITY,
              'video': [video.name, stat.st_size], 'strip': frame_code.BLOCKS}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]


def cache_dir() -> Path:
    """Where rendered cuts live: `<cache>/media/testbed`."""
    from multicam_ros.core.cache import media_dir
    return media_dir() / 'testbed'


def source_frames(indices: Iterable[int], video: Optional[Path] = None) -> Dict[int, np.ndarray]:
    """The source frames `indices` of the footage, decoded one by one from the first frame (as
    the rendering does, so the pixels are the same)."""
    wanted = set(indices)
    video = video or footage_path()
    capture = cv2.VideoCapture(str(video))
    found: Dict[int, np.ndarray] = {}
    try:
        if not capture.isOpened():
            raise FootageError(f'OpenCV cannot open {video}')
        for index in range(max(wanted) + 1 if wanted else 0):
            ok, frame = capture.read()
            if not ok:
                raise FootageError(f'{video} ends at frame {index}; frame {max(wanted)} needed')
            if index in wanted:
                found[index] = frame
    finally:
        capture.release()
    return found


def prepare(cuts: Sequence[Cut] = DEMO_CUTS, video: Optional[Path] = None,
            say: Callable[[str], None] = print) -> List[RenderedCut]:
    """Render every cut not yet in the cache (one pass over the footage for all of them) and
    return them all, in order."""
    video = video or footage_path()
    root = cache_dir()
    folders = [root / f'{cut.name}-{_key(cut, video)}' for cut in cuts]
    missing = [(cut, folder) for cut, folder in zip(cuts, folders)
               if not (folder / DONE_FILE).is_file()]
    if missing:
        say(f'[footage] rendering {len(missing)} camera clip(s) from {video.name} into {root} '
            '(once)')
        _render(missing, video, root)
    result = []
    for cut, folder in zip(cuts, folders):
        done = json.loads((folder / DONE_FILE).read_text())
        result.append(RenderedCut(cut, folder, done['width'], done['height']))
    return result


def _render(jobs: Sequence[Tuple[Cut, Path]], video: Path, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    needed = {cut.source_index(k) for cut, _ in jobs for k in range(cut.length)}
    staging = {cut.name: Path(tempfile.mkdtemp(prefix=f'.{cut.name}-', dir=root))
               for cut, _ in jobs}
    sizes: Dict[str, Tuple[int, int]] = {}
    try:
        capture = cv2.VideoCapture(str(video))
        if not capture.isOpened():
            raise FootageError(f'OpenCV cannot open {video}')
        try:
            for index in range(max(needed) + 1):
                ok, source = capture.read()
                if not ok:
                    raise FootageError(f'{video} ends at frame {index}; frame {max(needed)} '
                                       'needed')
                for cut, _ in jobs:
                    position = index - cut.start
                    if not 0 <= position < cut.length:
                        continue
                    frame = cut.render(source, index)
                    sizes[cut.name] = (frame.shape[1], frame.shape[0])
                    path = staging[cut.name] / (PATTERN % position)
                    if not cv2.imwrite(str(path), frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                        raise FootageError(f'cannot write {path}')
        finally:
            capture.release()
        for cut, folder in jobs:
            width, height = sizes[cut.name]
            (staging[cut.name] / DONE_FILE).write_text(json.dumps(
                {'cut': asdict(cut), 'width': width, 'height': height, 'fps': FOOTAGE_FPS}))
            if (folder / DONE_FILE).is_file():
                continue  # another process rendered the same cut meanwhile
            if folder.exists():
                shutil.rmtree(folder)
            try:
                staging[cut.name].rename(folder)
            except OSError:
                if not (folder / DONE_FILE).is_file():
                    raise
            for old in root.glob(f'{cut.name}-*'):  # renderings of an older version
                if old != folder and (old / DONE_FILE).is_file():
                    shutil.rmtree(old, ignore_errors=True)
    finally:
        for path in staging.values():
            shutil.rmtree(path, ignore_errors=True)
