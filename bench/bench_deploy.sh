#!/usr/bin/env bash
# bench_deploy.sh: git webhook received -> deploy script started, on loopback with a real
# controller, agent, nginx and git repository (goal: under 50 ms); and deployments per
# minute on one server (a trivial script, N deployments queued at once).
# Usage: STOKE_BUILD=build bench/bench_deploy.sh [ROUNDS] [DEPLOYS]
set -euo pipefail
ROUNDS=${1:-10}
DEPLOYS=${2:-20}
STOKE_SRC=$(cd "$(dirname "$0")/.." && pwd)
export STOKE_SRC
STOKE_BUILD=$(cd "${STOKE_BUILD:-build}" && pwd)
export STOKE_BUILD
source "$STOKE_SRC/tests/lib.sh"

chmod 755 "$T_TMP"
NGX=$T_TMP/nginx
PORT=$(t_free_port)
t_start_nginx "$NGX" "$PORT"
printf 'agent_park = 25s\nlog_level = warn\n' >"$T_TMP/stoked.conf"
t_start_stoked "$STOKE_BUILD/controller/stoked" "$T_TMP/data" -c "$T_TMP/stoked.conf"
TOKEN=$("$STOKE_BUILD/controller/stoked" token create --data-dir "$T_TMP/data" --name bench)
api() { curl -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
t_site_agent "$STOKE_BUILD/controller/stoked" "$STOKE_BUILD/agent/stoke-agent" "$T_TMP/data" "$TOKEN" \
	b-1 "$NGX" "$PORT" "$T_TMP/www" "log_level warn"
git init -q --bare -b main "$T_TMP/origin.git"
git init -q -b main "$T_TMP/work"
git -C "$T_TMP/work" -c user.name=B -c user.email=b@example.com commit -q --allow-empty -m init
git -C "$T_TMP/work" push -q "$T_TMP/origin.git" main 2>/dev/null
MARK=$T_TMP/started
body=$(jq -n --arg repo "$T_TMP/origin.git" --arg s "date +%s%N >> $MARK" \
	'{server:"b-1", domain:"bench.test", repo_url:$repo, branch:"main", deploy_script:$s}')
out=$(api -X POST "$T_URL/api/v1/sites" -d "$body")
SITE=$(echo "$out" | jq -r .site.id)
[[ "$SITE" =~ ^[0-9]+$ ]] || fail "site create: $out"
SECRET=$(echo "$out" | jq -r .webhook_secret)
t_wait 60 sh -c "[ \$(wc -l < $MARK 2>/dev/null || echo 0) -ge 1 ]" || fail "first deployment never ran"
sleep 1

lat=()
for i in $(seq "$ROUNDS"); do
	C=$(git -C "$T_TMP/work" rev-parse HEAD)
	B=$(jq -cn --arg c "$C" --arg d "$i" '{ref:"refs/heads/main", before:"0000000000000000000000000000000000000000", after:$c, created:false, deleted:false, forced:false, head_commit:{id:$c, message:"m", author:{name:"B", email:"b@example.com"}}, commits:[]}')
	sig=$(printf '%s' "$B" | openssl dgst -sha256 -hmac "$SECRET" -r | cut -d' ' -f1)
	before=$(wc -l <"$MARK")
	t0=$(date +%s%N)
	curl -s -o /dev/null -X POST "$T_URL/hooks/$SITE" -H 'Content-Type: application/json' \
		-H 'X-GitHub-Event: push' -H "X-GitHub-Delivery: bench-$i-$RANDOM" \
		-H "X-Hub-Signature-256: sha256=$sig" --data-binary "$B"
	t_wait 30 sh -c "[ \$(wc -l < $MARK) -gt $before ]" || fail "deployment $i never started"
	t1=$(tail -n 1 "$MARK")
	lat+=($(((t1 - t0) / 1000000)))
	sleep 0.3
done
sorted=$(printf '%s\n' "${lat[@]}" | sort -n)
median=$(echo "$sorted" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
max=$(echo "$sorted" | tail -n 1)

api -X PUT "$T_URL/api/v1/sites/$SITE/script" -d '{"script":"true\n"}' >/dev/null
last=
t0=$(date +%s%N)
for _ in $(seq "$DEPLOYS"); do last=$(api -X POST "$T_URL/api/v1/sites/$SITE/deploy" -d '{}' | jq -r .deployment_id); done
t_wait 300 sh -c "curl -s -H 'Authorization: Bearer $TOKEN' $T_URL/api/v1/deployments/$last | jq -e '.state == \"finished\" or .state == \"failed\"' >/dev/null" || fail "deployments did not finish"
t1=$(date +%s%N)
echo "bench_deploy: one server on loopback (real controller, agent, nginx, git)"
echo "  webhook received -> deploy script started: median ${median} ms, max ${max} ms over $ROUNDS pushes (goal < 50 ms; includes the git fetch)"
awk -v n="$DEPLOYS" -v a="$t0" -v b="$t1" 'BEGIN { printf "  deployments per minute (one site, trivial script): %.0f (%d in %.1f s)\n", n*60/((b-a)/1e9), n, (b-a)/1e9 }'
