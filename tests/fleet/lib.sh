# shellcheck shell=bash
# Shared helpers for the fleet test bed scripts (up, down, crash, cut, restore,
# status). Sourced, never run. See README.md beside this file.

set -euo pipefail
# Debian's tools first (callers may have pyenv shims or a PATH without sbin).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}

# shellcheck disable=SC2034 # used by the scripts that source this file
FLEET_SRC=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
STATE=${CCHQ_FLEET_DIR:-/tmp/cchq-fleet}
case $STATE in
/*) ;;
*) STATE=$PWD/$STATE ;;
esac
# Normalise (no trailing slash, no dot segments) without requiring it to exist.
STATE=$(readlink -m "$STATE")
MARKER=$STATE/.cchq-fleet-state
INIT=$STATE/bin/host-init
# shellcheck disable=SC2034
MAX_HOSTS=995 # see addr_of: 127.0.0.11..127.0.0.255, then 127.0.1.1..127.0.3.250

PACKAGES=(openssh-server supervisor sudo git procps psmisc iproute2 python3 acl rsync
	nginx redis-server postgresql pgbouncer monit)

log() { printf 'fleet: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

check_state_path() {
	case $STATE/ in
	/ | /tmp/ | /run/ | /home/cchq/* | /etc/supervisor/* | /var/log/supervisor/* | /proc/* | /sys/* | /dev/* | /mnt/*)
		die "CCHQ_FLEET_DIR=$STATE is not usable (it must not be /, /tmp, /run or lie under a path the hosts mask or use for staging)"
		;;
	esac
}

need_root() {
	[ "$(id -u)" -eq 0 ] || die "the fleet test bed must run as root (it creates namespaces, users and mounts)"
}

# Take the fleet lock (serialises up/down/crash/cut/restore on one state dir).
# The lock file lives beside the state dir so that `down` can remove the latter.
take_lock() {
	mkdir -p "$(dirname "$STATE")"
	exec 9>"$STATE.lock"
	if ! flock -w 120 9; then
		die "timed out waiting for the fleet lock $STATE.lock"
	fi
}

# Host i's address: 127.0.0.(10+i) for the first 245 hosts (as always), then 250 a block in
# 127.0.1.1-250, 127.0.2.1-250, 127.0.3.1-250 (benchmarks at 500 hosts). All in 127.0.0.0/8,
# which Linux answers on the loopback interface without configuring any address.
addr_of() {
	local i=$1 j
	if [ "$i" -le 245 ]; then
		echo "127.0.0.$((10 + i))"
	else
		j=$((i - 246))
		echo "127.0.$((1 + j / 250)).$((1 + j % 250))"
	fi
}

# The index of a fleet address (the inverse of addr_of); nothing for another address.
index_of_addr() {
	local a=$1 o3 o4
	[[ $a =~ ^127\.0\.([0-9]+)\.([0-9]+)$ ]] || return 0
	o3=${BASH_REMATCH[1]} o4=${BASH_REMATCH[2]}
	if [ "$o3" -eq 0 ]; then
		[ "$o4" -gt 10 ] && echo $((o4 - 10))
	elif [ "$o3" -le 3 ] && [ "$o4" -ge 1 ] && [ "$o4" -le 250 ]; then
		echo $((246 + (o3 - 1) * 250 + o4 - 1))
	fi
	return 0
}

fleet_size() {
	if [ -f "$STATE/size" ]; then cat "$STATE/size"; else echo 0; fi
}

# HOST may be an inventory name (fleet3), an address (127.0.0.13) or an index (3).
# Prints the index; dies if the fleet has no such host.
resolve_host() {
	local arg=${1:-} i n
	case $arg in
	fleet[0-9]*) i=${arg#fleet} ;;
	127.0.[0-9]*) i=$(index_of_addr "$arg") ;;
	[0-9]*) i=$arg ;;
	*) die "unknown host '$arg' (use fleetN, its address or N)" ;;
	esac
	[[ $i =~ ^[0-9]+$ ]] || die "unknown host '$arg'"
	i=$((10#$i))
	n=$(fleet_size)
	[ "$n" -gt 0 ] || die "no fleet is up (state dir $STATE)"
	{ [ "$i" -ge 1 ] && [ "$i" -le "$n" ]; } || die "no host '$arg' in this fleet of $n"
	echo "$i"
}

# True if PID is alive (not a zombie) and is this fleet's host-init (the PID 1
# of a host's namespace, seen from outside). Builtins only: called in loops.
is_our_init() {
	local pid=$1 stat=() args=()
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	read -r -a stat 2>/dev/null <"/proc/$pid/stat" || return 1
	[ "${stat[2]:-Z}" != Z ] || return 1
	mapfile -d '' -t args 2>/dev/null <"/proc/$pid/cmdline" || return 1
	[ "${args[0]:-}" = /bin/bash ] && [ "${args[1]:-}" = "$INIT" ]
}

# True if PID exists and is not a zombie.
alive() {
	local stat=()
	read -r -a stat 2>/dev/null <"/proc/$1/stat" || return 1
	[ "${stat[2]:-Z}" != Z ]
}

# Pids of every process whose command line names this fleet's host-init: the
# unshare wrappers and the namespace inits (and init's own subshells).
fleet_pids() {
	local re
	# Escape the path for grep -E and bracket its last character so that
	# grep does not find its own command line.
	re=$(printf '%s' "${INIT%?}" | sed 's/[][\\.*^$+?(){}|]/\\&/g')"[${INIT: -1}]"
	grep -lsE -- "$re" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3 || true
}

# Host-side pid of host i's namespace init (PID 1 inside), or empty.
pid1_of() {
	local pid=
	read -r pid 2>/dev/null <"$STATE/host$1/pid1" || return 0
	if is_our_init "$pid"; then echo "$pid"; fi
}

# Addresses with a TCP listener on port 22 (one ss call for the whole fleet).
listening_addrs() {
	ss -Hltn 2>/dev/null | awk '{print $4}' | sed -n 's/^\(127\.0\.[0-3]\.[0-9]*\):22$/\1/p'
}

# Install missing Debian packages (once per machine).
ensure_packages() {
	local missing=() p policy_created=0
	for p in "${PACKAGES[@]}"; do
		if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
			missing+=("$p")
		fi
	done
	for p in unshare nsenter flock ssh-keygen ss; do
		command -v "$p" >/dev/null || missing+=(util-linux)
	done
	[ ${#missing[@]} -gt 0 ] || return 0
	log "installing Debian packages: ${missing[*]}"
	# Keep maintainer scripts from starting a system-wide sshd on 0.0.0.0:22,
	# which would take port 22 from every fleet address.
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		policy_created=1
	fi
	local rc=0
	{ DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			"${PACKAGES[@]}" util-linux; } >&2 || rc=$?
	if [ "$policy_created" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
	[ "$rc" = 0 ] || die "apt-get install failed"
}

# A freshly created PostgreSQL cluster (what pg_createcluster makes in /etc/postgresql/V/main and
# /var/lib/postgresql/V/main; 1 MB WAL segments instead of 16, to keep it small), made once per
# machine and PostgreSQL package version and never changed afterwards. A postgresql host mounts
# it as the read-only lower layer of overlays on /etc/postgresql and /var/lib/postgresql, whose
# upper layers are on the host's disk: its own cluster at once, without pg_createcluster
# (1.5 s) or a copy. Made in a throwaway mount namespace, so nothing of the machine's own
# PostgreSQL is touched. Prints its path.
pg_template() {
	local v=$1 pkg dir=/var/cache/cchq-fleet t tmp
	pkg=$(dpkg-query -W -f='${Version}' "postgresql-$v" 2>/dev/null) || die "postgresql-$v is not installed"
	t=$dir/postgresql-$v-main-${pkg//[^A-Za-z0-9.+~-]/_}-wal1
	if [ ! -d "$t" ]; then
		log "creating a PostgreSQL $v cluster template ($t)"
		install -d -m 755 "$dir"
		tmp=$(mktemp -d "$dir/tmp.XXXXXX")
		chmod 755 "$tmp"
		install -d -o postgres -g postgres -m 755 "$tmp/etc/postgresql" "$tmp/var/lib/postgresql"
		install -d -o root -g postgres -m 1775 "$tmp/var/log/postgresql"
		unshare --mount --propagation private sh -ec '
			mount --bind "$1/etc/postgresql" /etc/postgresql
			mount --bind "$1/var/lib/postgresql" /var/lib/postgresql
			mount --bind "$1/var/log/postgresql" /var/log/postgresql
			pg_createcluster --start-conf auto -p 5432 "$2" main -- --no-sync --wal-segsize=1 >/dev/null
		' sh "$tmp" "$v" >&2 || die "pg_createcluster failed"
		rm -rf "$tmp/var/log"
		mv -T "$tmp" "$t"
	fi
	echo "$t"
}

# Machine-wide users and sudo rule (idempotent).
ensure_users() {
	local u
	for u in cchq ansible; do
		if ! id -u "$u" >/dev/null 2>&1; then
			log "creating user $u"
			useradd --create-home --home-dir "/home/$u" --shell /bin/bash --user-group "$u"
		fi
		# useradd leaves the account locked ('!'), and with UsePAM no sshd then
		# refuses even key logins. '*' = no password, but not locked.
		if [ "$(getent shadow "$u" | cut -d: -f2)" != '*' ]; then
			usermod -p '*' "$u"
		fi
		[ -d "/home/$u" ] || install -d -o "$u" -g "$u" -m 755 "/home/$u"
	done
	local rule='ansible ALL=(ALL) NOPASSWD:ALL' f=/etc/sudoers.d/cchq-fleet
	if [ "$(cat "$f" 2>/dev/null)" != "$rule" ]; then
		local tmp
		tmp=$(mktemp)
		echo "$rule" >"$tmp"
		visudo -cqf "$tmp" >/dev/null || die "visudo rejected $tmp"
		install -m 440 -o root -g root "$tmp" "$f"
		rm -f "$tmp"
	fi
	local d
	for d in /var/log/supervisor /etc/supervisor /home/cchq; do
		[ -d "$d" ] || mkdir -p "$d"
	done
}

# Kill every host of the fleet in $STATE and remove the state dir.
# Only kills processes this fleet started: those whose command line names this
# state dir's host-init (namespace inits, and their unshare wrappers).
# With "reaped", also wait until the dead processes are reaped: the unshare
# wrappers are orphans of the machine's PID 1, which may reap them late
# (about a second on this machine), and until then ps lists them as defunct.
teardown() {
	local -a pids inits=() rest=()
	local pid
	mapfile -t pids < <(fleet_pids)
	for pid in "${pids[@]}"; do
		if is_our_init "$pid"; then inits+=("$pid"); else rest+=("$pid"); fi
	done
	if [ ${#inits[@]} -gt 0 ]; then
		log "killing ${#inits[@]} host namespace(s)"
		# SIGKILL to a pid namespace's init kills every process in it; the
		# mount namespace (and its tmpfs mounts) goes away with the last one.
		# Each unshare wrapper then reaps its init and exits by itself.
		kill -KILL "${inits[@]}" 2>/dev/null || true
		wait_gone "${inits[@]}"
	fi
	# Anything left (a wrapper whose init never started, say).
	for pid in "${rest[@]}"; do
		if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
	done
	wait_gone "${rest[@]}"
	if [ "${1:-}" = reaped ]; then wait_reaped "${pids[@]}"; fi
	if [ -d "$STATE" ]; then
		if [ -e "$MARKER" ]; then
			rm -rf "$STATE"
		else
			die "$STATE exists but is not a fleet state dir (no $MARKER); not removing it"
		fi
	fi
}

# Wait (up to ~10 s) until the given pids are gone from the process table.
wait_reaped() {
	local t pid left
	for ((t = 0; t < 200; t++)); do
		left=0
		for pid in "$@"; do
			if [ -e "/proc/$pid" ]; then
				left=1
				break
			fi
		done
		[ "$left" = 1 ] || return 0
		sleep 0.05
	done
	log "warning: some dead fleet processes are not reaped yet (the machine's PID 1 reaps orphans)"
}

# Wait (up to ~10 s) until none of the given pids exists.
wait_gone() {
	local t pid left
	for ((t = 0; t < 200; t++)); do
		left=0
		for pid in "$@"; do
			if alive "$pid"; then
				left=1
				break
			fi
		done
		[ "$left" = 1 ] || return 0
		sleep 0.05
	done
	log "warning: some processes did not exit: $*"
}

# Start host i's namespace in the background; records the unshare pid.
start_host() {
	local i=$1 d=$STATE/host$1
	rm -f "$d/ready" "$d/pid1" "$d/sshd.pid"
	# setsid: the hosts must not share the caller's session or terminal.
	# They must not inherit any of the caller's descriptors either: output
	# goes to files so that `$(up)` does not wait for the hosts, the fleet
	# lock (fd 9) must not be held by them, nor any pipe a test harness
	# passed down (it would wait for EOF forever).
	(
		for fd in /proc/"$BASHPID"/fd/*; do
			fd=${fd##*/}
			if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
		done
		exec setsid unshare --mount --uts --pid --fork --mount-proc --propagation private \
			"$INIT" "$i" "$STATE" >"$d/init.log" 2>&1 </dev/null
	) &
	echo $! >"$d/unshare.pid"
}

