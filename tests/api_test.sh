#!/usr/bin/env bash
# api_test.sh: the REST API of a real stoked on 127.0.0.1:0: health, bearer auth, a
# catalogue of bad requests (each must get its 4xx, a JSON error and change nothing in
# the store), the read endpoints on fixture rows, tags, tokens, jobs, pagination, and
# Server-Sent Events resumed with Last-Event-ID. Needs curl, jq, sqlite3.
# Run by ctest with STOKE_BUILD (build folder) and STOKE_SRC (source folder).
set -euo pipefail

: "${STOKE_BUILD:?STOKE_BUILD must name the build folder}"
STOKED="$STOKE_BUILD/controller/stoked"

for tool in curl jq sqlite3; do
	command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed (packaging/install-deps.sh)" >&2; exit 1; }
done
[ -x "$STOKED" ] || { echo "FAIL: no $STOKED (build the stoked target)" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/stoke-api-test.XXXXXX")
DB="$TMP/stoke.db"
LOG="$TMP/stoked.log"
PIDS=()

cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*" >&2
	if [ -f "$LOG" ]; then
		echo "--- last lines of the stoked log:" >&2
		tail -n 15 "$LOG" >&2
	fi
	exit 1
}

# wait_for SECONDS COMMAND...: polls COMMAND until it succeeds or the deadline passes.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 0.05
	done
}

# ---- start stoked ----

"$STOKED" --data-dir "$TMP" --api-listen 127.0.0.1:0 --agent-listen 127.0.0.1:0 >"$LOG" 2>&1 &
STOKED_PID=$!
PIDS+=("$STOKED_PID")
wait_for 20 test -s "$TMP/api.url" || fail "stoked wrote no $TMP/api.url within 20 s"
URL=$(head -n 1 "$TMP/api.url")
API="$URL/api/v1"
TOKEN=$("$STOKED" token create --data-dir "$TMP" --name test) || fail "stoked token create failed"
[[ "$TOKEN" =~ ^stk_[0-9a-f]{64}$ ]] || fail "token create printed something else than a token"

BODY="$TMP/body"
HDRS="$TMP/headers"

# req METHOD PATH [curl args...]: sets STATUS; the body is in $BODY, headers in $HDRS.
# Sends the test token unless NOAUTH=1.
req() {
	local method=$1 path=$2
	shift 2
	local auth=(-H "Authorization: Bearer $TOKEN")
	[ "${NOAUTH:-0}" = 1 ] && auth=()
	: >"$BODY"
	STATUS=$(curl -sS --max-time 30 -o "$BODY" -D "$HDRS" -w '%{http_code}' -X "$method" "${auth[@]}" "$@" \
		"$API$path" 2>"$TMP/curl.err") || true
	[ -n "$STATUS" ] || STATUS=000
}

# post_json METHOD PATH JSON: a request with a JSON body.
post_json() {
	req "$1" "$2" -H 'Content-Type: application/json' --data-binary "$3"
}

# expect STATUS DESCRIPTION: checks the last request's status.
expect() {
	[ "$STATUS" = "$1" ] || fail "$2: status $STATUS, want $1; body: $(head -c 400 "$BODY")"
}

NBAD=0
# bad STATUS CODE DESCRIPTION: the last request must have failed with STATUS and a JSON
# error {"error":{"code":CODE,"message":non-empty}}.
bad() {
	local code msg
	expect "$1" "$3"
	code=$(jq -er '.error.code' <"$BODY" 2>/dev/null) || fail "$3: body is not a JSON error: $(head -c 400 "$BODY")"
	[ "$code" = "$2" ] || fail "$3: error.code $code, want $2; body: $(head -c 400 "$BODY")"
	msg=$(jq -r '.error.message // ""' <"$BODY")
	[ -n "$msg" ] || fail "$3: error.message is empty"
	NBAD=$((NBAD + 1))
}

# The store's content, except api_tokens.last_used_at (tokens_verify may bump it).
snapshot() {
	local t
	for t in $(sqlite3 "$DB" "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"); do
		echo "== $t"
		if [ "$t" = api_tokens ]; then
			sqlite3 "$DB" "SELECT id, name, hash, prefix, created_at, revoked_at FROM api_tokens ORDER BY id"
		else
			sqlite3 "$DB" "SELECT * FROM \"$t\" ORDER BY rowid"
		fi
	done
}

# ---- health and auth ----

NOAUTH=1 req GET /health
expect 200 "health without a token"
[ "$(jq -r .status "$BODY")" = ok ] || fail "health: status is not ok"
jq -e '.version | type == "string"' "$BODY" >/dev/null || fail "health: no version"
jq -e '.schema >= 1' "$BODY" >/dev/null || fail "health: no schema"

