# cli_sites_test.sh: `stoke site …`, `stoke deploy …` and `stoke server set` end to end
# against a real controller, a real agent, a real nginx and a real git origin, judged by
# exit codes, output and what nginx serves: site create --wait prints the deploy key, the
# webhook URL and secret and the CI deploy URL (and they work); deploy --follow prints the
# script's lines while it runs and exits 0, a failing script makes it exit 1; the log read
# afterwards equals the live lines; script get/set, env set (values never printed);
# deactivate/activate, rollback, cancel, delete --wait; bad input exits 2 or 1 with a message.
source "$(dirname "$0")/lib.sh"

STOKED=$STOKE_BUILD/controller/stoked
AGENT=$STOKE_BUILD/agent/stoke-agent
STOKE=$STOKE_BUILD/controller/stoke
DATA=$T_TMP/data
chmod 755 "$T_TMP"
NGX=$T_TMP/nginx
PORT=$(t_free_port)
t_start_nginx "$NGX" "$PORT"
# t_cleanup's SIGKILL of nginx's master would leave its worker running: stop nginx first
# (SIGTERM: the master ends its workers, then itself).
trap 'kill -TERM "$T_NGINX_PID" 2>/dev/null && wait "$T_NGINX_PID" 2>/dev/null; t_cleanup' EXIT

printf 'agent_park = 1s\n' >"$T_TMP/stoked.conf"
t_start_stoked "$STOKED" "$DATA" -c "$T_TMP/stoked.conf"
TOKEN=$("$STOKED" token create --data-dir "$DATA" --name test)
api() { curl -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }

# The CLI in a clean environment: no config file, the URL and token from the environment.
export HOME=$T_TMP/home STOKE_URL=$T_URL STOKE_TOKEN=$TOKEN
mkdir -p "$HOME"
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

# run ARGS...: runs stoke; sets RC, OUT, ERR.
run() {
	set +e
	"$STOKE" "$@" >"$T_TMP/out" 2>"$T_TMP/err" </dev/null
	RC=$?
	set -e
	OUT=$(cat "$T_TMP/out")
	ERR=$(cat "$T_TMP/err")
	LAST="stoke $*"
}
# sfail MESSAGE: fail, showing the last stoke command and what it printed.
sfail() {
	fail "$*
--- $LAST: exit $RC
--- stdout:
$OUT
--- stderr:
$ERR"
}
# expect RC ARGS...: runs stoke and checks its exit status.
expect() {
	local want=$1
	shift
	run "$@"
	[ "$RC" = "$want" ] || sfail "expected exit $want"
}
has() { grep -qF -- "$1" <<<"$2"; }

mkdir -p "$T_TMP/www"
cat >"$T_TMP/extra.conf" <<EOC
allow_root yes
default_user root
write_roots $T_TMP/www:$NGX
nginx_prefix $NGX/
nginx_conf conf/nginx.conf
nginx_pid $NGX/nginx.pid
nginx_sites_available $NGX/sites-available
nginx_sites_enabled $NGX/sites-enabled
nginx_listen_port $PORT
EOC
"$STOKED" agent enroll web-1 --data-dir "$DATA" --out "$T_TMP/agent" --conf-extra "$T_TMP/extra.conf" >/dev/null
"$AGENT" -c "$T_TMP/agent/agent.conf" >>"$T_TMP/agent.log" 2>&1 &
T_PIDS+=("$!")
t_wait 20 sh -c "curl -s -H 'Authorization: Bearer $TOKEN' $T_URL/api/v1/servers/web-1 | grep -q '\"status\": *\"online\"'" ||
	fail "agent did not come online"

# server set
expect 2 server set web-1
has "give --sites-root DIR or --deploy-user U" "$ERR" || sfail "no hint without options"
expect 1 server set web-1 --sites-root relative/path
has "sites_root" "$ERR" || sfail "bad sites root: no message naming the field"
expect 1 server set nope-1 --deploy-user root
has "nope-1" "$ERR" || sfail "unknown server: no message"
expect 0 server set web-1 --sites-root "$T_TMP/www" --deploy-user root
has "sites root $T_TMP/www, deploy user root" "$OUT" || sfail "server set: output"
[ "$(api "$T_URL/api/v1/servers/web-1" | jq -r '.sites_root + " " + .deploy_user')" = "$T_TMP/www root" ] ||
	fail "server set did not change the server"
