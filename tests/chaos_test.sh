#!/usr/bin/env bash
# chaos_test.sh: the controller is killed (-9) at random moments and restarted on the same
# data folder and agent port while the test drives everything at once against the stand-in
# cloud: servers provisioned at DigitalOcean and Hetzner (and one or two deleted), sites
# created and deleted, deployments by the API and by signed webhooks (and replays), SSH keys
# attached, detached and synced, fleet commands. Then it waits until no job is left to run
# and judges: every resource in a final state; the stand-in holds exactly the VMs and
# provider keys Stoke knows (no duplicate VM per intent, no orphan, every active server's
# VM there); no job stuck or left failed_dirty; no output line lost or doubled.
#
# Seeded and repeatable: CHAOS_SEED=N (default random) fixes every random choice (the
# plan: operations, their order, pauses, kill moments, downtimes); the timing is the
# machine's. Knobs: CHAOS_KILLS (default 4; at least that many kills; 0: the same drive with
# no kill, a baseline), CHAOS_LONG=1 (a longer hunt: 12 kills up to 15 s apart, 6 servers,
# more operations), CHAOS_GAP_MAX_MS (longest time between kills, default 8000),
# CHAOS_READY_WAIT (seconds the second phase waits for a ready server, default 180),
# CHAOS_OP_WINDOW (seconds the second phase lasts at most: operations still waiting for
# what they need then are dropped), CHAOS_SETTLE (seconds to wait for the jobs at the end). `make chaos
# CHAOS_RUNS=N` runs it N times with different seeds. About 1.5-2.5 minutes on 2 busy cores.
# Prints "chaos seed: N" first and a summary line "chaos seed=N ..." last; judged by exit code;
# a failure names what broke and the seed to run again (T_KEEP=1 keeps the folder and logs).
# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for bin in /usr/sbin/sshd /usr/sbin/nginx ssh-keygen git curl jq sqlite3 openssl python3; do
	command -v "$bin" >/dev/null || fail "$bin is needed (make deps)"
done
[ "$(id -u)" = 0 ] || fail "runs as root (each stand-in VM is an sshd and an nginx)"

STOKED=${STOKE_STOKED_BIN:-$STOKE_BUILD/controller/stoked}
DATA=$T_TMP/data
DB=$DATA/stoke.db
CONF=$T_TMP/stoked.conf
T0=$SECONDS

# ---- the plan, from the seed ------------------------------------------------------------
SEED=${CHAOS_SEED:-$(($(od -An -N4 -tu4 /dev/urandom) % 1000000))}
[[ "$SEED" =~ ^[0-9]+$ ]] || fail "CHAOS_SEED must be a number"
echo "chaos seed: $SEED"
RANDOM=$SEED
# rnd N: 0..N-1 in REPLY. Never called in a subshell, so the sequence is the seed's alone.
rnd() { REPLY=$((RANDOM % $1)); }

if [ -n "${CHAOS_LONG:-}" ]; then
	KILLS=${CHAOS_KILLS:-12}
	GAP_MAX=${CHAOS_GAP_MAX_MS:-15000}
	NSERVERS=6
	EXTRA_OPS=30
	OP_WINDOW=${CHAOS_OP_WINDOW:-480}
else
	KILLS=${CHAOS_KILLS:-4}
	GAP_MAX=${CHAOS_GAP_MAX_MS:-8000}
	NSERVERS=4
	EXTRA_OPS=4
	OP_WINDOW=${CHAOS_OP_WINDOW:-90}
fi
GAP_MIN=2000
[ "$GAP_MAX" -ge "$GAP_MIN" ] || GAP_MAX=$GAP_MIN
SETTLE=${CHAOS_SETTLE:-240}
READY_WAIT=${CHAOS_READY_WAIT:-180}
KILL_CAP=$((KILLS * 2 + 2))

# Operations: the servers and keys first, then a shuffled mix where each kind appears.
OPS=()
for ((i = 1; i <= NSERVERS; i++)); do
	case $i in
	1) p=digitalocean ;;
	2) p=hetzner ;;
	*)
		rnd 2
		if [ "$REPLY" = 0 ]; then p=digitalocean; else p=hetzner; fi
		;;
	esac
	OPS+=("server_create c$i $p")
	[ $i = 2 ] && OPS+=("key_add k1")
done
OPS+=("key_add k2")
MIX=(site_create site_create deploy deploy webhook webhook webhook_replay batch batch
	key_attach key_attach key_detach key_sync site_delete server_delete server_delete
	deploy site_create batch webhook)
POOL=(deploy deploy webhook webhook webhook_replay batch batch key_attach key_detach key_sync
	site_create site_delete)
