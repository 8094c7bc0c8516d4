# jobs_crash_test.sh: kill -9 a running stoked in the middle of a multi-step job,
# restart it, and check the job finishes exactly once: each step's effect happens
# once, steps already committed do not run again, one "done". Also: a `once` step
# interrupted by a crash fails the job instead of running twice, and a graceful stop
# hands the job over without waiting for the lease.
source "$(dirname "$0")/lib.sh"

BIN=$STOKE_BUILD/tests/stoked-testjobs
DATA=$T_TMP/data
FX=$T_TMP/fx
mkdir -p "$FX"
CONF=$T_TMP/stoked.conf
printf 'job_lease = 2s\nworkers = 2\n' >"$CONF"
DB=$DATA/stoke.db

t_start_stoked "$BIN" "$DATA" -c "$CONF"
ID=$("$BIN" enqueue -c "$CONF" --data-dir "$DATA" test.steps "{\"dir\":\"$FX\",\"sleep_ms\":700}")
[[ "$ID" =~ ^[0-9]+$ ]] || fail "enqueue printed '$ID'"

# Kill it while step two runs.
t_wait 30 grep -q '^run 2 attempt 1$' "$FX/runs.log" || fail "step two never started"
kill -9 "$T_PID"
wait "$T_PID" 2>/dev/null || true
state=$(t_sql "$DB" "SELECT state FROM jobs WHERE id=$ID")
[ "$state" = running ] || fail "after kill -9 the job is '$state', expected running"
ok "killed stoked during step two"

t_start_stoked "$BIN" "$DATA" -c "$CONF"
t_wait 60 sh -c "[ \"\$(sqlite3 -cmd '.timeout 5000' '$DB' 'SELECT state FROM jobs WHERE id=$ID')\" = done ]" ||
	fail "job $ID did not finish after restart: $(t_sql "$DB" "SELECT state, error FROM jobs WHERE id=$ID")"

expected=$'step 0\nstep 1\nstep 2\nstep 3\nstep 4'
[ "$(cat "$FX/effects.log")" = "$expected" ] || fail "effects: $(cat "$FX/effects.log")"
runs=$(cat "$FX/runs.log")
# The crash is not the job's failure: the same attempt resumes (attempts 1, resumes 1).
want=$'run 0 attempt 1\nrun 1 attempt 1\nrun 2 attempt 1\nrun 2 attempt 1\nrun 3 attempt 1\nrun 4 attempt 1'
[ "$runs" = "$want" ] || fail "runs differ; got:
$runs"
[ "$(t_sql "$DB" "SELECT attempts || ' ' || resumes FROM jobs WHERE id=$ID")" = "1 1" ] ||
	fail "attempts and resumes: $(t_sql "$DB" "SELECT attempts, resumes FROM jobs WHERE id=$ID")"
n=$(t_sql "$DB" "SELECT count(*) FROM events WHERE kind='job.state' AND resource_id=$ID AND data LIKE '%\"done\"%'")
[ "$n" = 1 ] || fail "job $ID reported done $n times"
ok "resumed at step two (a resume, not an attempt), every effect once, done once"

# A `once` step interrupted by a crash is not run again.
rm -f "$FX"/*.log
ID=$("$BIN" enqueue -c "$CONF" --data-dir "$DATA" test.once "{\"dir\":\"$FX\",\"sleep_ms\":1500}")
t_wait 30 grep -q '^run 1 attempt 1$' "$FX/runs.log" || fail "once step never started"
kill -9 "$T_PID"
wait "$T_PID" 2>/dev/null || true
t_start_stoked "$BIN" "$DATA" -c "$CONF"
t_wait 60 sh -c "[ \"\$(sqlite3 -cmd '.timeout 5000' '$DB' 'SELECT state FROM jobs WHERE id=$ID')\" = failed ]" ||
	fail "once job $ID: $(t_sql "$DB" "SELECT state, error FROM jobs WHERE id=$ID")"
err=$(t_sql "$DB" "SELECT error FROM jobs WHERE id=$ID")
[[ "$err" == *"must not run twice"* ]] || fail "once job error: $err"
[ "$(grep -c '^run 1' "$FX/runs.log")" = 1 ] || fail "once step ran twice: $(cat "$FX/runs.log")"
ok "an interrupted once step fails the job instead of running twice"

# A graceful stop hands the job to the next controller without waiting for the lease.
rm -f "$FX"/*.log
printf 'job_lease = 60s\nworkers = 2\n' >"$CONF"
kill -TERM "$T_PID"
wait "$T_PID" 2>/dev/null || true
t_start_stoked "$BIN" "$DATA" -c "$CONF"
ID=$("$BIN" enqueue -c "$CONF" --data-dir "$DATA" test.steps "{\"dir\":\"$FX\",\"sleep_ms\":400}")
t_wait 30 grep -q '^run 1 attempt 1$' "$FX/runs.log" || fail "step one never started"
kill -TERM "$T_PID"
wait "$T_PID" 2>/dev/null || true
state=$(t_sql "$DB" "SELECT state FROM jobs WHERE id=$ID")
[ "$state" = queued ] || fail "after SIGTERM the job is '$state', expected queued"
t_start_stoked "$BIN" "$DATA" -c "$CONF"
t_wait 20 sh -c "[ \"\$(sqlite3 -cmd '.timeout 5000' '$DB' 'SELECT state FROM jobs WHERE id=$ID')\" = done ]" ||
	fail "job $ID not done 20 s after a graceful restart (lease is 60 s)"
[ "$(grep -c '^run 1' "$FX/runs.log")" = 1 ] || fail "step one ran twice after a graceful stop"
ok "graceful stop requeues at the step boundary"
