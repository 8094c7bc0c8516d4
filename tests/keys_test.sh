#!/usr/bin/env bash
# keys_test.sh: SSH keys across a fleet of real agents on 127.0.0.1, each managing its own
# authorized_keys file (a template pointing into a private folder) with a real sshd reading
# that file: bad keys refused with their reason and nothing stored; fingerprints equal
# ssh-keygen -lf; attach by --all and --tag -> every agent synced and sshd lets the key in;
# an agent offline during attach gets the key when it comes back; drift after a hand edit
# found by `stoke key drift --check`, undone by `stoke key sync`; detach; revoke -> sshd
# refuses the key everywhere. Judged by exit code.
# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for bin in /usr/sbin/sshd ssh ssh-keygen curl jq sqlite3; do
	command -v "$bin" >/dev/null || fail "$bin is needed"
done
[ "$(id -u)" = 0 ] || fail "runs as root (sshd logins as root, agents acting as root)"

STOKED=${STOKE_STOKED_BIN:-$STOKE_BUILD/controller/stoked}
STOKE=$STOKE_BUILD/controller/stoke
AGENT=${STOKE_AGENT_BIN:-$STOKE_BUILD/agent/stoke-agent}
DATA=$T_TMP/data
DB=$DATA/stoke.db
CONF=$T_TMP/stoked.conf
printf 'agent_park = 2s\n' >"$CONF"
t_start_stoked "$STOKED" "$DATA" -c "$CONF"
export STOKE_URL=$T_URL
STOKE_TOKEN=$("$STOKED" token create -c "$CONF" --data-dir "$DATA" --name keys)
export STOKE_TOKEN
api() { curl -sS -H "Authorization: Bearer $STOKE_TOKEN" -H 'Content-Type: application/json' "$@"; }

# --- agents, each with its own authorized_keys folder, and an sshd reading it ------------
declare -A AGENT_PID SSHD_PORT
start_agent() { # NAME
	"$AGENT" -c "$T_TMP/$1/agent.conf" >>"$T_TMP/$1.log" 2>&1 &
	AGENT_PID[$1]=$!
	T_PIDS+=("$!")
}
stop_agent() { # NAME
	kill -9 "${AGENT_PID[$1]}" 2>/dev/null || true
	wait "${AGENT_PID[$1]}" 2>/dev/null || true
}
status() { api "$T_URL/api/v1/servers/$1" | jq -r .agent.status; }
is_status() { [ "$(status "$1")" = "$2" ]; }

mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$T_TMP/hostkey"
start_sshd() { # NAME: sshd whose AuthorizedKeysFile is the agent's managed file
	local port
	port=$(t_free_port)
	cat >"$T_TMP/$1.sshd_config" <<EOS
ListenAddress 127.0.0.1
Port $port
HostKey $T_TMP/hostkey
PidFile $T_TMP/$1.sshd.pid
AuthorizedKeysFile $T_TMP/$1/keys/%u
UsePAM no
SetEnv PYENV_REHASH_TIMEOUT=1
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
LogLevel ERROR
EOS
	/usr/sbin/sshd -D -e -f "$T_TMP/$1.sshd_config" >>"$T_TMP/$1.sshd.log" 2>&1 &
	T_PIDS+=("$!")
	SSHD_PORT[$1]=$port
	t_wait 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" || fail "sshd of $1 does not listen"
}
can_login() { # NAME KEYFILE: sshd of NAME lets KEYFILE in as root
	ssh -i "$2" -p "${SSHD_PORT[$1]}" -o StrictHostKeyChecking=no -o BatchMode=yes \
		-o IdentitiesOnly=yes -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10 \
		-o LogLevel=ERROR root@127.0.0.1 echo in >"$T_TMP/ssh.out" 2>&1 &&
		[ "$(cat "$T_TMP/ssh.out")" = in ]
}

NODES=(k1 k2 k3 k4)
for n in "${NODES[@]}"; do
	mkdir -p "$T_TMP/$n/keys"
	cat >"$T_TMP/$n.extra" <<EOC
allow_root yes
default_user root
authorized_keys_file $T_TMP/$n/keys/%u
EOC
	"$STOKED" agent enroll "$n" -c "$CONF" --data-dir "$DATA" --out "$T_TMP/$n" \
		--conf-extra "$T_TMP/$n.extra" >/dev/null || fail "enrolling $n"
	start_agent "$n"
	start_sshd "$n"
