#!/usr/bin/env bash
# Ship a trained candidate as the default weights and regenerate everything that is derived from them.
#
#   bash weights/release.sh weights/stageN/faceanalysis_s128_stageN.safetensors [DATA_ROOT]
#
# Run from the repository root in the `.[test,export,teachers,index]` venv. Steps (each one refuses nothing
# it does not own: only the shipped files and the generated reports listed here are replaced):
#   1. copy the candidate to faceanalysis/assets/faceanalysis_s128.safetensors (fp16, config embedded)
#   2. fp32 ONNX into faceanalysis/assets (the default runtime), int8 ONNX + int8 TFLite into weights/export,
#      each parity-checked against PyTorch on held-out pack crops (the export refuses to write a miss)
#   3. the `verify` thresholds (LFW View-2; one pass and with tta='flip') and the README block
#   4. `faceanalysis eval` on the test splits: docs/eval and the README table; the same with flip test-time
#      augmentation (docs/eval_flip) and its gain and cost (benchmarks/tta.md)
#   5. the ARM (aarch64, qemu) parity of both int8 artifacts: export/arm/emulated_parity.md and export/README.md
#   6. photo-collection index quality (docs/index_quality.md, docs/index_clusters.png)
#   7. the demo screenshot (docs/demo.png) and the web demo screenshot (docs/web_demo.png, when Chromium is there)
# About 35 min on one core of a 2-core x86 CPU. The model card's release entry and the README's quick-start output
# are written by hand afterwards (`faceanalysis analyze examples/astronaut.jpg`). THREADS (default 1) sets the
# thread count of every step; CORES (e.g. "1") pins them with taskset; FROM=N skips the steps before step N (to
# finish a release whose step N failed, e.g. FROM=5 after fixing what broke the ARM parity run).
set -euo pipefail
cand=${1:?usage: weights/release.sh CANDIDATE.safetensors [DATA_ROOT]}
data=${2:-../shared/data}
threads=${THREADS:-1}
pin=()
if [[ -n "${CORES:-}" ]]; then pin=(taskset -c "$CORES"); fi
export OMP_NUM_THREADS=$threads
from=${FROM:-1}
step=0
run() { echo "== $*" >&2; "${pin[@]}" "$@"; }
next_step() { step=$1; [[ $step -ge $from ]] && echo "=== step $step" >&2; [[ $step -ge $from ]]; }
[[ -f $cand ]] || { echo "no such candidate: $cand" >&2; exit 2; }
[[ -d $data ]] || { echo "no data pack at $data" >&2; exit 2; }

shipped=faceanalysis/assets/faceanalysis_s128.safetensors
if ! cmp -s "$cand" "$shipped"; then cp "$cand" "$shipped"; fi
sha=$(sha256sum "$shipped" | cut -c1-12)
echo "shipping $cand as $shipped (sha256 $sha)" >&2

if next_step 2; then
run faceanalysis export --format onnx --precision fp32 --check --overwrite -o faceanalysis/assets --data-root "$data"
run faceanalysis export --format onnx --precision int8 --check --overwrite -o weights/export --data-root "$data"
run faceanalysis export --format tflite --precision int8 --check --overwrite -o weights/export --data-root "$data"
fi
if next_step 3; then run python -m faceanalysis.verification --data-root "$data" --update-readme README.md; fi
if next_step 4; then
run faceanalysis eval --threads "$threads" --report docs/eval --update-readme README.md --data-root "$data"
run faceanalysis eval --threads "$threads" --report docs/eval_flip --tta flip --no-examples --data-root "$data"
run python benchmarks/tta_gain.py --data-root "$data" --threads "$threads"
fi
if next_step 5; then run python export/arm/emulated_parity.py --data-root "$data" --threads "$threads" --update-readme export/README.md; fi
if next_step 6; then run python benchmarks/index_quality.py --data-root "$data" --workers "$threads"; fi
next_step 7 || exit 0

demo=$(mktemp -d)
trap 'rm -rf "$demo"' EXIT
run python demos/make_collage.py --data-root "$data" --out-dir "$demo"
run python demos/webcam.py --source "$demo/collage.png" --gallery "$demo/gallery" --backend torch \
    --no-display --max-frames 10 --screenshot docs/demo.png --overwrite
if [[ -d demos/web/node_modules ]] && command -v chromium >/dev/null; then
  run python demos/web/build.py
  run python demos/web/headless.py "demos/web/?threads=1&image=../../examples/astronaut.jpg" --page \
      --size 720x1000 --screenshot docs/web_demo.png
else
  echo "skipped docs/web_demo.png: needs demos/web/node_modules (npm ci) and chromium" >&2
fi
echo "done: now write the model card's release entry and the README quick-start output for sha256 $sha" >&2
