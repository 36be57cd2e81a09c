#!/usr/bin/env bash
# The scale-out nightly rehearsed on one host (docs/scale-out.md): a build job
# exports the kernel, an image job the guest image; two test jobs, each in its own
# empty HARNESS_CACHE (as fresh runners), import both and run one claims shard each; merge puts them together and is
# compared with one process that ran every claim; a merge with a shard missing must
# fail naming it. Prints the time of each step.
#   scripts/scale-rehearsal.sh WORKDIR [KIND [WHAT]]
# KIND: source (default) or source-latest; WHAT: the plan's --what (default claims;
# claims,survey,selftests adds a survey job and a selftests job). The one process the
# merge is compared with runs the claims only.
# The build job uses the normal cache ($HARNESS_CACHE or ~/.cache/harness), as a build
# runner with its ccache restored would; the test jobs start from nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:?usage: scripts/scale-rehearsal.sh WORKDIR [KIND]}
kind=${2:-source}
what=${3:-claims}
harness=$PWD/.venv/bin/harness
rm -rf "$work" && mkdir -p "$work"
times="$work/times.txt"

step() {  # step NAME COMMAND...: run, log, record its seconds and exit status
    local name=$1 start rc=0
    shift
    start=$(date +%s%N)
    "$@" > "$work/$name.log" 2>&1 || rc=$?
    awk -v n="$name" -v s="$start" -v e="$(date +%s%N)" -v rc="$rc" \
        'BEGIN { printf "%-32s %8.1f s  exit %s\n", n, (e - s) / 1e9, rc }' | tee -a "$times"
    return 0
}

step build "$harness" kernel --kernel "$kind" --export "$work/kernels/$kind.tar.gz"
step image "$harness" image --export "$work/kernels/image.tar.gz"
step plan "$harness" plan --kernel "$kind" --what "$what" --shards 2 --survey-shards 2 --selftests-shards 2 \
    --artifact-dir "$work/kernels" \
    --out "$work/plan.json"
jobs=$(python3 -c 'import json,sys; print(" ".join(j["job"] for j in json.load(open(sys.argv[1]))["jobs"]))' \
    "$work/plan.json")
for job in $jobs; do
    HARNESS_CACHE="$work/cache-$job" step "shard-$job" "$harness" shard "$work/plan.json" "$job" \
        --out "$work/shards/$job"
done
step one-process "$harness" run --kernel "$kind" --out "$work/one"
step merge "$harness" merge "$work/shards" --plan "$work/plan.json" --out "$work/merged"
step compare "$harness" compare "$work/one" "$work/merged"
first=${jobs%% *}
mkdir -p "$work/partial" && cp -a "$work/shards/$first" "$work/partial/"
step merge-missing "$harness" merge "$work/partial" --plan "$work/plan.json" --out "$work/merged-partial"
grep -h "missing shard" "$work/merge-missing.log" || echo "merge-missing: no 'missing shard' line" | tee -a "$times"
du -h "$work/kernels/$kind.tar.gz" "$work/kernels/image.tar.gz" | tee -a "$times"