expect 0 server show web-1
has "in $T_TMP/www, deployed by root" "$OUT" || sfail "server show: no sites line"
ok "server set: PATCHes sites root and deploy user; bad input exits 2 or 1 naming the problem"

# The origin repository and a working copy to push from.
ORIGIN=$T_TMP/origin.git
git init -q --bare -b main "$ORIGIN"
WORK=$T_TMP/work
git init -q -b main "$WORK"
git -C "$WORK" config user.name "Ada Lovelace"
git -C "$WORK" config user.email ada@example.com
publish() { # TEXT: commit public/index.html = TEXT and push; prints the commit
	mkdir -p "$WORK/public"
	echo "$1" >"$WORK/public/index.html"
	git -C "$WORK" add -A
	git -C "$WORK" commit -q -m "$1"
	git -C "$WORK" push -q "$ORIGIN" main 2>/dev/null
	git -C "$WORK" rev-parse HEAD
}
C1=$(publish v1)
serves() { [ "$(curl -s -H 'Host: site.test' "http://127.0.0.1:$PORT/")" = "$1" ]; }
http_code() { curl -s -o /dev/null -w '%{http_code}' -H 'Host: site.test' "http://127.0.0.1:$PORT/"; }
not_served() { [ "$(http_code)" = 404 ]; } # nginx's default server answers


# Bad input first: nothing may be created by it.
expect 2 site create web-1
has "missing argument" "$ERR" || sfail "no 'missing argument'"
expect 2 site create web-1 x.test --keep many
has "--keep: not a positive number" "$ERR" || sfail "bad --keep: message"
expect 2 site create web-1 x.test --script "$T_TMP/no-such-script"
has "no-such-script" "$ERR" || sfail "missing script file: message"
expect 2 site create web-1 x.test --colour blue
has "unknown option '--colour'" "$ERR" || sfail "unknown option: message"
expect 1 site create web-1 'bad_domain!'
has "domain" "$ERR" || sfail "bad domain: no message naming the field"
expect 1 site create nope-1 x.test
has "no server named nope-1" "$ERR" || sfail "unknown server: message"
expect 1 site create web-1 x.test --repo 'not a url'
has "repo_url" "$ERR" || sfail "bad repo: no message naming the field"
expect 2 site
expect 2 deploy
expect 2 deploy --follow
has "missing argument" "$ERR" || sfail "deploy without a site: message"
expect 2 deploy show abc
expect 1 site show nope.test
has "nope.test" "$ERR" || sfail "unknown site: message"
expect 1 deploy nope.test
expect 0 site list
[ "$(sed -n 2p <<<"$OUT")" = "" ] || sfail "a site exists after bad input"
ok "bad input exits 2 (usage) or 1 (the API's message) and creates nothing"

# site create --wait: the site, its secrets, then the first deployment's log.
cat >"$T_TMP/script.sh" <<'EOS'
set -e
echo "building $STOKE_COMMIT for $STOKE_DOMAIN"
test -f public/index.html
echo built
EOS
expect 0 site create web-1 site.test --alias www.site.test --repo "$ORIGIN" --branch main \
	--web-dir public --zero-downtime --keep 3 --script "$T_TMP/script.sh" --wait
CREATE_OUT=$OUT
SITE=$(api "$T_URL/api/v1/sites/site.test" | jq -r .id)
[[ "$SITE" =~ ^[0-9]+$ ]] || sfail "no site after create"
has "site $SITE site.test created" "$OUT" || sfail "create: no first line"
has "www.site.test" "$OUT" || sfail "create: aliases not shown"
has "add it to your git host as a read-only deploy key" "$OUT" || sfail "create: no deploy key advice"
KEY=$(grep '^  ssh-ed25519 ' <<<"$OUT" | sed 's/^  //')
[ -n "$KEY" ] && [ "$KEY" = "$(api "$T_URL/api/v1/sites/$SITE" | jq -r .deploy_key_public)" ] ||
	sfail "create: the deploy key shown is not the site's"
has "  URL:     $T_URL/hooks/$SITE" "$OUT" || sfail "create: no webhook URL"
SECRET=$(sed -n 's/^  secret:  //p' <<<"$OUT")
[ ${#SECRET} -ge 20 ] || sfail "create: no webhook secret"
DEPLOY_URL=$(grep -o "$T_URL/hooks/deploy/dpl_[A-Za-z0-9_-]*" <<<"$OUT" | head -n 1)
[ -n "$DEPLOY_URL" ] || sfail "create: no CI deploy URL"
has "shown only this once" "$OUT" || sfail "create: does not say the secrets are shown once"
has "job" "$OUT" && has "done" "$OUT" || sfail "create --wait: the job's end not shown"
has "building $C1 for site.test" "$OUT" && has "built" "$OUT" || sfail "create --wait: first deployment's log not shown"
grep -q "^deployment [0-9]* finished in .*: commit ${C1:0:12} (v1), exit code 0$" <<<"$OUT" ||
	sfail "create --wait: no result line of the first deployment"
has "site $SITE site.test is active" "$OUT" || sfail "create --wait: not said to be active"
t_wait 10 serves v1 || fail "site does not serve v1 after create --wait"
[ "$(curl -s -H 'Host: www.site.test' "http://127.0.0.1:$PORT/")" = v1 ] || fail "alias not served"
# The secret and the deploy URL printed are the real ones.
hmac() { printf '%s' "$2" | openssl dgst -sha256 -hmac "$1" -r | cut -d' ' -f1; }
P='{"zen":"Keep it logically awesome.","hook_id":1}'
r=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$T_URL/hooks/$SITE" -H 'Content-Type: application/json' \
	-H 'X-GitHub-Event: ping' -H 'X-GitHub-Delivery: p-1' -H "X-Hub-Signature-256: sha256=$(hmac "$SECRET" "$P")" --data-binary "$P")
[ "$r" = 200 ] || fail "the printed webhook secret does not sign: HTTP $r"
ok "site create --wait: site, deploy key, webhook URL and secret, CI deploy URL, first deployment's log; site served"

expect 0 site list
grep -q "^$SITE  *site.test  *web-1  *active  *$ORIGIN  *main  *zero-downtime" <<<"$OUT" || sfail "site list: row"
expect 0 site list --server web-1
has "site.test" "$OUT" || sfail "site list --server web-1"
expect 1 site list --server nope-1
has "no server named nope-1" "$ERR" || sfail "site list --server nope-1: message"
expect 0 site show site.test
has "active" "$OUT" && has "$T_URL/hooks/$SITE" "$OUT" && has "web-1 (" "$OUT" &&
	has "zero-downtime, keeps 3" "$OUT" || sfail "site show"
! has "$SECRET" "$OUT" || sfail "site show prints the webhook secret"
expect 0 site show "$SITE" --json
[ "$(jq -r .domain <<<"$OUT")" = site.test ] || sfail "site show --json"
ok "site list (--server) and show (by domain and id, --json)"

# script get/set
expect 0 site script site.test
cmp -s "$T_TMP/out" "$T_TMP/script.sh" || sfail "site script: not the script set at create"
cat >"$T_TMP/live.sh" <<EOS
echo "first line"
while [ ! -e "$T_TMP/go" ]; do sleep 0.05; done
echo "second line"
echo "greeting \$GREETING"
EOS
set +e
"$STOKE" site script site.test - <"$T_TMP/live.sh" >"$T_TMP/out" 2>"$T_TMP/err"
RC=$?
set -e
OUT=$(cat "$T_TMP/out") ERR=$(cat "$T_TMP/err") LAST="site script site.test -"
[ "$RC" = 0 ] && has "deploy script saved" "$OUT" || sfail "site script from stdin"
expect 0 site script site.test
cmp -s "$T_TMP/out" "$T_TMP/live.sh" || sfail "site script: not the script set from stdin"
expect 2 site script site.test "$T_TMP/no-such-file"
printf 'echo \x00\n' >"$T_TMP/nul.sh"
expect 2 site script site.test "$T_TMP/nul.sh"
has "NUL" "$ERR" || sfail "a script with a NUL byte: message"
ok "site script: prints the script byte for byte, sets it from a file or stdin"

# env: values never echoed
expect 2 site env site.test
expect 2 site env site.test NOEQUALS
expect 2 site env site.test A=1 A=2
has "A is given twice" "$ERR" || sfail "env: twice"
expect 1 site env site.test 1BAD=x
has "1BAD" "$ERR" || sfail "env: bad name not named"
expect 0 site env site.test GREETING=hi-from-env-42 DB_PASSWORD=pw-never-shown-77
has "2 variables (GREETING, DB_PASSWORD)" "$OUT" || sfail "env: output"
! grep -q 'hi-from-env-42\|pw-never-shown-77' "$T_TMP/out" "$T_TMP/err" || sfail "env: a value was printed"
expect 0 site env site.test --json GREETING=hi-from-env-42 DB_PASSWORD=pw-never-shown-77
! grep -q 'hi-from-env-42\|pw-never-shown-77' "$T_TMP/out" "$T_TMP/err" || sfail "env --json: a value was printed"
ok "site env: sets the environment, values never printed, bad pairs exit 2, bad names 1"

# deploy --follow prints the lines while the script runs.
C2=$(publish v2)
rm -f "$T_TMP/go"
"$STOKE" deploy site.test --follow >"$T_TMP/live.out" 2>"$T_TMP/live.err" </dev/null &
FPID=$!
T_PIDS+=("$FPID")
t_wait 30 grep -q '^first line$' "$T_TMP/live.out" || fail "no live line: $(cat "$T_TMP/live.out" "$T_TMP/live.err")"
D2=$(sed -n 's/^deployment \([0-9]*\) queued for site.test (job [0-9]*)$/\1/p' "$T_TMP/live.err")
[[ "$D2" =~ ^[0-9]+$ ]] || fail "deploy --follow did not say which deployment: $(cat "$T_TMP/live.err")"
[ "$(api "$T_URL/api/v1/deployments/$D2" | jq -r .state)" = running ] || fail "deployment $D2 not running while its first line showed"
! grep -q 'second line' "$T_TMP/live.out" || fail "second line before it was written"
touch "$T_TMP/go"
set +e
wait "$FPID"
RC=$?
set -e
OUT=$(cat "$T_TMP/live.out") ERR=$(cat "$T_TMP/live.err") LAST="deploy site.test --follow"
[ "$RC" = 0 ] || sfail "deploy --follow of a good deployment"
has "second line" "$OUT" && has "greeting hi-from-env-42" "$OUT" || sfail "deploy --follow: lines missing"
grep -q "^deployment $D2 finished in [0-9.ms]*: commit ${C2:0:12} (v2), exit code 0$" <<<"$OUT" ||
	sfail "deploy --follow: no result line"
has "deployment $D2: running" "$ERR" || sfail "deploy --follow: state not told"
t_wait 10 serves v2 || fail "site does not serve v2"
# The log read afterwards is the live lines, in order, once each.
head -n -1 "$T_TMP/live.out" >"$T_TMP/live.lines"
expect 0 deploy log "$D2"
cmp -s "$T_TMP/out" "$T_TMP/live.lines" || sfail "deploy log differs from the live lines: $(diff "$T_TMP/live.lines" "$T_TMP/out")"
[ "$(grep -c '^first line$' "$T_TMP/out")" = 1 ] || sfail "a line repeated"
expect 0 deploy log "$D2" --follow
[ "$(head -n -1 "$T_TMP/out")" = "$(cat "$T_TMP/live.lines")" ] || sfail "deploy log --follow of an ended deployment"
# The environment reached the deploy script, yet no value is in clear at rest: not in the
# store, its WAL, nor the controller's log (the deploy command's payload keeps it sealed).
for f in "$DATA"/stoke.db* "$DATA/stoked.log"; do
	! grep -aq 'pw-never-shown-77' "$f" || fail "an environment value is in clear in $(basename "$f")"
done
sqlite3 -cmd '.timeout 5000' "$DATA/stoke.db" "SELECT payload FROM commands WHERE kind = 'script'" | grep -q '"env":"(sealed)"' ||
	fail "the deploy command's payload does not show its environment as sealed"
expect 0 deploy log "$D2" --json
[ "$(jq -r '.items[].text' <<<"$OUT")" = "$(cat "$T_TMP/live.lines")" ] || sfail "deploy log --json"
ok "deploy --follow: lines shown while the script runs, result, exit 0; the log afterwards equals them"

expect 0 deploy show "$D2"
has "finished" "$OUT" && has "$C2" "$OUT" && has "api (by token:test)" "$OUT" || sfail "deploy show"
grep -q '^exit code: *0$' <<<"$OUT" || sfail "deploy show: exit code"
expect 0 deploy list site.test
grep -q "^$D2  *finished  *api  *${C2:0:12}  *v2  *0 " <<<"$OUT" || sfail "deploy list: row"
ok "deploy show and list"

# A failing script: deploy --follow exits 1 saying so, the previous release still serves.
printf 'echo about to fail\nexit 7\n' >"$T_TMP/fail.sh"
expect 0 site script site.test "$T_TMP/fail.sh"
publish v3 >/dev/null
expect 1 deploy site.test --follow
has "about to fail" "$OUT" || sfail "failing deploy: output not shown"
D3=$(sed -n 's/^deployment \([0-9]*\) failed after .*, exit code 7$/\1/p' <<<"$OUT")
[[ "$D3" =~ ^[0-9]+$ ]] || sfail "failing deploy: no result line with exit code 7"
has "stoke: deployment $D3 failed" "$ERR" || sfail "failing deploy: no error"
serves v2 || fail "a failed deploy replaced the serving release"
expect 1 deploy log "$D3" --follow
has "about to fail" "$OUT" || sfail "deploy log --follow of a failed deployment"
expect 0 deploy "$SITE" --commit "${C2:0:12}" --json
D4=$(jq -r .deployment_id <<<"$OUT")
[[ "$D4" =~ ^[0-9]+$ ]] || sfail "deploy --json: no deployment_id"
expect 1 deploy log "$D4" --follow --json
[ "$(tail -n 1 "$T_TMP/out" | jq -r '.state + " " + (.exit_code|tostring) + " " + .commit_hash')" = "failed 7 $C2" ] ||
	sfail "deploy log --follow --json: last line is not the failed deployment of $C2"
[ "$(head -n -1 "$T_TMP/out" | jq -r 'select(.step == "script" and .stream == "stdout") | .text')" = "about to fail" ] ||
	sfail "deploy log --follow --json: lines"
expect 1 deploy site.test --commit NOTHEX
has "commit" "$ERR" || sfail "bad commit: message"
ok "failing deploy: --follow exits 1 with the failure and exit code; previous release still served"

# deactivate / activate: the site stops being served and comes back.
expect 0 site deactivate site.test --wait
has "is inactive" "$OUT" || sfail "deactivate --wait: output"
t_wait 10 not_served || fail "deactivated site still served"
expect 1 site deactivate site.test
has "is not active" "$ERR" || sfail "deactivate twice: message"
expect 0 site activate site.test --wait --json
[ "$(jq -r '.job.state + " " + .site.state' <<<"$OUT")" = "done active" ] || sfail "activate --wait --json"
t_wait 10 serves v2 || fail "reactivated site not served"
ok "deactivate/activate --wait: not served, then served again; a second deactivate exits 1"

# rollback: to the release before, then to a given one.
expect 0 site script site.test "$T_TMP/script.sh"
C5=$(publish v5)
expect 0 deploy site.test --follow
t_wait 10 serves v5 || fail "site does not serve v5"
expect 0 site rollback site.test --wait
has "rolled back" "$OUT" || sfail "rollback: output"
serves v2 || fail "rollback did not switch to the release before (v2)"
D1=$(api "$T_URL/api/v1/deployments?site=$SITE" | jq -r '.items[0].id')
expect 0 site rollback site.test --release "$D1" --wait
serves v1 || fail "rollback --release $D1 did not serve v1"
expect 2 site rollback site.test --release first
expect 1 site rollback site.test --release "$D3" --wait
has "no finished release to roll back to" "$ERR" || sfail "rollback to a failed deployment: message"
serves v1 || fail "a refused rollback changed the release"
ok "rollback --wait: the release before, a given one; a failed one is refused"

# cancel: a deployment waiting behind another is cancelled at once.
expect 0 site script site.test "$T_TMP/live.sh"
rm -f "$T_TMP/go"
expect 0 deploy site.test --json
DA=$(jq -r .deployment_id <<<"$OUT")
expect 0 deploy site.test --json
DB=$(jq -r .deployment_id <<<"$OUT")
t_wait 30 sh -c "[ \"\$(curl -s -H 'Authorization: Bearer $TOKEN' $T_URL/api/v1/deployments/$DA | jq -r .state)\" = running ]" ||
	fail "deployment $DA did not start"
expect 0 deploy cancel "$DB"
has "deployment $DB cancelled" "$OUT" || sfail "cancel of a waiting deployment"
expect 1 deploy log "$DB" --follow
has "deployment $DB was cancelled" "$ERR" || sfail "following a cancelled deployment"
expect 1 deploy cancel "$DB"
has "already cancelled" "$ERR" || sfail "cancel twice: message"
touch "$T_TMP/go"
expect 0 deploy log "$DA" --follow
ok "deploy cancel: a waiting deployment is cancelled; following it exits 1; a second cancel exits 1"

# The CI deploy URL printed at create deploys.
r=$(curl -sS -o "$T_TMP/resp" -w '%{http_code}' -X POST "$DEPLOY_URL")
[ "$r" = 202 ] || fail "the printed CI deploy URL: HTTP $r $(cat "$T_TMP/resp")"
DC=$(jq -r .deployment_id "$T_TMP/resp")
expect 0 deploy log "$DC" --follow
t_wait 10 serves v5 || fail "the CI deployment does not serve v5"
ok "the CI deploy URL printed at create queues a deployment"

# Failed releases go at the next switch and only the newest three finished ones stay: the first is gone, and rolling back to it changes nothing.
[ ! -e "$T_TMP/www/site.test/releases/$D1" ] || fail "release $D1 not pruned (keep 3)"
expect 1 site rollback site.test --release "$D1" --wait
has "release $D1 is no longer on the server" "$ERR" || sfail "rollback to a pruned release: message"
serves v5 || fail "a rollback to a pruned release changed what is served"
ok "rollback to a pruned release fails and keeps the current one serving"

# --json create of a site without a repository, waited for.
expect 0 site create web-1 other.test --json --wait
[ "$(jq -r '.job.state + " " + .site.state + " " + (.deployment|tostring)' <<<"$OUT")" = "done active null" ] ||
	sfail "create --json --wait"
[ "$(jq -r .webhook_url <<<"$OUT")" = "$T_URL/hooks/$(jq -r .site.id <<<"$OUT")" ] || sfail "create --json: webhook_url"
jq -r .deploy_url <<<"$OUT" | grep -q "^$T_URL/hooks/deploy/dpl_" || sfail "create --json: deploy_url"
jq -e '.webhook_secret | length >= 20' <<<"$OUT" >/dev/null || sfail "create --json: webhook_secret"
ok "site create --json --wait: one JSON object with the secrets, the job and the site"

# delete --wait: nothing left behind.
expect 0 site delete site.test --wait
has "deleted" "$OUT" || sfail "delete --wait: output"
[ ! -e "$T_TMP/www/site.test" ] || fail "site files left behind"
t_wait 10 not_served || fail "deleted site still served"
expect 1 site show site.test
expect 0 site delete other.test --wait
[ -z "$(find "$NGX/sites-available" "$NGX/sites-enabled" -mindepth 1)" ] || fail "nginx files left: $(find "$NGX"/sites-* -mindepth 1)"
/usr/sbin/nginx -p "$NGX/" -c conf/nginx.conf -g "pid $NGX/nginx.pid;" -t 2>/dev/null || fail "nginx -t fails after delete"
expect 0 site list --json
[ "$(jq '.items | length' <<<"$OUT")" = 0 ] || sfail "sites left after delete"
ok "site delete --wait: files, nginx site and record gone"
