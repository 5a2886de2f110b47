#!/usr/bin/env bash
# What compaction buys a build: ROUNDS rounds of pulls of the frequent feeds from the simulator
# (its clock at six simulated hours a second, so each round lands something, as a five-minute
# schedule does), then the incremental build with nothing new timed three times; then
# `chiso compact --all`, one build (it rebuilds what reads the compacted datasets), and the
# same three timings. Usage: tools/compaction-bench.sh [ROUNDS] [DIR]; CHISO=path/to/chiso.
set -euo pipefail
ROUNDS=${1:-1000}
DIR=${2:-/var/tmp/compaction-bench}
HERE=$(cd "$(dirname "$0")/.." && pwd)
CHISO=${CHISO:-$HERE/target/release/chiso}
PORT=${PORT:-8613}
rm -rf "$DIR" && mkdir -p "$DIR"
"$CHISO" sim serve --port "$PORT" --speed 21600 >"$DIR/sim.log" 2>&1 &
SIM=$!
trap 'kill $SIM' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/_sim/stats" >/dev/null && break; sleep 0.2; done
for v in PORTAL PAYMENTS REPORTING CATALOGUE REGISTRY CALENDAR NATIONAL_REPORT; do
  export "CHISO_${v}_URL=http://127.0.0.1:$PORT"
done
c() { "$CHISO" --config "$HERE/chiso.toml" --dir "$DIR/wh" "$@"; }
c run --all >/dev/null
for i in $(seq "$ROUNDS"); do c run dossiers dossier_steps payments ratings petitions >/dev/null; done
c build >/dev/null
files() { find "$DIR/wh/lake" -name '*.parquet' -not -path '*_quarantine*' | wc -l; }
timed() {
  for _ in 1 2 3; do
    s=$(date +%s.%N); c build >/dev/null; e=$(date +%s.%N)
    printf '%s %.2f s\n' "$1" "$(echo "$e - $s" | bc)"
  done
}
echo "lake files before compaction: $(files)"
timed "incremental build, nothing new, before compaction:"
c compact --all --older-than 0s --min-files 2
s=$(date +%s.%N); c build >/dev/null; e=$(date +%s.%N)
printf 'the build after compaction (rebuilds what reads the compacted datasets): %.2f s\n' "$(echo "$e - $s" | bc)"
c build >/dev/null
c compact --all --older-than 0s --min-files 2 | grep -i retired || true
echo "lake files after compaction: $(files)"
timed "incremental build, nothing new, after compaction:"
