#!/usr/bin/env bash
# vm-init.sh ROOT NAME: the first process of a test VM (tests/vm/vm.sh starts it as pid 1 of
# new pid, mount, UTS and IPC namespaces, inside the VM's network namespace). Mounts what a
# Debian userland needs inside ROOT (a fresh /proc with /proc/sys read-only but for the
# network namespace's own /proc/sys/net, a small /dev, /run), names the host, makes its SSH
# host keys, then becomes the VM's sshd (-D: pid 1 stays sshd, which reaps orphans; when it
# ends the kernel stops everything else in the VM). The mounts live in this mount namespace
# only and go with it.
set -euo pipefail

root=$1
name=$2
[ "$$" = 1 ] || { echo "vm-init: must be pid 1 of its own pid namespace" >&2; exit 1; }
[ -x "$root/usr/sbin/sshd" ] || { echo "vm-init: no sshd in $root" >&2; exit 1; }

mount --make-rprivate /
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
# The kernel's settings stay out of reach; the VM's network namespace's are its own.
mount --bind "$root/proc/sys" "$root/proc/sys"
mount -o remount,bind,ro "$root/proc/sys"
mount --bind /proc/sys/net "$root/proc/sys/net"

mount -t tmpfs -o nosuid,mode=755,size=4m dev "$root/dev"
for n in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
	IFS=: read -r f ma mi <<<"$n"
	mknod -m 666 "$root/dev/$f" c "$ma" "$mi"
done
mkdir -m 755 "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o nosuid,nodev,mode=1777 shm "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"

mount -t tmpfs -o nosuid,nodev,mode=755,size=64m run "$root/run"
mkdir -m 755 "$root/run/sshd" "$root/run/lock"

hostname "$name"
echo "$name" >"$root/etc/hostname"
grep -q "[[:space:]]$name\$" "$root/etc/hosts" 2>/dev/null || echo "127.0.1.1	$name" >>"$root/etc/hosts"

chroot "$root" /usr/bin/ssh-keygen -A
echo "vm-init: $name up, sshd starting"
exec chroot "$root" /usr/sbin/sshd -D -e
