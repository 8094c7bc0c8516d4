#!/usr/bin/env bash
# bench_fleet.sh: the fleet headline figure. For each N: N stoke-agent processes on
# 127.0.0.1 connected to one controller; wall time of `stoke run --all -- true` and of a
# command printing LINES lines on each (all output fetched by the CLI); against N local
# OpenSSH sshd instances, the same with parallel-ssh -p N, clush -f N and
# ansible -m command -f N (cold, then warm with ControlPersist); the floor
# (N x the cost of fork+exec of the command / cores + one round trip); agent idle RSS and
# controller RSS per connected agent. Prints a table with the ratios.
# The stoke figure is the median of RUNS runs; the first of them (each agent's first command
# since it started) is printed too.
# Usage: STOKE_BUILD=build bench/bench_fleet.sh [N ...]        (default: 10 200 1000)
# Env: LINES (10000), PEER_MAX (200: peers are run up to this N), ANSIBLE_MAX (200: ansible
# up to this N; on 2 cores ansible -f 200 takes many minutes), RUNS (3: median of).
# Peers come from Debian: apt-get install pssh clustershell ansible-core.
set -euo pipefail
B=${STOKE_BUILD:-build}
B=$(cd "$B" && pwd)
LINES=${LINES:-10000}
PEER_MAX=${PEER_MAX:-200}
ANSIBLE_MAX=${ANSIBLE_MAX:-200}
RUNS=${RUNS:-3}
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(10 200 1000)
CORES=$(nproc)
TMP=$(mktemp -d /tmp/stoke-bench-fleet.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
rss_kib() { ps -o rss= -p "$1" | tr -d ' '; }
ulimit -n 65536 2>/dev/null || true

have() { command -v "$1" >/dev/null 2>&1; }
for p in parallel-ssh clush ansible; do
	have "$p" || echo "note: $p is not installed (apt-get install pssh clustershell ansible-core); its column is skipped" >&2
done

# fork+exec of the command, measured here: a loop that runs /bin/true 2000 times.
forkexec_ms() {
	local t0 n=2000
	t0=$(now)
	for _ in $(seq $n); do /bin/true; done
	awk -v a="$t0" -v b="$(now)" -v n=$n 'BEGIN { printf "%.4f", (b - a) * 1000 / n }'
}
FORK_MS=$(forkexec_ms)

declare -A R
put() { R[$1]=$2; echo "  $1 = $2" >&2; } # a figure, shown as soon as it is measured
mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$TMP/hostkey"
ssh-keygen -q -t ed25519 -N '' -f "$TMP/userkey"

bench_stoke() { # N
	local n=$1 d=$TMP/stoke-$n url token t0 i rss0 rss1 sum=0 max=0 r times=() lines
	mkdir -p "$d"
	"$B/controller/stoked" --data-dir "$d/data" --api-listen 127.0.0.1:0 \
		--agent-listen 127.0.0.1:0 --log-level error >"$d/stoked.log" 2>&1 &
	local spid=$!
	PIDS+=("$spid")
	for _ in $(seq 400); do [ -s "$d/data/api.url" ] && break; sleep 0.05; done
	url=$(cat "$d/data/api.url")
	token=$("$B/controller/stoked" token create --data-dir "$d/data" --name bench)
	export STOKE_URL=$url STOKE_TOKEN=$token
	sleep 1
	rss0=$(rss_kib "$spid")
	printf 'allow_root yes\ndefault_user root\nlog_level error\n' >"$d/extra.conf"
	echo "N=$n: enrolling and starting $n agents..." >&2
	seq 1 "$n" | xargs -P 4 -I{} "$B/controller/stoked" agent enroll "b{}" --data-dir "$d/data" \
		--out "$d/a{}" --conf-extra "$d/extra.conf" >/dev/null
	local apids=()
	for i in $(seq 1 "$n"); do
		"$B/agent/stoke-agent" -c "$d/a$i/agent.conf" >>"$d/agents.log" 2>&1 &
		apids+=($!)
		PIDS+=($!)
	done
	t0=$(now)
	while :; do
		local on
		on=$(sqlite3 -cmd '.timeout 5000' "$d/data/stoke.db" \
			"SELECT count(*) FROM servers WHERE agent_status = 'online'")
		[ "$on" = "$n" ] && break
		if awk -v a="$t0" -v b="$(now)" 'BEGIN { exit !(b - a > 600) }'; then
			echo "only $on of $n agents came online" >&2
			return 1
		fi
		sleep 0.5
	done
	put "$n,connect" "$(elapsed "$t0")"
	sleep 3
	rss1=$(rss_kib "$spid")
	for p in "${apids[@]}"; do
		r=$(rss_kib "$p")
		sum=$((sum + r))
		[ "$r" -gt "$max" ] && max=$r
	done
	put "$n,agent_rss" "$((sum / n))"
	R[$n,agent_rss_max]=$max
	put "$n,ctl_per_agent" "$(awk -v a="$rss0" -v b="$rss1" -v n="$n" 'BEGIN { printf "%.1f", (b - a) / n }')"
	# one round trip: the whole path for one server
	"$B/controller/stoke" run --server b1 -- true >/dev/null 2>&1 || true
	t0=$(now)
	"$B/controller/stoke" run --server b1 -- true >/dev/null 2>&1
	put "$n,rtt" "$(elapsed "$t0")"
	for _ in $(seq "$RUNS"); do
		t0=$(now)
		"$B/controller/stoke" run --all -- true >/dev/null 2>"$d/true.err" ||
			{ echo "stoke run true failed: $(tail -3 "$d/true.err")" >&2; return 1; }
		times+=("$(elapsed "$t0")")
	done
	put "$n,stoke_true" "$(echo "${times[@]}" | median)"
	put "$n,stoke_first" "${times[0]}" # the first run: agents' first command since start
	t0=$(now)
	lines=$("$B/controller/stoke" run --all -- seq 1 "$LINES" 2>"$d/seq.err" | wc -l)
	put "$n,stoke_lines" "$(elapsed "$t0")"
	[ "$lines" = $((n * LINES)) ] || echo "warning: stoke printed $lines lines, want $((n * LINES))" >&2
	kill -9 "$spid" "${apids[@]}" 2>/dev/null || true
	wait "$spid" "${apids[@]}" 2>/dev/null || true
	rm -rf "$d"
}

bench_peers() { # N
	local n=$1 d=$TMP/ssh-$n i port t0 lines spids=()
	mkdir -p "$d"
	: >"$d/ssh_config"
	: >"$d/hosts"
	printf '[all]\n' >"$d/inventory"
	echo "N=$n: starting $n sshd..." >&2
	for i in $(seq 1 "$n"); do
		port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
		cat >"$d/sshd$i.conf" <<EOS
ListenAddress 127.0.0.1
Port $port
HostKey $TMP/hostkey
PidFile $d/sshd$i.pid
AuthorizedKeysFile $TMP/userkey.pub
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
MaxStartups 1000
LogLevel ERROR
EOS
		/usr/sbin/sshd -D -e -f "$d/sshd$i.conf" >>"$d/sshd.log" 2>&1 &
		spids+=($!)
		PIDS+=($!)
		printf 'Host h%d\n  HostName 127.0.0.1\n  Port %d\n' "$i" "$port" >>"$d/ssh_config"
		echo "h$i" >>"$d/hosts"
		echo "h$i ansible_host=127.0.0.1 ansible_port=$port" >>"$d/inventory"
	done
	cat >>"$d/ssh_config" <<EOS
Host *
  User root
  IdentityFile $TMP/userkey
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  BatchMode yes
EOS
	sleep 2
	if have parallel-ssh; then
		t0=$(now)
		parallel-ssh -h "$d/hosts" -p "$n" -t 600 -x "-F $d/ssh_config" -i true >/dev/null 2>&1 ||
			echo "warning: parallel-ssh true failed somewhere" >&2
		put "$n,pssh_true" "$(elapsed "$t0")"
		t0=$(now)
		lines=$(parallel-ssh -h "$d/hosts" -p "$n" -t 600 -x "-F $d/ssh_config" -i seq 1 "$LINES" 2>/dev/null | grep -c '^[0-9]*$') || true
		put "$n,pssh_lines" "$(elapsed "$t0")"
		[ "$lines" = $((n * LINES)) ] || echo "note: parallel-ssh printed $lines lines, want $((n * LINES))" >&2
	fi
	if have clush; then
		t0=$(now)
		clush -f "$n" -o "-F $d/ssh_config" -w "h[1-$n]" -b true >/dev/null 2>&1 ||
			echo "warning: clush true failed somewhere" >&2
		put "$n,clush_true" "$(elapsed "$t0")"
		t0=$(now)
		clush -f "$n" -o "-F $d/ssh_config" -w "h[1-$n]" -b seq 1 "$LINES" >/dev/null 2>&1 || true
		put "$n,clush_lines" "$(elapsed "$t0")"
	fi
	if have ansible && [ "$n" -le "$ANSIBLE_MAX" ]; then
		export ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_PYTHON_INTERPRETER=/usr/bin/python3
		export ANSIBLE_SSH_ARGS="-F $d/ssh_config -o ControlMaster=auto -o ControlPersist=60s"
		export ANSIBLE_SSH_CONTROL_PATH_DIR="$d/cp" ANSIBLE_LOCAL_TEMP="$d/ansible-tmp"
		export ANSIBLE_FORKS=$n
		t0=$(now)
		ansible all -i "$d/inventory" -u root -m command -a true -f "$n" >/dev/null 2>&1 ||
			echo "warning: ansible (cold) failed somewhere" >&2
		put "$n,ansible_cold" "$(elapsed "$t0")"
		t0=$(now)
		ansible all -i "$d/inventory" -u root -m command -a true -f "$n" >/dev/null 2>&1 ||
			echo "warning: ansible (warm) failed somewhere" >&2
		put "$n,ansible_warm" "$(elapsed "$t0")"
		t0=$(now)
		ansible all -i "$d/inventory" -u root -m command -a "seq 1 $LINES" -f "$n" >/dev/null 2>&1 || true
		put "$n,ansible_lines" "$(elapsed "$t0")"
		for s in "$d"/cp/*; do [ -S "$s" ] && ssh -F "$d/ssh_config" -o ControlPath="$s" -O exit x >/dev/null 2>&1; done || true
	fi
	kill -9 "${spids[@]}" 2>/dev/null || true
	wait "${spids[@]}" 2>/dev/null || true
	rm -rf "$d"
}

for n in "${SIZES[@]}"; do
	bench_stoke "$n"
	if [ "$n" -le "$PEER_MAX" ]; then bench_peers "$n"; fi
done

ratio() { # A B -> "A/B" as "12.3x", or "-"
	awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.1fx", a / b }'
}
get() { echo "${R[$1]:-}"; }
echo
echo "bench_fleet: $CORES cores; fork+exec of a command here: $FORK_MS ms; output: $LINES lines per server"
echo "(times in seconds, wall clock of the whole command; ratios: how many times slower than stoke)"
printf '%-6s %-24s %10s %10s %12s\n' N tool "true" "$LINES lines" "vs stoke"
for n in "${SIZES[@]}"; do
	floor=$(awk -v n="$n" -v f="$FORK_MS" -v c="$CORES" -v r="$(get "$n,rtt")" 'BEGIN { printf "%.3f", n * f / 1000 / c + r }')
	st=$(get "$n,stoke_true")
	printf '%-6s %-24s %10s %10s %12s\n' "$n" "stoke run" "$st" "$(get "$n,stoke_lines")" "1.0x"
	printf '%-6s %-24s %10s\n' "$n" "  (first of the runs)" "$(get "$n,stoke_first")"
	printf '%-6s %-24s %10s %10s %12s\n' "$n" "floor" "$floor" "-" "stoke/floor $(ratio "$st" "$floor")"
	if [ "$n" -le "$PEER_MAX" ]; then
		row() { # NAME TRUE LINES
			if [ -z "$2" ]; then
				printf '%-6s %-24s %10s\n' "$n" "$1" "skipped (not installed, or N over PEER_MAX/ANSIBLE_MAX)"
			else
				printf '%-6s %-24s %10s %10s %12s\n' "$n" "$1" "$2" "${3:--}" "$(ratio "$2" "$st")"
			fi
		}
		row parallel-ssh "$(get "$n,pssh_true")" "$(get "$n,pssh_lines")"
		row clush "$(get "$n,clush_true")" "$(get "$n,clush_lines")"
		row "ansible (cold)" "$(get "$n,ansible_cold")" "$(get "$n,ansible_lines")"
		row "ansible (ControlPersist)" "$(get "$n,ansible_warm")" ""
	else
		printf '%-6s %-24s %s\n' "$n" "peers" "skipped (N > PEER_MAX=$PEER_MAX)"
	fi
done
echo
printf '%-6s %14s %14s %22s %12s %16s\n' N "agents up (s)" "one server (s)" "agent idle RSS (KiB)" "max (KiB)" "ctl KiB/agent"
for n in "${SIZES[@]}"; do
	printf '%-6s %14s %14s %22s %12s %16s\n' "$n" "$(get "$n,connect")" "$(get "$n,rtt")" \
		"$(get "$n,agent_rss")" "$(get "$n,agent_rss_max")" "$(get "$n,ctl_per_agent")"
done
echo "goals: N=200 true under 0.3 s and >= 50x faster than parallel-ssh, within 2x of the floor;"
echo "       N=1000 under 1 s; agent under 4096 KiB; controller under 64 KiB per agent"
