# security_log_test.sh: no secret reaches the controller's log (issue 14). Uses a site's
# CI deploy URL (its token is the path), its webhook secret (GitHub signature, GitLab
# token), API bearer tokens (good, revoked, unknown), and secrets in query strings, on
# routes that exist and routes that do not, then greps the log for each of them.
# (The first start's admin token, which stoked prints to stdout, is not one of them.)
source "$(dirname "$0")/lib.sh"

t_row_site '{"server":"web-1","domain":"log.test","branch":"main"}'
out=$SITE_OUT
DTOKEN=$(echo "$out" | jq -r .deploy_token)
[[ "$DTOKEN" == dpl_* ]] || fail "site create: $out"
JOBS=("$(echo "$out" | jq -r .job_id)")

code() { curl -s --max-time 10 -o /dev/null -w '%{http_code}' "$@"; }
QS=qs-secret-$RANDOM$RANDOM
UNKNOWN=stk_$(openssl rand -hex 32)
# The CI deploy URL, right and wrong, with and without more path and query.
r=$(curl -sS --max-time 10 -X POST "$T_URL/hooks/deploy/$DTOKEN" -d '')
[ "$(echo "$r" | jq -r .status)" = queued ] || fail "deploy URL: $r"
JOBS+=("$(echo "$r" | jq -r .job_id)")
[ "$(code -X POST "$T_URL/hooks/deploy/${DTOKEN}x")" = 404 ] || fail "wrong deploy URL"
code -X POST "$T_URL/hooks/deploy/$DTOKEN/more?token=$QS" >/dev/null
code -X GET "$T_URL/hooks/deploy/$DTOKEN" >/dev/null
# Webhooks with the secret as GitLab's token, right and wrong.
B='{"object_kind":"push","ref":"refs/heads/other","after":"0000000000000000000000000000000000000000","checkout_sha":null,"commits":[]}'
code -X POST "$T_URL/hooks/$SITE" -H 'Content-Type: application/json' -H 'X-Gitlab-Event: Push Hook' -H "X-Gitlab-Token: $SECRET" --data-binary "$B" >/dev/null
code -X POST "$T_URL/hooks/$SITE" -H 'Content-Type: application/json' -H 'X-Gitlab-Event: Push Hook' -H "X-Gitlab-Token: ${SECRET}x" --data-binary "$B" >/dev/null
code -X POST "$T_URL/hooks/$SITE?secret=$SECRET" -H 'X-GitHub-Event: push' -H "X-Hub-Signature-256: sha256=$SECRET" --data-binary '{}' >/dev/null
# Bearer tokens: good, unknown, revoked; and in query strings.
[ "$(code -H "Authorization: Bearer $UNKNOWN" "$T_URL/api/v1/servers")" = 401 ] || fail "unknown token"
out=$(api -X POST "$T_URL/api/v1/tokens" -d '{"name":"doomed"}')
DOOMED=$(echo "$out" | jq -r .token)
api -X DELETE "$T_URL/api/v1/tokens/$(echo "$out" | jq -r .id)" >/dev/null
[ "$(code -H "Authorization: Bearer $DOOMED" "$T_URL/api/v1/servers")" = 401 ] || fail "revoked token"
code "$T_URL/api/v1/health?token=$QS" >/dev/null
code "$T_URL/api/v1/servers?access_token=$TOKEN" >/dev/null
code "$T_URL/api/v1/nowhere/$QS?key=$QS" >/dev/null
code -H "Authorization: Bearer $TOKEN" "$T_URL/api/v1/events?after=0&kind=$QS" --max-time 1 >/dev/null || true
for j in "${JOBS[@]}"; do api -X POST "$T_URL/api/v1/jobs/$j/cancel" >/dev/null || true; done
for j in "${JOBS[@]}"; do
	t_wait 20 sh -c "curl -s -H 'Authorization: Bearer $TOKEN' $T_URL/api/v1/jobs/$j | jq -e '.state == \"cancelled\" or .state == \"failed\" or .state == \"failed_dirty\" or .state == \"done\"'" || fail "job $j did not end"
done
kill -TERM "$T_PID"
t_wait 15 t_gone "$T_PID" || fail "stoked did not stop"

leaks=0
for name in DTOKEN SECRET TOKEN DOOMED UNKNOWN QS; do
	if grep -nF -- "${!name}" "$T_LOG" >&2; then
		echo "the log shows $name (lines above)" >&2
		leaks=$((leaks + 1))
	fi
done
# Nothing shaped like a deploy token either, whichever it was.
if grep -nE 'dpl_[A-Za-z0-9]{8,}' "$T_LOG" >&2; then
	echo "the log shows a deploy token (lines above)" >&2
	leaks=$((leaks + 1))
fi
[ "$leaks" = 0 ] || fail "$leaks kinds of secret in the controller log"
grep -q 'POST /hooks/deploy/\[token\] 202' "$T_LOG" || fail "the deploy URL's request is not logged"
ok "no deploy token, webhook secret, API token or query-string secret in the controller log"