# Wait until hosts "$@" reported ready, then record their init pids.
wait_ready() {
	local deadline=$((SECONDS + 60 + $# / 2)) i upid kid
	local -a todo=("$@") pending
	local -A upids=()
	for i in "$@"; do read -r "upids[$i]" <"$STATE/host$i/unshare.pid"; done
	while [ ${#todo[@]} -gt 0 ]; do
		pending=()
		for i in "${todo[@]}"; do
			[ ! -e "$STATE/host$i/ready" ] || continue
			if ! alive "${upids[$i]}"; then
				log "host fleet$i died while starting; its log ($STATE/host$i/init.log):"
				sed 's/^/  | /' "$STATE/host$i/init.log" >&2 || true
				return 1
			fi
			pending+=("$i")
		done
		[ ${#pending[@]} -gt 0 ] || break
		if [ "$SECONDS" -ge "$deadline" ]; then
			log "timed out waiting for: ${pending[*]/#/fleet}"
			return 1
		fi
		todo=("${pending[@]}")
		sleep 0.1
	done
	for i in "$@"; do
		upid=${upids[$i]}
		kid=
		read -r kid _ 2>/dev/null <"/proc/$upid/task/$upid/children" || true
		if ! is_our_init "$kid"; then
			log "cannot find the namespace init of fleet$i (unshare pid $upid)"
			return 1
		fi
		echo "$kid" >"$STATE/host$i/pid1"
	done
}
