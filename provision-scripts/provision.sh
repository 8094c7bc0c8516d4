#!/usr/bin/env bash
# provision.sh: prepares a fresh Debian or Ubuntu server for Stoke: waits for cloud-init and
# the package manager, creates the deploy user, installs nginx, git and the base tools, and
# sets up the firewall. The controller runs it as root over SSH and shows each "==> step:"
# line as progress. Every step looks before it changes anything: running it again is harmless.
#
# Environment (all optional):
#   STOKE_DEPLOY_USER=deploy        the unprivileged user that owns sites and runs deploys
#   STOKE_SITES_ROOT=/var/www       where sites live (the controller's default): the deploy
#                                   user owns it, to make each site's folder there
#   STOKE_SKIP_FIREWALL=1           leave the firewall alone (no ufw install, no rules)
#   STOKE_SSH_PORT=N                SSH port to keep open (default: the one of this session)
#   STOKE_LOCK_TIMEOUT=600          seconds to wait for dpkg/apt locks held by others
#   STOKE_CLOUD_INIT_TIMEOUT=900    seconds to wait for cloud-init to finish
#   STOKE_SYSTEMD=auto|yes|no       manage services with systemctl (auto: if systemd runs)
set -euo pipefail

deploy_user=${STOKE_DEPLOY_USER:-deploy}
sites_root=${STOKE_SITES_ROOT:-/var/www}
skip_firewall=${STOKE_SKIP_FIREWALL:-0}
lock_timeout=${STOKE_LOCK_TIMEOUT:-600}
cloud_init_timeout=${STOKE_CLOUD_INIT_TIMEOUT:-900}
use_systemd=${STOKE_SYSTEMD:-auto}
# nginx, git and base tools, then the agent's run-time libraries (what `ldd stoke-agent`
# lists beyond libc): the agent binary is uploaded next, and starts only if they are here.
packages=(nginx git curl ca-certificates
	libmbedtls14 libmbedx509-1 libmbedcrypto7 libprotobuf-c1 libjansson4)
lock_files=(/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock
	/var/cache/apt/archives/lock)

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C

step() {
	printf '==> %s: %s\n' "$1" "$2"
}

die() {
	printf '==> error: %s\n' "$*" >&2
	exit 1
}

is_number() {
	case $1 in
	'' | *[!0-9]*) return 1 ;;
	*) return 0 ;;
	esac
}

# True while a process holds one of the dpkg/apt locks. dpkg and apt take fcntl (POSIX)
# locks, which flock(1) cannot see; fuser (psmisc) can, and /proc/locks lists them by inode
# where psmisc is missing (minimal images).
apt_locked() {
	local f inode existing=()
	for f in "${lock_files[@]}"; do
		[ -e "$f" ] && existing+=("$f")
	done
	[ ${#existing[@]} -gt 0 ] || return 1
	if command -v fuser >/dev/null 2>&1; then
		fuser "${existing[@]}" >/dev/null 2>&1
		return
	fi
	for f in "${existing[@]}"; do
		inode=$(stat -c %i "$f")
		if grep -Eq "^[0-9]+: +(->)? *POSIX .*:${inode} " /proc/locks; then
			return 0
		fi
	done
	return 1
}

wait_apt_locks() {
	local deadline=$((SECONDS + lock_timeout)) said=0
	while apt_locked; do
		if [ $said -eq 0 ]; then
			step apt "waiting for another package manager (unattended-upgrades?) to finish"
			said=1
		fi
		[ $SECONDS -lt $deadline ] ||
			die "dpkg/apt is still locked after ${lock_timeout}s: ${lock_files[*]}"
		sleep 2
	done
}

# apt-get that waits for the dpkg lock itself too (a lock taken between our check and
# its start), keeps existing config files, and never asks.
apt_get() {
	apt-get -q -y -o "DPkg::Lock::Timeout=${lock_timeout}" \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

pkg_installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

systemd_on() {
	case $use_systemd in
	yes) return 0 ;;
	no) return 1 ;;
	*) [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 ;;
	esac
}

preflight() {
	local id="" id_like=""
	[ "$(id -u)" -eq 0 ] || die "must run as root"
	if [ -r /etc/os-release ]; then
		# shellcheck disable=SC1091
		id=$(. /etc/os-release && printf '%s' "${ID:-}")
		# shellcheck disable=SC1091
		id_like=$(. /etc/os-release && printf '%s' "${ID_LIKE:-}")
	fi
	case " $id $id_like " in
	*" debian "* | *" ubuntu "*) ;;
	*) die "unsupported system '${id:-unknown}': Debian or Ubuntu needed" ;;
	esac
	[[ $deploy_user =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] ||
		die "STOKE_DEPLOY_USER '$deploy_user' is not a valid user name"
	[[ $sites_root =~ ^(/[A-Za-z0-9._-]+)+$ && ! $sites_root =~ /\.\.?(/|$) ]] ||
		die "STOKE_SITES_ROOT '$sites_root' is not an absolute folder path"
	is_number "$lock_timeout" || die "STOKE_LOCK_TIMEOUT must be a number of seconds"
	is_number "$cloud_init_timeout" || die "STOKE_CLOUD_INIT_TIMEOUT must be a number of seconds"
	step preflight "$id, running as root, deploy user '$deploy_user'"
}

