#!/usr/bin/env bash
# The code of an earlier revision for a same-call comparison on the GPU machine
# (run_on_gpu.sh --against): what e2e_bench.py and the nodes run, without bench/results.
#   bash bench/device/pack_rev.sh 203f69b      # -> .compare/203f69b.tgz (about 0.3 MB)
# Carry ".compare" with the kit.
set -euo pipefail
cd "$(dirname "$0")/../.."
rev=${1:?usage: pack_rev.sh REVISION}
short=$(git rev-parse --short "$rev^{commit}") || { echo "pack_rev: $rev is not a commit" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git archive --format=tar "$short" multicam_ros bench tools launch multicam_testbed setup.py \
  package.xml resource | tar -x -C "$tmp"
rm -rf "$tmp/bench/results"
mkdir -p .compare
tar -czf ".compare/$short.tgz" -C "$tmp" .
echo "pack_rev: .compare/$short.tgz ($(du -k ".compare/$short.tgz" | cut -f1) KB); carry \".compare\""
