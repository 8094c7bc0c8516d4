/*
 * api_hooks.c: the webhook receiver: POST /hooks/{site} for GitHub, GitLab, Gitea/Forgejo
 * and Bitbucket (the signature or token is checked in constant time against the site's
 * secret before the body is parsed further), and POST /hooks/deploy/{token} for CI.
 * Answers at once; the deployment is queued. Never logs a secret or a signature.
 */
#include "api_json.h"

#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "err.h"
#include "log.h"
#include "secrets.h"
#include "sites.h"
#include "store.h"
#include "webhook.h"

static const char *
api_hooks_header(const char *name, void *arg)
{
	return api_req_header(arg, name);
}

void
api_hooks_site(struct api_req *r)
{
	struct sites_deploy_req req = {0};
	struct webhook_event ev = {0};
	enum webhook_provider p;
	struct store *s = api_req_store(r);
	const char *body;
	char err[512], trigger[48], *sealed = NULL, *secret = NULL, *branch = NULL;
	int64_t id, dep = 0, job;
	size_t len;
	int rc;

	if (api_lookup(r, "site", "sites", "domain", api_req_param(r, 0), &id) != 0)
		return;
	body = api_req_raw_body(r, &len);
	if (webhook_detect(api_hooks_header, r, &p, err, sizeof(err)) != 0) {
		api_reply_error(r, 400, "invalid_request", "%s", err);
		return;
	}
	sealed = store_text(s, "SELECT webhook_secret_sealed FROM sites WHERE id = ?", "i", id);
	if (sealed == NULL ||
	    secrets_open(sealed, "site:webhook", &secret, err, sizeof(err)) != 0) {
		api_reply_error(r, 500, "internal", "site %lld: webhook secret unavailable",
				(long long)id);
		goto out;
	}
	if (webhook_verify(p, api_hooks_header, r, secret, body ? body : "", len, err,
			   sizeof(err)) != 0) {
		log_warnx("hooks: site %lld: %s delivery refused: %s", (long long)id,
			  webhook_provider_name(p), err);
		api_reply_error(r, 401, "unauthorized", "%s", err);
		goto out;
	}
	if ((rc = webhook_parse(p, api_hooks_header, r, body ? body : "", len, &ev, err,
				sizeof(err))) != 0) {
		api_reply_error(r, rc == ERR_TOOBIG ? 413 : 400, "invalid_request", "%s", err);
		goto out;
	}
	if (ev.kind == WEBHOOK_PING) {
		api_reply_json(r, 200, json_pack("{s:s}", "status", "pong"));
		goto out;
	}
	if (ev.kind != WEBHOOK_PUSH || ev.is_tag || ev.deleted || ev.branch == NULL) {
		api_reply_json(r, 202,
			       json_pack("{s:s, s:s}", "status", "ignored", "reason",
					 ev.kind != WEBHOOK_PUSH ? "not a push event"
					 : ev.deleted		 ? "a deletion"
								 : "not a branch push"));
		goto out;
	}
	branch = store_text(s, "SELECT branch FROM sites WHERE id = ?", "i", id);
	if (branch == NULL || strcmp(branch, ev.branch) != 0) {
		api_reply_json(r, 202,
			       json_pack("{s:s, s:s++}", "status", "ignored", "reason", "push to ",
					 ev.branch,
					 branch ? ", the site deploys another branch" : ""));
		goto out;
	}
	snprintf(trigger, sizeof(trigger), "webhook:%s", webhook_provider_name(p));
	req.trigger = trigger;
	req.actor = trigger;
	req.commit = ev.commit;
	req.message = ev.message;
	req.author = ev.author;
	req.delivery_id = ev.delivery_id;
	rc = sites_deploy(s, id, &req, &dep, &job, err, sizeof(err));
	if (rc == ERR_EXISTS) {
		api_reply_json(r, 200,
			       json_pack("{s:s, s:I}", "status", "duplicate", "deployment_id",
					 (json_int_t)dep));
		goto out;
	}
	if (rc != 0) {
		api_reply_err(r, rc, err);
		goto out;
	}
	api_reply_json(r, 202,
		       json_pack("{s:s, s:I, s:I}", "status", "queued", "deployment_id",
				 (json_int_t)dep, "job_id", (json_int_t)job));
out:
	if (secret) {
		explicit_bzero(secret, strlen(secret));
		free(secret);
	}
	free(sealed);
	free(branch);
	webhook_event_fini(&ev);
}

/* POST /hooks/deploy/{token}: a CI trigger; deploys the tip of the site's branch. */
void
api_hooks_deploy(struct api_req *r)
{
	struct sites_deploy_req req = {.trigger = "ci", .actor = "ci"};
	struct store *s = api_req_store(r);
	const char *token = api_req_param(r, 0);
	char hash[65], err[512];
	int64_t id, dep, job;
	int rc;

	if (token == NULL || strncmp(token, "dpl_", 4) != 0 || strlen(token) > 100) {
		api_reply_error(r, 404, "not_found", "no such deploy URL");
		return;
	}
	crypto_sha256_hex(token, hash);
	id = store_int(s, 0, "SELECT id FROM sites WHERE deploy_token_hash = ?", "s", hash);
	if (id == 0) {
		log_warnx("hooks: deploy URL with an unknown token");
		api_reply_error(r, 404, "not_found", "no such deploy URL");
		return;
	}
	if ((rc = sites_deploy(s, id, &req, &dep, &job, err, sizeof(err))) != 0) {
		api_reply_err(r, rc, err);
		return;
	}
	api_reply_json(r, 202,
		       json_pack("{s:s, s:I, s:I}", "status", "queued", "deployment_id",
				 (json_int_t)dep, "job_id", (json_int_t)job));
}