done
for n in "${NODES[@]}"; do
	t_wait 30 is_status "$n" online || fail "agent $n never came online"
done
"$STOKE" server tag k1 web >/dev/null || fail "tagging k1"
"$STOKE" server tag k2 web db >/dev/null || fail "tagging k2"
[ "$("$STOKE" server tag k2)" = $'db\nweb' ] || fail "tags of k2: $("$STOKE" server tag k2)"
[ "$(api "$T_URL/api/v1/servers?tag=web" | jq -r '[.items[].name] | join(",")')" = k1,k2 ] ||
	fail "servers tagged web"
ok "4 agents with their own authorized_keys and sshd; servers tagged"

# --- bad keys: each refused with its reason, nothing stored ------------------------------
ssh-keygen -q -t ed25519 -N '' -C 'ed@test' -f "$T_TMP/ed"
ssh-keygen -q -t ecdsa -b 384 -N '' -C 'ec@test' -f "$T_TMP/ec"
ssh-keygen -q -t rsa -b 3072 -N '' -C 'rsa@test' -f "$T_TMP/rsa"
ssh-keygen -q -t ed25519 -N '' -C 'other' -f "$T_TMP/other"
ssh-keygen -q -t dsa -N '' -f "$T_TMP/dsa" 2>/dev/null ||
	printf 'ssh-dss %s old\n' "$(printf '\0\0\0\7ssh-dss\0\0\0\1\1' | base64 -w0)" >"$T_TMP/dsa.pub"
ssh-keygen -q -t rsa -b 1024 -N '' -f "$T_TMP/rsa1024"
ED_B64=$(cut -d' ' -f2 "$T_TMP/ed.pub")
refused() { # NAME REASON: the file $T_TMP/bad/NAME is refused, saying REASON
	local out
	if out=$("$STOKE" key add "bad-$1" "$T_TMP/bad/$1" 2>&1); then
		fail "key $1 was accepted"
	fi
	[[ "$out" == *"$2"* ]] || fail "key $1 refused with \"$out\", expected \"$2\""
}
mkdir -p "$T_TMP/bad"
cp "$T_TMP/dsa.pub" "$T_TMP/bad/dsa"
cp "$T_TMP/rsa1024.pub" "$T_TMP/bad/rsa1024"
cp "$T_TMP/ed" "$T_TMP/bad/private"
cat "$T_TMP/ed.pub" "$T_TMP/other.pub" >"$T_TMP/bad/two"
printf 'command="/bin/sh" %s\n' "$(cat "$T_TMP/ed.pub")" >"$T_TMP/bad/options"
printf 'ssh-rsa %s me\n' "$ED_B64" >"$T_TMP/bad/mismatch"
printf 'ssh-ed25519 %s me\n' "${ED_B64:0:20}!${ED_B64:21}" >"$T_TMP/bad/base64"
printf 'ssh-ed25519 %s\rme\n' "$ED_B64" >"$T_TMP/bad/cr"
printf 'ssh-ed25519 %s\nme\n' "$ED_B64" >"$T_TMP/bad/newline"
printf 'ssh-ed25519 %s %s\n' "$ED_B64" "$(head -c 400 /dev/zero | tr '\0' x)" >"$T_TMP/bad/longcomment"
printf 'ssh-ed25519 %s evil\033[2Jclear\n' "$ED_B64" >"$T_TMP/bad/escape"
refused dsa "DSA keys are refused"
refused rsa1024 "1024 bits; at least 2048"
refused private "this is a private key"
refused two "holds 2 keys"
refused options "starts with options"
refused mismatch "do not match"
refused base64 "not valid base64"
refused cr "embedded carriage return"
refused newline "embedded newline"
refused longcomment "the comment is 400 bytes long"
refused escape "control character"
[ "$(t_sql "$DB" 'SELECT count(*) FROM ssh_keys')" = 0 ] || fail "a refused key was stored"
ok "DSA, short RSA, private key, two keys, options, type mismatch, bad base64, CR, newline, absurd comments: refused, nothing stored"

