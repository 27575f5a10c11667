#!/usr/bin/env bash
# Make the GPU-machine kit HERE (a machine with PyPI and ffmpeg), once:
#   .whl/    the ros-* wheels for CPython 3.12 (rclpy, Fast DDS, messages, the ament/rosidl tools
#            that build vision_msgs, ros-wheels-bootstrapper, catkin-pkg, docutils) and empy /
#            lark-parser built here from source (PyPI has no wheel of them)
#   .clips/  looping H.264 test clips: .clips/720p/cam{0,1}.mp4 and .clips/vga/cam{0,1}.mp4
#   .models/ with --nanodet: the cached NanoDet-g TorchScript at fp16 (7.3 MiB instead of 14.5;
#            run_on_gpu.sh restores it to fp32 in /tmp/e2e_models/nanodet-g/)
#   .tools/  with --tools: the py-spy wheel (pinned, hash-checked) for e2e_bench.py
#            --profile-detector, and pytest for the CUDA tests (`make test-gpu`);
#            run_on_gpu.sh installs whatever .tools holds
# Both folders are ignored by git (.gitignore and .git/info/exclude), so they travel to the
# device only when the run's carry names them: carry [".whl", ".clips/720p"].
# The wheel list comes from bench/device/kit_list.py: the dependency closure of the ROS entries
# of requirements.txt in .venv, less what the GPU machine's python3 already has.
#
# Usage: bench/device/make_kit.sh [--python 3.12] [--dest .whl] [--all] [--no-clips] [--nanodet]
#                                 [--tools]
#   --python X.Y  CPython version of the wheels (3.12 for the GPU machine; 3.11 to test here)
#   --dest DIR    where the wheels go (default .whl)
#   --all         also the packages the GPU machine already has (for a bare test venv)
#   --no-clips    wheels only
#   --nanodet     also pack the cached NanoDet-g (multicam-ros models fetch) into .models/
#   --tools       also download py-spy and pytest into .tools/
# Idempotent: wheels and clips already there are kept.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYVER=3.12
DEST=.whl
ALL=()
CLIPS=1
NANODET=0
TOOLS=0
# --tools: py-spy for --profile-detector, pytest for `make test-gpu` there (pure-Python wheels)
TOOL_WHEELS='py-spy==0.4.3 --hash=sha256:8a4277225f470d394a85cca0cdd944bef87f0097b6f20150a6dd3ac2e92806b8
pytest==9.2.0 --hash=sha256:07acdcf88ec174f907dc01af70bf52d49b014bbab03faeeade31c96b18c2e588
pluggy==1.7.0 --hash=sha256:7dd7b0d8832ba3cb632c306926ded123429211b83641b35dc5c41ad2d34f9bec
iniconfig==2.3.1 --hash=sha256:9121e2c1fdb355232495be3194c8dfe87ccc2d5dee45947b78e68f499790d7a7
packaging==26.4 --hash=sha256:81383611a09c1bc0b08b76e0fd5829d7c6824c65b27a6aee339da133f4233ea2
pytest-timeout==2.4.0 --hash=sha256:c42667e5cdadb151aeb5b26d114aff6bdf5a907f176a007a30b940d3d865b5c2'
while (($#)); do
  case $1 in
    --python) PYVER=$2; shift 2 ;;
    --dest) DEST=$2; shift 2 ;;
    --all) ALL=(--all); shift ;;
    --no-clips) CLIPS=0; shift ;;
    --nanodet) NANODET=1; shift ;;
    --tools) TOOLS=1; shift ;;
    *) echo "make_kit: unknown argument $1" >&2; exit 2 ;;
  esac
done
VENV_PY=${VENV_PY:-.venv/bin/python}
TAG=cp${PYVER/./}
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64 --platform linux_x86_64)

# Never let the kit into git, nor onto the device unless carried.
touch .git/info/exclude
for pattern in /.whl/ /.clips/ /.models/ /.tools/; do
  grep -qxF "$pattern" .git/info/exclude || echo "$pattern" >> .git/info/exclude
done

mkdir -p "$DEST"
LIST=$DEST/KIT_LIST.txt
"$VENV_PY" bench/device/kit_list.py "${ALL[@]}" > "$LIST.new"
mv "$LIST.new" "$LIST"
echo "==> make_kit: $(wc -l < "$LIST") packages for $TAG into $DEST (list: $LIST)"

