#!/usr/bin/env bash
# e2e_vm_test.sh: the heavier end-to-end tour. Each "VM" is a real minimal Debian 12
# (debootstrap, tests/vm/build-image.sh, cached under /var/cache/stoke-test-vm) running in
# its own network, pid and mount namespaces (tests/vm/vm.sh), so provision-scripts/ run for
# real inside it: apt-get update and install from the image's local repository (the VMs
# reach no mirror), the deploy user, the sites root, nginx, ufw; the agent is installed and
# dials the controller over a veth link; the site is served by the VM's own nginx on port 80.
#
# Layout: this script makes a network namespace for the controller's side (a bridge with
# 10.213.0.1/24, no other link, no route out) and runs itself again inside it: stoked, the
# stand-in cloud (--vm-command tests/vm/vm.sh), the CLI, curl, ssh and git all run there.
# Each VM gets a namespace of its own linked to that bridge (10.213.0.2, .3...). Traffic
# stays inside namespaces the test made. Everything goes through the `stoke` CLI as in
# tests/e2e_quickstart_test.sh: two servers (one per provider shape, made at the same
# time), their provisioning logs, facts, commands on all servers, a fleet SSH key (ssh logs
# in with it; the host key is the one Stoke pinned), the firewall, a site whose repository
# is pushed over SSH to the server itself, deploys, HTTP from the controller's side; then
# deletes it all and checks that the VMs (their processes, network namespaces, links,
# folders) and everything else are gone.
#
# Skips (exit 77) only when it cannot run here: not root, or no network namespaces.
# Environment: STOKE_VM_CACHE (image cache folder), STOKE_VM_MIRROR (Debian mirror URL).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NET=10.213.0 # the test's private network: .1 the controller's side, .2... the VMs

# --- on the host: the image, the controller's namespace, then this script inside it -------
if [ -z "${STOKE_VM_CTL_NS:-}" ]; then
	: "${STOKE_BUILD:?STOKE_BUILD must name the build folder}"
	skip() {
		echo "SKIP: $*"
		exit 77
	}
	[ "$(id -u)" = 0 ] || skip "needs root (network namespaces, chroot, mounts)"
	for bin in ip nsenter unshare chroot; do
		command -v "$bin" >/dev/null || skip "$bin is not installed"
	done
	prefix=stokevm-$$
	ctl=$prefix-ctl
	ip netns add "$ctl" 2>/dev/null || skip "cannot make a network namespace (ip netns add)"
	# Every namespace named after this run, and what still runs inside one: the inner
	# run stops its VMs itself; this is for when it was killed.
	# shellcheck disable=SC2317 # called by the trap
	cleanup_ns() {
		local ns p
		for ns in $(ip netns list | awk -v p="$prefix-" 'index($1, p) == 1 { print $1 }'); do
			for p in $(ip netns pids "$ns" 2>/dev/null); do
				kill -9 "$p" 2>/dev/null || true
			done
			ip netns delete "$ns" 2>/dev/null || true
		done
	}
	trap cleanup_ns EXIT
	trap 'exit 143' TERM INT HUP
	for bin in debootstrap dpkg-scanpackages ssh ssh-keygen ssh-keyscan git curl jq python3; do
		command -v "$bin" >/dev/null || { echo "FAIL: $bin is needed (make deps)" >&2; exit 1; }
	done
	t0=$SECONDS
	image=$(bash "$here/vm/build-image.sh" --agent "$STOKE_BUILD/agent/stoke-agent" \
		${STOKE_VM_MIRROR:+--mirror "$STOKE_VM_MIRROR"}) ||
		{ echo "FAIL: could not build the VM image (above)" >&2; exit 1; }
	echo "ok - VM image $image ready in $((SECONDS - t0)) s"
	ip -n "$ctl" link set lo up
	ip -n "$ctl" link add name br0 type bridge
	ip -n "$ctl" addr add "$NET.1/24" dev br0
	ip -n "$ctl" link set br0 up
	rc=0
	STOKE_VM_CTL_NS=$ctl STOKE_VM_PREFIX=$prefix STOKE_VM_IMAGE=$image \
		nsenter --net="/run/netns/$ctl" -- bash "${BASH_SOURCE[0]}" || rc=$?
	exit $rc
