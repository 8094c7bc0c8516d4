# security_hooks_test.sh: webhooks are acted on once and do not tell which sites exist
# (issue 14). A signed push is queued once: the same delivery again, the same body under a
# new delivery id, and a new body under a used delivery id all get 200 "duplicate" and
# deploy nothing, also when two copies arrive at once; a push of the commit already
# deployed, or already being deployed, is ignored with its reason. Unknown sites and known
# sites with a bad or missing signature get the same status and body. No agent is needed:
# the site's server is a row, and every job the test makes is cancelled.
source "$(dirname "$0")/lib.sh"

FX=$STOKE_SRC/tests/fixtures/webhooks
t_row_site '{"server":"web-1","domain":"hook.test","branch":"main","repo_url":"https://git.example.com/acme/site.git"}'
out=$SITE_OUT

job_end() { # JOB: cancel it and wait until it is over
	api -X POST "$T_URL/api/v1/jobs/$1/cancel" >/dev/null || true
	t_wait 20 sh -c "curl -s -H 'Authorization: Bearer $TOKEN' $T_URL/api/v1/jobs/$1 | jq -e '.state == \"cancelled\" or .state == \"failed\" or .state == \"failed_dirty\" or .state == \"done\"'" ||
		fail "job $1 did not end"
}
job_end "$(echo "$out" | jq -r .job_id)"

hmac() { printf '%s' "$2" | openssl dgst -sha256 -hmac "$1" -r | cut -d' ' -f1; }
# deliver URL BODY HEADER...: prints "STATUS BODY"
deliver() {
	local url=$1 body=$2 resp=$T_TMP/resp.$BASHPID
	shift 2
	curl -sS --max-time 10 -o "$resp" -w '%{http_code}' -X POST "$url" \
		-H 'Content-Type: application/json' "$@" --data-binary "$body"
	echo " $(cat "$resp")"
}
# push COMMIT BEFORE: a GitHub push of COMMIT to main (BEFORE makes bodies differ)
push() {
	jq -c --arg c "$1" --arg b "$2" '.ref="refs/heads/main" | .before=$b | .after=$c | .deleted=false | .created=false | .head_commit.id=$c | .head_commit.message="m" | .commits=[.head_commit]' \
		"$FX/github/push_new_branch.payload.json"
}
gh() { # URL BODY DELIVERY [SECRET]
	deliver "$1" "$2" -H 'X-GitHub-Event: push' -H "X-GitHub-Delivery: $3" \
		-H "X-Hub-Signature-256: sha256=$(hmac "${4:-$SECRET}" "$2")"
}
ndeploys() { t_sql "$DATA/stoke.db" "SELECT count(*) FROM deployments WHERE site_id = $SITE"; }
HOOK=$T_URL/hooks/$SITE
C1=$(printf 'a%.0s' $(seq 40))
C2=$(printf 'b%.0s' $(seq 40))
C3=$(printf 'c%.0s' $(seq 40))
C4=$(printf 'd%.0s' $(seq 40))

