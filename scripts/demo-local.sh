#!/usr/bin/env bash
# `make demo ENV=local`: the claims job on the local stack. The `local` environment is deployed
# into the moto emulator (S3, SQS), the analytics store is PostgreSQL on loopback, and the
# manager and two workers run here as processes, exactly as they would on the grid's
# instances. The results are checked against the single-process reference.
set -euo pipefail

BIN=${BIN:?the directory holding the batchgrid binaries}
MOTO_PORT=${MOTO_PORT:-5055}
MANAGER_PORT=${MANAGER_PORT:-8089}
ROWS=${DEMO_LOCAL_ROWS:-500000}
WORKERS=${WORKERS:-2}
DIR=build/demo-local
export PATH="$BIN:$PATH"

export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_EC2_METADATA_DISABLED=true
export BATCHGRID_DATABASE_URL=${BATCHGRID_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/batchgrid_local}
export BATCHGRID_MANAGER_URL=http://127.0.0.1:$MANAGER_PORT
# A fresh token per demo: the manager and the CLI share it through the environment only.
BATCHGRID_API_TOKEN=${BATCHGRID_API_TOKEN:-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')}
export BATCHGRID_API_TOKEN

database=${BATCHGRID_DATABASE_URL##*/}
admin_url=${BATCHGRID_DATABASE_URL%/*}/postgres
if ! psql "$admin_url" -tAc 'select 1' >/dev/null 2>&1; then
  echo "make demo ENV=local needs PostgreSQL at ${admin_url%/*} (or set BATCHGRID_DATABASE_URL)" >&2
  exit 1
fi
if [ "$(psql "$admin_url" -tAc "select 1 from pg_database where datname = '$database'")" != 1 ]; then
  echo "creating database $database"
  psql "$admin_url" -qc "create database \"$database\"" >/dev/null
fi

echo "deploying the local environment into the emulator (nothing to do if it is up to date)..."
batchgrid deploy local >/dev/null

mkdir -p "$DIR"
if [ ! -s "$DIR/claims.csv" ] || [ "$(cat "$DIR/claims.params" 2>/dev/null)" != "$ROWS" ]; then
  batchgrid-claims generate --rows "$ROWS" --seed 42 --out "$DIR/claims.csv"
  echo "$ROWS" > "$DIR/claims.params"
fi
rm -rf "$DIR/reference" "$DIR/results"
batchgrid-claims reference "$DIR/claims.csv" "$DIR/reference"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

echo "starting the manager on 127.0.0.1:$MANAGER_PORT and $WORKERS workers (logs in $DIR/)"
batchgrid manager --env local --listen "127.0.0.1:$MANAGER_PORT" --spool "$DIR/spool" 2> "$DIR/manager.log" &
pids+=($!)
for i in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$MANAGER_PORT") 2>/dev/null && break; sleep 0.2; done
if ! (exec 3<>"/dev/tcp/127.0.0.1/$MANAGER_PORT") 2>/dev/null; then
  echo "the manager did not start:" >&2; cat "$DIR/manager.log" >&2; exit 1
fi
for i in $(seq "$WORKERS"); do
  batchgrid worker --env local --id "demo-worker-$i" --scratch-dir "$DIR/scratch-$i" 2> "$DIR/worker-$i.log" &
  pids+=($!)
done

batchgrid submit examples/claims/job.yaml --env local --input "$DIR/claims.csv" --watch --download "$DIR/results"
echo
if diff -r "$DIR/reference" "$DIR/results" >/dev/null; then
  echo "the results equal the single-process reference:"
else
  echo "the results differ from the single-process reference:" >&2
  diff -r "$DIR/reference" "$DIR/results" >&2 || true
  exit 1
fi
tail -n 1 "$DIR/results/totals.csv"
cat "$DIR/results/summary.txt"