# --- good keys: fingerprints as ssh-keygen -lf prints them -------------------------------
for k in ed ec rsa; do
	out=$("$STOKE" key add "$k-key" "$T_TMP/$k.pub") || fail "adding $k: $out"
	want=$(ssh-keygen -lf "$T_TMP/$k.pub" | cut -d' ' -f2)
	bits=$(ssh-keygen -lf "$T_TMP/$k.pub" | cut -d' ' -f1)
	[[ "$out" == *"$want"* ]] || fail "$k: CLI says \"$out\", ssh-keygen says $want"
	got=$(api "$T_URL/api/v1/keys/$k-key" | jq -r '"\(.fingerprint) \(.bits)"')
	[ "$got" = "$want $bits" ] || fail "$k: API has $got, ssh-keygen $want $bits"
done
out=$("$STOKE" key add ed-again - <"$T_TMP/ed.pub" 2>&1) && fail "the same key was added twice"
[[ "$out" == *"known already as ed-key"* ]] || fail "duplicate refused with: $out"
[ "$(t_sql "$DB" 'SELECT count(*) FROM ssh_keys')" = 3 ] || fail "keys stored: $(t_sql "$DB" 'SELECT count(*) FROM ssh_keys')"
ok "ed25519, ecdsa and rsa fingerprints equal ssh-keygen -lf; the same key twice refused"

# --- attach to all while k4 is offline ---------------------------------------------------
stop_agent k4
t_wait 30 is_status k4 offline || fail "k4 not seen offline"
! can_login k1 "$T_TMP/ed" || fail "sshd let the key in before it was attached"
out=$("$STOKE" key attach ed-key --user root --all 2>&1) || fail "attach: $out"
state() { # SERVER KEY -> sync state of KEY for root on SERVER
	api "$T_URL/api/v1/keys/$2/servers" | jq -r --arg s "$1" '.items[] | select(.server == $s) | .state'
}
for n in k1 k2 k3; do
	[ "$(state "$n" ed-key)" = synced ] || fail "$n: $(state "$n" ed-key) after attach: $out"
	can_login "$n" "$T_TMP/ed" || fail "sshd of $n refuses the attached key: $(cat "$T_TMP/ssh.out")"
	! can_login "$n" "$T_TMP/other" || fail "sshd of $n lets in a key never attached"
done
[ "$(state k4 ed-key)" = pending ] || fail "k4 (offline) is $(state k4 ed-key), not pending"
grep -q "offline" <<<"$out" || fail "the attach output does not say k4 is offline: $out"
ok "attach --all: 3 online agents synced and their sshd accept the key; the offline one pending"

start_agent k4
t_wait 30 bash -c "[ \"\$(curl -sS -H 'Authorization: Bearer $STOKE_TOKEN' '$T_URL/api/v1/keys/ed-key/servers' |
	jq -r '.items[] | select(.server == \"k4\") | .state')\" = synced ]" ||
	fail "k4 did not get the key when its agent came back: $(state k4 ed-key)"
can_login k4 "$T_TMP/ed" || fail "sshd of k4 refuses the key after the agent came back"
ok "the agent offline during attach gets the key when it comes back"

# --- attach by tag -------------------------------------------------------------------------
"$STOKE" key attach ec-key --user root --tag web >/dev/null || fail "attach by tag"
can_login k1 "$T_TMP/ec" && can_login k2 "$T_TMP/ec" || fail "web servers refuse the ecdsa key"
! can_login k3 "$T_TMP/ec" || fail "k3 (not web) lets the ecdsa key in"
[ "$(api "$T_URL/api/v1/keys/ec-key/servers" | jq -r '[.items[].server] | join(",")')" = k1,k2 ] ||
	fail "ec-key rows: $(api "$T_URL/api/v1/keys/ec-key/servers" | jq -c .)"
ok "attach --tag web: only the web servers get it"

# --- drift: a hand edit inside the managed block and a key added outside it ---------------
"$STOKE" key drift --check >"$T_TMP/drift0" 2>&1 || fail "drift before any edit: $(cat "$T_TMP/drift0")"
F=$T_TMP/k1/keys/root
grep -q "$ED_B64" "$F" || fail "k1's file lacks the key: $(cat "$F")"
SNEAKY="$(cut -d' ' -f1-2 "$T_TMP/rsa.pub") sneaky"
{
	cat "$T_TMP/other.pub"
	grep -vF "$ED_B64" "$F" | awk -v s="$SNEAKY" '/^# END stoke managed keys$/ { print s } { print }'
} >"$F.new"
mv "$F.new" "$F"
! can_login k1 "$T_TMP/ed" || fail "the hand edit did not take the key out"
if "$STOKE" key drift --check >"$T_TMP/drift1" 2>&1; then
	fail "drift not reported: $(cat "$T_TMP/drift1")"