NOAUTH=1 req GET /servers
bad 401 unauthorized "no token"
grep -qi '^WWW-Authenticate: Bearer' "$HDRS" || fail "401 without WWW-Authenticate"
NOAUTH=1 req GET /servers -H "Authorization: Bearer stk_$(printf '0%.0s' {1..64})"
bad 401 unauthorized "unknown token"
NOAUTH=1 req GET /servers -H "Authorization: Bearer"
bad 401 unauthorized "empty bearer"
NOAUTH=1 req GET /servers -H "Authorization: Basic dGVzdDp0ZXN0"
bad 401 unauthorized "basic auth"
NOAUTH=1 req GET /servers -H "Authorization: Bearer ${TOKEN}x"
bad 401 unauthorized "token with an extra character"
req GET /servers
expect 200 "servers with the token"

# A revoked token stops working at once.
post_json POST /tokens '{"name":"doomed"}'
expect 201 "create a token to revoke"
DOOMED=$(jq -r .token "$BODY")
DOOMED_ID=$(jq -r .id "$BODY")
NOAUTH=1 req GET /tokens -H "Authorization: Bearer $DOOMED"
expect 200 "new token works"
req DELETE "/tokens/$DOOMED_ID"
expect 200 "revoke"
jq -e '.revoked_at | type == "string"' "$BODY" >/dev/null || fail "revoke: revoked_at not set"
jq -e 'has("hash") or has("token") | not' "$BODY" >/dev/null || fail "revoke: reply shows the hash or token"
NOAUTH=1 req GET /tokens -H "Authorization: Bearer $DOOMED"
bad 401 unauthorized "revoked token"
grep -q "$DOOMED" "$LOG" && fail "the log shows a token"
grep -q "$TOKEN" "$LOG" && fail "the log shows a token"

# ---- fixtures: rows the API cannot make yet, written straight into the store ----

NOW=$(($(date +%s) * 1000))
sqlite3 "$DB" >/dev/null <<EOF || fail "cannot write fixtures"
PRAGMA busy_timeout = 10000;
INSERT INTO servers (id, name, provider, ipv4, state, created_at, updated_at)
  VALUES (1, 'web-1', 'custom', '203.0.113.5', 'active', $NOW, $NOW);
INSERT INTO servers (id, name, provider, region, size, state, created_at, updated_at)
  VALUES (2, 'db-1', 'hetzner', 'fsn1', 'cx22', 'pending', $NOW, $NOW);
INSERT INTO server_tags VALUES (1, 'web');
INSERT INTO sites (id, server_id, domain, aliases, repo_url, branch, created_at, updated_at)
  VALUES (1, 1, 'example.com', '["www.example.com"]', 'https://github.com/acme/site.git',
          'main', $NOW, $NOW);
INSERT INTO ssh_keys (id, name, type, public_key, fingerprint, comment, bits, created_at)
  VALUES (1, 'alice', 'ssh-ed25519', 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE alice',
          'SHA256:fixture', 'alice@laptop', 256, $NOW);
INSERT INTO server_keys (key_id, server_id, user, state, created_at, updated_at)
  VALUES (1, 1, 'deploy', 'synced', $NOW, $NOW);
INSERT INTO deployments (id, site_id, trigger, actor, state, created_at, updated_at)
  VALUES (1, 1, 'api', 'token:test', 'finished', $NOW, $NOW);
INSERT INTO output_lines (owner_kind, owner_id, seq, stream, time, text) VALUES
  ('command', 2, 65536, 'stdout', $NOW, 'line one'),
  ('command', 2, 65537, 'stdout', $NOW, 'line two'),
  ('command', 2, 131072, 'stderr', $NOW, 'line three'),
  ('command', 1, 1, 'stdout', $NOW, ' 18:40 up 3 days');
INSERT INTO commands (id, server_id, kind, payload, state, exit_code, owner_kind, owner_id,
                      created_at)
  VALUES (2, 2, 'script', '{}', 'done', 0, 'deployment', 1, $NOW);
INSERT INTO commands (id, server_id, kind, payload, state, exit_code, created_at)
  VALUES (1, 1, 'run', '{"argv":["uptime"],"env":{"SECRET":"hunter2"}}', 'done', 0, $NOW);
INSERT INTO jobs (id, type, state, resource_kind, resource_id, created_at, updated_at, finished_at)
  VALUES (1, 'fixture.noop', 'done', 'server', 1, $NOW, $NOW, $NOW);
INSERT INTO jobs (id, type, state, error, created_at, updated_at, finished_at)
  VALUES (2, 'fixture.noop', 'failed', 'boom', $NOW, $NOW, $NOW);
INSERT INTO jobs (id, type, state, run_after, created_at, updated_at)
  VALUES (3, 'fixture.noop', 'queued', $((NOW + 86400000)), $NOW, $NOW);
INSERT INTO jobs (id, type, state, run_after, created_at, updated_at)
  VALUES (4, 'fixture.noop', 'queued', $((NOW + 86400000)), $NOW, $NOW);
