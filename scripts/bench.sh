#!/usr/bin/env bash
# `make bench`: every figure next to a baseline measured in the same run, on this machine.
#   1. 10,000 `true` tasks through `batchgrid run --workers 2` vs `seq 10000 | xargs -P 2 -n 1 true`
#   2. no-op Rust processor tasks through the embedded queue and analytics store vs a plain
#      batched SQLite queue, and the rate at 10,000 vs 1,000,000 queued tasks
#   3. peak memory of the manager splitting a 2 GB input vs `cat` reading it
#   4. SQS requests per task of a 10,000-task job on the moto emulator, workers with their default
#      settings (target <= 0.35) and tuned by hand beside them, and the
#      manager's enqueue rate vs single SendMessage calls
#   5. priorities: a high-priority job's time to first task beside a 200,000-task low-priority
#      job vs on an idle grid, and two equal jobs' fair-share ratio
#   6. the dashboard's pages (job list, a job's page, /metrics) over a PostgreSQL history of
#      1,000 jobs and 5,000,000 attempts vs a plain SELECT count(*) of the attempts (target:
#      each page under 200 ms)
#   7. a job's 10,000 result files downloaded by the client from the moto emulator (presigned
#      URLs, 8 at a time) vs a plain parallel GetObject loop over the same keys; requests per
#      file (target <= 1.01 plus the listing pages)
#   8. the claims job at 1,000,000 and 10,000,000 claims: batchgrid run --workers 2 vs the
#      single-process reference and vs GNU parallel --pipepart running the same validate and
#      merge (targets: at 10M at most 0.8x the single process and faster than parallel; at 1M
#      at most 1.5x the single process), results byte-identical in every case
#   9. a bytes: split of a 2 GiB S3 object on moto: the manager's peak RSS (target < 100 MiB),
#      the share of the object it reads (< 1%), its spool's largest file (< 1 MiB), and the
#      split's time per 10,000 tasks
# Results are printed and written to build/bench/results.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR="${TARGET_DIR:-${CARGO_TARGET_DIR:-$PWD/target}}"
BIN="$TARGET_DIR/release"
OUT=build/bench
mkdir -p "$OUT"
RESULTS="$OUT/results.txt"
: > "$RESULTS"
say() { echo "$*" | tee -a "$RESULTS"; }
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }

say "# batchgrid benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"

# 1. Command tasks against xargs.
seq 10000 > "$OUT/10k.txt"
cat > "$OUT/true.yaml" <<JOB
name: bench-true
input:
  path: 10k.txt
split:
  lines: 1
stages:
  - name: "true"
    command: ["true"]
output:
  path: true-results
JOB
hyperfine --warmup 1 --runs "${BENCH_RUNS:-3}" --export-json "$OUT/true.json" \
  -n xargs 'seq 10000 | xargs -P 2 -n 1 true' \
  -n batchgrid "$BIN/batchgrid run $OUT/true.yaml --workers 2" | tee -a "$RESULTS"
