#!/usr/bin/env bash
# dev-run.sh BUILD_DIR DATA_DIR: what `make run` does after building. Starts the stand-in
# cloud (tests/standin_cloud.py: DigitalOcean and Hetzner API shapes; each "VM" a sandboxed
# local sshd with its own nginx) in the background on 127.0.0.1:8081, writes
# DATA_DIR/stoked.conf pointing both providers at it (first run only), makes the sample
# site's git repository (DATA_DIR/sample-site.git, first run only), then runs stoked in the
# foreground until Ctrl-C and stops the stand-in with it. Safe to run again: the config,
# the data and the token are kept.
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 BUILD_DIR DATA_DIR" >&2; exit 2; }
src=$(cd "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "$1" && pwd)
mkdir -p "$2"
data=$(cd "$2" && pwd)
stoked=$build/controller/stoked
conf=$data/stoked.conf
cloud_port=${STOKE_CLOUD_PORT:-8081}
api=127.0.0.1:8080
agent=127.0.0.1:8443

standin_pid=""
stoked_pid=""
tail_pid=""
stop() {
	trap - INT TERM EXIT
	if [ -n "$stoked_pid" ] && kill -0 "$stoked_pid" 2>/dev/null; then
		kill -TERM "$stoked_pid" 2>/dev/null || true
		wait "$stoked_pid" 2>/dev/null || true
	fi
	if [ -n "$tail_pid" ]; then
		kill "$tail_pid" 2>/dev/null || true
		wait "$tail_pid" 2>/dev/null || true
	fi
	if [ -n "$standin_pid" ] && kill -0 "$standin_pid" 2>/dev/null; then
		echo "make run: stopping the stand-in cloud (its VMs, their sshd, nginx and agents)"
		kill -TERM "$standin_pid" 2>/dev/null || true
		wait "$standin_pid" 2>/dev/null || true
	fi
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for SECONDS CMD...: polls CMD until it succeeds or the time is up.
wait_for() {
	local end=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.1
	done
}

# The stand-in cloud. Its VMs live as long as it does: servers made by an earlier run are
# gone from it (their records stay in stoked until deleted).
rm -f "$data/cloud.url"
mkdir -p "$data/hosts"
python3 "$src/tests/standin_cloud.py" --port "$cloud_port" --sshd --nginx \
	--hosts-dir "$data/hosts" --url-file "$data/cloud.url" >>"$data/standin.log" 2>&1 &
standin_pid=$!
if ! wait_for 20 test -s "$data/cloud.url"; then
	echo "make run: the stand-in cloud did not start on 127.0.0.1:$cloud_port:" >&2
	tail -n 5 "$data/standin.log" >&2
	echo "(another make run? STOKE_CLOUD_PORT=N make run picks another port)" >&2
	exit 1
fi
cloud=$(cat "$data/cloud.url")

first=0
if [ ! -f "$conf" ]; then
	cat >"$conf" <<EOF
# stoked.conf written by make run (packaging/dev-run.sh) on its first start. Edit freely;
# make run keeps it. Every key and its default: README.md, "Configuration".
data_dir $data
api_listen $api
agent_listen $agent
# The stand-in cloud make run starts (tests/standin_cloud.py); tokens are its defaults.
digitalocean_url $cloud
digitalocean_token standin-do-token
hetzner_url $cloud
hetzner_token standin-hetzner-token
EOF
	chmod 600 "$conf"
	echo "make run: wrote $conf"
fi
if [ ! -f "$data/stoke.db" ]; then
	first=1
	token=$("$stoked" token create -c "$conf" --name admin)
fi
"$src/tests/sample-site/make-repo.sh" "$data/sample-site" | sed 's/^/make run: /'

# stoked's log goes to a file, shown here as it grows, after the start-up lines and the
# instructions (so that they are not lost among the log lines).
log=$data/stoked.log
start=$(wc -c <"$log" 2>/dev/null || echo 0)
"$stoked" -c "$conf" >>"$log" 2>&1 &
stoked_pid=$!
agent_up() { (: </dev/tcp/"${agent%:*}"/"${agent##*:}") 2>/dev/null; }
if ! wait_for 20 curl -sf "http://$api/api/v1/health" || ! wait_for 10 agent_up ||
	! wait_for 5 grep -q "^stoked .*: API on" "$log"; then
	cat "$log" >&2
	echo "make run: stoked did not start (is $api or $agent in use by another make run?)" >&2
	exit 1
fi
shown=$(wc -c <"$log")
tail -c +$((start + 1)) "$log" | head -c $((shown - start))

bin=$build/controller
cat <<EOF

============================================================================================
 Stoke is running: API http://$api, agents dial $agent,
 stand-in cloud $cloud (DigitalOcean and Hetzner API shapes; VMs are local sandboxes).
 Data in $data. Ctrl-C stops everything.

 In a second terminal:

    export PATH=$bin:\$PATH
    export STOKE_URL=http://$api
EOF
if [ $first = 1 ]; then
	cat <<EOF
    export STOKE_TOKEN=$token
         (an admin token, shown only now; stoked keeps only its hash)
EOF
else
	cat <<EOF
    export STOKE_TOKEN=...   (the token printed by the first make run; lost it? a new one:
                              export STOKE_TOKEN=\$($stoked token create -c $conf --name me))
EOF
fi
cat <<EOF

 then follow README.md's quickstart, starting with:

    stoke server create web-1 --provider digitalocean --region nyc1 --size s-1vcpu-1gb --image debian-12-x64 --wait
EOF
if [ $first = 0 ]; then
	cat <<EOF

 (Servers made by an earlier make run lived in the stand-in cloud, which forgets its VMs when
  it stops: remove them with stoke server delete NAME --wait.)
EOF
fi
echo
echo " stoked's log (also in $log):"
echo "============================================================================================"
tail -c +$((shown + 1)) -f --pid="$stoked_pid" "$log" &
tail_pid=$!
wait "$stoked_pid"