EOF

# ---- the catalogue: every request here must fail and change nothing ----

BEFORE="$TMP/before.txt"
AFTER="$TMP/after.txt"
snapshot >"$BEFORE"

# routing
req GET /nope
bad 404 not_found "unknown route"
req GET /servers/web-1/nope
bad 404 not_found "unknown sub-route"
NOAUTH=1 req GET /
bad 404 not_found "api root"
req DELETE /servers
bad 405 method_not_allowed "DELETE /servers"
grep -qi '^Allow: .*GET' "$HDRS" || fail "405 without an Allow header naming GET"
grep -qi '^Allow: .*POST' "$HDRS" || fail "405 Allow header does not name POST"
req PUT /tokens
bad 405 method_not_allowed "PUT /tokens"
req POST /health
bad 405 method_not_allowed "POST /health"

# bodies
post_json POST /tokens '{"name":'
bad 400 invalid_json "truncated JSON"
post_json POST /tokens 'name=x'
bad 400 invalid_json "not JSON"
post_json POST /tokens '["x"]'
bad 400 invalid_json "array body"
post_json POST /tokens '"x"'
bad 400 invalid_json "string body"
post_json POST /tokens '{"name":"x"} {}'
bad 400 invalid_json "trailing data"
post_json POST /tokens '{"name":"a","name":"b"}'
bad 400 invalid_json "duplicate keys"
post_json POST /tokens '{"name":"x","admin":true}'
bad 400 unknown_field "unknown field"
jq -e '.error.message | contains("admin")' "$BODY" >/dev/null || fail "unknown_field does not name the field"
post_json POST /tokens '{}'
bad 400 missing_field "missing name"
jq -e '.error.message | contains("name")' "$BODY" >/dev/null || fail "missing_field does not name the field"
post_json POST /tokens '{"name":5}'
bad 400 invalid_field "name is a number"
post_json POST /tokens '{"name":null}'
bad 400 invalid_field "name is null"
post_json POST /tokens '{"name":""}'
bad 400 invalid_field "empty name"
req POST /tokens -H 'Content-Type: text/plain' --data-binary '{"name":"x"}'
bad 415 unsupported_media_type "text/plain body"
req POST /tokens --data-binary '{"name":"x"}'
bad 415 unsupported_media_type "form-encoded body"
req POST /tokens -H 'Content-Type: application/json'
bad 411 length_required "no body"
head -c 2000000 /dev/zero | tr '\0' ' ' >"$TMP/big.json"
req POST /tokens -H 'Content-Type: application/json' --data-binary @"$TMP/big.json"
bad 413 payload_too_large "2 MB body"
req POST /tokens -H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' \
	--data-binary @"$TMP/big.json"
bad 413 payload_too_large "2 MB chunked body"
NOAUTH=1 post_json POST /tokens '{"name":"sneaky"}'
bad 401 unauthorized "create a token without a token"

# servers: names and other fields
SRV='"provider":"custom","ipv4":"203.0.113.9"'
for name in -web Web_1 "$(printf 'a%.0s' {1..64})" a..b web- "web 1" "" 123; do
	post_json POST /servers "{\"name\":\"$name\",$SRV}"
	bad 400 invalid_field "server name '$name'"
	jq -e '.error.message | startswith("name")' "$BODY" >/dev/null || fail "server name '$name': message does not name the field"
done
post_json POST /servers '{"name":"web-2"}'
bad 400 missing_field "server without provider"
post_json POST /servers '{"name":"web-2","provider":"aws"}'
bad 400 invalid_field "unknown provider"
post_json POST /servers '{"name":"web-2","provider":"custom"}'
bad 400 missing_field "custom server without ipv4"
post_json POST /servers "{\"name\":\"web-2\",\"provider\":\"custom\",\"ipv4\":\"999.1.1.1\"}"
bad 400 invalid_field "bad ipv4"
post_json POST /servers '{"name":"web-2","provider":"hetzner","size":"cx22"}'
bad 400 missing_field "cloud server without region"
# No token for hetzner in this controller: refused at the edge, no job, no request anywhere.
post_json POST /servers '{"name":"web-2","provider":"hetzner","region":"fsn1","size":"cx22"}'
bad 400 provider_not_configured "server at a provider with no token"
jq -e '.error.message | contains("hetzner_token")' "$BODY" >/dev/null || fail "unconfigured provider: the message does not say what to set"
post_json POST /servers "{\"name\":\"web-2\",$SRV,\"ssh_port\":\"22\"}"
bad 400 invalid_field "ssh_port as a string"
post_json POST /servers "{\"name\":\"web-2\",$SRV,\"ssh_port\":70000}"
bad 400 invalid_field "ssh_port out of range"
post_json POST /servers "{\"name\":\"web-2\",$SRV,\"ssh_port\":22.5}"
bad 400 invalid_field "ssh_port not an integer"
for user in Root -x "a b" "$(printf 'u%.0s' {1..40})" 'x;id'; do
	post_json POST /servers "{\"name\":\"web-2\",$SRV,\"ssh_user\":\"$user\"}"
	bad 400 invalid_field "ssh_user '$user'"
