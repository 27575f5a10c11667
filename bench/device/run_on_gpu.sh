#!/usr/bin/env bash
# The GPU machine's half of the kit (bench/device/make_kit.sh makes the other half here).
# One device command does everything: install the carried ROS wheels into the machine's python3
# venv, build vision_msgs there, check rclpy + vision_msgs, then run the end-to-end sweep
# (bench/e2e_bench.py) with the arguments given, writing into $OUT:
#   e2e_<sweep>.json / .md / .png   results (written after every point)
#   e2e_run.log, e2e_setup.log      logs
#
# Device command (carry [".whl", ".clips/720p"]):
#   bash bench/device/run_on_gpu.sh --sweep gpu --n 1,2,4,8 --seconds 12 --warmup 5
#   bash bench/device/run_on_gpu.sh --setup-only       # the kit alone (about 1 minute)
# NanoDet-g (make_kit.sh --nanodet; carry [".whl", ".clips/720p", ".models"]):
#   bash bench/device/run_on_gpu.sh --sweep gpu --model-backend nanodet \
#     --model /tmp/e2e_models/nanodet-g/nanodet-g.torchscript --n 1,4,16,32,64 ...
#
# Against an earlier revision, in the same call (bench/device/pack_rev.sh REV here first; carry
# ".compare" too): rounds of this checkout's points, then REV's, alternating so that the
# machine's drift hits both alike; all results in $OUT/compare.tgz (one file), rows printed:
#   bash bench/device/run_on_gpu.sh --against .compare/203f69b.tgz --rounds 2 --sweep gpu \
#     --n 64 --systems a --paths shm --no-ceiling --seconds 6 --warmup 3
#
# Set-up is skipped when the same wheels are installed already (a machine still warm from the
# previous call). Unless --deadline-s is given, the sweep gets one that ends it
# E2E_CALL_LIMIT_S (default 570) seconds after this script started, so that the results are
# written before the device tool's 600 s limit; skipped points are listed in the results.
# Results of the previous call on the same (warm) machine are merged from /tmp/e2e_keep.
# Environment: PYTHON (default python3), WHL_DIR (default .whl), OUT (default bench/results).
set -uo pipefail
cd "$(dirname "$0")/../.."
SECONDS=0
PY=${PYTHON:-python3}
WHL=${WHL_DIR:-.whl}
OUTDIR=${OUT:-$PWD/bench/results}
CALL_LIMIT_S=${E2E_CALL_LIMIT_S:-570}
mkdir -p "$OUTDIR"
LOG=$OUTDIR/e2e_setup.log
: > "$LOG"
step() { echo "==> run_on_gpu [${SECONDS}s]: $*"; }
fail() {
  echo "!! run_on_gpu: $*" >&2
  echo "!! last lines of $LOG:" >&2
  tail -n 40 "$LOG" >&2
  exit 1
}
SETUP_ONLY=0 AGAINST='' ROUNDS=1
if [[ ${1:-} == --setup-only ]]; then SETUP_ONLY=1; shift; fi
if [[ ${1:-} == --against ]]; then
  AGAINST=${2:?--against needs a tarball from bench/device/pack_rev.sh}; shift 2
  [[ -f $AGAINST ]] || { echo "!! run_on_gpu: --against $AGAINST: no such file" >&2; exit 2; }
  if [[ ${1:-} == --rounds ]]; then ROUNDS=${2:?--rounds needs a number}; shift 2; fi
  [[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "!! run_on_gpu: --rounds $ROUNDS: want 1 or more" >&2; exit 2; }
fi

step "python: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
compgen -G "$WHL/*.whl" >/dev/null \
  || fail "no wheels in $WHL: run bench/device/make_kit.sh on the dev machine and carry .whl"
# build_vision_msgs.py installs into a venv prefix: use python3's venv, else make one on top.
if ! "$PY" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
  step "$PY is not a venv: making /tmp/e2e-venv (with the system's packages)"
  "$PY" -m venv --system-site-packages /tmp/e2e-venv >>"$LOG" 2>&1 || fail "venv failed"
  PY=/tmp/e2e-venv/bin/python
fi
PREFIX=$("$PY" -c 'import sys; print(sys.prefix)')
want=$(cat "$WHL/KIT_LIST.txt" 2>/dev/null | sha256sum | cut -c1-16)
stamp=$PREFIX/.multicam_e2e_kit
if [[ -f $stamp && $(cat "$stamp") == "$want" ]] && "$PY" -c 'import rclpy' 2>/dev/null; then
  step "ROS wheels already installed in $PREFIX"
else
  step "installing $(ls "$WHL"/*.whl | wc -l) wheels into $PREFIX"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
    "$WHL"/*.whl >>"$LOG" 2>&1 || fail "pip install of the wheels failed"
  echo "$want" > "$stamp"
fi
if compgen -G ".tools/*.whl" >/dev/null; then  # optional tools, e.g. py-spy (make_kit.sh --tools)
  step "installing $(ls .tools/*.whl | wc -l) tool wheel(s) from .tools"
  "$PY" -m pip install -q --no-index --no-deps --disable-pip-version-check .tools/*.whl \
    >>"$LOG" 2>&1 || fail "pip install of .tools failed"
fi
export AMENT_PREFIX_PATH=$PREFIX CMAKE_PREFIX_PATH=$PREFIX
export PATH=$PREFIX/bin:$PATH
step "vision_msgs (tools/build_vision_msgs.py)"
"$PY" tools/build_vision_msgs.py >>"$LOG" 2>&1 || fail "building vision_msgs failed"
tail -n 1 "$LOG"
step "checking rclpy and the messages"
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG" || fail "rclpy / vision_msgs do not work"
import rclpy
from diagnostic_msgs.msg import DiagnosticArray  # noqa: F401
from sensor_msgs.msg import Image  # noqa: F401
from vision_msgs.msg import Detection2DArray
rclpy.init()
node = rclpy.create_node('kit_check')
node.create_publisher(Detection2DArray, 'kit_check', 1)
node.destroy_node()
rclpy.shutdown()
print('rclpy + vision_msgs OK')
EOF
"$PY" -c 'import torch, torchvision, cv2
print("torch", torch.__version__, "torchvision", torchvision.__version__, "opencv",
      cv2.__version__, "cuda", torch.cuda.is_available())' 2>&1 | tee -a "$LOG"
command -v nvidia-smi >/dev/null && nvidia-smi -L
if compgen -G ".models/*.fp16.torchscript" >/dev/null; then
  step "restoring the carried models (fp32) into /tmp/e2e_models"
  "$PY" bench/device/pack_model.py unpack .models /tmp/e2e_models 2>>"$LOG" | tee -a "$LOG" \
    || fail "unpacking .models failed"
fi
step "set-up done"
((SETUP_ONLY)) && exit 0

export PYTHONUNBUFFERED=1
if [[ -z $AGAINST ]]; then
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  args=("$@")
  [[ " $* " == *" --deadline-s "* ]] || args+=(--deadline-s $((CALL_LIMIT_S - SECONDS)))
  step "bench/e2e_bench.py ${args[*]}"
  "$PY" bench/e2e_bench.py --results-dir "$OUTDIR" --keep-dir /tmp/e2e_keep "${args[@]}" 2>&1 \
    | tee "$OUTDIR/e2e_run.log"
  code=${PIPESTATUS[0]}
  step "finished with exit code $code"
  exit "$code"
fi

# --against: each copy runs its own e2e_bench.py (and, through PYTHONPATH, its own package).
rev=$(basename "$AGAINST" .tgz)
other=/tmp/compare/$rev
rm -rf "$other" && mkdir -p "$other" && tar -xzf "$AGAINST" -C "$other" \
  || fail "unpacking $AGAINST failed"
results=/tmp/compare/results && rm -rf "$results" && mkdir -p "$results"
code=0
for ((round = 1; round <= ROUNDS; round++)); do
  for copy in head "$rev"; do
    root=$PWD; [[ $copy == head ]] || root=$other
    left=$((CALL_LIMIT_S - SECONDS))
    name=${copy}_$round
    step "round $round, $copy: bench/e2e_bench.py $* (deadline ${left} s)"
    (cd "$root" && PYTHONPATH=$root "$PY" bench/e2e_bench.py --results-dir "$results/$name" \
      --deadline-s "$left" "$@" > "$results/$name.log" 2>&1) || code=1
    grep -E '^[|] [0-9]+ [|]' "$results/$name"/e2e_*.md 2>/dev/null | cut -d'|' -f2-12 \
      || tail -n 5 "$results/$name.log"
  done
done
tar -czf "$OUTDIR/compare.tgz" -C "$results" . || fail "packing the results failed"
step "finished (exit $code): $OUTDIR/compare.tgz"
exit "$code"
