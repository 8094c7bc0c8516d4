# sites_test.sh: sites, deployments and git webhooks end to end: a real controller, a
# real agent, a real nginx and a real git repository. Create a zero-downtime site;
# pushes delivered as signed GitHub, GitLab, Gitea and Bitbucket webhooks deploy the
# pushed commit and the site serves it; bad signature, unknown site (answered alike),
# other branch and a replayed delivery deploy nothing; a failing deploy keeps its output and the previous
# release serving; two quick pushes deploy in order, never at once; rollback; delete
# leaves nothing behind and nginx -t still passes.
source "$(dirname "$0")/lib.sh"

STOKED=$STOKE_BUILD/controller/stoked
AGENT=$STOKE_BUILD/agent/stoke-agent
FX=$STOKE_SRC/tests/fixtures/webhooks
DATA=$T_TMP/data
chmod 755 "$T_TMP"
NGX=$T_TMP/nginx
PORT=$(t_free_port)
t_start_nginx "$NGX" "$PORT"

printf 'agent_park = 1s\n' >"$T_TMP/stoked.conf"
t_start_stoked "$STOKED" "$DATA" -c "$T_TMP/stoked.conf"
TOKEN=$("$STOKED" token create --data-dir "$DATA" --name test)
api() { curl -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }

t_site_agent "$STOKED" "$AGENT" "$DATA" "$TOKEN" web-1 "$NGX" "$PORT" "$T_TMP/www"

# The origin repository and a working copy to push from.
t_git_site_repo

SCRIPT='set -e
echo "building $STOKE_COMMIT for $STOKE_DOMAIN"
test -f public/index.html
echo built'
body=$(jq -n --arg repo "$ORIGIN" --arg script "$SCRIPT" \
	'{server:"web-1", domain:"site.test", aliases:["www.site.test"], repo_url:$repo, branch:"main", web_dir:"public", zero_downtime:true, keep_releases:3, deploy_script:$script}')
out=$(api -X POST "$T_URL/api/v1/sites" -d "$body")
SITE=$(echo "$out" | jq -r .site.id)
SECRET=$(echo "$out" | jq -r .webhook_secret)
DTOKEN=$(echo "$out" | jq -r .deploy_token)
[[ "$SITE" =~ ^[0-9]+$ ]] || fail "site create: $out"
echo "$out" | jq -r .deploy_key_public | grep -q '^ssh-ed25519 ' || fail "no deploy key shown: $out"
! grep -rqF "$SECRET" "$DATA/stoke.db" || fail "the webhook secret is stored in the clear"

