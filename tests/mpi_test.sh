#!/usr/bin/env bash
# The data-parallel tests (docs/MPI.md): `make mpi-test`, and .ci/run when Open MPI is
# installed. Every run is mpirun -np 2 (or 3) on this machine, 1 thread per rank:
#   1. build/mpi_step: optimizer steps on a global batch sharded over the ranks equal one
#      process's steps on the whole batch (weights, BN statistics, EMA, momentum, loss
#      items; --sync-bn), also with uneven shards and a batch smaller than the ranks, and
#      with 3 ranks; without --sync-bn the ranks still agree but the step differs;
#   2. gelan train, 3 epochs on the shapes set: results.csv of 2 ranks (--sync-bn,
#      --dist-check 1) equals that of one process, within what rounding alone does to this
#      run: one process on 2 threads instead of 1 sums in another order, and a fresh model
#      at the warmup's bias LR 0.1 amplifies that (here ~1e-4 after 6 steps, percents
#      after 12: the runs are short on purpose); at least 2e-3 (per-rank BN: ~5e-2);
#   3. a rank that stops (SIGSTOP) ends the run within the timeout, with an error naming it,
#      the last checkpoint intact: resuming it on ONE process ends at the same results;
#   4. a rank that dies (SIGKILL) ends the run with mpirun naming it; resuming on 2 ranks
#      ends at the same results.
# usage: tests/mpi_test.sh [BUILD_DIR]   (needs BUILD_DIR/gelan and BUILD_DIR/mpi_step)
set -uo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
B=${B%/}
MPIRUN=(mpirun --allow-run-as-root --oversubscribe)
command -v mpirun >/dev/null || { echo "mpi test: no mpirun (Debian: openmpi-bin libopenmpi-dev)" >&2; exit 1; }
for p in gelan mpi_step; do
    [ -x "$B/$p" ] || { echo "mpi test: no $B/$p (make B=$B MPI=1 $B/gelan $B/mpi_step)" >&2; exit 1; }
done
ldd "$B/gelan" | grep -q libmpi || { echo "mpi test: $B/gelan was built without MPI (make MPI=1)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/gelan_mpi_test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAILED: $*"; failed=$((failed + 1)); }

# ---- 1. steps in memory ---------------------------------------------------------------
step() { # NP ARGS...: one mpi_step run, its lines indented
    local np=$1
    shift
    if "${MPIRUN[@]}" -np "$np" "$B/mpi_step" "$@" >"$tmp/step.log" 2>&1; then
        ok "mpi_step -np $np $*"
    else
        bad "mpi_step -np $np $*"
    fi
    grep -vE '^-+$|^$' "$tmp/step.log" | sed 's/^/    /'
}
step 2 --sync-bn                                     # the acceptance: one step, batch 8 = 4 + 4
step 2 --sync-bn --batch 5 --images 11 --steps 3     # shards 3 + 2, then a batch of 1 on rank 0
step 3 --sync-bn --batch 8 --images 8                # shards 3 + 3 + 2
step 2 --expect-differ                               # per-rank BN statistics (the default)

# ---- 2. three epochs through the command line ----------------------------------------------
printf 'synthetic: shapes\ntrain_count: 16\nval_count: 8\nimg: 96\nseed: 0\n' >"$tmp/shapes.yaml"
ARGS=(--cfg tests/configs/gelan-tiny.yaml --data "$tmp/shapes.yaml" --img 96 --batch 8 --nbs 8 --epochs 3
      --workers 1 --project "$tmp/runs")

# largest relative difference of two results.csv (the header and row count must match)
csv_diff() {
    awk -F, 'NR == FNR { a[FNR] = $0; n = FNR; next }
        { m = FNR; split(a[FNR], x, ","); if (FNR == 1) { if ($0 != a[1]) bad = 1; next }
          for (i = 1; i <= NF; i++) { d = x[i] - $i; if (d < 0) d = -d; r = $i < 0 ? -$i : $i; r = r > 1e-3 ? r : 1e-3
              if (d / r > w) w = d / r } }
        END { if (m != n || bad) { print "different shapes"; exit 1 } printf "%.2g\n", w }' "$1" "$2"
}
# SPREAD-OK: csv_diff of two runs <= TOL
same_csv() {
    local d
    d=$(csv_diff "$1" "$2") || { echo " $d"; return 1; }
    awk -v d="$d" -v t="$TOL" 'BEGIN { exit !(d <= t) }' && echo " $d" || { echo " $d > $TOL"; return 1; }
}