done
for tags in '"web"' '["Web"]' '["a b"]' '["-x"]' '[""]' '["web","web"]' '[1]' \
	"$(jq -nc '[range(33) | "t\(.)"]')"; do
	post_json POST /servers "{\"name\":\"web-2\",$SRV,\"tags\":$tags}"
	bad 400 invalid_field "tags $tags"
done
post_json POST /servers "{\"name\":\"web-1\",$SRV}"
bad 409 conflict "server name taken"

# sites: domains, branches, repository URLs
SITE='"server":"web-1"'
for domain in example -a.com a-.com EXAMPLE.COM "exa mple.com" "*.example.com" a..com \
	example.123 "$(printf 'a%.0s' {1..64}).com"; do
	post_json POST /sites "{$SITE,\"domain\":\"$domain\"}"
	bad 400 invalid_field "domain '$domain'"
done
post_json POST /sites '{"server":"web-1","domain":"new.example.com","aliases":["bad domain"]}'
bad 400 invalid_field "bad alias"
for branch in .. "a b" -x x.lock "a..b" "a~1" "a:b" "/a" "a/" "@" "a\\\\b"; do
	post_json POST /sites "{$SITE,\"domain\":\"new.example.com\",\"branch\":\"$branch\"}"
	bad 400 invalid_field "branch '$branch'"
done
for repo in "https://github.com/a b.git" "-oProxyCommand=touch /tmp/pwned" "--upload-pack=x" \
	"ftp://example.com/x.git" "" "ext::sh -c touch% /tmp/pwned"; do
	post_json POST /sites "$(jq -nc --arg r "$repo" '{server:"web-1", domain:"new.example.com", repo_url:$r}')"
	bad 400 invalid_field "repo_url '$repo'"
done
post_json POST /sites '{"server":"nope-9","domain":"new.example.com"}'
bad 400 invalid_field "site on an unknown server"
post_json POST /sites '{"server":99,"domain":"new.example.com"}'
bad 400 invalid_field "site on an unknown server id"
post_json POST /sites '{"server":true,"domain":"new.example.com"}'
bad 400 invalid_field "server as a boolean"
post_json POST /sites '{"domain":"new.example.com"}'
bad 400 missing_field "site without server"
post_json POST /sites '{"server":"web-1","domain":"new.example.com","web_dir":"../etc"}'
bad 400 invalid_field "web_dir with .."
post_json POST /sites '{"server":"web-1","domain":"new.example.com","env":{"1BAD":"x"}}'
bad 400 invalid_field "bad env name"
post_json POST /sites '{"server":"web-1","domain":"new.example.com","env":{"A":1}}'
bad 400 invalid_field "env value not a string"
post_json POST /sites '{"server":"web-1","domain":"new.example.com","keep_releases":0}'
bad 400 invalid_field "keep_releases 0"
post_json POST /sites '{"server":"web-1","domain":"new.example.com","zero_downtime":"yes"}'
bad 400 invalid_field "zero_downtime as a string"
post_json POST /sites '{"server":"web-1","domain":"example.com"}'
bad 409 conflict "domain taken"
post_json POST /sites '{"server":"web-1","domain":"www.example.com"}'
bad 409 conflict "domain taken as an alias"

# commands
post_json POST /commands '{"server":"web-1","kind":"rm","payload":{}}'
bad 400 invalid_field "unknown command kind"
post_json POST /commands '{"server":"web-1","kind":"exec","payload":["true"]}'
bad 400 invalid_field "payload not an object"
post_json POST /commands '{"server":"web-1","kind":"exec","payload":{"argv":["true"],"shell":"sh -c"}}'
bad 400 invalid_field "payload with an unknown field"
jq -e '.error.message | startswith("payload.shell")' "$BODY" >/dev/null || fail "payload error does not name payload.shell: $(cat "$BODY")"
post_json POST /commands '{"server":"web-1","kind":"exec","payload":{}}'
bad 400 invalid_field "exec without argv"
post_json POST /commands '{"server":"nope-9","kind":"exec","payload":{"argv":["true"]}}'
bad 400 invalid_field "command for an unknown server"
post_json POST /commands '{"kind":"exec","payload":{"argv":["true"]}}'
bad 400 missing_field "command without server"

