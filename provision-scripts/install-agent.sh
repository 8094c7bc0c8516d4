#!/usr/bin/env bash
# install-agent.sh: installs stoke-agent on a server from files the controller uploaded: the
# binary, the enrollment bundle (agent.conf, ca.crt, agent.crt, agent.key, secret) and the
# systemd unit; then enables and (re)starts the service. Run as root over SSH after
# provision.sh; idempotent: unchanged files are left alone and the agent restarts only when
# something changed. Prints one "==> step: what" line per step.
#
# Usage: install-agent.sh --binary FILE --bundle DIR [--unit FILE]
#   --unit defaults to stoke-agent.service next to this script.
# Environment (optional):
#   STOKE_ROOT=DIR            install under DIR instead of / (sandboxed test servers)
#   STOKE_SYSTEMD=auto|yes|no manage the service with systemctl (auto: if systemd runs)
# Set by the stand-in cloud's sshd on its VMs (tests/standin_cloud.py):
#   STOKE_STANDIN_ROOT        the VM's root folder (used like STOKE_ROOT)
#   STOKE_STANDIN_HTTP_PORT   the port of the VM's own nginx (--nginx), and
#   STOKE_STANDIN_NGINX_PREFIX  its prefix: the agent manages that nginx
set -euo pipefail

# On the stand-in cloud's test hosts sshd sets STOKE_STANDIN_ROOT: install inside it.
root=${STOKE_ROOT:-${STOKE_STANDIN_ROOT:-}}
use_systemd=${STOKE_SYSTEMD:-auto}
binary=""
bundle=""
unit="$(dirname -- "${BASH_SOURCE[0]}")/stoke-agent.service"

bin_path="$root/usr/local/bin/stoke-agent"
etc_dir="$root/etc/stoke-agent"
state_dir="$root/var/lib/stoke-agent"
unit_path="$root/etc/systemd/system/stoke-agent.service"

step() {
	printf '==> %s: %s\n' "$1" "$2"
}

die() {
	printf '==> error: %s\n' "$*" >&2
	exit 1
}

usage() {
	printf 'usage: %s --binary FILE --bundle DIR [--unit FILE]\n' "$0" >&2
	exit 2
}

while [ $# -gt 0 ]; do
	case $1 in
	--binary) [ $# -ge 2 ] || usage; binary=$2; shift 2 ;;
	--bundle) [ $# -ge 2 ] || usage; bundle=$2; shift 2 ;;
	--unit) [ $# -ge 2 ] || usage; unit=$2; shift 2 ;;
	*) usage ;;
	esac
done
if [ -z "$binary" ] || [ -z "$bundle" ]; then
	usage
fi

as_root() {
	[ "$(id -u)" -eq 0 ]
}

systemd_on() {
	case $use_systemd in
	yes) return 0 ;;
	no) return 1 ;;
	*) [ -z "$root" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 ;;
	esac
}

# put_file SRC DEST MODE: DEST gets SRC's content and MODE (owned by root when we are root),
# replaced by a rename so a running binary or a reader never sees half a file. Returns 0
# when it changed something, 1 when DEST was already so.
put_file() {
	local src=$1 dest=$2 mode=$3 tmp
	if [ -f "$dest" ] && [ ! -L "$dest" ] && cmp -s -- "$src" "$dest" &&
		[ "$(stat -c %a -- "$dest")" = "$mode" ] &&
		{ ! as_root || [ "$(stat -c %u:%g -- "$dest")" = 0:0 ]; }; then
		return 1
	fi
	tmp=$(mktemp -- "$dest.tmp-XXXXXX")
	if ! { cat -- "$src" >"$tmp" && chmod "$mode" -- "$tmp" &&
		{ ! as_root || chown 0:0 -- "$tmp"; } && mv -f -- "$tmp" "$dest"; }; then
		rm -f -- "$tmp"
		die "cannot install $dest"
	fi
	return 0
}

# make_dir PATH MODE: a root-owned folder with exactly MODE.
make_dir() {
	local path=$1 mode=$2
	[ -L "$path" ] && die "$path is a symbolic link"
	[ -d "$path" ] || mkdir -p -- "$path"
	[ "$(stat -c %a -- "$path")" = "$mode" ] || chmod "$mode" -- "$path"
	if as_root && [ "$(stat -c %u:%g -- "$path")" != 0:0 ]; then
		chown 0:0 -- "$path"
	fi
}

# install_config SRC NAME MODE: one file of the bundle into the config folder.
install_config() {
	if put_file "$1" "$etc_dir/$2" "$3"; then
		step config "installed $etc_dir/$2 (mode $3)"
		changed=1
	else
		step config "$etc_dir/$2 up to date"
	fi
}