fi

# --- inside the controller's namespace ----------------------------------------------------
# shellcheck source=tests/lib.sh
source "$here/lib.sh"

PREFIX=$STOKE_VM_PREFIX
STOKED=$STOKE_BUILD/controller/stoked
STOKE_BIN=$STOKE_BUILD/controller/stoke
SAMPLE=$STOKE_SRC/tests/sample-site
AGENT_PORT=8443 # a namespace of our own: no one else's ports here
stoke() { "$STOKE_BIN" "$@"; }
T0=$SECONDS

say() { printf '\n==> %s\n' "$*"; }
# run CMD...: runs it, prints its output indented, keeps it in OUT; returns its status.
run() {
	local rc=0
	printf '$ %s\n' "$*" | sed "s|$T_TMP|\$T|g; s|$STOKE_SRC/||g"
	"$@" >"$T_TMP/out" 2>&1 || rc=$?
	sed 's/^/    /' "$T_TMP/out"
	OUT=$(cat "$T_TMP/out")
	return $rc
}
has() { grep -qF -- "$1" <<<"$OUT"; }

[ "$(ip -o link show | awk -F': ' '{print $2}' | sort | paste -sd' ')" = "br0 lo" ] ||
	fail "the controller's namespace should hold only lo and br0: $(ip -o link show)"
[ -z "$(ip route show default)" ] || fail "the controller's namespace has a default route"

say "starting the stand-in cloud (VMs: debootstrapped Debian in namespaces) and stoked"
vmcmd=$(printf '%q ' bash "$STOKE_SRC/tests/vm/vm.sh" --image "$STOKE_VM_IMAGE" --bridge br0 \
	--net "$NET" --ns-prefix "$PREFIX")
python3 "$STOKE_SRC/tests/standin_cloud.py" --hosts-dir "$T_TMP/hosts" --vm-command "$vmcmd" \
	--url-file "$T_TMP/cloud.url" --boot-ms 300 >"$T_TMP/standin.log" 2>&1 &
STANDIN_PID=$!
T_PIDS+=("$STANDIN_PID")
t_wait 20 test -s "$T_TMP/cloud.url" || fail "stand-in cloud did not start: $(cat "$T_TMP/standin.log")"
CLOUD=$(cat "$T_TMP/cloud.url")
# As README's "Running the agent behind NAT": the agents dial the address they reach.
cat >"$T_TMP/stoked.conf" <<EOC
agent_park = 1s
agent_public_url = tls+tcp://$NET.1:$AGENT_PORT
digitalocean_url = $CLOUD
digitalocean_token = standin-do-token
hetzner_url = $CLOUD
hetzner_token = standin-hetzner-token
EOC
t_start_stoked "$STOKED" "$T_TMP/data" -c "$T_TMP/stoked.conf" --agent-listen "0.0.0.0:$AGENT_PORT"
STOKED_PID=$T_PID
export STOKE_URL=$T_URL
STOKE_TOKEN=$("$STOKED" token create -c "$T_TMP/stoked.conf" --data-dir "$T_TMP/data" --name e2e-vm)
export STOKE_TOKEN
standin_state() { curl -sS "$CLOUD/_standin/state"; }
ok "controller at $T_URL (agents: tls+tcp://$NET.1:$AGENT_PORT), stand-in cloud at $CLOUD"

# --- 1. servers: real Debians, provisioned for real --------------------------------------
say "1. create two servers, one at each (stand-in) provider: each VM boots, provision.sh and install-agent.sh run in it"
t1=$SECONDS
# web-2 at Hetzner in the background while web-1 at DigitalOcean is shown
stoke server create web-2 --provider hetzner --region fsn1 --size cx22 --image debian-12 \
	--tag web --wait >"$T_TMP/web-2.out" 2>&1 &
