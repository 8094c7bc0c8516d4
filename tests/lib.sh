# tests/lib.sh: helpers for the shell tests: temp dirs, starting stoked on a free port,
# waiting with deadlines, cleanup of everything a test started. Source it first.
set -euo pipefail

: "${STOKE_BUILD:?STOKE_BUILD must name the build folder}"
: "${STOKE_SRC:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"

T_TMP=$(mktemp -d /tmp/stoke-test.XXXXXX)
T_PIDS=()

t_cleanup() {
	local p
	# nginx masters stop their workers on TERM; give them a moment before KILL
	if [ -n "${T_NGINX_PID:-}" ]; then
		kill -TERM "$T_NGINX_PID" 2>/dev/null || true
		t_wait 5 t_gone "$T_NGINX_PID" || true
	fi
	for p in "${T_PIDS[@]:-}"; do
		[ -n "$p" ] && kill -9 "$p" 2>/dev/null || true
	done
	for p in "${T_PIDS[@]:-}"; do
		[ -n "$p" ] && wait "$p" 2>/dev/null || true
	done
	# Programs run from inside the test's folder (agents installed on stand-in hosts run
	# detached, with setsid) are stopped too.
	for p in /proc/[0-9]*; do
		if [[ "$(readlink "$p/exe" 2>/dev/null)" == "$T_TMP"/* ]]; then
			kill -9 "${p#/proc/}" 2>/dev/null || true
		fi
	done
	if [ -n "${T_KEEP:-}" ]; then echo "kept $T_TMP" >&2; else rm -rf "$T_TMP"; fi
}
trap t_cleanup EXIT

# t_gone PID: the process is gone (or a zombie nobody reaped yet).
t_gone() {
	[ ! -e "/proc/$1" ] || [ "$(awk '/^State/ {print $2}' "/proc/$1/status" 2>/dev/null)" = Z ]
}

fail() {
	echo "FAIL: $*" >&2
	if [ -n "${T_LOG:-}" ] && [ -f "$T_LOG" ]; then
		echo "--- last lines of $T_LOG:" >&2
		tail -n 30 "$T_LOG" >&2
	fi
	exit 1
}

ok() { echo "ok - $*"; }

# t_wait SECONDS CMD...: runs CMD until it succeeds or the deadline passes.
t_wait() {
	local secs=$1
	shift
	local end=$((SECONDS + secs))
	while ! "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.05
	done
}

# t_start_stoked BIN DATA_DIR [ARGS...]: starts a controller on free ports; sets T_PID,
# T_URL and T_LOG. Waits until the API answers.
t_start_stoked() {
	local bin=$1 data=$2
	shift 2
	mkdir -p "$data"
	rm -f "$data/api.url"
	T_LOG="$data/stoked.log"
	"$bin" --data-dir "$data" --api-listen 127.0.0.1:0 --agent-listen 127.0.0.1:0 "$@" \
		>>"$T_LOG" 2>&1 &
	T_PID=$!
	T_PIDS+=("$T_PID")
	t_wait 20 test -s "$data/api.url" || fail "stoked did not write $data/api.url"
	T_URL=$(cat "$data/api.url")
	t_wait 20 curl -sf "$T_URL/api/v1/health" || fail "stoked at $T_URL does not answer"
}

# t_sql DB SQL: one value from the database (the sqlite3 shell, read only use).
t_sql() {
	sqlite3 -cmd '.timeout 5000' "$1" "$2"
}

# t_free_port: a TCP port nothing listens on (bound to 0 and released).
t_free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# t_start_nginx PREFIX PORT: a real nginx with its own prefix, serving sites-enabled/ on
# 127.0.0.1:PORT (plus a default server answering 404). Sets T_NGINX_PID.
t_start_nginx() {
	local prefix=$1 port=$2
	mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/sites-available" "$prefix/sites-enabled"
	cat >"$prefix/conf/nginx.conf" <<EON
user root;
worker_processes 1;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path $prefix/tmp_body;
	proxy_temp_path $prefix/tmp_proxy;
	fastcgi_temp_path $prefix/tmp_fastcgi;
	uwsgi_temp_path $prefix/tmp_uwsgi;
	scgi_temp_path $prefix/tmp_scgi;
	server { listen $port default_server; return 404; }
	include $prefix/sites-enabled/*;
}
EON
	/usr/sbin/nginx -p "$prefix/" -c conf/nginx.conf -e logs/error.log \
		-g "daemon off; pid $prefix/nginx.pid;" >>"$prefix/logs/stdout.log" 2>&1 &
	T_NGINX_PID=$!
	T_PIDS+=("$T_NGINX_PID")
	t_wait 10 curl -s -o /dev/null "http://127.0.0.1:$port/" || fail "nginx did not start on $port"
}

# t_site_agent STOKED AGENT DATA TOKEN NAME NGX PORT WWW [EXTRA_LINE...]: enrolls server
# NAME and starts its agent acting as root, pointed at the nginx of t_start_nginx NGX PORT
# and allowed to write under WWW (extra agent.conf lines may follow); waits until it is
# online, then makes WWW the server's sites root with root as its deploy user. The agent's
# bundle is in $T_TMP/agent, its log $T_TMP/agent.log.
t_site_agent() {
	local stoked=$1 agent=$2 data=$3 token=$4 name=$5 ngx=$6 port=$7 www=$8
	shift 8
	mkdir -p "$www"
	{
		cat <<EOC
allow_root yes
default_user root
write_roots $www:$ngx
nginx_prefix $ngx/
nginx_conf conf/nginx.conf
nginx_pid $ngx/nginx.pid
nginx_sites_available $ngx/sites-available
nginx_sites_enabled $ngx/sites-enabled
nginx_listen_port $port
EOC
		[ $# -eq 0 ] || printf '%s\n' "$@"
	} >"$T_TMP/extra.conf"
	"$stoked" agent enroll "$name" --data-dir "$data" --out "$T_TMP/agent" \
		--conf-extra "$T_TMP/extra.conf" >/dev/null || fail "agent enroll $name"
	"$agent" -c "$T_TMP/agent/agent.conf" >>"$T_TMP/agent.log" 2>&1 &
	T_PIDS+=("$!")
	t_wait 20 sh -c "curl -s -H 'Authorization: Bearer $token' $T_URL/api/v1/servers/$name | grep -q '\"status\": *\"online\"'" ||
		fail "agent did not come online"
	curl -sS -o /dev/null -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
		-X PATCH "$T_URL/api/v1/servers/$name" \
		-d "{\"sites_root\":\"$www\",\"deploy_user\":\"root\"}" || fail "server $name: sites root"
}

# t_git_site_repo: a bare origin ($T_TMP/origin.git, branch main) and a working copy
# ($T_TMP/work) to push from, with a first commit "v1"; sets ORIGIN and WORK. Then
# t_publish TEXT commits public/index.html = TEXT, pushes it and prints the commit.
t_git_site_repo() {
	ORIGIN=$T_TMP/origin.git
	WORK=$T_TMP/work
	git init -q --bare -b main "$ORIGIN"
	git init -q -b main "$WORK"
	git -C "$WORK" config user.name "Ada Lovelace"
	git -C "$WORK" config user.email ada@example.com
	t_publish v1 >/dev/null
}

t_publish() {
	mkdir -p "$WORK/public"
	echo "$1" >"$WORK/public/index.html"
	git -C "$WORK" add -A
	git -C "$WORK" commit -q -m "$1"
	git -C "$WORK" push -q "$ORIGIN" main 2>/dev/null
	git -C "$WORK" rev-parse HEAD
}

# t_row_site SITE_JSON: a controller on $T_TMP/data (sets DATA, TOKEN, api()) with server
# web-1 as a bare row (no agent: enough to answer webhooks and the API) and a site created
# from SITE_JSON on it; sets SITE, SECRET and SITE_OUT (the create answer).
t_row_site() {
	DATA=$T_TMP/data
	t_start_stoked "$STOKE_BUILD/controller/stoked" "$DATA"
	TOKEN=$("$STOKE_BUILD/controller/stoked" token create --data-dir "$DATA" --name test)
	api() { curl -sS --max-time 10 -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
	local now=$(($(date +%s) * 1000))
	t_sql "$DATA/stoke.db" "INSERT INTO servers (id, name, provider, ipv4, state, created_at, updated_at) VALUES (1, 'web-1', 'custom', '203.0.113.5', 'active', $now, $now)" >/dev/null
	SITE_OUT=$(api -X POST "$T_URL/api/v1/sites" -d "$1")
	SITE=$(echo "$SITE_OUT" | jq -r .site.id)
	SECRET=$(echo "$SITE_OUT" | jq -r .webhook_secret)
	[[ "$SITE" =~ ^[0-9]+$ ]] || fail "site create: $SITE_OUT"
}
