#!/usr/bin/env bash
# build-image.sh: the root file system of the VM test's "servers" (tests/e2e_vm_test.sh), a
# minimal Debian 12 made with debootstrap from the Debian mirror apt uses here, cached as a
# tarball so later runs only unpack it. Prints the tarball's path on stdout.
#
# What is in it: debootstrap's minbase, openssh-server and the libraries stoke-agent links
# against (so the uploaded binary runs), and a local package repository in /srv/stoke-repo
# holding what provision.sh installs (nginx git curl ca-certificates ufw) with their
# dependencies. Its apt sources name only that repository: provision.sh's apt-get update
# and install run for real on a server that reaches no mirror. No SSH host keys (each VM
# makes its own at boot), no package lists (provision.sh fetches them).
#
# Usage: build-image.sh --agent BINARY [--cache DIR] [--mirror URL]
#   --cache   where images are kept (default $STOKE_VM_CACHE, else /var/cache/stoke-test-vm)
#   --mirror  the Debian mirror (default: the first of apt's bookworm sources here)
# Runs as root, on the host's network (before any test namespace exists). A build takes a
# few minutes and is done once per set of inputs (this script, the package lists): the
# tarball's name holds their hash. Concurrent callers wait for one build (flock). Images
# no run used for 30 days are removed when a new one is built.
set -euo pipefail

suite=bookworm
agent=""
cache=${STOKE_VM_CACHE:-/var/cache/stoke-test-vm}
mirror=""
# What provision.sh installs (its packages=(...) and ufw), the agent's run-time libraries
# among them: served offline from the image, not installed in it, so the test proves that
# provisioning installs them (a fresh cloud image has none of them).
repo_packages=(nginx git curl ca-certificates ufw
	libmbedtls14 libmbedx509-1 libmbedcrypto7 libprotobuf-c1 libjansson4)
# Installed in the image: the sanitizer runtimes (only a test build links them; one image
# serves both builds). A library of the binary (ldd) that provision.sh does not install is
# added here below, so the agent still starts, but it is named as a gap of provision.sh.
agent_packages=(libasan8 libubsan1 libstdc++6 libgcc-s1)

say() { printf 'build-image: %s\n' "$*" >&2; }
die() {
	say "error: $*"
	exit 1
}

while [ $# -gt 0 ]; do
	case $1 in
	--agent) agent=$2; shift 2 ;;
	--cache) cache=$2; shift 2 ;;
	--mirror) mirror=$2; shift 2 ;;
	*) die "usage: $0 --agent BINARY [--cache DIR] [--mirror URL]" ;;
	esac
done
[ -n "$agent" ] || die "--agent BINARY is needed"
[ -x "$agent" ] || die "no agent binary at $agent"
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"
command -v debootstrap >/dev/null || die "debootstrap is not installed (make deps)"
command -v dpkg-scanpackages >/dev/null || die "dpkg-scanpackages is not installed (dpkg-dev)"

# The mirror apt uses here: deb822 (URIs:) or one-line (deb URL suite ...) sources.
apt_mirror() {
	local f
	for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		if [[ $f == *.sources ]]; then
			awk -v s="$suite" '
				/^[ \t]*$/ { if (u != "" && ok) { print u; exit } u = ""; ok = 0; next }
				tolower($1) == "uris:" && $2 ~ /^https?:\/\// { u = $2 }
				tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == s) ok = 1 }
				END { if (u != "" && ok) print u }' "$f"
		else
			awk -v s="$suite" '$1 == "deb" {
				i = 2; if ($i ~ /^\[/) while ($i !~ /\]$/) i++; if ($i ~ /^\[/ || $i ~ /\]$/) i++
				if ($(i) ~ /^https?:\/\// && $(i + 1) == s) { print $(i); exit } }' "$f"
		fi
	done | head -n 1
}
[ -n "$mirror" ] || mirror=$(apt_mirror)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian

# Packages of the libraries the agent binary loads, added when not listed above.
mapfile -t libs < <(ldd "$agent" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }')
for l in "${libs[@]}"; do
	p=$(dpkg -S "$(readlink -f "$l")" 2>/dev/null || dpkg -S "$l" 2>/dev/null || true)
	p=${p%%:*}
	[ -n "$p" ] || die "no Debian package holds $l (the agent must link only packaged libraries)"
	case " ${agent_packages[*]} ${repo_packages[*]} libc6 " in
	*" $p "*) ;;
	*)
		say "warning: provision.sh does not install $p (for $l); preinstalled in the image"
		agent_packages+=("$p")
		;;
	esac