# PATCH /servers/{id}
post_json PATCH /servers/web-1 '{"tags":["ok","Bad Tag"]}'
bad 400 invalid_field "patch with a bad tag"
post_json PATCH /servers/web-1 '{"tags":"web"}'
bad 400 invalid_field "patch tags not an array"
post_json PATCH /servers/web-1 '{}'
bad 400 missing_field "patch without tags"
post_json PATCH /servers/web-1 '{"tags":[],"name":"x"}'
bad 400 unknown_field "patch with a name"
post_json PATCH /servers/nope '{"tags":[]}'
bad 404 not_found "patch an unknown server"
post_json PATCH /servers/99 '{"tags":[]}'
bad 404 not_found "patch an unknown server id"

# query parameters
for q in limit=0 limit=1000 limit=abc limit=-1 limit= limit=01 limit=5%00 after=-1 after=x after=1.5 "limit=1&limit=2" foo=1 state=bogus tag=Bad; do
	req GET "/servers?$q"
	bad 400 invalid_parameter "servers?$q"
done
req GET "/sites?server=x"
bad 400 invalid_parameter "sites?server=x"
req GET "/jobs?state=lost"
bad 400 invalid_parameter "jobs?state=lost"
req GET "/jobs?resource_id=1"
bad 400 invalid_parameter "jobs?resource_id without resource_kind"
req GET "/audit?resource_id=x&resource_kind=job"
bad 400 invalid_parameter "audit?resource_id=x"
req GET "/deployments/1/log?after=-1"
bad 400 invalid_parameter "log?after=-1"
req GET "/events?resource_id=5"
bad 400 invalid_parameter "events?resource_id without resource_kind"
req GET /events -H 'Last-Event-ID: abc'
bad 400 invalid_parameter "Last-Event-ID abc"

# resources that do not exist, ids that are not ids
req GET /servers/nope
bad 404 not_found "unknown server"
req GET /servers/99
bad 404 not_found "unknown server id"
req GET /sites/nope.example.com
bad 404 not_found "unknown site"
req GET /keys/bob
bad 404 not_found "unknown key"
req GET /deployments/99
bad 404 not_found "unknown deployment"
req GET /deployments/abc
bad 400 invalid_parameter "deployment id not a number"
req GET /commands/99/output
bad 404 not_found "output of an unknown command"
req GET /jobs/abc
bad 400 invalid_parameter "job id not a number"
req GET /jobs/0
bad 400 invalid_parameter "job id 0"
req GET /jobs/99
bad 404 not_found "unknown job"

# jobs and tokens in the wrong state
req POST /jobs/1/cancel
bad 409 conflict "cancel a finished job"
req POST /jobs/2/cancel
bad 409 conflict "cancel a failed job"
req POST /jobs/3/retry
bad 409 conflict "retry a queued job"
req POST /jobs/1/retry
bad 409 conflict "retry a finished job"
req POST /jobs/99/cancel
bad 404 not_found "cancel an unknown job"
req POST /jobs/abc/cancel
bad 400 invalid_parameter "cancel job abc"
post_json POST /jobs/3/cancel '{"force":true}'
bad 400 unknown_field "cancel with a field"
req POST /jobs/3/cancel -H 'Content-Type: text/plain' --data-binary 'now'
bad 415 unsupported_media_type "cancel with a text body"
req DELETE /tokens/abc
bad 400 invalid_parameter "revoke token abc"
req DELETE /tokens/999
bad 404 not_found "revoke an unknown token"
req DELETE "/tokens/$DOOMED_ID"
bad 409 conflict "revoke a revoked token"

# requests for servers, sites, deployments and webhooks that must change nothing
post_json POST /servers '{"name":"web-1","provider":"custom","ipv4":"203.0.113.9"}'
bad 409 conflict "create a server whose name exists"
post_json POST /servers '{"name":"web-3","provider":"custom","ipv4":"203.0.113.9","host_key_sha256":"MD5:aa"}'
bad 400 invalid_field "server with a bad host key fingerprint"
post_json POST /sites '{"server":"web-1","domain":"nope..example.com"}'
bad 400 invalid_field "site with a bad domain"
post_json POST /sites '{"server":"web-9","domain":"new.example.com"}'
bad 400 invalid_field "site on an unknown server"
post_json PATCH /servers/web-1 '{"sites_root":"var/www"}'
bad 400 invalid_field "relative sites_root"
post_json PATCH /servers/web-1 '{"deploy_user":"Root User"}'
bad 400 invalid_field "bad deploy user"
post_json POST /sites/nope.example.com/deploy '{}'
bad 404 not_found "deploy an unknown site"
post_json POST /sites/1/deploy '{"commit":"xyz"}'
bad 400 invalid_field "deploy a bad commit"
post_json PUT /sites/1/script '{}'
bad 400 missing_field "script without script"
post_json POST /sites/1/rollback '{"release":"one"}'
bad 400 invalid_field "rollback to a non-integer release"
req DELETE /sites/999
bad 404 not_found "delete an unknown site"
req POST /servers/999/retry
bad 404 not_found "retry an unknown server"
req POST /deployments/999/cancel
bad 404 not_found "cancel an unknown deployment"
API="${API%/api/v1}" NOAUTH=1 req POST /hooks/nope.example.com -H 'Content-Type: application/json' -H 'X-GitHub-Event: push' --data-binary '{}'
bad 401 unauthorized "webhook for an unknown site (answered like a bad signature)"
API="${API%/api/v1}" NOAUTH=1 req POST /hooks/deploy/dpl_nope -H 'Content-Type: application/json' --data-binary '{}'
bad 404 not_found "deploy URL with an unknown token"