# agent.conf as enrolled names files where the controller wrote the bundle: point them
# at where this script puts them. Other keys are kept as they are.
rewrite_conf() {
	awk -v etc="$etc_dir" -v state="$state_dir" '
		$1 == "ca_file"     { print "ca_file " etc "/ca.crt"; next }
		$1 == "cert_file"   { print "cert_file " etc "/agent.crt"; next }
		$1 == "key_file"    { print "key_file " etc "/agent.key"; next }
		$1 == "secret_file" { print "secret_file " etc "/secret"; next }
		$1 == "state_dir"   { print "state_dir " state; next }
		{ print }
	' "$1"
}

[ -z "$root" ] && ! as_root && die "must run as root"
[ -f "$binary" ] || die "no agent binary at $binary"
[ -d "$bundle" ] || die "no bundle folder at $bundle"
for f in agent.conf ca.crt agent.crt agent.key secret; do
	[ -f "$bundle/$f" ] || die "the bundle has no $f"
done
[ -f "$unit" ] || die "no unit file at $unit"

changed=0
unit_changed=0

make_dir "$root/usr/local/bin" 755
if put_file "$binary" "$bin_path" 755; then
	step binary "installed $bin_path"
	changed=1
else
	step binary "$bin_path up to date"
fi
# The binary must at least start on this machine.
"$bin_path" -V >/dev/null 2>&1 || die "$bin_path does not run here (wrong architecture?)"

make_dir "$etc_dir" 700
make_dir "$state_dir" 700
conf_tmp=$(mktemp)
trap 'rm -f -- "$conf_tmp"' EXIT
rewrite_conf "$bundle/agent.conf" >"$conf_tmp"
if [ -n "$root" ]; then
	# Managed paths inside the sandbox; commands run as the sandbox's owner.
	{
		echo "allow_root yes"
		echo "default_user $(id -un)"
		echo "write_roots $root"
		echo "nginx_sites_available $root/etc/nginx/sites-available"
		echo "nginx_sites_enabled $root/etc/nginx/sites-enabled"
		# Keys for people: where the sandbox's sshd looks too (never the real ~/.ssh).
		echo "authorized_keys_file $root/etc/ssh/authorized_keys/%u"
		# The stand-in cloud's VMs (--nginx) have an nginx of their own on a port of
		# their own; sites are written for it and it is the one reloaded.
		if [ -n "${STOKE_STANDIN_HTTP_PORT:-}" ] && [ -n "${STOKE_STANDIN_NGINX_PREFIX:-}" ]; then
			echo "nginx_prefix $STOKE_STANDIN_NGINX_PREFIX"
			echo "nginx_conf conf/nginx.conf"
			echo "nginx_pid ${STOKE_STANDIN_NGINX_PREFIX%/}/nginx.pid"
			echo "nginx_listen_port $STOKE_STANDIN_HTTP_PORT"
		fi
	} >>"$conf_tmp"
fi
install_config "$bundle/ca.crt" ca.crt 644
install_config "$bundle/agent.crt" agent.crt 644
install_config "$bundle/agent.key" agent.key 600
install_config "$bundle/secret" secret 600
# Checked by the agent itself before it replaces a working configuration.
"$bin_path" -n -c "$conf_tmp" >/dev/null || die "$bundle/agent.conf is not valid"
install_config "$conf_tmp" agent.conf 600

make_dir "$(dirname -- "$unit_path")" 755
if put_file "$unit" "$unit_path" 644; then
	step unit "installed $unit_path"
	unit_changed=1
else
	step unit "$unit_path up to date"
fi

if ! systemd_on; then
	# A sandboxed test host, or a server without systemd (a container, a chroot): run the
	# agent in the background, restarted on reinstall. The controller stops it through
	# the same pid file when the server is deleted. Nothing starts it again after a reboot.
	pidfile=$state_dir/agent.pid
	old=$(cat "$pidfile" 2>/dev/null || true)
	# Only the agent itself (a pid file can outlive its process); its binary may have
	# been replaced above, which readlink shows as "PATH (deleted)".
	if [[ $old =~ ^[0-9]+$ ]] && [[ "$(readlink "/proc/$old/exe" 2>/dev/null)" == "$bin_path"* ]] &&
		kill "$old" 2>/dev/null; then
		step service "stopped the previous agent"
	fi
	setsid "$bin_path" -c "$etc_dir/agent.conf" >>"$state_dir/agent.log" 2>&1 </dev/null &
	echo $! >"$pidfile"
	step service "stoke-agent started (pid $(cat "$pidfile"), no systemd: not enabled at boot)"
	exit 0
fi
if [ $unit_changed = 1 ]; then
	systemctl daemon-reload
	step service "systemd reloaded"
fi
if ! systemctl is-enabled --quiet stoke-agent || ! systemctl is-active --quiet stoke-agent; then
	systemctl enable --now stoke-agent
	step service "stoke-agent enabled and started"
elif [ $changed = 1 ] || [ $unit_changed = 1 ]; then
	systemctl restart stoke-agent
	step service "stoke-agent restarted with the new files"
else
	step service "stoke-agent enabled and running"
fi
