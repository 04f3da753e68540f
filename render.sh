#!/usr/bin/env bash
# Reenactment videos for trained avatars.
#
#   ./render.sh                       every trained model under output/
#   ./render.sh output/A output/B     these model folders
#
# For each avatar: self-reenactment (its held-out test sequence, with ground truth, and its
# own subject's FREE sequence when the data has one: <id>_FREE* beside the training folder, the
# id taken from the folder name by utils/subject_ids.py; none: one line says so and it is
# skipped) and cross-identity reenactment driven by the other avatars' FREE sequences (and the
# synthetic identities' under data/synthetic), seen by the avatar's own front camera (camera 8).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh

models=("$@")
if [[ ${#models[@]} -eq 0 ]]; then
    for dir in output/*/; do
        [[ -f "$dir/config.yaml" ]] && models+=("${dir%/}")
    done
fi
[[ ${#models[@]} -gt 0 ]] || { echo "error: no trained models found; run ./run.sh first" >&2; exit 2; }

# A subject's own FREE sequence (<id>_FREE* beside its training folder; the same subject id),
# or nothing, with one line on stderr saying so.
driving_sequence() { "$PYTHON" -m utils.subject_ids free-sequence "$1"; }
source_of() { "$PYTHON" -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]+'/config.yaml'))['source_path'])" "$1"; }

# Cross-identity drivers also include FREE sequences of synthetic identities nobody trained on.
declare -A own_free=()
drivers=()
for model in "${models[@]}"; do
    d="$(driving_sequence "$(source_of "$model")")"
    own_free["$model"]="$d"
    if [[ -n "$d" ]]; then drivers+=("$d"); fi
done
if [[ -d data/synthetic ]]; then
    while IFS= read -r d; do drivers+=("$(realpath "$d")"); done < <(find data/synthetic -mindepth 2 -maxdepth 2 -type d -name '*FREE*' | sort)
fi

for model in "${models[@]}"; do
    own="${own_free[$model]}"
    echo "== $model: self-reenactment"
    "$PYTHON" render.py -m "$model" --split test --video
    if [[ -n "$own" ]]; then "$PYTHON" render.py -m "$model" --target "$own" --video; fi
    for d in $(printf '%s\n' "${drivers[@]}" | sort -u); do
        [[ "$d" == "$own" ]] && continue
        echo "== $model: cross-identity reenactment driven by $(basename "$d")"
        "$PYTHON" render.py -m "$model" --target "$d" --camera 8 --video
    done
done
echo "== videos: find output -name '*.mp4'"
