#!/usr/bin/env bash
# provision_scripts_test.sh: the shell that runs on servers: shellcheck (any finding fails)
# and bash -n on provision-scripts/*.sh and packaging/*.sh; then provision.sh and
# install-agent.sh run twice against stand-in system commands (apt-get, useradd, ufw,
# systemctl...) to show that the first run does the work and the second changes nothing.
set -euo pipefail
: "${STOKE_BUILD:=unused}"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

scripts=("$STOKE_SRC"/provision-scripts/*.sh "$STOKE_SRC"/packaging/*.sh "${BASH_SOURCE[0]}")

# --- static checks ------------------------------------------------------------------------
command -v shellcheck >/dev/null || fail "shellcheck is not installed (make deps)"
for s in "${scripts[@]}"; do
	bash -n "$s" || fail "bash -n $s"
	shellcheck -x "$s" || fail "shellcheck found problems in $s"
done
ok "shellcheck and bash -n: ${#scripts[@]} scripts clean"

# --- stand-in system commands ---------------------------------------------------------
# Each logs its arguments to $T_TMP/calls and keeps state in $T_TMP/state, like the real
# ones would on a server.
stubs=$T_TMP/bin
state=$T_TMP/state
calls=$T_TMP/calls
mkdir -p "$stubs" "$state" "$T_TMP/home"
uid=$(id -u)
gid=$(id -g)

stub() {
	{
		printf '#!/usr/bin/env bash\nset -euo pipefail\n'
		printf 'state=%q calls=%q home=%q uid=%q gid=%q\n' "$state" "$calls" "$T_TMP/home" "$uid" "$gid"
		# shellcheck disable=SC2016 # written into the stub, expanded when it runs
		printf 'echo "%s $*" >>"$calls"\n' "$1"
		cat
	} >"$stubs/$1"
	chmod +x "$stubs/$1"
}

stub cloud-init <<'EOF'
[ "$*" = "status --wait" ] && echo "status: done"
EOF
stub fuser <<'EOF'
n=$(( $(cat "$state/fuser" 2>/dev/null || echo 0) + 1 ))
echo "$n" >"$state/fuser"
[ "$n" -le "$(cat "$state/fuser_busy" 2>/dev/null || echo 0)" ]
EOF
stub dpkg-query <<'EOF'
pkg=${*: -1}
[ -e "$state/pkg_$pkg" ] || exit 1
printf 'install ok installed'
EOF
stub apt-get <<'EOF'
inst=0
for a in "$@"; do
	case $a in
	install) inst=1 ;;
	-*) ;;
	*) if [ $inst = 1 ]; then : >"$state/pkg_$a"; fi ;;
	esac
done
EOF
stub getent <<'EOF'
if [ "$1" = passwd ] && [ -e "$state/user_$2" ]; then
	echo "$2:x:$uid:$gid::$home/$2:/bin/bash"
	exit 0
fi
[ "$1" = passwd ] && exit 2
exec /usr/bin/getent "$@"
EOF
stub useradd <<'EOF'
name=${*: -1}
: >"$state/user_$name"
mkdir -m 700 "$home/$name"
EOF
stub id <<'EOF'
[ "$*" = -u ] && { echo 0; exit 0; }
exec /usr/bin/id "$@"
EOF
stub systemctl <<'EOF'
case $1 in
is-enabled) [ -e "$state/enabled_${*: -1}" ] ;;
is-active) [ -e "$state/active_${*: -1}" ] ;;
enable) : >"$state/enabled_${*: -1}"; [ "$2" != --now ] || : >"$state/active_${*: -1}" ;;
restart | start) : >"$state/active_${*: -1}" ;;
daemon-reload) ;;
*) exit 1 ;;
esac
EOF
stub ufw <<'EOF'
case $1 in
show) echo "Added user rules (see 'ufw status' for running firewall):"
	cat "$state/ufw_rules" 2>/dev/null || true ;;
allow) echo "ufw allow $2" >>"$state/ufw_rules" ;;
status) if [ -e "$state/ufw_active" ]; then echo "Status: active"; else echo "Status: inactive"; fi ;;
--force) : >"$state/ufw_active" ;;
*) exit 1 ;;
esac
EOF

# provision ENV...: runs provision.sh with the stubs; output in $T_TMP/out, calls in $calls.
provision() {
	: >"$calls"
	env PATH="$stubs:$PATH" STOKE_SYSTEMD=yes SSH_CONNECTION="192.0.2.1 50000 192.0.2.2 22" \
		STOKE_SITES_ROOT="$T_TMP/www" "$@" \
		bash "$STOKE_SRC/provision-scripts/provision.sh" >"$T_TMP/out" 2>&1
}

# --- provision.sh ---------------------------------------------------------------------
echo 1 >"$state/fuser_busy" # apt is busy at first: the script must wait, not fail
provision STOKE_DEPLOY_USER=deploy || { cat "$T_TMP/out"; fail "provision.sh failed"; }
grep -q '^==> apt: waiting for another package manager' "$T_TMP/out" || fail "did not wait for apt"
for p in nginx git curl ca-certificates ufw libmbedtls14 libmbedx509-1 libmbedcrypto7 \
	libprotobuf-c1 libjansson4; do
	[ -e "$state/pkg_$p" ] || fail "$p was not installed"
done
grep -q '^apt-get .*DPkg::Lock::Timeout=600.* install --no-install-recommends' "$calls" ||
	fail "apt-get install without a lock timeout: $(grep apt-get "$calls")"
grep -q "^useradd .*--create-home.* deploy$" "$calls" || fail "deploy user not created"
[ "$(stat -c %a "$T_TMP/home/deploy")" = 755 ] || fail "home mode"
[ "$(stat -c %a "$T_TMP/home/deploy/.ssh")" = 700 ] || fail ".ssh mode"
[ "$(stat -c %a "$T_TMP/home/deploy/.ssh/authorized_keys")" = 600 ] || fail "authorized_keys mode"
[ "$(stat -c %a:%u "$T_TMP/www")" = "755:$uid" ] || fail "sites root: $(stat -c %a:%u "$T_TMP/www")"
if [ ! -e "$state/enabled_nginx" ] || [ ! -e "$state/active_nginx" ]; then
	fail "nginx not enabled"
fi
for r in OpenSSH 80/tcp 443/tcp; do
	grep -qx "ufw allow $r" "$state/ufw_rules" || fail "no firewall rule for $r"
done
[ -e "$state/ufw_active" ] || fail "ufw not enabled"
grep -q '^==> done\|^==> finished: server provisioned' "$T_TMP/out" || fail "no final line"
bad=$(grep -v '^==> ' "$T_TMP/out" | grep -v '^status: done' || true)
[ -z "$bad" ] || fail "output lines that are not steps: $bad"
ok "provision.sh: first run waits for apt, installs, creates the user and the sites root, opens the firewall"

cp "$state/ufw_rules" "$T_TMP/rules.before"
provision STOKE_DEPLOY_USER=deploy || { cat "$T_TMP/out"; fail "second provision.sh failed"; }
if grep -E '^(apt-get|useradd) |^ufw (allow|--force)|^systemctl (enable|start|restart)' "$calls"; then
	fail "the second run changed things (above)"
fi
cmp -s "$state/ufw_rules" "$T_TMP/rules.before" || fail "firewall rules added twice"
grep -q '^==> user: deploy exists' "$T_TMP/out" || fail "second run: user step"
grep -q '^==> packages: already installed' "$T_TMP/out" || fail "second run: packages step"
ok "provision.sh: a second run changes nothing"

# SSH on another port stays reachable; STOKE_SKIP_FIREWALL=1 leaves ufw alone.
rm -f "$state/ufw_rules" "$state/ufw_active"
provision STOKE_SSH_PORT=2222 || fail "provision.sh with port 2222"
grep -qx "ufw allow 2222/tcp" "$state/ufw_rules" || fail "ssh port 2222 not allowed"
rm -f "$state/ufw_rules" "$state/ufw_active"
provision STOKE_SKIP_FIREWALL=1 || fail "provision.sh with STOKE_SKIP_FIREWALL=1"
! grep -q '^ufw ' "$calls" || fail "ufw was used although STOKE_SKIP_FIREWALL=1"
ok "provision.sh: non-standard SSH port kept open; firewall skipped on request"

# Locks that stay taken: a clear error at the deadline. A bad user name: refused.
rm -f "$state/pkg_git" "$state/fuser"
echo 1000 >"$state/fuser_busy"
if provision STOKE_LOCK_TIMEOUT=1; then
	fail "provision.sh went on while apt stayed locked"
fi
grep -q 'dpkg/apt is still locked after 1s' "$T_TMP/out" || fail "lock error text: $(cat "$T_TMP/out")"
echo 0 >"$state/fuser_busy"
if provision STOKE_DEPLOY_USER='x;rm -rf /'; then
	fail "a bad user name was accepted"
fi
grep -q 'not a valid user name' "$T_TMP/out" || fail "bad user text"
ok "provision.sh: gives up on a stuck apt lock at the deadline; refuses bad user names"

# --- install-agent.sh -----------------------------------------------------------------
root=$T_TMP/root
stage=$T_TMP/stage
mkdir -p "$root" "$stage/bundle"
cat >"$stage/stoke-agent" <<'EOF'
#!/bin/sh
# A stand-in agent: answers -V, checks a config with -n -c FILE.
case $1 in
-V) echo "stoke-agent test"; exit 0 ;;
-n) ! grep -q invalid "$3" ;;
*) exit 2 ;;
esac
EOF
chmod 755 "$stage/stoke-agent"
cat >"$stage/bundle/agent.conf" <<'EOF'
# stoke-agent configuration for server web-1, made by `stoked agent enroll`.
controller tls+tcp://203.0.113.9:8443
server_name stoke-controller
agent_id agt_0123
ca_file /var/lib/stoke/bundles/web-1/ca.crt
cert_file /var/lib/stoke/bundles/web-1/agent.crt
key_file /var/lib/stoke/bundles/web-1/agent.key
secret_file /var/lib/stoke/bundles/web-1/secret
state_dir /var/lib/stoke/bundles/web-1/state
EOF
echo CA >"$stage/bundle/ca.crt"
echo CRT >"$stage/bundle/agent.crt"
echo KEY >"$stage/bundle/agent.key"
echo SECRET >"$stage/bundle/secret"

install_agent() {
	: >"$calls"
	env PATH="$stubs:$PATH" STOKE_ROOT="$root" STOKE_SYSTEMD=yes \
		bash "$STOKE_SRC/provision-scripts/install-agent.sh" --binary "$stage/stoke-agent" \
		--bundle "$stage/bundle" --unit "$STOKE_SRC/packaging/stoke-agent.service" \
		>"$T_TMP/out" 2>&1
}

mode_of() { stat -c %a "$root/$1"; }

install_agent || { cat "$T_TMP/out"; fail "install-agent.sh failed"; }
[ "$(mode_of usr/local/bin/stoke-agent)" = 755 ] || fail "binary mode"
[ "$(mode_of etc/stoke-agent)" = 700 ] || fail "config folder mode"
[ "$(mode_of var/lib/stoke-agent)" = 700 ] || fail "state folder mode"
for f in agent.key:600 secret:600 agent.conf:600 ca.crt:644 agent.crt:644; do
	[ "$(mode_of "etc/stoke-agent/${f%%:*}")" = "${f##*:}" ] || fail "mode of ${f%%:*}"
done
cmp -s "$root/etc/systemd/system/stoke-agent.service" "$STOKE_SRC/packaging/stoke-agent.service" ||
	fail "unit not installed"
grep -qx "key_file $root/etc/stoke-agent/agent.key" "$root/etc/stoke-agent/agent.conf" ||
	fail "agent.conf paths not rewritten: $(cat "$root/etc/stoke-agent/agent.conf")"
grep -qx "state_dir $root/var/lib/stoke-agent" "$root/etc/stoke-agent/agent.conf" || fail "state_dir"
grep -qx "controller tls+tcp://203.0.113.9:8443" "$root/etc/stoke-agent/agent.conf" ||
	fail "other keys must be kept"
grep -qx 'systemctl daemon-reload' "$calls" || fail "no daemon-reload"
grep -qx 'systemctl enable --now stoke-agent' "$calls" || fail "not enabled and started"
ok "install-agent.sh: binary, config (0600 key and secret), unit, service enabled and started"

snapshot() { find "$root" -type f -printf '%p %i %Y %m\n' | sort; }
snapshot >"$T_TMP/snap1"
install_agent || fail "second install-agent.sh failed"
snapshot >"$T_TMP/snap2"
cmp -s "$T_TMP/snap1" "$T_TMP/snap2" || fail "the second run replaced files: $(diff "$T_TMP/snap1" "$T_TMP/snap2")"
if grep -E '^systemctl (daemon-reload|enable|restart|start)' "$calls"; then
	fail "the second run touched the service (above)"
fi
grep -q '^==> service: stoke-agent enabled and running' "$T_TMP/out" || fail "second run: service line"
ok "install-agent.sh: a second run changes nothing"

echo NEWSECRET >"$stage/bundle/secret"
install_agent || fail "install-agent.sh with a new secret"
[ "$(cat "$root/etc/stoke-agent/secret")" = NEWSECRET ] || fail "secret not replaced"
[ "$(mode_of etc/stoke-agent/secret)" = 600 ] || fail "new secret mode"
grep -qx 'systemctl restart stoke-agent' "$calls" || fail "not restarted after a change"
grep -q 'agent.crt up to date' "$T_TMP/out" || fail "unchanged files must stay"
ok "install-agent.sh: a changed file is replaced (mode kept) and the agent restarted"

echo "invalid line" >>"$stage/bundle/agent.conf"
if install_agent; then
	fail "an agent.conf the agent refuses was installed quietly"
fi
grep -q 'agent.conf is not valid' "$T_TMP/out" || fail "invalid config text"
rm "$stage/bundle/agent.key"
if install_agent; then
	fail "a bundle without agent.key was accepted"
fi
grep -q 'the bundle has no agent.key' "$T_TMP/out" || fail "missing key text"
ok "install-agent.sh: refuses a bad config and an incomplete bundle"