done
include=$(printf '%s\n' openssh-server "${agent_packages[@]}" | sort -u | paste -sd, -)
arch=$(dpkg --print-architecture)
key=$({
	cat "${BASH_SOURCE[0]}"
	echo "$suite $arch $include ${repo_packages[*]}"
} | sha256sum | cut -c1-16)
image=$cache/debian-$suite-$arch-$key.tar.gz

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ -s "$image" ]; then
	touch "$image" # in use: kept by the pruning below
	say "cached: $image"
	echo "$image"
	exit 0
fi

t0=$SECONDS
work=$(mktemp -d "$cache/build.XXXXXX")
root=$work/root
mounted=()
cleanup() {
	local m
	for m in "${mounted[@]:-}"; do
		if [ -n "$m" ]; then umount -l "$m" 2>/dev/null || true; fi
	done
	# Nothing may be mounted below the folder when it is removed.
	if ! grep -qF " $work/" /proc/self/mounts; then
		rm -rf "$work"
	else
		say "left $work (still mounted)"
	fi
}
trap cleanup EXIT

say "debootstrap $suite from $mirror (include: $include); takes a few minutes"
if ! debootstrap --variant=minbase --include="$include" "$suite" "$root" "$mirror" \
	>"$work/debootstrap.log" 2>&1; then
	tail -n 20 "$work/debootstrap.log" >&2
	tail -n 20 "$root/debootstrap/debootstrap.log" >&2 2>/dev/null || true
	die "debootstrap failed (is $mirror reachable?)"
fi
say "debootstrap done in $((SECONDS - t0)) s"

# provision.sh's packages and their dependencies, downloaded (not installed) by the image's
# own apt, so the versions fit what it has (debootstrap's own downloads are dropped first).
chroot "$root" apt-get clean
mount -t proc proc "$root/proc" && mounted+=("$root/proc")
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
chroot "$root" apt-get -q update >"$work/apt.log" 2>&1 || {
	tail -n 20 "$work/apt.log" >&2
	die "apt-get update in the image failed"
}
chroot "$root" apt-get -q -y --download-only --no-install-recommends install \
	"${repo_packages[@]}" >>"$work/apt.log" 2>&1 || {
	tail -n 20 "$work/apt.log" >&2
	die "downloading ${repo_packages[*]} failed"
}
umount "$root/proc" && mounted=()
mkdir -p "$root/srv/stoke-repo"
mv "$root"/var/cache/apt/archives/*.deb "$root/srv/stoke-repo/"
(cd "$root/srv/stoke-repo" && dpkg-scanpackages --multiversion . /dev/null >Packages 2>/dev/null)
n=$(grep -c '^Package: ' "$root/srv/stoke-repo/Packages")
[ "$n" -gt 0 ] || die "the local repository is empty"
say "local repository: $n packages, $(du -sh "$root/srv/stoke-repo" | cut -f1)"

# apt sees only the local repository; no lists yet (provision.sh runs apt-get update).
rm -f "$root/etc/apt/sources.list" "$root"/etc/apt/sources.list.d/*
echo 'deb [trusted=yes] file:/srv/stoke-repo ./' >"$root/etc/apt/sources.list"
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/*
mkdir -p "$root/var/lib/apt/lists/partial"
# No name service to reach; no host keys shared by every VM made from this image.
: >"$root/etc/resolv.conf"
rm -f "$root"/etc/ssh/ssh_host_*
echo stoke-vm >"$root/etc/hostname"

tar -C "$root" --numeric-owner --xattrs -czf "$work/image.tar.gz" .
mv "$work/image.tar.gz" "$image"
say "image built in $((SECONDS - t0)) s: $image ($(du -h "$image" | cut -f1))"
# Images of other inputs that no run used for 30 days go.
find "$cache" -maxdepth 1 -name "debian-$suite-*.tar.gz" ! -name "${image##*/}" -mtime +30 -delete
echo "$image"