fi
D=$(api "$T_URL/api/v1/keys/drift?state=drift")
[ "$(jq -r '[.items[] | "\(.server)/\(.user)"] | join(",")' <<<"$D")" = k1/root ] ||
	fail "drift reported for: $(jq -c . <<<"$D")"
jq -e --arg k "$ED_B64" '.items[0].missing | map(select(contains($k))) | length == 1' <<<"$D" >/dev/null ||
	fail "the removed key is not reported missing: $(jq -c .items[0] <<<"$D")"
RSA_FP=$(ssh-keygen -lf "$T_TMP/rsa.pub" | cut -d' ' -f2)
OTHER_FP=$(ssh-keygen -lf "$T_TMP/other.pub" | cut -d' ' -f2)
jq -e --arg f "$RSA_FP" '.items[0].extra | map(select(.fingerprint == $f)) | length == 1' <<<"$D" >/dev/null ||
	fail "the key slipped into the block is not reported: $(jq -c .items[0] <<<"$D")"
jq -e --arg f "$OTHER_FP" '.items[0].outside | map(select(.fingerprint == $f)) | length == 1' <<<"$D" >/dev/null ||
	fail "the key added outside the block is not reported: $(jq -c .items[0] <<<"$D")"
grep -q "outside the block (added by hand): $OTHER_FP" "$T_TMP/drift1" ||
	fail "stoke key drift does not show the outside key: $(cat "$T_TMP/drift1")"
ok "drift after a hand edit: missing key, key slipped into the block, key outside it, all reported"

"$STOKE" key sync >"$T_TMP/sync.out" 2>&1 || fail "key sync: $(cat "$T_TMP/sync.out")"
can_login k1 "$T_TMP/ed" || fail "sync did not restore the key"
! can_login k1 "$T_TMP/rsa" || fail "sync left the slipped-in key in the block"
"$STOKE" key drift --check >"$T_TMP/drift2" 2>&1 && fail "the key outside the block is no longer reported"
D=$(api "$T_URL/api/v1/keys/drift?state=drift")
jq -e '.items | length == 1 and (.[0].missing | length == 0) and (.[0].extra | length == 0) and (.[0].outside | length == 1)' <<<"$D" >/dev/null ||
	fail "after sync: $(jq -c . <<<"$D")"
grep -q "$(cut -d' ' -f2 "$T_TMP/other.pub")" "$F" || fail "sync removed a line outside the managed block"
ok "key sync restores the managed block (the line outside it is kept, still reported)"

# --- detach and revoke ----------------------------------------------------------------------
"$STOKE" key detach ec-key --user root --server k2 >/dev/null || fail "detach"
! can_login k2 "$T_TMP/ec" || fail "k2 still lets the detached key in"
can_login k1 "$T_TMP/ec" || fail "detaching from k2 removed it from k1"
[ "$(state k2 ec-key)" = removed ] || fail "k2 ec-key row is $(state k2 ec-key)"
ok "detach from one server"

out=$("$STOKE" key revoke ed-key 2>&1) || fail "revoke: $out"
for n in "${NODES[@]}"; do
	! can_login "$n" "$T_TMP/ed" || fail "sshd of $n still lets the revoked key in"
	! grep -q "$ED_B64" "$T_TMP/$n/keys/root" || fail "$n's file still holds the revoked key"
	[ "$(state "$n" ed-key)" = removed ] || fail "$n: revoked key is $(state "$n" ed-key)"
done
can_login k1 "$T_TMP/ec" || fail "revoking one key removed another"
out=$("$STOKE" key attach ed-key --user root --all 2>&1) && fail "a revoked key was attached again"
[[ "$out" == *revoked* ]] || fail "attaching a revoked key: $out"
ok "revoke: removed from every server, sshd refuses it everywhere, cannot be attached again"