W2_PID=$!
T_PIDS+=("$W2_PID")
run stoke server create web-1 --provider digitalocean --region fra1 --size s-1vcpu-1gb \
	--image debian-12-x64 --tag web --wait || fail "server create web-1 failed: $(tail -n 30 "$T_TMP"/hosts/*/vm.log 2>/dev/null)"
has "server web-1 is active" || fail "no clear result line"
rc=0
wait "$W2_PID" || rc=$?
printf '$ stoke server create web-2 --provider hetzner ... --wait (at the same time)\n'
sed 's/^/    /' "$T_TMP/web-2.out"
[ $rc = 0 ] || fail "server create web-2 failed: $(tail -n 30 "$T_TMP"/hosts/*/vm.log 2>/dev/null)"
grep -q "server web-2 is active" "$T_TMP/web-2.out" || fail "no clear result line for web-2"
ok "web-1 and web-2 active in $((SECONDS - t1)) s"

declare -A IP_OF NS_OF
VM_PIDS=()
VM_DIRS=()
# check_server NAME PROVIDER: active, its agent online, at an address of the test's network
# on port 22; the stand-in's VM for it runs in a namespace that reaches only that network;
# its provisioning log shows the real thing.
check_server() {
	local name=$1 prov=$2 srv vm ip pid ns routes want
	srv=$(stoke --json server show "$name")
	{ [ "$(jq -r .state <<<"$srv")" = active ] && [ "$(jq -r .agent.status <<<"$srv")" = online ]; } ||
		fail "server $name: $(jq -c '{state,agent}' <<<"$srv")"
	ip=$(jq -r .ipv4 <<<"$srv")
	[[ "$ip" == "$NET".[2-9] ]] || fail "server $name at $ip, not in $NET.0/24"
	[ "$(jq -r .ssh_port <<<"$srv")" = 22 ] || fail "$name: ssh port $(jq -r .ssh_port <<<"$srv"), not 22"
	vm=$(standin_state | jq -c --arg p "$prov" --arg n "$name" '.[$p].servers[] | select(.name == $n)')
	pid=$(jq -r .vm_pid <<<"$vm")
	if [ "$(jq -r .ipv4 <<<"$vm")" != "$ip" ] || ! [[ "$pid" =~ ^[0-9]+$ ]]; then
		fail "stand-in VM for $name: $vm"
	fi
	ns=$PREFIX-vm$((${ip##*.} - 1))
	ip netns list | grep -q "^$ns\b" || fail "no network namespace $ns for $name"
	[ "$(ip -n "$ns" -o link show | awk -F'[:@]' '{print $2}' | tr -d ' ' | sort | paste -sd' ')" = "eth0 lo" ] ||
		fail "$ns should hold only lo and eth0: $(ip -n "$ns" -o link show)"
	routes=$(ip -n "$ns" -4 route show; ip -n "$ns" -6 route show | grep -v '^fe80::' || true)
	if [ "$(wc -l <<<"$routes")" != 1 ] || [[ "$routes" != "$NET.0/24 dev eth0 "* ]]; then
		fail "$name should reach only $NET.0/24: $routes"
	fi
	IP_OF[$name]=$ip
	NS_OF[$name]=$ns
	VM_PIDS+=("$pid")
	VM_DIRS+=("$(jq -r .folder <<<"$vm")")

	stoke server log "$name" >"$T_TMP/provision-$name.log"
	for want in '==> cloud-init: not installed' '==> packages: updating package lists' \
		'file:/srv/stoke-repo' \
		'==> packages: installing nginx git curl ca-certificates libmbedtls14 libmbedx509-1 libmbedcrypto7 libprotobuf-c1 libjansson4 ufw' \
		'Setting up nginx (' 'Setting up ufw (' 'Setting up libmbedtls14' \
		'Setting up libprotobuf-c1' '==> user: created deploy' \
		'==> sites: /var/www belongs to deploy' '==> nginx: started (systemd is not running' \
		'==> firewall: allow 80/tcp: added' '==> firewall: ufw enabled' \
		'==> finished: server provisioned' '==> service: stoke-agent started (pid'; do
		grep -qF -- "$want" "$T_TMP/provision-$name.log" ||
			{ cat "$T_TMP/provision-$name.log"; fail "$name: provisioning log lacks: $want"; }
	done
	! grep -q 'sandbox' "$T_TMP/provision-$name.log" || fail "$name: provision.sh took the stand-in sandbox's path"
	ok "$name ($prov): $ip:22 in namespace $ns (lo, eth0, no route out), agent online;" \
		"provisioned for real (apt, user deploy, /var/www, nginx, ufw, agent)"
}
check_server web-1 "do"
check_server web-2 hetzner
VM_IP=${IP_OF[web-1]}

run stoke server show web-1 || fail "server show"
has "Debian GNU/Linux 12" || fail "the agent's facts do not say Debian 12"

# --- 2. commands on every server run in the VM -------------------------------------------
say "2. run commands on all servers"
run stoke run --all -- hostname || fail "stoke run hostname"
{ has "web-1: web-1" && has "web-2: web-2"; } || fail "the VMs' host names are not web-1 and web-2"
grep -q '2 ok' <<<"$OUT" || fail "no exit-code summary"
# shellcheck disable=SC2016 # dpkg-query's format, not the shell's
run stoke run --all -- dpkg-query -W -f '${Package} ${Status}\n' nginx git ufw openssh-server ||
	fail "dpkg-query"
for p in nginx git ufw openssh-server; do
	for n in web-1 web-2; do
		has "$n: $p install ok installed" || fail "$p is not installed on $n"
	done
done
run stoke run --all -- id -un || fail "id -un"
{ has "web-1: deploy" && has "web-2: deploy"; } || fail "commands do not run as the deploy user"
# A real server's agent (not a stand-in sandbox) does not act as root.
! run stoke run --all --user root -- id -un || fail "the agent ran a command as root"
! has ": root" || fail "the agent ran a command as root"
ok "commands run in the VMs (host names web-1, web-2) as deploy, not as root: nginx git ufw openssh-server installed"

# --- 3. an SSH key for the fleet -----------------------------------------------------------
say "3. a fleet SSH key for the deploy user; log in with it"
ssh-keygen -q -t ed25519 -N '' -C alice@laptop -f "$T_TMP/alice"
pinned=$(stoke --json server show web-1 | jq -r .host_key_sha256)
ssh-keyscan -T 5 -t ed25519 "$VM_IP" 2>/dev/null >"$T_TMP/known_hosts"
seen=$(ssh-keygen -lf "$T_TMP/known_hosts" | awk '{print $2}')
if [ -z "$seen" ] || { [ "$seen" != "$pinned" ] && [ "$seen" != "SHA256:$pinned" ]; }; then
	fail "the VM's host key ${seen:-(none)} is not the one Stoke pinned ($pinned)"
fi
[ "$pinned" != "$(stoke --json server show web-2 | jq -r .host_key_sha256)" ] ||
	fail "web-1 and web-2 have the same host key: VMs must make their own"
ssh_as() {
	local user=$1
	shift
	ssh -i "$T_TMP/alice" -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes \
		-o UserKnownHostsFile="$T_TMP/known_hosts" -o LogLevel=ERROR -o ConnectTimeout=10 \
		"$user@$VM_IP" "$@"
}
! ssh_as deploy true 2>/dev/null || fail "the key logs in before it was attached: the test proves nothing"
run stoke key add alice "$T_TMP/alice.pub" || fail "key add"
# (root's keys are out of the agent's reach on a real server: allow_root is off there)
run stoke key attach alice --user deploy --all || fail "key attach deploy"
for n in web-1 web-2; do
	stoke key show alice | grep -E "^$n +deploy +synced" >/dev/null || fail "key not synced on $n: $(stoke key show alice)"
done
# shellcheck disable=SC2016 # expanded on the server
run ssh_as deploy 'echo "$(id -un)@$(hostname)"' || fail "ssh deploy with the attached key"
has "deploy@web-1" || fail "ssh landed elsewhere: $OUT"
ok "key alice attached for deploy; ssh logs in (host key = the one Stoke pinned, $pinned)"

# ufw (enabled by provision.sh) lets 22 and 80 in and drops the rest: a closed port does
# not even refuse the connection. Without a firewall curl would fail at once (exit 7).
rc=0
curl -sS -m 3 -o /dev/null "http://$VM_IP:8081/" 2>/dev/null || rc=$?
[ "$rc" = 28 ] || fail "port 8081 of the VM answered (curl exit $rc, not a timeout): is ufw on?"
ok "the VM's firewall drops what it does not allow (port 8081 timed out)"

# --- 4. a site whose repository lives on the server --------------------------------------
say "4. push the sample repository to the server over SSH, create a site from it"
run "$SAMPLE/make-repo.sh" "$T_TMP/sample-site" || fail "make-repo.sh"
C1=$(git -C "$T_TMP/sample-site" rev-parse HEAD)
run ssh_as deploy git init -q --bare -b main hello.git || fail "git init on the server"
export GIT_SSH_COMMAND="ssh -i $T_TMP/alice -o BatchMode=yes -o IdentitiesOnly=yes -o UserKnownHostsFile=$T_TMP/known_hosts -o StrictHostKeyChecking=yes"
git -C "$T_TMP/sample-site" remote add vm "deploy@$VM_IP:hello.git"
run git -C "$T_TMP/sample-site" push vm main || fail "git push to the server"
run stoke site create web-1 hello.test --repo /home/deploy/hello.git --branch main \
	--script "$SAMPLE/deploy.sh" --wait || fail "site create failed"
has "hello.test is active" || fail "no clear result line"
has "building $C1 for hello.test" || fail "the first deployment's output was not shown"
ok "site hello.test active; first deployment of ${C1:0:12} done"

# --- 5. the site over HTTP, from the controller's side -----------------------------------
say "5. fetch it from the VM's nginx, port 80"
page() { curl -sS -m 10 -H 'Host: hello.test' "http://$VM_IP/"; }
serves() { page | grep -qF "$1"; }
t_wait 10 serves "from commit ${C1:0:12}." || fail "hello.test is not served: $(page 2>&1)"
run curl -sS -m 10 -i -H 'Host: hello.test' "http://$VM_IP/" || fail "curl"
{ has "<h1>Hello from Stoke</h1>" && has "from commit ${C1:0:12}."; } ||
	fail "the site does not serve the sample page with its build step's stamp"
has "Server: nginx/1.22" || fail "not Debian 12's nginx answering"
curl -sS -m 10 -H 'Host: other.test' "http://$VM_IP/" | grep -q 'Welcome to nginx' ||
	fail "another host name does not get Debian's default nginx page"
ok "nginx in the VM serves hello.test (commit stamped); other names get Debian's default site"

# --- 6. a change, pushed and deployed by hand ----------------------------------------------
say "6. push a change, deploy it"
sed -i 's/Hello from Stoke/Hello from a real Debian/' "$T_TMP/sample-site/public/index.html"
git -C "$T_TMP/sample-site" commit -q -am "Say where"
C2=$(git -C "$T_TMP/sample-site" rev-parse HEAD)
run git -C "$T_TMP/sample-site" push vm main || fail "git push"
run stoke deploy hello.test --follow || fail "deploy failed"
{ has "building $C2 for hello.test" && has "stamped commit ${C2:0:12}"; } || fail "deployment log"
run page || fail "curl"
{ has "<h1>Hello from a real Debian</h1>" && has "from commit ${C2:0:12}."; } ||
	fail "the deployed change is not served"
ok "commit ${C2:0:12} pushed, deployed and served"

# --- cleaning up: the VMs and everything else go -----------------------------------------
say "cleaning up: delete the site and the servers"
VM_PROCS=()
for n in web-1 web-2; do
	mapfile -t procs < <(ip netns pids "${NS_OF[$n]}")
	names=$(for p in "${procs[@]}"; do cat "/proc/$p/comm" 2>/dev/null; done | sort -u | paste -sd' ')
	for want in sshd nginx stoke-agent; do
		[[ " $names " == *" $want "* ]] || fail "no $want running in $n (saw: $names)"
	done
	VM_PROCS+=("${procs[@]}")
done
run stoke site delete hello.test --wait || fail "site delete"
# (nginx -s reload returns before the master has read the new configuration)
default_page() { curl -sS -m 5 -H 'Host: hello.test' "http://$VM_IP/" | grep -q 'Welcome to nginx'; }
t_wait 10 default_page ||
	fail "hello.test is still served after its deletion: $(curl -sS -m 5 -H 'Host: hello.test' "http://$VM_IP/" 2>&1)"
run stoke server delete web-1 --wait || fail "server delete web-1"
run stoke server delete web-2 --wait || fail "server delete web-2"
st=$(standin_state)
[ "$(jq '[.do, .hetzner | .servers[]] | length' <<<"$st")" = 0 ] || fail "VMs are left at the providers"
[ "$(jq '[.do, .hetzner | .keys[]] | length' <<<"$st")" = 0 ] || fail "SSH keys are left at the providers"
gone() { ! kill -0 "$1" 2>/dev/null || [ "$(awk '/^State/ {print $2}' "/proc/$1/status" 2>/dev/null)" = Z ]; }
for p in "${VM_PIDS[@]}" "${VM_PROCS[@]}"; do
	t_wait 30 gone "$p" || fail "VM process $p still runs: $(tr '\0' ' ' <"/proc/$p/cmdline")"
done
no_vm_ns() { ! ip netns list | grep -q "^$PREFIX-vm"; }
t_wait 10 no_vm_ns || fail "network namespaces left: $(ip netns list | grep "^$PREFIX-vm")"
[ "$(ip -o link show | awk -F': ' '{print $2}' | sort | paste -sd' ')" = "br0 lo" ] ||
	fail "links of the VMs are left: $(ip -o link show)"
for d in "${VM_DIRS[@]}"; do
	[ ! -e "$d" ] || fail "the VM's folder $d is left"
done
[ "$(stoke --json server list | jq '[.items[] | select(.state != "deleted")] | length')" = 0 ] ||
	fail "servers left: $(stoke server list)"
[ "$(stoke --json site list | jq '.items | length')" = 0 ] || fail "sites left"
[ "$(stoke --json job list | jq '[.items[] | select(.resource != null and (.state == "queued" or .state == "running"))] | length')" = 0 ] ||
	fail "jobs still queued or running: $(stoke job list)"
[ "$(stoke --json job list | jq '[.items[] | select(.state == "failed")] | length')" = 0 ] ||
	fail "failed jobs: $(stoke job list)"
ok "VMs stopped (their processes, network namespaces, links and folders gone); no server, site, key or job left"

kill -TERM "$STOKED_PID" "$STANDIN_PID"
for p in "$STOKED_PID" "$STANDIN_PID"; do
	t_wait 15 gone "$p" || fail "process $p still runs: $(tr '\0' ' ' <"/proc/$p/cmdline")"
done
wait "$STOKED_PID" "$STANDIN_PID" 2>/dev/null || true
echo
echo "VM tour passed in $((SECONDS - T0)) s"