have_wheel() {  # name version -> true if a wheel of it is already in DEST
  local stem=${1//-/_}
  compgen -G "$DEST/${stem}-$2-*.whl" >/dev/null || compgen -G "$DEST/$1-$2-*.whl" >/dev/null
}

binary=()
source=()
while read -r first second; do
  if [[ $first == sdist ]]; then spec=$second; kind=source; else spec=$first; kind=binary; fi
  name=${spec%%==*}
  version=${spec##*==}
  have_wheel "$name" "$version" && continue
  if [[ $kind == source ]]; then source+=("$spec"); else binary+=("$spec"); fi
done < "$LIST"

if ((${#binary[@]})); then
  echo "    pip download ${#binary[@]} wheels"
  "$VENV_PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp "${PLATFORMS[@]}" -d "$DEST" "${binary[@]}" 2> >(grep -v 'is ignored: it is neither' >&2)
fi
if ((${#source[@]})); then
  echo "    pip wheel (pure Python, built here): ${source[*]}"
  "$VENV_PY" -m pip wheel -q --no-deps -w "$DEST" "${source[@]}" \
    2> >(grep -v 'is ignored: it is neither' >&2)
fi

# Exactly one wheel per listed package, nothing else (two versions stop the whole install).
"$VENV_PY" - "$DEST" "$LIST" "$TAG" <<'EOF'
import re, sys
from pathlib import Path
dest, listing, tag = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
want = {}
for line in listing.read_text().split('\n'):
    if line.strip():
        name, version = line.split()[-1].split('==')
        want[re.sub(r'[-_.]+', '-', name).lower()] = version
seen = {}
for wheel in sorted(dest.glob('*.whl')):
    name, version, *rest = wheel.name[:-4].split('-')
    key = re.sub(r'[-_.]+', '-', name).lower()
    python_tag = rest[-3]
    if key not in want or want[key] != version:
        wheel.unlink()
        print(f'    removed {wheel.name} (not in the list)')
        continue
    if python_tag.startswith('cp') and python_tag not in (tag, 'cp3') \
            and not wheel.name.count('abi3'):
        sys.exit(f'make_kit: {wheel.name} is not for {tag}')
    seen.setdefault(key, []).append(wheel.name)
missing = sorted(set(want) - set(seen))
twice = {k: v for k, v in seen.items() if len(v) > 1}
if missing or twice:
    sys.exit(f'make_kit: missing {missing}, more than one wheel of {twice}')
print(f'    {len(seen)} wheels, one per package')
EOF

if ((CLIPS)); then
  # 10 s testsrc2 clips, about 3.3 MB at 720p: two visually distinct ones per size (the second
  # hue-shifted and mirrored); camera i reads clip i % 2. H.264 High, yuv420p, GOP 2 s.
  make_clip() {  # size dir index
    local out=.clips/$2/cam$3.mp4 filter=()
    [[ -s $out ]] && return 0
    mkdir -p ".clips/$2"
    [[ $3 == 1 ]] && filter=(-vf hue=h=120,hflip)
    echo "    ffmpeg $out"
    ffmpeg -loglevel error -y -f lavfi -i "testsrc2=size=$1:rate=30" -t 10 "${filter[@]}" \
      -c:v libx264 -preset veryfast -g 60 -pix_fmt yuv420p "$out.tmp.mp4"
    mv "$out.tmp.mp4" "$out"
  }
  command -v ffmpeg >/dev/null || { echo "make_kit: ffmpeg is missing (apt-get install ffmpeg)" >&2; exit 1; }
  for index in 0 1; do
    make_clip 1280x720 720p $index
    make_clip 640x480 vga $index
  done
fi

if ((NANODET)); then
  echo "    packing NanoDet-g into .models/ (fp16 for the trip)"
  "$VENV_PY" bench/device/pack_model.py pack 2> >(grep -v 'deprecated\|warnings.warn' >&2)
fi

if ((TOOLS)); then
  echo "    py-spy and pytest into .tools/"
  mkdir -p .tools
  echo "$TOOL_WHEELS" > .tools/requirements.txt
  "$VENV_PY" -m pip download -q --no-deps --only-binary=:all: --require-hashes \
    --platform manylinux1_x86_64 -d .tools -r .tools/requirements.txt \
    2> >(grep -v 'is ignored: it is neither' >&2)
fi

# What one device call carries: the working tree (tracked + untracked-not-ignored) and the kit.
tree_bytes=$(git ls-files -z -co --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null \
  | awk '{s+=$1} END {print s+0}')
bytes() { du -sb "$@" 2>/dev/null | awk '{s+=$1} END {print s+0}'; }
whl_bytes=$(bytes "$DEST")
clip_bytes=$(bytes .clips/720p)
total=$((tree_bytes + whl_bytes + clip_bytes))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "==> kit sizes: working tree $(mib "$tree_bytes"), $DEST $(mib "$whl_bytes"), .clips/720p $(mib "$clip_bytes"), .clips/vga $(mib "$(bytes .clips/vga)")"
echo "==> one device call with carry [\"$DEST\", \".clips/720p\"]: $(mib "$total") of 64 MiB"
if [[ -d .models ]]; then
  model_bytes=$(bytes .models)
  echo "==> with \".models\" ($(mib "$model_bytes")) too: $(mib $((total + model_bytes))) of 64 MiB"
fi
if ((total > 60 * 1048576)); then
  echo "make_kit: WARNING: over 60 MiB; drop .clips/720p/cam1.mp4 or clean untracked files" >&2
fi
