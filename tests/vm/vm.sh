#!/usr/bin/env bash
# vm.sh: one VM of the VM end-to-end test (tests/e2e_vm_test.sh), for the lifetime of this
# process: the stand-in cloud (tests/standin_cloud.py --vm-command) runs it for each server
# it "creates" and stops it with SIGTERM when the server is deleted.
#
# The VM: the Debian root of tests/vm/build-image.sh unpacked into FOLDER/root, in a network
# namespace of its own (NSPREFIX-vmSEQ, only lo and eth0), joined by a veth pair to the
# bridge BRIDGE of the namespace this runs in (the test's controller side), with address
# NET.(SEQ+1)/24 and no route anywhere else. Its processes run chrooted in their own pid,
# mount, UTS (hostname NAME) and IPC namespaces (tests/vm/vm-init.sh is their pid 1, then
# sshd on port 22). The provider's SSH keys (FOLDER/authorized_keys) are root's, as
# cloud-init would put them.
#
# Usage: vm.sh --image TARBALL --bridge BRIDGE --net A.B.C --ns-prefix NSPREFIX
# Environment (set by the stand-in cloud): STANDIN_VM_FOLDER, STANDIN_VM_NAME, STANDIN_VM_SEQ.
# Prints "ipv4 ADDRESS" on stdout once the VM's sshd listens, nothing else (its log is
# FOLDER/vm.log). On SIGTERM (or SIGINT/SIGHUP) it stops every process of the VM, removes its
# network namespace and link, and exits; FOLDER is left to the caller.
set -euo pipefail

here=$(cd "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
image="" bridge="" net="" prefix=""
while [ $# -gt 0 ]; do
	case $1 in
	--image) image=$2; shift 2 ;;
	--bridge) bridge=$2; shift 2 ;;
	--net) net=$2; shift 2 ;;
	--ns-prefix) prefix=$2; shift 2 ;;
	*) echo "usage: $0 --image TARBALL --bridge BRIDGE --net A.B.C --ns-prefix NSPREFIX" >&2; exit 2 ;;
	esac
done
folder=${STANDIN_VM_FOLDER:?} name=${STANDIN_VM_NAME:?} seq=${STANDIN_VM_SEQ:?}
if [ -z "$image" ] || [ -z "$bridge" ] || [ -z "$prefix" ] || ! [[ $net =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
	echo "vm.sh: --image, --bridge, --net A.B.C and --ns-prefix are needed" >&2
	exit 2
fi
if ! [[ $seq =~ ^[0-9]+$ ]] || [ "$seq" -lt 1 ] || [ "$seq" -gt 250 ]; then
	echo "vm.sh: bad seq $seq" >&2
	exit 2
fi
[[ $name =~ ^[a-zA-Z0-9.-]{1,63}$ ]] || { echo "vm.sh: bad name $name" >&2; exit 2; }

ns=$prefix-vm$seq
link=vm$seq
addr=$net.$((seq + 1))
root=$folder/root
exec 3>&1 >>"$folder/vm.log" 2>&1
log() { printf '%s vm.sh %s: %s\n' "$(date +%T.%3N)" "$name" "$*"; }

vm_pid=""
stopped=0
# Every process of the VM, then its network: nothing of it is left when this returns.
stop() {
	[ $stopped = 0 ] || return 0
	stopped=1
	local end=$((SECONDS + 20))
	if [ -n "$vm_pid" ]; then
		kill -KILL "$vm_pid" 2>/dev/null || true # unshare --kill-child: pid 1 and all with it
		wait "$vm_pid" 2>/dev/null || true
	fi
	if [ -e "/run/netns/$ns" ]; then
		while [ -n "$(ip netns pids "$ns" 2>/dev/null)" ] && [ $SECONDS -lt $end ]; do
			sleep 0.05
		done
		[ -z "$(ip netns pids "$ns" 2>/dev/null)" ] || log "processes still in $ns: $(ip netns pids "$ns" | tr '\n' ' ')"
		ip netns delete "$ns" || log "ip netns delete $ns failed"
	fi
	ip link delete "$link" 2>/dev/null || true
	log "stopped; network namespace $ns removed"
}
trap 'stop; exit 0' TERM INT HUP
trap stop EXIT

t0=$SECONDS
log "unpacking $image into $root"
mkdir -p "$root"
tar -C "$root" --numeric-owner --xattrs -xzf "$image"
install -d -m 700 "$root/root/.ssh"
install -m 600 "$folder/authorized_keys" "$root/root/.ssh/authorized_keys"

log "network: namespace $ns, $addr/24 on eth0, linked to $bridge as $link"
ip netns add "$ns"
ip link add name "$link" type veth peer name eth0 netns "$ns"
ip link set "$link" master "$bridge" up
ip -n "$ns" link set lo up
ip -n "$ns" addr add "$addr/24" dev eth0
ip -n "$ns" link set eth0 up

log "booting"
nsenter --net="/run/netns/$ns" -- unshare --pid --mount --uts --ipc --fork --kill-child \
	-- bash "$here/vm-init.sh" "$root" "$name" &
vm_pid=$!

# Up when its sshd answers on the VM's address (this side of the link reaches it).
end=$((SECONDS + 60))
# shellcheck disable=SC2016 # the inner shell's $1
until timeout 1 bash -c 'exec 9<>"/dev/tcp/$1/22"' _ "$addr" 2>/dev/null; do
	if ! kill -0 "$vm_pid" 2>/dev/null; then
		log "the VM ended while booting"
		exit 1
	fi
	if [ $SECONDS -ge $end ]; then
		log "sshd did not answer on $addr:22 within 60 s"
		exit 1
	fi
	sleep 0.1
done
log "up in $((SECONDS - t0)) s: ssh root@$addr"
echo "ipv4 $addr" >&3
exec 3>&-
wait "$vm_pid" || true
log "the VM's pid 1 ended"