read -r xargs_s grid_s < <(python3 -c "
import json; r = {x['command']: x['mean'] for x in json.load(open('$OUT/true.json'))['results']}
print(r['xargs'], r['batchgrid'])")
say "RESULT true_tasks: batchgrid ${grid_s}s vs xargs ${xargs_s}s = $(ratio "$grid_s" "$xargs_s")x (target <= 1.3x)"

# 2. Queue and analytics throughput (in-process, real worker, no-op processor).
cargo bench -q -p batchgrid-core --bench throughput 2>/dev/null | tee -a "$RESULTS"

# 5. Priorities and fair share (in-process, embedded grid, no-op tasks). Run here, before the
# 2 GB input is generated, so it does not compete with it for the disk.
cargo bench -q -p batchgrid-core --bench priorities 2>/dev/null | tee -a "$RESULTS"

# 6. The dashboard at month-end scale (PostgreSQL on 127.0.0.1:5432; the history is loaded once).
cargo bench -q -p batchgrid-core --bench pages 2>/dev/null | tee -a "$RESULTS"

# 3. Manager memory while splitting 2 GB.
BIG="$OUT/claims-2g.csv"
if [ ! -s "$BIG" ]; then
  echo "generating a 2 GB claims file..."
  "$BIN/batchgrid-claims" generate --rows 40000000 --seed 7 --out "$BIG" 2>/dev/null
fi
size=$(stat -c %s "$BIG")
cat > "$OUT/split.yaml" <<JOB
name: bench-split
input:
  path: claims-2g.csv
split:
  lines: 50000
  header: true
stages:
  - name: "noop"
    processor: noop
output:
  path: split-results
JOB
rm -rf "$OUT/split-state"
# The same split of a tenth of the input: flat memory means the same peak for both.
head -c $((size / 10)) "$BIG" > "$OUT/claims-200m.csv"
/usr/bin/time -f "%M %e" -o "$OUT/split-small.time" "$BIN/batchgrid" split "$OUT/split.yaml" --state-dir "$OUT/split-state" --input "$OUT/claims-200m.csv" > /dev/null
rm -rf "$OUT/split-state" "$OUT/claims-200m.csv"
/usr/bin/time -f "%M %e" -o "$OUT/cat.time" cat "$BIG" > /dev/null
/usr/bin/time -f "%M %e" -o "$OUT/split.time" "$BIN/batchgrid" split "$OUT/split.yaml" --state-dir "$OUT/split-state" > /dev/null
read -r cat_kb cat_s < "$OUT/cat.time"
read -r split_kb split_s < "$OUT/split.time"
read -r small_kb small_s < "$OUT/split-small.time"
rm -rf "$OUT/split-state"
say "RESULT split_2g: input $((size / 1048576)) MiB; manager peak RSS $((split_kb / 1024)) MiB in ${split_s}s (target < 100 MiB); a tenth of it: $((small_kb / 1024)) MiB in ${small_s}s; cat peak RSS $((cat_kb / 1024)) MiB in ${cat_s}s"

# 4. SQS requests per task and the enqueue rate, against moto. Its stderr is kept: when moto is
# missing, the reason is there.
if ! cargo bench -q -p batchgrid-core --bench sqs_requests 2> "$OUT/sqs_requests.err" | tee -a "$RESULTS"; then
  cat "$OUT/sqs_requests.err" >&2
  exit 1
fi

# 7. Downloading a job's results from moto, against a plain parallel GET loop.
if ! cargo bench -q -p batchgrid-core --bench results_download 2> "$OUT/results_download.err" | tee -a "$RESULTS"; then
  cat "$OUT/results_download.err" >&2
  exit 1
fi
# 9. A bytes: split of a 2 GiB S3 object on moto: the manager's memory, reads and disk.
cargo bench -q -p batchgrid-core --bench s3_split 2>/dev/null | tee -a "$RESULTS"

# 8. The claims job against one process and GNU parallel.
command -v parallel >/dev/null || { echo "installing GNU parallel (apt)..."; (apt-get update -qq && apt-get install -y -qq parallel) >/dev/null; }
for rows in 1000000 10000000; do
  input="$OUT/claims-$rows.csv"
  [ -s "$input" ] || "$BIN/batchgrid-claims" generate --rows "$rows" --seed 42 --out "$input" 2>/dev/null
  sed -e "s|../../build/demo/claims.csv|$PWD/$input|" -e "s|../../build/demo/results|$PWD/$OUT/claims-grid|" \
    examples/claims/job.yaml > "$OUT/claims-$rows.yaml"
  hyperfine --warmup 1 --runs "${BENCH_RUNS:-3}" --export-json "$OUT/claims-$rows.json" \
    -n reference "rm -rf $OUT/claims-ref && $BIN/batchgrid-claims reference $input $OUT/claims-ref" \
    -n parallel "rm -rf $OUT/claims-par && mkdir -p $OUT/claims-par/parts && parallel --pipepart -a $input --header 1 --block -1 -j2 '$BIN/batchgrid-claims validate /dev/stdin $OUT/claims-par/parts/{#}' && $BIN/batchgrid-claims merge $OUT/claims-par/parts $OUT/claims-par/out" \
    -n batchgrid "rm -rf $OUT/claims-grid $OUT/claims-state && PATH=$BIN:\$PATH $BIN/batchgrid run $OUT/claims-$rows.yaml --workers 2 --state-dir $OUT/claims-state" | tee -a "$RESULTS"
  for f in totals.csv rejects.csv summary.txt; do
    cmp -s "$OUT/claims-ref/$f" "$OUT/claims-grid/$f" || { echo "claims $rows: batchgrid's $f differs from the reference" >&2; exit 1; }
    cmp -s "$OUT/claims-ref/$f" "$OUT/claims-par/out/$f" || { echo "claims $rows: parallel's $f differs from the reference" >&2; exit 1; }
  done
  read -r ref_s par_s grid_s < <(python3 -c "
import json; r = {x['command']: x['median'] for x in json.load(open('$OUT/claims-$rows.json'))['results']}
print(r['reference'], r['parallel'], r['batchgrid'])")
  say "RESULT claims_$rows: batchgrid ${grid_s}s, one process ${ref_s}s ($(ratio "$grid_s" "$ref_s")x), GNU parallel ${par_s}s ($(ratio "$grid_s" "$par_s")x); results byte-identical"
  # One more run for its report: the time no task was running (item 2's "critical path plus
  # no more than about 100 ms").
  rm -rf "$OUT/claims-grid" "$OUT/claims-state"
  PATH="$BIN:$PATH" "$BIN/batchgrid" run "$OUT/claims-$rows.yaml" --workers 2 --state-dir "$OUT/claims-state" --json > "$OUT/claims-$rows-report.json"
  say "RESULT claims_${rows}_waiting: $(python3 -c "
import json; r = json.load(open('$OUT/claims-$rows-report.json')); w = r['waiting']
print(f\"{r['wall_ms']} ms wall, of which no task running {w['before_first_ms'] + w['between_ms'] + w['after_last_ms']} ms \"
      f\"({w['before_first_ms']} before the first task, {w['between_ms']} between, {w['after_last_ms']} after the last)\")")"
done
echo "results written to $RESULTS"
