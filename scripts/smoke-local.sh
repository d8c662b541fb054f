#!/usr/bin/env bash
# `make smoke ENV=local`: `batchgrid smoke local` against the local stack. On AWS the manager
# and the workers run on the stack's instances; the emulator's instances run nothing, so here a
# manager and one worker run as processes in their place. The manager sizes the emulator's
# worker group as it would a real one (desired capacity up with the job, back to the minimum
# after the scale-in delay), and the smoke command is the same one a pipeline runs on AWS.
set -euo pipefail

BIN=${BIN:?the directory holding the batchgrid binaries}
MANAGER_PORT=${MANAGER_PORT:-8090}
OUT=${OUT:-build}
DIR=${SMOKE_DIR:-$OUT/smoke-local}
export PATH="$BIN:$PATH"
export BATCHGRID_DATABASE_URL=${BATCHGRID_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/batchgrid_local}
export BATCHGRID_MANAGER_URL=http://127.0.0.1:$MANAGER_PORT
# A fresh token per run: the manager and the CLI share it through the environment only.
BATCHGRID_API_TOKEN=${BATCHGRID_API_TOKEN:-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')}
export BATCHGRID_API_TOKEN

if [ ! -s "$OUT/local/outputs.json" ]; then
  echo "no $OUT/local/outputs.json: deploy first (make deploy ENV=local)" >&2
  exit 2
fi
database=${BATCHGRID_DATABASE_URL##*/}
admin_url=${BATCHGRID_DATABASE_URL%/*}/postgres
if [ "$(psql "$admin_url" -tAc "select 1 from pg_database where datname = '$database'" 2>/dev/null)" != 1 ]; then
  echo "creating database $database"
  psql "$admin_url" -qc "create database \"$database\"" >/dev/null
fi

mkdir -p "$DIR"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

places=(--environments "${ENVIRONMENTS:-environments}" --out "$OUT")
echo "starting a manager on 127.0.0.1:$MANAGER_PORT and a worker in place of the grid's instances (logs in $DIR/)"
batchgrid manager --env local "${places[@]}" --listen "127.0.0.1:$MANAGER_PORT" --spool "$DIR/spool" 2> "$DIR/manager.log" &
pids+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$MANAGER_PORT") 2>/dev/null && break; sleep 0.2; done
if ! (exec 3<>"/dev/tcp/127.0.0.1/$MANAGER_PORT") 2>/dev/null; then
  echo "the manager did not start:" >&2
  cat "$DIR/manager.log" >&2
  exit 1
fi
batchgrid worker --env local "${places[@]}" --id smoke-worker --scratch-dir "$DIR/scratch" 2> "$DIR/worker.log" &
pids+=($!)

batchgrid smoke local "${places[@]}" --timeout "${SMOKE_TIMEOUT:-2m}"