site_state() { api "$T_URL/api/v1/sites/$SITE" | jq -r .state; }
ndeploys() { api "$T_URL/api/v1/deployments?site=$SITE&limit=200" | jq '.items | length'; }
dep_state() { api "$T_URL/api/v1/deployments/$1" | jq -r .state; }
dep_done() { local s; s=$(dep_state "$1"); [ "$s" = finished ] || [ "$s" = failed ] || [ "$s" = cancelled ]; }
last_dep() { api "$T_URL/api/v1/deployments?site=$SITE&limit=200" | jq -r '.items[-1].id'; }
serves() { [ "$(curl -s -H 'Host: site.test' "http://127.0.0.1:$PORT/")" = "$1" ]; }

t_wait 60 sh -c "[ \"\$(curl -s -H 'Authorization: Bearer $TOKEN' $T_URL/api/v1/sites/$SITE | jq -r .state)\" = active ]" ||
	fail "site not active: $(api "$T_URL/api/v1/sites/$SITE" | jq -c '{state,error,failed_step}')"
t_wait 60 sh -c "[ \"\$(curl -s -H 'Authorization: Bearer $TOKEN' '$T_URL/api/v1/deployments?site=$SITE' | jq -r '.items[0].state')\" = finished ]" ||
	fail "first deployment: $(api "$T_URL/api/v1/deployments?site=$SITE" | jq -c '.items[0]')"
t_wait 10 serves v1 || fail "site does not serve v1: $(curl -s -H 'Host: site.test' "http://127.0.0.1:$PORT/")"
serves_alias=$(curl -s -H 'Host: www.site.test' "http://127.0.0.1:$PORT/")
[ "$serves_alias" = v1 ] || fail "alias does not serve: $serves_alias"
ok "site created: nginx site, first deployment checked out and served"

hmac() { printf '%s' "$2" | openssl dgst -sha256 -hmac "$1" -r | cut -d' ' -f1; }
# deliver NAME BODY HEADER...: POST to the site's hook; prints "status body"
deliver() {
	local url=$1 body=$2
	shift 2
	curl -sS -o "$T_TMP/resp" -w '%{http_code}' -X POST "$url" -H 'Content-Type: application/json' "$@" --data-binary "$body"
	echo " $(cat "$T_TMP/resp")"
}
HOOK=$T_URL/hooks/$SITE

wait_new_deploy() { # COUNT_BEFORE -> id of the newest, finished
	t_wait 10 sh -c "[ \$(curl -s -H 'Authorization: Bearer $TOKEN' '$T_URL/api/v1/deployments?site=$SITE&limit=200' | jq '.items|length') -gt $1 ]" ||
		fail "no new deployment"
	local id
	id=$(last_dep)
	t_wait 60 dep_done "$id" || fail "deployment $id did not finish"
	echo "$id"
}

# GitHub (with a delivery id from long ago on record: it is pruned when a new one comes)
t_sql "$DATA/stoke.db" "INSERT INTO webhook_receipts (site_id, delivery_id, body_sha256, received_at) VALUES ($SITE, 'ancient', 'old', $(( ($(date +%s) - 40 * 86400) * 1000 )))" >/dev/null
C=$(t_publish v2)
n=$(ndeploys)
B=$(jq -c --arg c "$C" '.ref="refs/heads/main" | .after=$c | .deleted=false | .created=false | .head_commit.id=$c | .head_commit.message="v2" | .head_commit.author.name="Ada Lovelace" | .head_commit.author.email="ada@example.com" | .commits=[.head_commit]' "$FX/github/push_new_branch.payload.json")
r=$(deliver "$HOOK" "$B" -H 'X-GitHub-Event: push' -H 'X-GitHub-Delivery: gh-1' -H "X-Hub-Signature-256: sha256=$(hmac "$SECRET" "$B")")
[[ "$r" == 202* ]] || fail "github push: $r"
D=$(wait_new_deploy "$n")
[ "$(dep_state "$D")" = finished ] || fail "github deployment $D: $(api "$T_URL/api/v1/deployments/$D" | jq -c .)"
[ "$(api "$T_URL/api/v1/deployments/$D" | jq -r .commit_hash)" = "$C" ] || fail "deployed another commit"
[ "$(api "$T_URL/api/v1/deployments/$D" | jq -r .trigger)" = webhook:github ] || fail "trigger not recorded"
t_wait 10 serves v2 || fail "site does not serve v2"
log=$(api "$T_URL/api/v1/deployments/$D/log?limit=200" | jq -r '.items[].text')
echo "$log" | grep -q "^building $C for site.test$" || fail "deployment log incomplete: $log"
echo "$log" | grep -q "^built$" || fail "deployment log misses the end: $log"
[ "$(t_sql "$DATA/stoke.db" "SELECT count(*) FROM webhook_receipts WHERE delivery_id = 'ancient'")" = 0 ] ||
	fail "a 40-day-old delivery id was not pruned"
ok "GitHub push: signed delivery deploys the pushed commit, log complete, new content served"

# Replay, bad signature, unknown site, other branch: nothing deployed.
n=$(ndeploys)
r=$(deliver "$HOOK" "$B" -H 'X-GitHub-Event: push' -H 'X-GitHub-Delivery: gh-1' -H "X-Hub-Signature-256: sha256=$(hmac "$SECRET" "$B")")
[[ "$r" == 200*duplicate* ]] || fail "replayed delivery: $r"
r=$(deliver "$HOOK" "$B" -H 'X-GitHub-Event: push' -H 'X-GitHub-Delivery: gh-2' -H "X-Hub-Signature-256: sha256=$(hmac wrong-secret "$B")")
[[ "$r" == 401* ]] || fail "bad signature: $r"
grep -q "delivery refused" "$T_LOG" || fail "bad signature not logged"
! grep -qF "$SECRET" "$T_LOG" || fail "the secret is in the log"
r=$(deliver "$T_URL/hooks/nope.test" "$B" -H 'X-GitHub-Event: push' -H 'X-GitHub-Delivery: gh-3' -H "X-Hub-Signature-256: sha256=$(hmac "$SECRET" "$B")")
[[ "$r" == 401* ]] || fail "unknown site: $r"
B2=$(echo "$B" | jq -c '.ref="refs/heads/feature"')
r=$(deliver "$HOOK" "$B2" -H 'X-GitHub-Event: push' -H 'X-GitHub-Delivery: gh-4' -H "X-Hub-Signature-256: sha256=$(hmac "$SECRET" "$B2")")
[[ "$r" == 202*ignored* ]] || fail "other branch: $r"
P=$(cat "$FX/github/ping.payload.json")
r=$(deliver "$HOOK" "$P" -H 'X-GitHub-Event: ping' -H 'X-GitHub-Delivery: gh-5' -H "X-Hub-Signature-256: sha256=$(hmac "$SECRET" "$P")")
[[ "$r" == 200*pong* ]] || fail "ping: $r"
sleep 1
[ "$(ndeploys)" = "$n" ] || fail "a refused or ignored delivery deployed something"
ok "replayed delivery, bad signature, unknown site, other branch and ping deploy nothing"

# GitLab
C=$(t_publish v3)
n=$(ndeploys)
B=$(jq -c --arg c "$C" '.ref="refs/heads/main" | .after=$c | .checkout_sha=$c | .commits=[{id:$c, message:"v3", author:{name:"Ada", email:"ada@example.com"}}]' "$FX/gitlab/push.payload.json")
r=$(deliver "$HOOK" "$B" -H 'X-Gitlab-Event: Push Hook' -H 'Idempotency-Key: gl-1' -H "X-Gitlab-Token: $SECRET")
[[ "$r" == 202* ]] || fail "gitlab push: $r"
D=$(wait_new_deploy "$n")
[ "$(dep_state "$D")" = finished ] && t_wait 10 serves v3 || fail "gitlab deployment: $(dep_state "$D")"
r=$(deliver "$HOOK" "$B" -H 'X-Gitlab-Event: Push Hook' -H 'Idempotency-Key: gl-2' -H "X-Gitlab-Token: not-it")
[[ "$r" == 401* ]] || fail "gitlab bad token: $r"
ok "GitLab push deploys; a wrong token is refused"

# Gitea
C=$(t_publish v4)
n=$(ndeploys)
B=$(jq -c --arg c "$C" '.ref="refs/heads/main" | .after=$c | .commits=[{id:$c, message:"v4", author:{name:"Ada", email:"ada@example.com"}}] | .head_commit=.commits[0]' "$FX/gitea/push.payload.json")
r=$(deliver "$HOOK" "$B" -H 'X-Gitea-Event: push' -H 'X-Gitea-Delivery: gt-1' -H "X-Gitea-Signature: $(hmac "$SECRET" "$B")")
[[ "$r" == 202* ]] || fail "gitea push: $r"
D=$(wait_new_deploy "$n")
[ "$(dep_state "$D")" = finished ] && t_wait 10 serves v4 || fail "gitea deployment: $(dep_state "$D")"
ok "Gitea push deploys"

# Bitbucket
C=$(t_publish v5)
n=$(ndeploys)
B=$(jq -c --arg c "$C" '.push.changes[0].new.name="main" | .push.changes[0].new.type="branch" | .push.changes[0].new.target.hash=$c | .push.changes[0].new.target.message="v5" | .push.changes[0].closed=false' "$FX/bitbucket/repo_push.payload.json")
r=$(deliver "$HOOK" "$B" -H 'X-Event-Key: repo:push' -H 'X-Request-UUID: bb-1' -H 'X-Hook-UUID: hook-1' -H "X-Hub-Signature: sha256=$(hmac "$SECRET" "$B")")
[[ "$r" == 202* ]] || fail "bitbucket push: $r"
D=$(wait_new_deploy "$n")
[ "$(dep_state "$D")" = finished ] && t_wait 10 serves v5 || fail "bitbucket deployment: $(dep_state "$D")"
ok "Bitbucket push deploys"

# A failing deploy keeps its output; the previous release keeps serving.
api -X PUT "$T_URL/api/v1/sites/$SITE/script" -d '{"script":"echo about to fail\nexit 7\n"}' >/dev/null
t_publish v6 >/dev/null
out=$(api -X POST "$T_URL/api/v1/sites/$SITE/deploy" -d '{}')
D=$(echo "$out" | jq -r .deployment_id)
t_wait 60 dep_done "$D" || fail "failing deployment did not finish"
[ "$(dep_state "$D")" = failed ] || fail "failing script: $(dep_state "$D")"
[ "$(api "$T_URL/api/v1/deployments/$D" | jq -r .exit_code)" = 7 ] || fail "exit code not kept"
api "$T_URL/api/v1/deployments/$D/log" | jq -r '.items[].text' | grep -q "about to fail" || fail "failed deployment's output not kept"
serves v5 || fail "a failed deploy replaced the serving release"
ok "failing deploy: failed with its output kept, previous release still served"

# Two deployments in quick succession run in order, never at once.
api -X PUT "$T_URL/api/v1/sites/$SITE/script" -d '{"script":"echo start $STOKE_DEPLOYMENT_ID\nsleep 1\necho end $STOKE_DEPLOYMENT_ID\n"}' >/dev/null
t_publish v7 >/dev/null
A=$(api -X POST "$T_URL/api/v1/sites/$SITE/deploy" -d '{}' | jq -r .deployment_id)
Bd=$(api -X POST "$T_URL/api/v1/sites/$SITE/deploy" -d '{}' | jq -r .deployment_id)
t_wait 60 dep_done "$Bd" || fail "second deployment did not finish"
[ "$(dep_state "$A")" = finished ] && [ "$(dep_state "$Bd")" = finished ] || fail "quick deploys: $(dep_state "$A") $(dep_state "$Bd")"
overlap=$(t_sql "$DATA/stoke.db" "SELECT (SELECT started_at FROM deployments WHERE id=$Bd) < (SELECT finished_at FROM deployments WHERE id=$A)")
[ "$overlap" = 0 ] || fail "deployments $A and $Bd overlapped"
serves v7 || fail "site does not serve v7"
ok "two quick deployments ran in order, one at a time"

# Rollback to the release before.
out=$(api -X POST "$T_URL/api/v1/sites/$SITE/rollback" -d '{}')
J=$(echo "$out" | jq -r .job_id)
t_wait 30 sh -c "curl -s -H 'Authorization: Bearer $TOKEN' $T_URL/api/v1/jobs/$J | jq -e '.state == \"done\" or .state == \"failed\"' >/dev/null" || fail "rollback did not finish"
[ "$(api "$T_URL/api/v1/jobs/$J" | jq -r .state)" = done ] || fail "rollback: $(api "$T_URL/api/v1/jobs/$J" | jq -c '{state,error}')"
serves v7 || true # A and B both serve v7; the release before B is A
[ "$(t_sql "$DATA/stoke.db" "SELECT current_release FROM sites WHERE id=$SITE")" = "$A" ] || fail "rollback did not switch to $A"
ok "rollback switches to the previous release at once"

# The CI deploy URL.
n=$(ndeploys)
r=$(deliver "$T_URL/hooks/deploy/$DTOKEN" '{}')
[[ "$r" == 202* ]] || fail "deploy URL: $r"
r=$(deliver "$T_URL/hooks/deploy/dpl_nope" '{}')
[[ "$r" == 404* ]] || fail "bad deploy URL: $r"
D=$(wait_new_deploy "$n")
ok "CI deploy URL queues a deployment; a wrong token gets 404"

# Delete: nothing left behind, nginx -t still passes.
J=$(api -X DELETE "$T_URL/api/v1/sites/$SITE" | jq -r .job_id)
t_wait 60 sh -c "curl -s -H 'Authorization: Bearer $TOKEN' $T_URL/api/v1/jobs/$J | jq -e '.state == \"done\" or .state == \"failed\"' >/dev/null" || fail "delete did not finish"
[ "$(api "$T_URL/api/v1/jobs/$J" | jq -r .state)" = done ] || fail "delete: $(api "$T_URL/api/v1/jobs/$J" | jq -c '{state,error}')"
[ ! -e "$T_TMP/www/site.test" ] || fail "site files left behind"
[ -z "$(find "$NGX/sites-available" "$NGX/sites-enabled" -mindepth 1)" ] || fail "nginx files left: $(find "$NGX"/sites-* -mindepth 1)"
/usr/sbin/nginx -p "$NGX/" -c conf/nginx.conf -g "pid $NGX/nginx.pid;" -t 2>/dev/null || fail "nginx -t fails after delete"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: site.test' "http://127.0.0.1:$PORT/")
[ "$code" = 404 ] || fail "deleted site still served ($code)"
[ "$(api -o /dev/null -w '%{http_code}' "$T_URL/api/v1/sites/$SITE")" = 404 ] || fail "site record still there"
ok "delete removes the nginx site, the files and the record"
