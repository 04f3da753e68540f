#!/usr/bin/env bash
# Train, render and evaluate avatars.
#
#   ./run.sh                          the built-in synthetic subject, CPU-sized demo schedule
#   ./run.sh SUBJECT_DIR [...]        each NeRSemble subject with the paper config (configs/tensorial.yaml)
#   ./run.sh --subjects FILE          subjects listed in FILE, one folder per line (# comments allowed)
#   ./run.sh ... -- --iterations 1000 options after "--" pass through to train.py
#
# Outputs go to output/<subject>/ (override with OUTPUT_ROOT=...). A GPU is used when present.
# Re-running continues unfinished runs (train.py --resume) and re-renders/evaluates.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh

OUTPUT_ROOT="${OUTPUT_ROOT:-output}"
subjects=()
train_args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --) shift; train_args=("$@"); break ;;
        --subjects)
            [[ -f "${2:-}" ]] || { echo "error: --subjects needs a file listing subject folders" >&2; exit 2; }
            while IFS= read -r line; do
                line="${line%%#*}"; line="$(echo "$line" | xargs)"
                [[ -n "$line" ]] && subjects+=("$line")
            done < "$2"
            shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) subjects+=("$1"); shift ;;
    esac
done

"$PYTHON" scripts/fetch_lpips_weights.py

if [[ ${#subjects[@]} -eq 0 ]]; then
    # The embedded default: a synthetic FLAME-format head and NeRSemble-format subject
    # (two identities, so that render.sh can show cross-identity reenactment).
    "$PYTHON" scripts/make_synthetic_subject.py --out data/synthetic --identities 2
    subjects=(data/synthetic/s000/UNION_s000_v16_DS5_whiteBg_staticOffset)
    method=(--config configs/tensorial.yaml --config configs/demo.yaml --flame data/synthetic/flame/flame2023.pkl)
else
    method=(--config configs/tensorial.yaml)
fi

models=()
start=$SECONDS
for subject in "${subjects[@]}"; do
    [[ -d "$subject" ]] || { echo "error: subject folder not found: $subject" >&2; exit 2; }
    name="$(basename "$(cd "$subject" && pwd)")"
    model="$OUTPUT_ROOT/$name"
    resume=()
    [[ -f "$model/config.yaml" ]] && resume=(--resume)
    echo "== $name: train"
    "$PYTHON" train.py -s "$subject" -m "$model" "${method[@]}" --eval "${resume[@]}" ${train_args[@]+"${train_args[@]}"}
    echo "== $name: render val and test"
    "$PYTHON" render.py -m "$model" --split val test --video --benchmark
    models+=("$model")
done

echo "== evaluate"
"$PYTHON" evaluate.py -m "${models[@]}" --out "$OUTPUT_ROOT/results_all.json"
echo "== done in $((SECONDS - start)) s (outputs under $OUTPUT_ROOT/)"