# A push, then its copies.
B1=$(push "$C1" 0000000000000000000000000000000000000001)
r=$(gh "$HOOK" "$B1" d-1)
[[ "$r" == 202*queued* ]] || fail "first delivery: $r"
D1=$(echo "${r#* }" | jq -r .deployment_id)
job_end "$(echo "${r#* }" | jq -r .job_id)"
n=$(ndeploys)
r=$(gh "$HOOK" "$B1" d-1)
[ "$r" = "200 {\"status\":\"duplicate\",\"deployment_id\":$D1}" ] || fail "same delivery again: $r"
r=$(gh "$HOOK" "$B1" d-2)
[ "$r" = "200 {\"status\":\"duplicate\",\"deployment_id\":$D1}" ] || fail "same body, new delivery id: $r"
r=$(gh "$HOOK" "$(push "$C2" 0000000000000000000000000000000000000002)" d-1)
[[ "$r" == 200*'"status":"duplicate"'* ]] || fail "new body, used delivery id: $r"
[ "$(ndeploys)" = "$n" ] || fail "a copy of a delivery deployed"
ok "a delivery is queued once: same delivery, same body under a new id, used id with a new body: 200 duplicate"

# Two copies at once: one queued, one duplicate.
B4=$(push "$C4" 0000000000000000000000000000000000000004)
gh "$HOOK" "$B4" d-4a >"$T_TMP/c1" &
p1=$!
gh "$HOOK" "$B4" d-4b >"$T_TMP/c2" &
wait "$p1" "$!"
got=$(cat "$T_TMP/c1" "$T_TMP/c2" | cut -c1-3 | sort | paste -sd,)
[ "$got" = "200,202" ] || fail "two copies at once: $(cat "$T_TMP/c1" "$T_TMP/c2")"
job_end "$(grep -h '^202' "$T_TMP/c1" "$T_TMP/c2" | cut -d' ' -f2- | jq -r .job_id)"
ok "two copies delivered at once: one queued, one duplicate"

# The commit already deployed, or being deployed, is not deployed again.
t_sql "$DATA/stoke.db" "UPDATE deployments SET state = 'finished' WHERE id = $D1; UPDATE deployments SET state = 'failed' WHERE site_id = $SITE AND id != $D1" >/dev/null
n=$(ndeploys)
r=$(gh "$HOOK" "$(push "$C1" 0000000000000000000000000000000000000005)" d-5)
[[ "$r" == 202*'"status":"ignored"'*"commit aaaaaaaaaaaa is already deployed (deployment $D1)"* ]] ||
	fail "push of the deployed commit: $r"
r=$(gh "$HOOK" "$(push "$C3" 0000000000000000000000000000000000000006)" d-6)
[[ "$r" == 202*queued* ]] || fail "push of a new commit: $r"
D3=$(echo "${r#* }" | jq -r .deployment_id)
J3=$(echo "${r#* }" | jq -r .job_id)
r=$(gh "$HOOK" "$(push "$C3" 0000000000000000000000000000000000000007)" d-7)
[[ "$r" == 202*'"status":"ignored"'*"commit cccccccccccc is already being deployed (deployment $D3)"* ]] ||
	fail "push of the commit being deployed: $r"
job_end "$J3"
[ "$(ndeploys)" = "$((n + 1))" ] || fail "the deployed commit was queued again"
ok "a push of the deployed commit, or of one being deployed, is ignored with its reason"

# Unknown sites answer like known sites with a bad or missing signature.
B9=$(push "$C2" 0000000000000000000000000000000000000009)
same() { # LABEL ANSWER...: all answers equal
	local label=$1 first=$2
	shift 2
	for a in "$@"; do
		[ "$a" = "$first" ] || fail "$label: '$first' vs '$a'"
	done
	[[ "$first" == 401* ]] || fail "$label: $first"
}
same "wrong signature" \
	"$(gh "$HOOK" "$B9" x-1 wrong)" "$(gh "$T_URL/hooks/hook.test" "$B9" x-1 wrong)" \
	"$(gh "$T_URL/hooks/999" "$B9" x-1 wrong)" "$(gh "$T_URL/hooks/nope.test" "$B9" x-1 wrong)" \
	"$(gh "$T_URL/hooks/nope.test" "$B9" x-1)"
nosig() { deliver "$1" "$B9" -H 'X-GitHub-Event: push' -H 'X-GitHub-Delivery: x-2'; }
same "no signature" "$(nosig "$HOOK")" "$(nosig "$T_URL/hooks/999")" "$(nosig "$T_URL/hooks/nope.test")"
gl() { deliver "$1" "$B9" -H 'X-Gitlab-Event: Push Hook' -H "X-Gitlab-Token: $2"; }
same "gitlab token" "$(gl "$HOOK" wrong)" "$(gl "$T_URL/hooks/999" wrong)" "$(gl "$T_URL/hooks/nope.test" "$SECRET")"
grep -q "hooks: nope.test: no such site" "$T_LOG" || fail "the unknown site is not in the log"
ok "unknown sites and bad or missing signatures get the same status and body"

kill -TERM "$T_PID"
t_wait 15 t_gone "$T_PID" || fail "stoked did not stop"
! grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' "$T_LOG" || fail "sanitizer report in the stoked log"
