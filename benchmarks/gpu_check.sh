#!/usr/bin/env bash
# The one-shot GPU check (issue 10): benchmarks/bench_gpu.py's full form under a hard time limit, from a plain
# checkout with the machine's own Python (torch, torchvision, numpy, Pillow; no virtualenv, Ray or faiss needed).
#
#   OUT=/some/dir benchmarks/gpu_check.sh            # -> $OUT/bench_gpu.md, bench_gpu.json, bench_gpu.log
#   PYTHON=python3.12 LIMIT_S=480 benchmarks/gpu_check.sh --parts 1,2   # extra arguments go to bench_gpu.py
#
# The table is rewritten after every part, so a run cut off by the limit still leaves the parts it finished.
# Exit status: bench_gpu.py's (0 all parts ran, 1 a part failed), or 124 when the limit stopped it.
set -u -o pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out_dir="${OUT:-.}"
python="${PYTHON:-python3}"
limit_s="${LIMIT_S:-480}"  # the issue's 8 minutes, generation of the JPEGs included

mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"
cd "$repo"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# SIGTERM first (bench_gpu.py then writes what it has and ends its child processes), SIGKILL 20 s later.
timeout --kill-after=20 "$limit_s" "$python" benchmarks/bench_gpu.py --out "$out_dir/bench_gpu.md" "$@" \
    2>&1 | tee "$out_dir/bench_gpu.log"
status=${PIPESTATUS[0]}
if [ "$status" -eq 124 ]; then
    echo "gpu_check.sh: stopped by the ${limit_s} s limit; $out_dir/bench_gpu.md holds the parts that finished" >&2
fi
exit "$status"