[ "$NBAD" -ge 30 ] || fail "the catalogue has only $NBAD bad requests"
snapshot >"$AFTER"
if ! cmp -s "$BEFORE" "$AFTER"; then
	diff "$BEFORE" "$AFTER" | head -n 20 >&2 || true
	fail "the store changed during the catalogue of $NBAD failing requests"
fi
echo "catalogue: $NBAD failing requests, store unchanged"

# ---- reads ----

req GET /servers/web-1
expect 200 "server by name"
jq -e '.id == 1 and .name == "web-1" and .tags == ["web"] and .agent.status == "offline"
	and .state == "active" and .ssh_port == 22 and (.created_at | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$"))
	and (has("ssh_private_sealed") or has("agent_secret_hash") | not)' "$BODY" >/dev/null ||
	fail "server web-1 renders wrong: $(cat "$BODY")"
req GET /servers/1
expect 200 "server by id"
req GET "/servers?tag=web"
expect 200 "servers by tag"
[ "$(jq -c '[.items[].name]' "$BODY")" = '["web-1"]' ] || fail "servers?tag=web: $(cat "$BODY")"
req GET "/servers?state=pending"
[ "$(jq -c '[.items[].name]' "$BODY")" = '["db-1"]' ] || fail "servers?state=pending: $(cat "$BODY")"
req GET /sites/example.com
expect 200 "site by domain"
jq -e '.server_id == 1 and .aliases == ["www.example.com"] and .zero_downtime == false
	and (has("env_sealed") | not)' "$BODY" >/dev/null || fail "site renders wrong: $(cat "$BODY")"
req GET "/sites?server=2"
[ "$(jq '.items | length' "$BODY")" = 0 ] || fail "sites?server=2 not empty"
req GET /keys/alice
expect 200 "key by name"
jq -e '.fingerprint == "SHA256:fixture" and .servers[0].user == "deploy"' "$BODY" >/dev/null ||
	fail "key renders wrong: $(cat "$BODY")"
req GET /deployments/1
expect 200 "deployment"
req GET "/deployments/1/log?limit=2"
expect 200 "deployment log"
jq -e '[.items[].seq] == [1,2] and .next == 2 and .items[0].text == "line one"
	and .items[0].stream == "stdout"' "$BODY" >/dev/null || fail "log page 1: $(cat "$BODY")"
req GET "/deployments/1/log?limit=2&after=2"
jq -e '[.items[].text] == ["line three"] and .next == null' "$BODY" >/dev/null ||
	fail "log page 2: $(cat "$BODY")"
req GET /commands/1
expect 200 "command"
jq -e '.payload.argv == ["uptime"] and .payload.env == "(redacted)"' "$BODY" >/dev/null ||
	fail "command renders wrong: $(cat "$BODY")"
grep -q hunter2 "$BODY" && fail "command payload shows a secret"
req GET "/commands?server=1"
[ "$(jq '.items | length' "$BODY")" = 1 ] || fail "commands?server=1"
req GET /commands/1/output
jq -e '.items[0].text == " 18:40 up 3 days"' "$BODY" >/dev/null || fail "command output: $(cat "$BODY")"
req GET /jobs/1
expect 200 "job"
jq -e '.id == 1 and .state == "done" and .resource == {"kind":"server","id":1}' "$BODY" >/dev/null ||
	fail "job renders wrong: $(cat "$BODY")"
req GET "/jobs?state=failed"
[ "$(jq -c '[.items[].id]' "$BODY")" = '[2]' ] || fail "jobs?state=failed: $(cat "$BODY")"
req GET "/jobs?resource_kind=server&resource_id=1"
[ "$(jq -c '[.items[].id]' "$BODY")" = '[1]' ] || fail "jobs by resource: $(cat "$BODY")"
req GET "/jobs?limit=2"
jq -e '[.items[].id] == [1,2] and .next == 2' "$BODY" >/dev/null || fail "jobs?limit=2: $(cat "$BODY")"

# ---- changes that work ----

post_json PATCH /servers/web-1 '{"tags":["web","eu-1","prod"]}'
expect 200 "patch tags"
[ "$(jq -c .tags "$BODY")" = '["eu-1","prod","web"]' ] || fail "patched tags: $(cat "$BODY")"
[ "$(sqlite3 "$DB" "SELECT group_concat(tag) FROM (SELECT tag FROM server_tags WHERE server_id = 1 ORDER BY tag)")" = "eu-1,prod,web" ] ||
	fail "tags not stored"
req GET "/audit?resource_kind=server&resource_id=1"
jq -e '.items[-1].kind == "server.updated" and .items[-1].actor == "token:test"
	and .items[-1].data.tags == ["web","eu-1","prod"]' "$BODY" >/dev/null ||
	fail "no server.updated audit event: $(cat "$BODY")"
post_json PATCH /servers/1 '{"tags":[]}'
expect 200 "clear tags"
[ "$(jq -c .tags "$BODY")" = '[]' ] || fail "tags not cleared"

req POST /jobs/3/cancel
expect 202 "cancel a queued job"
jq -e '.job.id == 3 and .job.state == "cancelled"' "$BODY" >/dev/null || fail "cancel: $(cat "$BODY")"
post_json POST /jobs/4/cancel '{}'
expect 202 "cancel with an empty object"
req GET "/audit?resource_kind=job&resource_id=3"
jq -e '.items[-1].actor == "token:test"' "$BODY" >/dev/null || fail "cancel left no audit event: $(cat "$BODY")"
req POST /jobs/3/cancel
bad 409 conflict "cancel a cancelled job"

post_json POST /commands '{"server":"web-1","kind":"exec","payload":{"argv":["uptime"]}}'
expect 202 "queue a command"
CMD_ID=$(jq -r .command.id "$BODY")
jq -e '.command.state == "queued" and .command.kind == "exec" and .command.server_id == 1' "$BODY" >/dev/null ||
	fail "queued command: $(cat "$BODY")"
req GET "/audit?resource_kind=command&resource_id=$CMD_ID"
jq -e '.items[0].kind == "command.queued" and .items[0].actor == "token:test"' "$BODY" >/dev/null ||
	fail "command.queued audit event: $(cat "$BODY")"

# ---- pagination ----

for i in 1 2 3 4 5; do
	post_json POST /tokens "{\"name\":\"page-$i\"}"
	expect 201 "create token page-$i"
	jq -e '.token | test("^stk_[0-9a-f]{64}$")' "$BODY" >/dev/null || fail "create token: no token shown"
done
req GET "/tokens?limit=200"
ALL=$(jq -c '[.items[].id]' "$BODY")
jq -e '.next == null' "$BODY" >/dev/null || fail "full token list has a next"
jq -e '[.items[] | has("hash") or has("token")] | any | not' "$BODY" >/dev/null || fail "token list shows hashes or tokens"
TOTAL=$(jq 'length' <<<"$ALL")
[ "$TOTAL" -ge 8 ] || fail "expected at least 8 tokens, got $TOTAL"
SEEN="[]"
AFTER_ID=""
PAGES=0
while :; do
	req GET "/tokens?limit=2${AFTER_ID:+&after=$AFTER_ID}"
	expect 200 "token page $PAGES"
	n=$(jq '.items | length' "$BODY")
	{ [ "$n" -ge 1 ] && [ "$n" -le 2 ]; } || fail "page $PAGES has $n items"
	SEEN=$(jq -c --argjson seen "$SEEN" '$seen + [.items[].id]' "$BODY")
	PAGES=$((PAGES + 1))
	[ "$PAGES" -le 20 ] || fail "pagination does not end"
	AFTER_ID=$(jq -r '.next // empty' "$BODY")
	[ -n "$AFTER_ID" ] || break
	[ "$AFTER_ID" = "$(jq -r '.items[-1].id' "$BODY")" ] || fail "next is not the last id of the page"
done
[ "$SEEN" = "$ALL" ] || fail "paging with limit=2 gave $SEEN, the full list is $ALL"
[ "$PAGES" = $(((TOTAL + 1) / 2)) ] || fail "$PAGES pages for $TOTAL tokens"
req GET "/tokens?after=$(jq -r '.[-1]' <<<"$ALL")"
jq -e '.items == [] and .next == null' "$BODY" >/dev/null || fail "page after the last one is not empty"

# ---- Server-Sent Events: live, disconnect, resume with Last-Event-ID ----

count_ids() {
	local n
	n=$(grep -c '^id: ' "$1" 2>/dev/null) || true
	echo "${n:-0}"
}
has_ids() { [ "$(count_ids "$1")" -ge "$2" ]; }
log_count() { grep -c 'GET /api/v1/events' "$LOG" || true; }
log_grew() { [ "$(log_count)" -gt "$1" ]; }
new_token() {
	post_json POST /tokens "{\"name\":\"$1\"}"
	expect 201 "create token $1"
}
# data_names FILE: the token names in the token.created events of a stream, in order.
data_names() { sed -n 's/^data: //p' "$1" | jq -r 'select(.kind == "token.created") | .data.name'; }

SSE1="$TMP/sse1.txt"
curl -sS -N -H "Authorization: Bearer $TOKEN" "$API/events" >"$SSE1" 2>/dev/null &
CURL1=$!
PIDS+=("$CURL1")
wait_for 10 grep -q '^: ' "$SSE1" || fail "SSE: no first comment within 10 s"
new_token sse-1
new_token sse-2
wait_for 10 has_ids "$SSE1" 2 || fail "SSE: live events did not arrive: $(cat "$SSE1")"
[ "$(data_names "$SSE1" | paste -sd,)" = "sse-1,sse-2" ] || fail "SSE live events: $(cat "$SSE1")"
grep -q '^event: token.created$' "$SSE1" || fail "SSE: no event: line"
LOGS=$(log_count)
kill "$CURL1"
wait "$CURL1" 2>/dev/null || true
# The server notices the hang-up and ends the stream (its access log line appears).
wait_for 10 log_grew "$LOGS" || fail "SSE: the stream did not end after the client left"
LAST=$(sed -n 's/^id: //p' "$SSE1" | tail -n 1)

new_token sse-3
new_token sse-4
new_token sse-5
req GET "/audit?after=$LAST&limit=200"
MISSED=$(jq -r '[.items[].id] | map(tostring) | join(",")' "$BODY")
[ "$(jq '.items | length' "$BODY")" -ge 3 ] || fail "audit after $LAST: $(cat "$BODY")"

SSE2="$TMP/sse2.txt"
curl -sS -N -H "Authorization: Bearer $TOKEN" -H "Last-Event-ID: $LAST" "$API/events" >"$SSE2" 2>/dev/null &
CURL2=$!
PIDS+=("$CURL2")
wait_for 10 has_ids "$SSE2" 3 || fail "SSE resume: missed events did not arrive: $(cat "$SSE2")"
new_token sse-6 # a live one after the replay
wait_for 10 has_ids "$SSE2" "$(($(tr ',' '\n' <<<"$MISSED" | wc -l) + 1))" || fail "SSE resume: live event after the replay did not arrive"
kill "$CURL2"
wait "$CURL2" 2>/dev/null || true
GOT=$(sed -n 's/^id: //p' "$SSE2" | paste -sd,)
WANT="$MISSED,$(sqlite3 "$DB" "SELECT max(id) FROM events")"
[ "$GOT" = "$WANT" ] || fail "SSE resume from $LAST sent ids $GOT, want $WANT"
[ "$(data_names "$SSE2" | paste -sd,)" = "sse-3,sse-4,sse-5,sse-6" ] || fail "SSE resume names: $(data_names "$SSE2" | paste -sd,)"
# Each data: line is the event as JSON with the same id as its id: line.
paste -d' ' <(sed -n 's/^id: //p' "$SSE2") <(sed -n 's/^data: //p' "$SSE2" | jq -r .id) |
	awk '$1 != $2 { exit 1 }' || fail "SSE: data ids do not match id lines"

# ?after= and filters: one token's events only.
new_token sse-7
SSE7_ID=$(jq -r .id "$BODY")
SSE3="$TMP/sse3.txt"
curl -sS -N -H "Authorization: Bearer $TOKEN" \
	"$API/events?after=0&kind=token.&resource_kind=token&resource_id=$SSE7_ID" >"$SSE3" 2>/dev/null &
CURL3=$!
PIDS+=("$CURL3")
wait_for 10 has_ids "$SSE3" 1 || fail "SSE filter: no event for token $SSE7_ID"
new_token sse-8 # does not match
req DELETE "/tokens/$SSE7_ID"
expect 200 "revoke sse-7"
wait_for 10 has_ids "$SSE3" 2 || fail "SSE filter: revoke event did not arrive"
[ "$(sed -n 's/^event: //p' "$SSE3" | paste -sd,)" = "token.created,token.revoked" ] ||
	fail "SSE filter sent: $(cat "$SSE3")"
sed -n 's/^data: //p' "$SSE3" | jq -e "select(.resource_id != $SSE7_ID)" >/dev/null &&
	fail "SSE filter let another resource through"

# ---- stop: stoked exits promptly with a stream still open ----

kill -TERM "$STOKED_PID"
stoked_gone() { ! kill -0 "$STOKED_PID" 2>/dev/null; }
wait_for 15 stoked_gone || fail "stoked did not exit within 15 s of SIGTERM with an open event stream"
rc=0
wait "$STOKED_PID" || rc=$?
[ "$rc" = 0 ] || fail "stoked exited with status $rc after SIGTERM"
grep -q 'api: stopped' "$LOG" || fail "no 'api: stopped' in the log"
grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' "$LOG" && fail "sanitizer report in the stoked log"
wait "$CURL3" 2>/dev/null || true

echo "api_test: OK ($NBAD bad requests, $PAGES pages, SSE resume from $LAST)"
