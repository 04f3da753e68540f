#!/usr/bin/env bash
# Train, render and evaluate avatars.
#
#   ./run.sh                          the built-in synthetic subject, CPU-sized demo schedule
#   ./run.sh SUBJECT_DIR [...]        each NeRSemble subject with the paper config (configs/tensorial.yaml),
#                                     one job each through launch.py --launcher local (one per GPU at a time)
#   ./run.sh --subjects FILE          subjects listed in FILE, one folder per line (# comments allowed)
#   ./run.sh ... -- --iterations 1000 options after "--" pass through to train.py
#
# Outputs go to output/<subject>/ (override with OUTPUT_ROOT=...). A GPU is used when present.
# Re-running continues unfinished runs (train.py --resume) and re-renders/evaluates.
# On a SLURM cluster: python launch.py ... --launcher slurm (README, "Many subjects on a cluster").
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh

OUTPUT_ROOT="${OUTPUT_ROOT:-output}"
launch_args=()
train_args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --) shift; train_args=("$@"); break ;;
        --subjects)
            [[ -f "${2:-}" ]] || { echo "error: --subjects needs a file listing subject folders" >&2; exit 2; }
            launch_args+=(--subjects "$2")
            shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) launch_args+=("$1"); shift ;;
    esac
done

"$PYTHON" scripts/fetch_lpips_weights.py

if [[ ${#launch_args[@]} -gt 0 ]]; then
    # Subjects given: one local job each (launch.py), then one table over all of them.
    exec "$PYTHON" launch.py "${launch_args[@]}" --launcher local --output-root "$OUTPUT_ROOT" \
        --config configs/tensorial.yaml --video --benchmark -- ${train_args[@]+"${train_args[@]}"}
fi

# The embedded default: a synthetic FLAME-format head and NeRSemble-format subject
# (two identities, so that render.sh can show cross-identity reenactment).
"$PYTHON" scripts/make_synthetic_subject.py --out data/synthetic --identities 2
subject=data/synthetic/s000/UNION_s000_v16_DS5_whiteBg_staticOffset
method=(--config configs/tensorial.yaml --config configs/demo.yaml --flame data/synthetic/flame/flame2023.pkl)
name="$(basename "$subject")"
model="$OUTPUT_ROOT/$name"
resume=()
[[ -f "$model/config.yaml" ]] && resume=(--resume)
start=$SECONDS
echo "== $name: train"
"$PYTHON" train.py -s "$subject" -m "$model" "${method[@]}" --eval "${resume[@]}" ${train_args[@]+"${train_args[@]}"}
echo "== $name: render val and test"
"$PYTHON" render.py -m "$model" --split val test --video --benchmark
echo "== evaluate (full frame, then the FLAME regions: head = face + hair_scalp, face, hair_scalp, neck, other)"
"$PYTHON" evaluate.py -m "$model" --out "$OUTPUT_ROOT/results_all.json"
echo "== done in $((SECONDS - start)) s (outputs under $OUTPUT_ROOT/)"