"$B/gelan" train "${ARGS[@]}" --threads 1 --name ref >"$tmp/ref.log" 2>&1 || { cat "$tmp/ref.log"; bad "one-process reference run"; }
"$B/gelan" train "${ARGS[@]}" --threads 2 --name ref2 >"$tmp/ref2.log" 2>&1 || { cat "$tmp/ref2.log"; bad "2-thread reference"; }
SPREAD=$(csv_diff "$tmp/runs/ref/results.csv" "$tmp/runs/ref2/results.csv") || SPREAD=0
TOL=$(awk -v s="$SPREAD" 'BEGIN { t = 3 * s; if (t < 2e-3) t = 2e-3; printf "%.2g", t }')
echo "    rounding alone: one process on 1 and on 2 threads differ by up to $SPREAD (relative); tolerance $TOL"
if "${MPIRUN[@]}" -np 2 "$B/gelan" train "${ARGS[@]}" --threads 1 --name two --sync-bn --dist-check 1 >"$tmp/two.log" 2>&1; then
    if diff=$(same_csv "$tmp/runs/ref/results.csv" "$tmp/runs/two/results.csv"); then
        ok "3 epochs on 2 ranks (--sync-bn, --dist-check 1): results.csv equals one process's (differs by$diff)"
    else
        bad "3 epochs on 2 ranks: results.csv differs from one process's by$diff"
    fi
    paste -d, "$tmp/runs/ref/results.csv" "$tmp/runs/two/results.csv" | cut -d, -f1-4,13-15 |
        sed 's/^/    epoch,box,cls,dfl of 1 process | box,cls,dfl of 2 ranks: /'
else
    tail -5 "$tmp/two.log"
    bad "3 epochs on 2 ranks"
fi

# ---- 3, 4. a rank that hangs or dies -------------------------------------------------------
rank_pid() { # the pid of rank $1 of the run whose environment has GELAN_MPI_TEST_RUN=$2
    local p env
    for p in $(pgrep -f "gelan train"); do
        env=$( (tr '\0' '\n' <"/proc/$p/environ") 2>/dev/null) || continue
        if grep -qx "GELAN_MPI_TEST_RUN=$2" <<<"$env" && grep -qx "OMPI_COMM_WORLD_RANK=$1" <<<"$env"; then
            echo "$p"
            return
        fi
    done
}
# NAME SIGNAL: starts 2 ranks, sends SIGNAL to rank 1 once epoch 0's checkpoint is written
fault_run() {
    local name=$1 sig=$2 pid r1 t0
    GELAN_MPI_TEST_RUN=$tmp/$name GELAN_DIST_TIMEOUT=5 timeout 120 "${MPIRUN[@]}" -np 2 "$B/gelan" train "${ARGS[@]}" --threads 1 --name "$name" --sync-bn \
        >"$tmp/$name.log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do [ -e "$tmp/runs/$name/last.safetensors" ] && break; sleep 0.05; done
    r1=$(rank_pid 1 "$tmp/$name")
    t0=$(date +%s)
    if [ -n "$r1" ]; then kill "-$sig" "$r1"; fi
    wait "$pid"
    local rc=$?
    echo "    $name: rank 1 (pid ${r1:-?}) got SIG$sig; mpirun exited $rc after $(($(date +%s) - t0)) s"
    [ "$rc" -ne 0 ] && [ -n "$r1" ]
}

if fault_run hang STOP && grep -q "rank 1 did not answer" "$tmp/hang.log"; then
    ok "a stopped rank: the run ends with an error naming rank 1"
    grep -m1 "did not answer" "$tmp/hang.log" | sed 's/.*\(dist: \)/    \1/'
else
    grep -a "gelan train\|rank" "$tmp/hang.log" | tail -5
    bad "a stopped rank: no error naming rank 1"
fi
if "$B/gelan" train --resume --project "$tmp/runs" --name hang --threads 1 >"$tmp/hang2.log" 2>&1 &&
    diff=$(same_csv "$tmp/runs/ref/results.csv" "$tmp/runs/hang/results.csv"); then
    ok "its last checkpoint resumes on 1 process and ends at one process's results"
else
    tail -3 "$tmp/hang2.log"
    bad "resuming the stopped run on 1 process:${diff:-}"
fi

if fault_run dead KILL && grep -q "process rank 1 .*exited on signal 9" "$tmp/dead.log"; then
    ok "a killed rank: the run ends, mpirun names rank 1"
else
    grep -a "gelan train\|rank" "$tmp/dead.log" | tail -5
    bad "a killed rank: the run did not end naming rank 1"
fi
if "${MPIRUN[@]}" -np 2 "$B/gelan" train --resume --project "$tmp/runs" --name dead --threads 1 --sync-bn \
    >"$tmp/dead2.log" 2>&1 && diff=$(same_csv "$tmp/runs/ref/results.csv" "$tmp/runs/dead/results.csv"); then
    ok "its last checkpoint resumes on 2 ranks and ends at one process's results"
else
    tail -3 "$tmp/dead2.log"
    bad "resuming the killed run on 2 ranks:${diff:-}"
fi

echo "mpi: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