for ((i = 0; i < EXTRA_OPS; i++)); do
	rnd ${#POOL[@]}
	MIX+=("${POOL[$REPLY]}")
done
for ((i = ${#MIX[@]} - 1; i > 0; i--)); do
	rnd $((i + 1))
	t=${MIX[$i]}
	MIX[i]=${MIX[$REPLY]}
	MIX[REPLY]=$t
done
OPS+=("${MIX[@]}")
# Per operation: a pick (which server, site, key... among those that qualify when it runs),
# a pause after it (ms), and a coin (push a new commit first, which key, zero-downtime...).
OP_PICK=()
OP_PAUSE=()
OP_COIN=()
for ((i = 0; i < ${#OPS[@]}; i++)); do
	OP_PICK+=("$RANDOM")
	rnd 1300
	OP_PAUSE+=($((200 + REPLY)))
	rnd 2
	OP_COIN+=("$REPLY")
done
# Kill moments (ms after the previous restart) and downtimes (ms with no controller: up to
# 3 s, longer than the 2 s lease, so that a restarted controller finds leases expired).
KILL_GAP=()
KILL_DOWN=()
for ((i = 0; i < KILL_CAP; i++)); do
	rnd $((GAP_MAX - GAP_MIN + 1))
	KILL_GAP+=($((GAP_MIN + REPLY)))
	rnd 3000
	KILL_DOWN+=("$REPLY")
done

echo "chaos plan: ${#OPS[@]} operations, at least $KILLS kills 2-$((GAP_MAX / 1000)) s apart"
echo "chaos plan: ops: $(
	IFS=,
	echo "${OPS[*]}"
)"
echo "chaos plan: kill gaps (ms): ${KILL_GAP[*]:0:$KILLS}"

# ---- the stand-in cloud and the controller ---------------------------------------------
mkdir -p "$T_TMP/hosts"
python3 "$STOKE_SRC/tests/standin_cloud.py" --url-file "$T_TMP/cloud.url" --hosts-dir "$T_TMP/hosts" \
	--sshd --nginx --boot-ms 300 >"$T_TMP/standin.log" 2>&1 &
STANDIN_PID=$!
T_PIDS+=("$STANDIN_PID")
t_wait 20 test -s "$T_TMP/cloud.url" || fail "stand-in cloud did not start: $(cat "$T_TMP/standin.log")"
CLOUD=$(cat "$T_TMP/cloud.url")

# The stand-in first (TERM: it stops its VMs' sshd and nginx), then lib.sh's cleanup.
chaos_cleanup() {
	local rc=$?
	if [ -n "${CTL_PID:-}" ]; then kill -9 "$CTL_PID" 2>/dev/null || true; fi
	kill -TERM "$STANDIN_PID" 2>/dev/null || true
	t_wait 20 t_gone "$STANDIN_PID" || true
	t_cleanup
	exit $rc
}
trap chaos_cleanup EXIT

cat >"$CONF" <<EOC
agent_park = 1s
job_lease = 2s
workers = 4
digitalocean_url = $CLOUD
digitalocean_token = standin-do-token
hetzner_url = $CLOUD
hetzner_token = standin-hetzner-token
EOC

# A port below the ephemeral range (32768-60999), so that nothing takes it while the
# controller is down between a kill and its restart.
AGENT_PORT=
for _ in $(seq 1 50); do
	p=$((20000 + $(od -An -N2 -tu2 /dev/urandom) % 12000))
	if python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1',$p))" 2>/dev/null; then
		AGENT_PORT=$p
		break
	fi
done
[ -n "$AGENT_PORT" ] || fail "no free port for the agent listener"

KILLS_DONE=0
CTL_DIED=()
start_ctl() {
	t_start_stoked "$STOKED" "$DATA" -c "$CONF" --agent-listen "127.0.0.1:$AGENT_PORT"
	CTL_PID=$T_PID # set by t_start_stoked
}
kill_ctl() { # DOWNTIME_MS
	kill -9 "$CTL_PID" 2>/dev/null || true
	wait "$CTL_PID" 2>/dev/null || true
	KILLS_DONE=$((KILLS_DONE + 1))
	echo "chaos: kill -9 #$KILLS_DONE at $((SECONDS - T0)) s; $1 ms down" >>"$DATA/stoked.log"
	sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"
	start_ctl
}
# ctl_alive: the controller did not exit by itself; if it did, note it and restart it.
ctl_alive() {
	if t_gone "$CTL_PID"; then
		wait "$CTL_PID" 2>/dev/null
		CTL_DIED+=("at $((SECONDS - T0)) s (exit $?)")
		echo "chaos: the controller exited by itself at $((SECONDS - T0)) s" >>"$DATA/stoked.log"
		start_ctl
	fi
}

start_ctl
TOKEN=$("$STOKED" token create -c "$CONF" --data-dir "$DATA" --name chaos)
ok "stand-in cloud at $CLOUD, controller at $T_URL (agents on port $AGENT_PORT)"

# api METHOD PATH [BODY]: the answer's body on stdout, its status in $T_TMP/code; the URL is
# read again each time (each restart listens on a new port). 1 when no answer came.
api() {
	local m=$1 p=$2 url i
	local args=(-sS --max-time 20 -o "$T_TMP/resp" -w '%{http_code}' -X "$m"
		-H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json')
	[ $# -lt 3 ] || args+=(--data-binary "$3")
	for i in 1 2 3 4 5 6 7 8 9 10; do
		url=$(cat "$DATA/api.url" 2>/dev/null) || url=
		if [ -n "$url" ] && curl "${args[@]}" "$url$p" >"$T_TMP/code" 2>>"$T_TMP/curl.err"; then
			cat "$T_TMP/resp"
			return 0
		fi
		sleep "0.$i"
	done
	echo 000 >"$T_TMP/code"
	return 1
}
code() { cat "$T_TMP/code"; }
sql() { sqlite3 -cmd '.timeout 5000' "$DB" "$1"; }

# The site's repository and a deploy script whose output is known line by line.
t_git_site_repo
# shellcheck disable=SC2016 # expanded on the server
DEPLOY_SCRIPT='for i in 1 2 3 4 5; do echo "chaos-deploy $STOKE_DEPLOYMENT_ID line $i"; done'
ssh-keygen -q -t ed25519 -N '' -C k1@chaos -f "$T_TMP/k1"
ssh-keygen -q -t ed25519 -N '' -C k2@chaos -f "$T_TMP/k2"

# ---- what the operations made, to judge them later ---------------------------------------
declare -A SITE_SECRET DELIVERY_DEP DELIVERY_SITE DELIVERY_BODY BATCH_MARK
DELIVERIES=()
SITE_N=0
COMMIT=$(git -C "$WORK" rev-parse HEAD)
NOTES=()
note() { NOTES+=("$*"); }

# pick N: element OP_PICK % N of the candidates (CANDS) into REPLY.
CANDS=()
pick() {
	REPLY=${CANDS[$((OP_PICK[$1] % ${#CANDS[@]}))]}
}
ready_servers() { # active with the agent online, not being deleted
	mapfile -t CANDS < <(sql "SELECT name FROM servers WHERE state = 'active' AND agent_status = 'online' ORDER BY id")
}
live_sites() {
	mapfile -t CANDS < <(sql "SELECT domain FROM sites WHERE state = 'active' ORDER BY id")
}

hmac() { printf '%s' "$2" | openssl dgst -sha256 -hmac "$1" -r | cut -d' ' -f1; }
webhook() { # DOMAIN DELIVERY BODY -> "status body"
	local url
	url=$(cat "$DATA/api.url")
	curl -sS --max-time 20 -o "$T_TMP/hook" -w '%{http_code}' -X POST "$url/hooks/$1" \
		-H 'Content-Type: application/json' -H 'X-GitHub-Event: push' \
		-H "X-GitHub-Delivery: $2" -H "X-Hub-Signature-256: sha256=$(hmac "${SITE_SECRET[$1]}" "$3")" \
		--data-binary "$3" 2>>"$T_TMP/curl.err" || true
	echo " $(cat "$T_TMP/hook" 2>/dev/null)"
}

# run_op I: runs operation I; 0 done (or refused in a way that is fine), 2 when what it
# needs is not there yet (it is tried again later).
run_op() {
	local i=$1 op body out c
	read -r -a op <<<"${OPS[$i]}"
	case ${op[0]} in
	server_create)
		if [ "${op[2]}" = digitalocean ]; then
			body="{\"name\":\"${op[1]}\",\"provider\":\"digitalocean\",\"region\":\"nyc1\",\"size\":\"s-1vcpu-1gb\",\"image\":\"debian-12-x64\",\"tags\":[\"chaos\"]}"
		else
			body="{\"name\":\"${op[1]}\",\"provider\":\"hetzner\",\"region\":\"fsn1\",\"size\":\"cx22\",\"image\":\"debian-12\",\"tags\":[\"chaos\"]}"
		fi
		out=$(api POST /api/v1/servers "$body") || return 2
		[ "$(code)" = 202 ] || fail "server create ${op[1]}: $(code) $out"
		;;
	key_add)
		body=$(jq -n --arg n "${op[1]}" --rawfile k "$T_TMP/${op[1]}.pub" '{name:$n, public_key:$k}')
		out=$(api POST /api/v1/keys "$body") || return 2
		[ "$(code)" = 201 ] || fail "key add ${op[1]}: $(code) $out"
		;;
	key_attach | key_detach)
		mapfile -t CANDS < <(sql "SELECT name FROM ssh_keys WHERE revoked_at IS NULL ORDER BY id")
		[ ${#CANDS[@]} -gt 0 ] || return 2
		[ -n "$(sql "SELECT 1 FROM servers WHERE state = 'active' LIMIT 1")" ] || return 2
		pick "$i"
		out=$(api POST "/api/v1/keys/$REPLY/${op[0]#key_}" '{"user":"root","all":true}') || return 2
		c=$(code)
		[ "$c" = 202 ] || { [ "${op[0]}" = key_detach ] && [ "$c" = 404 ]; } ||
			fail "${op[0]} $REPLY: $c $out"
		;;
	key_sync)
		[ -n "$(sql "SELECT 1 FROM server_keys LIMIT 1")" ] || return 2
		out=$(api POST /api/v1/keys/sync '{"all":true}') || return 2
		[ "$(code)" = 202 ] || fail "key sync: $(code) $out"
		;;
	batch)
		ready_servers
		[ ${#CANDS[@]} -gt 0 ] || return 2
		c="chaos-mark-$SEED-$i"
		body="{\"all\":true,\"argv\":[\"echo\",\"$c\"],\"timeout\":60,\"pickup_timeout\":10}"
		out=$(api POST /api/v1/batches "$body") || return 2
		[ "$(code)" = 202 ] || fail "batch: $(code) $out"
		BATCH_MARK[$(jq -r .batch.id <<<"$out")]=$c
		;;
	site_create)
		ready_servers
		[ ${#CANDS[@]} -gt 0 ] || return 2
		pick "$i"
		SITE_N=$((SITE_N + 1))
		body=$(jq -n --arg s "$REPLY" --arg d "s$SITE_N.chaos.test" --arg r "$ORIGIN" \
			--arg sc "$DEPLOY_SCRIPT" --argjson z "$([ "${OP_COIN[$i]}" = 1 ] && echo true || echo false)" \
			'{server:$s, domain:$d, repo_url:$r, branch:"main", web_dir:"public", zero_downtime:$z, keep_releases:3, deploy_script:$sc}')
		out=$(api POST /api/v1/sites "$body") || return 2
		c=$(code)
		if [ "$c" = 409 ]; then # the server went away meanwhile
			note "site create on $REPLY refused: $out"
			return 0
		fi
		[ "$c" = 202 ] || fail "site create on $REPLY: $c $out"
		# by domain: ids of deleted sites are given again to new ones
		SITE_SECRET[s$SITE_N.chaos.test]=$(jq -r .webhook_secret <<<"$out")
		;;
	deploy)
		live_sites
		[ ${#CANDS[@]} -gt 0 ] || return 2
		pick "$i"
		out=$(api POST "/api/v1/sites/$REPLY/deploy" '{}') || return 2
		c=$(code)
		[ "$c" = 202 ] || [ "$c" = 409 ] || fail "deploy site $REPLY: $c $out"
		;;
	webhook)
		live_sites
		[ ${#CANDS[@]} -gt 0 ] || return 2
		pick "$i"
		[ -n "${SITE_SECRET[$REPLY]:-}" ] || return 2
		[ "${OP_COIN[$i]}" = 0 ] || COMMIT=$(t_publish "chaos $i")
		c="chaos-$SEED-$i"
		# a real delivery's body differs from every other (ids, times): chaos_op stands in
		body="{\"ref\":\"refs/heads/main\",\"after\":\"$COMMIT\",\"chaos_op\":$i}"
		out=$(webhook "$REPLY" "$c" "$body")
		case $out in
		"202 "*queued*)
			DELIVERIES+=("$c")
			DELIVERY_SITE[$c]=$REPLY
			DELIVERY_BODY[$c]=$body
			DELIVERY_DEP[$c]=$(jq -r .deployment_id <<<"${out#* }")
			;;
		# the same commit as the one deployed (or being deployed): ignored, with its reason
		"200 "*ignored* | "202 "*ignored*) note "webhook $c to site $REPLY: $out" ;;
		"409 "* | "404 "*) note "webhook $c to site $REPLY: $out" ;;
		*) fail "webhook $c to site $REPLY: $out" ;;
		esac
		;;
	webhook_replay)
		[ ${#DELIVERIES[@]} -gt 0 ] || return 2
		CANDS=("${DELIVERIES[@]}")
		pick "$i"
		c=$REPLY
		[ "$(sql "SELECT state FROM sites WHERE domain = '${DELIVERY_SITE[$c]}'")" = active ] || return 0
		body=${DELIVERY_BODY[$c]}
		out=$(webhook "${DELIVERY_SITE[$c]}" "$c" "$body")
		[[ "$out" == "200 "*duplicate* ]] || fail "delivery $c replayed to site ${DELIVERY_SITE[$c]}: $out (want 200 duplicate)"
		;;
	site_delete)
		mapfile -t CANDS < <(sql "SELECT id FROM sites WHERE state IN ('active', 'inactive', 'failed') ORDER BY id")
		[ ${#CANDS[@]} -gt 0 ] || return 2
		pick "$i"
		out=$(api DELETE "/api/v1/sites/$REPLY") || return 2
		[ "$(code)" = 202 ] || [ "$(code)" = 409 ] || fail "site delete $REPLY: $(code) $out"
		;;
	server_delete)
		# Keep two servers for the sites; any state will do (one still provisioning is fine).
		mapfile -t CANDS < <(sql "SELECT name FROM servers WHERE state NOT IN ('deleting', 'deleted') ORDER BY id")
		[ ${#CANDS[@]} -gt 2 ] || return 2
		pick "$i"
		out=$(api DELETE "/api/v1/servers/$REPLY") || return 2
		[ "$(code)" = 202 ] || fail "server delete $REPLY: $(code) $out"
		;;
	*) fail "unknown operation ${op[0]}" ;;
	esac
	return 0
}

# ---- chaos: operations in the plan's order, kills at the plan's moments -------------------
# Two phases, so that work gets done between kills (installing an agent over SSH takes 20 s
# on a busy machine, and each kill costs it a new start): the first half of the kills while
# the servers are made; then no kill until a server is ready (at most READY_WAIT s after the
# start); then the rest (and more, up to KILL_CAP, while operations wait for what they need,
# for at most OP_WINDOW s) while sites, deployments, webhooks, keys and fleet commands run.
QUEUE=()
for ((i = 0; i < ${#OPS[@]}; i++)); do QUEUE+=("$i"); done
now_ms() { echo $(($(date +%s%N) / 1000000)); }
PHASE1=$(((KILLS + 1) / 2))
PHASE2_AT=
KILL_AT=$(($(now_ms) + KILL_GAP[0]))
# hopeless: every server failed or went: operations that need one can never run.
hopeless() {
	[ ${#QUEUE[@]} -gt 0 ] || return 1
	[ "$(sql "SELECT count(*) FROM servers WHERE state NOT IN ('failed', 'deleting', 'deleted')")" = 0 ] &&
		[ -n "$(sql "SELECT 1 FROM servers LIMIT 1")" ] && [[ "${OPS[${QUEUE[0]}]}" != server_create* ]]
}
# kill_armed: a kill is due now.
kill_armed() {
	[ "$KILLS_DONE" -lt "$KILL_CAP" ] || return 1
	if [ "$KILLS_DONE" -ge "$PHASE1" ] && [ -z "$PHASE2_AT" ]; then
		[ -n "$(sql "SELECT 1 FROM servers WHERE state = 'active' AND agent_status = 'online' LIMIT 1")" ] ||
			[ $((SECONDS - T0)) -ge "$READY_WAIT" ] || [ ${#QUEUE[@]} = 0 ] || return 1
		PHASE2_AT=$((SECONDS - T0))
		KILL_AT=$(($(now_ms) + KILL_GAP[KILLS_DONE]))
	fi
	[ "$(now_ms)" -ge "$KILL_AT" ]
}
DONE_OPS=0
DROPPED=()
while :; do
	ctl_alive
	if [ "$KILLS" -gt 0 ] && kill_armed; then
		kill_ctl "${KILL_DOWN[$KILLS_DONE]}"
		KILL_AT=$(($(now_ms) + KILL_GAP[KILLS_DONE % KILL_CAP]))
		continue
	fi
	if [ ${#QUEUE[@]} -eq 0 ]; then
		# every operation ran: the kills the plan wants, then done
		[ "$KILLS_DONE" -lt "$KILLS" ] || break
		sleep 0.2
		continue
	fi
	# Past the deadline, or no server left that could ever be ready: what waits is dropped.
	if { [ -n "$PHASE2_AT" ] && [ $((SECONDS - T0)) -ge $((PHASE2_AT + OP_WINDOW)) ]; } ||
		[ $((SECONDS - T0)) -ge $((READY_WAIT + OP_WINDOW)) ] || hopeless; then
		for i in "${QUEUE[@]}"; do DROPPED+=("${OPS[$i]}"); done
		QUEUE=()
		continue
	fi
	# The first operation in the queue whose needs are met runs; the others wait.
	ran=
	for ((q = 0; q < ${#QUEUE[@]}; q++)); do
		i=${QUEUE[$q]}
		rc=0
		run_op "$i" || rc=$?
		if [ $rc = 0 ]; then
			QUEUE=("${QUEUE[@]:0:q}" "${QUEUE[@]:q+1}")
			DONE_OPS=$((DONE_OPS + 1))
			ran=$i
			break
		fi
		# servers and keys come first: nothing jumps ahead of them
		[[ "${OPS[$i]}" != server_create* && "${OPS[$i]}" != key_add* ]] || break
	done
	if [ -n "$ran" ]; then
		sleep "$(printf '%d.%03d' $((OP_PAUSE[ran] / 1000)) $((OP_PAUSE[ran] % 1000)))"
	else
		sleep 0.5
	fi
done
ok "chaos: $DONE_OPS of ${#OPS[@]} operations under $KILLS_DONE kills in $((SECONDS - T0)) s (second phase from ${PHASE2_AT:-never} s)"

# ---- settle: wait until nothing is left to run ---------------------------------------------
# Jobs that still have work: queued, running, or failed with their undo not finished
# (failed_dirty). A drift check scheduled minutes ahead is not work left.
UNFINISHED="state IN ('queued', 'running', 'failed_dirty') AND NOT (type = 'keys.drift'
	AND state = 'queued' AND run_after > CAST(strftime('%s','now') AS INTEGER) * 1000 + 60000)"
settled() {
	ctl_alive
	[ "$(sql "SELECT count(*) FROM jobs WHERE $UNFINISHED")" = 0 ]
}
t_wait "$SETTLE" settled || true
STUCK_JOBS=$(sql "SELECT id || ' ' || type || ' ' || state || ' step ' || coalesce(step, '-') || ': ' || coalesce(error, '') FROM jobs WHERE $UNFINISHED")
# Agents of active servers reconnect after the last restart.
agents_back() { [ "$(sql "SELECT count(*) FROM servers WHERE state = 'active' AND agent_status != 'online'")" = 0 ]; }
t_wait 60 agents_back || true
ctl_alive
ok "settled $((SECONDS - T0)) s after the start"

# ---- judge -----------------------------------------------------------------------------
PROBLEMS=()
DUP=0 ORPH=0 LEAK=0 STUCK=0 LOST=0 LINES=0 NULLCFG=0 RES=0 FINAL=0
short_provider() { if [ "$1" = digitalocean ]; then echo "do"; else echo hetzner; fi; }
long_provider() { if [ "$1" = "do" ]; then echo digitalocean; else echo hetzner; fi; }
problem() { # KIND TEXT
	case $1 in
	dup) DUP=$((DUP + 1)) ;;
	orphan) ORPH=$((ORPH + 1)) ;;
	leak) LEAK=$((LEAK + 1)) ;;
	stuck) STUCK=$((STUCK + 1)) ;;
	lost) LOST=$((LOST + 1)) ;;
	output) LINES=$((LINES + 1)) ;;
	nullcfg) NULLCFG=$((NULLCFG + 1)) ;;
	esac
	PROBLEMS+=("$1: $2")
}

# Every resource in a final state.
final_check() { # WHAT SQL_ALL SQL_NOT_FINAL
	local n bad
	n=$(sql "$2")
	RES=$((RES + n))
	bad=$(sql "$3")
	if [ -n "$bad" ]; then
		while IFS= read -r l; do problem stuck "$1 $l"; done <<<"$bad"
		FINAL=$((FINAL + n - $(wc -l <<<"$bad")))
	else
		FINAL=$((FINAL + n))
	fi
}
final_check server "SELECT count(*) FROM servers" \
	"SELECT name || ' is ' || state || coalesce(' (' || error || ')', '') FROM servers WHERE state NOT IN ('active', 'failed', 'deleted')"
final_check site "SELECT count(*) FROM sites" \
	"SELECT domain || ' is ' || state FROM sites WHERE state NOT IN ('active', 'inactive', 'failed')"
final_check deployment "SELECT count(*) FROM deployments" \
	"SELECT id || ' is ' || state FROM deployments WHERE state NOT IN ('finished', 'failed', 'cancelled')"
final_check command "SELECT count(*) FROM commands" \
	"SELECT c.id || ' (' || c.kind || ' on ' || s.name || ', server ' || s.state || ') is ' || c.state FROM commands c JOIN servers s ON s.id = c.server_id WHERE c.state NOT IN ('done', 'failed', 'cancelled', 'offline')"
final_check batch "SELECT count(*) FROM batches" \
	"SELECT id || ' is ' || state FROM batches WHERE state NOT IN ('done', 'failed', 'cancelled')"
# A key row waits (pending, removing) only for an agent that is not there.
final_check key-sync "SELECT count(*) FROM server_keys" \
	"SELECT k.name || ' on ' || s.name || ' is ' || sk.state || coalesce(' (' || sk.message || ')', '') FROM server_keys sk JOIN ssh_keys k ON k.id = sk.key_id JOIN servers s ON s.id = sk.server_id WHERE sk.state NOT IN ('synced', 'failed', 'removed') AND NOT (sk.state IN ('pending', 'removing') AND (s.state != 'active' OR s.agent_status != 'online'))"
final_check job "SELECT count(*) FROM jobs" "SELECT 'job ' || id || ' ' || type || ' is ' || state FROM jobs WHERE $UNFINISHED"
while IFS= read -r l; do
	[ -z "$l" ] || problem leak "job $l: its undo never finished (failed_dirty)"
done < <(sql "SELECT id || ' ' || type || ' step ' || coalesce(step, '-') || ': ' || coalesce(error, '') FROM jobs WHERE state = 'failed_dirty'")
# A step that ran without the controller's configuration (a job claimed before the
# provisioning settings were loaded) names a "(null)" path or URL: a controller bug.
while IFS= read -r l; do
	[ -z "$l" ] || problem nullcfg "job $l"
done < <(sql "SELECT id || ' ' || type || ' ' || coalesce(resource_kind || ' ' || resource_id, '') || ': ' || error FROM jobs WHERE error LIKE '%(null)%'
	UNION ALL SELECT j.id || ' ' || j.type || ' (in an earlier attempt): ' || min(e.data) FROM events e JOIN jobs j ON e.resource_kind = 'job' AND e.resource_id = j.id WHERE e.kind = 'job.state' AND e.data LIKE '%(null)%' AND coalesce(j.error, '') NOT LIKE '%(null)%' GROUP BY j.id")
# An undo that failed in a job that ended failed: nothing will take it up again.
while IFS= read -r l; do
	[ -z "$l" ] || problem leak "job $l"
done < <(sql "SELECT j.id || ' ' || j.type || ' ' || coalesce(j.resource_kind || ' ' || j.resource_id, '') || ': undo of step ' || st.name || ' failed: ' || coalesce(j.error, '') FROM job_steps st JOIN jobs j ON j.id = st.job_id WHERE st.state = 'undo_failed' AND j.state = 'failed'")
while IFS= read -r l; do
	[ -z "$l" ] || problem stuck "server $l: active but its agent is not online"
done < <(sql "SELECT name FROM servers WHERE state = 'active' AND agent_status != 'online'")
for d in "${CTL_DIED[@]}"; do problem stuck "the controller exited by itself $d"; done

# The stand-in holds exactly the VMs and provider keys Stoke knows.
ST=$(curl -sS "$CLOUD/_standin/state") || fail "stand-in state (seed $SEED)"
declare -A VM_COUNT VM_ID
while read -r prov vid intent vname; do
	[ -n "$prov" ] || continue
	key="$prov/$intent"
	VM_COUNT[$key]=$((${VM_COUNT[$key]:-0} + 1))
	VM_ID[$key]="${VM_ID[$key]:+${VM_ID[$key]},}$vid"
	row=$(sql "SELECT id || '|' || name || '|' || state || '|' || coalesce(provider_id, '') FROM servers WHERE intent_id = '$intent' AND provider = '$(long_provider "$prov")'")
	if [ -z "$row" ]; then
		problem orphan "$prov VM $vid ($vname, intent $intent): no server of Stoke has that intent"
		continue
	fi
	IFS='|' read -r sid sname sstate spid <<<"$row"
	case $sstate in
	deleted) problem orphan "$prov VM $vid: its server $sname ($sid) is deleted" ;;
	failed)
		cstep=$(sql "SELECT st.state FROM job_steps st JOIN jobs j ON j.id = st.job_id WHERE j.type = 'server.provision' AND j.resource_id = $sid AND st.name = 'create' ORDER BY j.id DESC LIMIT 1")
		if [ "$cstep" != "done" ] || [ "$spid" != "$vid" ]; then
			problem orphan "$prov VM $vid: its server $sname ($sid) failed ($(sql "SELECT coalesce(failed_step, '-') || ': ' || coalesce(error, '') FROM servers WHERE id = $sid")) and its create step is '${cstep:-none}', provider_id '${spid}'"
		fi
		;;
	esac
done < <(jq -r '(.do.servers[] | "do \(.id) \([.tags[] | select(startswith("stoke-intent:")) | ltrimstr("stoke-intent:")] | first // "none") \(.name)"),
	(.hetzner.servers[] | "hetzner \(.id) \(.labels["stoke-intent"] // "none") \(.name)")' <<<"$ST")
for key in "${!VM_COUNT[@]}"; do
	[ "${VM_COUNT[$key]}" = 1 ] ||
		problem dup "${VM_COUNT[$key]} VMs (${VM_ID[$key]}) for one intent ${key#*/} at ${key%/*}: server $(sql "SELECT name FROM servers WHERE intent_id = '${key#*/}'")"
done
while IFS='|' read -r sid sname prov spid intent; do
	[ -n "$sid" ] || continue
	p=$(short_provider "$prov")
	if [ -z "$spid" ] || ! jq -e --arg p "$p" --arg id "$spid" '.[$p].servers | map(select((.id | tostring) == $id)) | length == 1' <<<"$ST" >/dev/null; then
		problem lost "server $sname ($sid) is active but its VM '$spid' is not at $prov"
	elif [ "${VM_COUNT[$p/$intent]:-0}" = 0 ]; then
		problem lost "server $sname ($sid): VM $spid does not carry its intent $intent"
	fi
done < <(sql "SELECT id || '|' || name || '|' || provider || '|' || coalesce(provider_id, '') || '|' || coalesce(intent_id, '') FROM servers WHERE state = 'active' AND provider != 'custom'")
# Provider keys are named stoke-NAME-ID.
declare -A KEY_COUNT
while read -r prov kid kname; do
	[ -n "$prov" ] || continue
	sid=${kname##*-}
	if ! [[ "$kname" =~ ^stoke-.*-[0-9]+$ ]] || [ -z "$(sql "SELECT 1 FROM servers WHERE id = $sid")" ]; then
		problem orphan "$prov key $kid '$kname': no server of Stoke made it"
		continue
	fi
	KEY_COUNT[$sid]=$((${KEY_COUNT[$sid]:-0} + 1))
	sstate=$(sql "SELECT state FROM servers WHERE id = $sid")
	kstep=$(sql "SELECT st.state FROM job_steps st JOIN jobs j ON j.id = st.job_id WHERE j.type = 'server.provision' AND j.resource_id = $sid AND st.name = 'provider_key' ORDER BY j.id DESC LIMIT 1")
	case $sstate in
	deleted) problem orphan "$prov key $kid '$kname': its server is deleted" ;;
	failed) [ "$kstep" = "done" ] || problem orphan "$prov key $kid '$kname': its server failed and its provider_key step is '${kstep:-none}'" ;;
	esac
done < <(jq -r '(.do.keys[] | "do \(.id) \(.name)"), (.hetzner.keys[] | "hetzner \(.id) \(.name)")' <<<"$ST")
for sid in "${!KEY_COUNT[@]}"; do
	[ "${KEY_COUNT[$sid]}" = 1 ] || problem dup "${KEY_COUNT[$sid]} provider keys for server $sid"
done

# No output line lost or doubled. A line's seq is (chunk << 16) | line in the chunk; chunks
# of a command count from 1, lines of a chunk from 0: no gap in either.
while IFS= read -r l; do
	[ -z "$l" ] || problem output "command $l"
done < <(sql "WITH o AS (SELECT owner_id AS cid, seq >> 16 AS ch, seq & 65535 AS ln FROM output_lines
		WHERE owner_kind = 'command' AND owner_id IN (SELECT id FROM commands WHERE state = 'done')),
	chunks AS (SELECT cid, ch, count(*) AS n, min(ln) AS lo, max(ln) AS hi FROM o GROUP BY cid, ch)
	SELECT cid || ': chunks ' || group_concat(ch || '[' || lo || '..' || hi || ']', ' ') FROM chunks
	GROUP BY cid HAVING min(ch) != 1 OR count(*) != max(ch) OR sum(n != hi - lo + 1 OR lo != 0) > 0")
# Fleet commands: each server that ran the echo printed its marker, once.
for b in "${!BATCH_MARK[@]}"; do
	m=${BATCH_MARK[$b]}
	while IFS='|' read -r cid sname got; do
		[ -n "$cid" ] || continue
		[ "$got" = "$m" ] || problem output "batch $b, command $cid on $sname: stdout '$got', want '$m' once"
	done < <(sql "SELECT c.id || '|' || s.name || '|' || coalesce((SELECT group_concat(text, '\\n') FROM (SELECT text FROM output_lines WHERE owner_kind = 'command' AND owner_id = c.id AND stream = 'stdout' ORDER BY seq)), '') FROM commands c JOIN servers s ON s.id = c.server_id WHERE c.batch_id = $b AND c.state = 'done'")
	[ -n "$(sql "SELECT 1 FROM batches WHERE id = $b")" ] || problem lost "batch $b is gone"
	n=$(sql "SELECT count(*) FROM (SELECT server_id FROM commands WHERE batch_id = $b GROUP BY server_id HAVING count(*) > 1)")
	[ "$n" = 0 ] || problem dup "batch $b: $n servers got more than one command"
done
# Deployments that finished printed the script's five lines, once each, in order.
while IFS= read -r d; do
	[ -n "$d" ] || continue
	got=$(sql "SELECT group_concat(text, '|') FROM (SELECT o.text FROM output_lines o JOIN commands c ON o.owner_kind = 'command' AND o.owner_id = c.id WHERE c.owner_kind = 'deployment' AND c.owner_id = $d AND c.created_at >= (SELECT created_at FROM deployments WHERE id = $d) AND o.stream = 'stdout' AND o.text LIKE 'chaos-deploy %' ORDER BY c.id, o.seq)")
	want="chaos-deploy $d line 1|chaos-deploy $d line 2|chaos-deploy $d line 3|chaos-deploy $d line 4|chaos-deploy $d line 5"
	[ "$got" = "$want" ] || problem output "deployment $d finished with script output '$got'"
done < <(sql "SELECT id FROM deployments WHERE state = 'finished'")
# A deployment's log is the output of the commands it owns: none may be older than it (a
# deleted site's deployment whose id was given again to a new one).
while IFS= read -r l; do
	[ -z "$l" ] || problem output "deployment $l"
done < <(sql "SELECT d.id || ' (site ' || d.site_id || '): its log (GET /deployments/' || d.id || '/log) holds ' || count(o.id) || ' lines of ' || count(DISTINCT c.id) || ' commands made before it (' || min(c.id) || '..' || max(c.id) || '), of an earlier deployment with the same id' FROM deployments d JOIN commands c ON c.owner_kind = 'deployment' AND c.owner_id = d.id AND c.created_at < d.created_at LEFT JOIN output_lines o ON o.owner_kind = 'command' AND o.owner_id = c.id GROUP BY d.id")
# Webhooks: each accepted delivery made one deployment, of its own delivery id.
for c in "${DELIVERIES[@]}"; do
	s=$(sql "SELECT id FROM sites WHERE domain = '${DELIVERY_SITE[$c]}'")
	[ -n "$s" ] || continue # the site was deleted
	n=$(sql "SELECT count(*) FROM deployments WHERE site_id = $s AND delivery_id = '$c'")
	[ "$n" = 1 ] || problem "$([ "$n" = 0 ] && echo lost || echo dup)" "delivery $c to ${DELIVERY_SITE[$c]}: $n deployments"
	[ "$(sql "SELECT delivery_id FROM deployments WHERE id = ${DELIVERY_DEP[$c]} AND site_id = $s")" = "$c" ] ||
		problem lost "delivery $c to ${DELIVERY_SITE[$c]}: its deployment ${DELIVERY_DEP[$c]} is not there"
done
# Keys: the managed block on each active server holds exactly its synced keys.
while IFS='|' read -r sid sname pid prov; do
	[ -n "$sid" ] || continue
	p=$(short_provider "$prov")
	folder=$(jq -r --arg p "$p" --arg id "$pid" '.[$p].servers[] | select((.id | tostring) == $id) | .folder' <<<"$ST")
	[ -n "$folder" ] || continue
	f=$folder/root/etc/ssh/authorized_keys/root
	want=$(sql "SELECT k.public_key FROM server_keys sk JOIN ssh_keys k ON k.id = sk.key_id WHERE sk.server_id = $sid AND sk.user = 'root' AND sk.state = 'synced'" | awk '{print $2}' | sort)
	gone=$(sql "SELECT k.public_key FROM server_keys sk JOIN ssh_keys k ON k.id = sk.key_id WHERE sk.server_id = $sid AND sk.user = 'root' AND sk.state = 'removed'" | awk '{print $2}' | sort)
	have=$({ awk '/^# BEGIN stoke managed keys/ {b = 1; next} /^# END stoke managed keys/ {b = 0} b && !/^#/ {print $2}' "$f" 2>/dev/null || true; } | sort)
	for k in $want; do
		grep -qxF "$k" <<<"$have" || problem lost "server $sname: key ${k:0:20}... is synced but not in its authorized_keys"
	done
	for k in $gone; do
		! grep -qxF "$k" <<<"$have" || problem leak "server $sname: key ${k:0:20}... is removed but still in its authorized_keys"
	done
done < <(sql "SELECT id || '|' || name || '|' || provider_id || '|' || provider FROM servers WHERE state = 'active' AND provider != 'custom'")

# Sites: each active server's nginx serves exactly its active sites; no file or folder is
# left of a deleted one. (A failed site is not judged here: its state says what went wrong.)
while IFS='|' read -r sid sname pid prov root; do
	[ -n "$sid" ] || continue
	folder=$(jq -r --arg p "$(short_provider "$prov")" --arg id "$pid" '.[$p].servers[] | select((.id | tostring) == $id) | .folder' <<<"$ST")
	[ -n "$folder" ] || continue
	ngx=$folder/root/etc/nginx
	for d in $(sql "SELECT domain FROM sites WHERE server_id = $sid AND state = 'active'"); do
		[ -e "$ngx/sites-enabled/$d" ] || problem lost "site $d is active but not enabled in $sname's nginx"
	done
	for f in "$ngx"/sites-available/* "$ngx"/sites-enabled/* "$root"/*; do
		[ -e "$f" ] || [ -L "$f" ] || continue
		d=${f##*/}
		st=$(sql "SELECT state FROM sites WHERE server_id = $sid AND domain = '$d'")
		case $st in
		active | failed) ;;
		inactive) [ "$f" != "$ngx/sites-enabled/$d" ] || problem leak "site $d is inactive but enabled on $sname" ;;
		*) problem orphan "$sname: $f is left of a site that is ${st:-gone}" ;;
		esac
	done
done < <(sql "SELECT id || '|' || name || '|' || provider_id || '|' || provider || '|' || sites_root FROM servers WHERE state = 'active' AND provider != 'custom'")

# ---- the verdict ---------------------------------------------------------------------------
counts=$(sql "SELECT
	(SELECT count(*) FROM servers WHERE state = 'active') || ' active, ' ||
	(SELECT count(*) FROM servers WHERE state = 'failed') || ' failed, ' ||
	(SELECT count(*) FROM servers WHERE state = 'deleted') || ' deleted servers; ' ||
	(SELECT count(*) FROM sites) || ' sites; ' ||
	(SELECT count(*) FROM deployments WHERE state = 'finished') || ' finished, ' ||
	(SELECT count(*) FROM deployments WHERE state = 'failed') || ' failed deployments; ' ||
	(SELECT count(*) FROM batches) || ' batches; ' ||
	(SELECT count(*) FROM jobs WHERE state = 'failed') || ' failed jobs'")
echo "chaos: $counts"
for n in "${NOTES[@]}"; do echo "chaos note: $n"; done
# Failures are final states, not problems; but nothing here injects a provider fault, so say why.
while IFS= read -r l; do
	[ -z "$l" ] || echo "chaos note: failed: $l"
done < <(sql "SELECT 'server ' || name || ' at ' || coalesce(failed_step, '-') || ': ' || coalesce(error, '') FROM servers WHERE state = 'failed'
	UNION ALL SELECT 'site ' || domain || ' at ' || coalesce(failed_step, '-') || ': ' || coalesce(error, '') FROM sites WHERE state = 'failed'
	UNION ALL SELECT 'deployment ' || id || ' at ' || coalesce(failed_step, '-') || ': ' || coalesce(error, '') FROM deployments WHERE state = 'failed'")
[ ${#DROPPED[@]} = 0 ] || echo "chaos note: not run (needs never met before the deadline): ${DROPPED[*]}"
[ -z "$STUCK_JOBS" ] || echo "chaos: jobs left after ${SETTLE} s: $STUCK_JOBS"
SUMMARY="chaos seed=$SEED resources=$RES kills=$KILLS_DONE final=$FINAL duplicates=$DUP orphans=$ORPH leaks=$LEAK stuck=$STUCK lost=$LOST output=$LINES nullcfg=$NULLCFG time=$((SECONDS - T0))s"
if [ ${#PROBLEMS[@]} -gt 0 ]; then
	for p in "${PROBLEMS[@]}"; do echo "chaos problem: $p" >&2; done
	echo "$SUMMARY"
	echo "--- failed jobs:" >&2
	sql "SELECT id || ' ' || type || ' ' || coalesce(resource_kind, '') || ' ' || coalesce(resource_id, '') || ' step ' || coalesce(failed_step, step, '-') || ': ' || coalesce(error, '') FROM jobs WHERE state IN ('failed', 'failed_dirty')" >&2 || true
	fail "chaos seed $SEED: ${#PROBLEMS[@]} problems (${PROBLEMS[0]}); rerun with CHAOS_SEED=$SEED"
fi
ok "every resource final, the stand-in holds exactly what Stoke knows, no output line lost or doubled"
echo "$SUMMARY"