wait_cloud_init() {
	local rc=0
	if ! command -v cloud-init >/dev/null 2>&1; then
		step cloud-init "not installed, nothing to wait for"
		return
	fi
	step cloud-init "waiting for first-boot setup to finish"
	timeout "$cloud_init_timeout" cloud-init status --wait >/dev/null || rc=$?
	case $rc in
	0) step cloud-init "done" ;;
	124) die "cloud-init did not finish within ${cloud_init_timeout}s" ;;
	# 1: error, 2: recoverable errors (newer releases). The server may still be usable;
	# the steps below check what they need.
	*) step cloud-init "finished with errors (status $rc), going on" ;;
	esac
}

install_packages() {
	local p missing=() want=("${packages[@]}")
	[ "$skip_firewall" = 1 ] || want+=(ufw)
	for p in "${want[@]}"; do
		pkg_installed "$p" || missing+=("$p")
	done
	if [ ${#missing[@]} -eq 0 ]; then
		step packages "already installed: ${want[*]}"
		return
	fi
	wait_apt_locks
	step packages "updating package lists"
	local try
	for try in 1 2 3; do
		if apt_get update; then
			break
		fi
		[ "$try" -lt 3 ] || die "apt-get update failed 3 times"
		step packages "apt-get update failed, trying again in $((try * 5))s"
		sleep $((try * 5))
	done
	step packages "installing ${missing[*]}"
	wait_apt_locks
	apt_get install --no-install-recommends "${missing[@]}"
	for p in "${missing[@]}"; do
		pkg_installed "$p" || die "package $p did not install"
	done
}

create_deploy_user() {
	local entry uid gid home
	if entry=$(getent passwd "$deploy_user"); then
		step user "$deploy_user exists"
	else
		# "*" rather than useradd's "!": no password login, but not "locked", which sshd
		# without PAM would refuse even for keys.
		useradd --create-home --user-group --shell /bin/bash --password '*' "$deploy_user"
		step user "created $deploy_user"
		entry=$(getent passwd "$deploy_user") || die "useradd did not create $deploy_user"
	fi
	IFS=: read -r _ _ uid gid _ home _ <<<"$entry"
	if [ -z "$home" ] || [ "$home" = / ]; then
		die "$deploy_user has no home folder"
	fi
	ensure_dir "$home" 755 "$uid" "$gid"
	ensure_dir "$home/.ssh" 700 "$uid" "$gid"
	if [ ! -e "$home/.ssh/authorized_keys" ]; then
		: >"$home/.ssh/authorized_keys"
		chmod 600 "$home/.ssh/authorized_keys"
		chown "$uid:$gid" "$home/.ssh/authorized_keys"
		step user "made $home/.ssh/authorized_keys"
	fi
}

# ensure_dir PATH MODE UID GID [STEP]: a folder with that mode and owner, changed only if
# needed; progress lines under STEP (default: user).
ensure_dir() {
	local path=$1 mode=$2 uid=$3 gid=$4 label=${5:-user}
	[ -L "$path" ] && die "$path is a symbolic link"
	if [ ! -d "$path" ]; then
		mkdir -p "$path"
		step "$label" "made $path"
	fi
	if [ "$(stat -c %a "$path")" != "$mode" ]; then
		chmod "$mode" "$path"
		step "$label" "$path mode set to $mode"
	fi
	if [ "$(stat -c %u:%g "$path")" != "$uid:$gid" ]; then
		chown "$uid:$gid" "$path"
		step "$label" "$path owner set to $deploy_user"
	fi
}

# The sites root: the agent makes each site's folder there as the deploy user (the nginx
# package leaves /var/www to root). Only the folder itself changes hands, not what is in it.
prepare_sites_root() {
	local entry uid gid
	entry=$(getent passwd "$deploy_user") || die "no user $deploy_user"
	IFS=: read -r _ _ uid gid _ <<<"$entry"
	ensure_dir "$sites_root" 755 "$uid" "$gid" sites
	step sites "$sites_root belongs to $deploy_user"
}

# True when the nginx of /run/nginx.pid (Debian's nginx.conf) runs.
nginx_running() {
	local pid
	pid=$(cat /run/nginx.pid 2>/dev/null) || return 1
	is_number "$pid" && kill -0 "$pid" 2>/dev/null
}

enable_nginx() {
	if ! systemd_on; then
		# No systemd (a container, a chroot): dpkg's invoke-rc.d did not start nginx
		# either, and the agent reloads a running nginx. Start it through its init
		# script; nothing starts it again after a reboot.
		if nginx_running; then
			step nginx "running (systemd is not running: not enabled at boot)"
			return
		fi
		if [ -x /etc/init.d/nginx ]; then
			/etc/init.d/nginx start || die "nginx did not start (/etc/init.d/nginx start)"
		else
			nginx || die "nginx did not start"
		fi
		nginx_running || die "nginx did not start: no process for /run/nginx.pid"
		step nginx "started (systemd is not running: not enabled at boot)"
		return
	fi
	if systemctl is-enabled --quiet nginx && systemctl is-active --quiet nginx; then
		step nginx "enabled and running"
		return
	fi
	systemctl enable --now nginx
	step nginx "enabled and started"
}

# The SSH port to keep open: STOKE_SSH_PORT, else the one this session came in on.
ssh_port() {
	local port=${STOKE_SSH_PORT:-}
	if [ -z "$port" ] && [ -n "${SSH_CONNECTION:-}" ]; then
		port=${SSH_CONNECTION##* }
	fi
	is_number "${port:-x}" || port=22
	printf '%s' "$port"
}

configure_firewall() {
	local rule added port
	if [ "$skip_firewall" = 1 ]; then
		step firewall "skipped (STOKE_SKIP_FIREWALL=1)"
		return
	fi
	port=$(ssh_port)
	added=$(ufw show added 2>/dev/null || true)
	local rules=(OpenSSH 80/tcp 443/tcp)
	# Never lock ourselves out: sshd may listen elsewhere than 22.
	[ "$port" = 22 ] || rules+=("$port/tcp")
	for rule in "${rules[@]}"; do
		if grep -qxF "ufw allow $rule" <<<"$added"; then
			step firewall "allow $rule: present"
		else
			ufw allow "$rule" >/dev/null
			step firewall "allow $rule: added"
		fi
	done
	if ufw status | grep -q '^Status: active'; then
		step firewall "ufw active"
	else
		ufw --force enable >/dev/null
		step firewall "ufw enabled"
	fi
}

# The stand-in cloud's test hosts share the test machine: nothing system-wide is changed
# there, only the sandbox's own folders are made.
if [ -n "${STOKE_STANDIN_ROOT:-}" ]; then
	step sandbox "stand-in host rooted at $STOKE_STANDIN_ROOT: system changes skipped"
	mkdir -p "$STOKE_STANDIN_ROOT/var/www" "$STOKE_STANDIN_ROOT/etc/nginx/sites-available" \
		"$STOKE_STANDIN_ROOT/etc/nginx/sites-enabled"
	step finished "server provisioned (sandbox)"
	exit 0
fi

preflight
wait_cloud_init
install_packages
create_deploy_user
prepare_sites_root
enable_nginx
configure_firewall
step finished "server provisioned"
