/*
 * api_hooks.c: the webhook receiver: POST /hooks/{site} for GitHub, GitLab, Gitea/Forgejo
 * and Bitbucket (the signature or token is checked in constant time against the site's
 * secret before the body is parsed further; an unknown site gets the answer of a wrong
 * signature), each delivery acted on once (deliveries.h), and POST /hooks/deploy/{token}
 * for CI. Answers at once; the deployment is queued. Never logs a secret, a signature or
 * a deploy token.
 */
#include "api_json.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "deliveries.h"
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

/* A path parameter for the log: printable, short. */
static void
api_hooks_printable(char *dst, size_t dstlen, const char *s)
{
	size_t i;

	for (i = 0; s != NULL && s[i] != '\0' && i + 1 < dstlen; i++)
		dst[i] = (s[i] > 0x20 && s[i] < 0x7f) ? s[i] : '?';
	dst[i] = '\0';
}

/* A secret no site has, made at first use: deliveries for unknown sites (and sites whose
 * secret cannot be opened) are checked against it, so that they take the same path and get
 * the same answer as a wrong signature for a real site. */
static pthread_once_t api_hooks_once = PTHREAD_ONCE_INIT;
static char *api_hooks_decoy;

static void
api_hooks_decoy_init(void)
{
	api_hooks_decoy = crypto_token("decoy_", 24);
}

/* The site a hook URL names (id or domain): its id, 0 when there is none, -1 on a database
 * error. Replies nothing: an unknown site is answered like a bad signature. */
static int64_t
api_hooks_site_id(struct store *s, const char *ref)
{
	int64_t v;

	if (s == NULL || ref == NULL)
		return s == NULL ? -1 : 0;
	if (api_parse_int(ref, 1, INT64_MAX, &v) == 0)
		return store_int(s, 0, "SELECT id FROM sites WHERE id = ?", "i", v);
	return store_int(s, 0, "SELECT id FROM sites WHERE domain = ?", "s", ref);
}

/* Checks the delivery's signature against the site's secret (or the decoy). 0, or -1
 * after answering 401, or 500 on a database error. */
static int
api_hooks_verify(struct api_req *r, struct store *s, int64_t *id, enum webhook_provider p,
		 const char *body, size_t len)
{
	char err[512], ref[80], *sealed = NULL, *secret = NULL;
	const char *key;
	int rc;

	api_hooks_printable(ref, sizeof(ref), api_req_param(r, 0));
	if ((*id = api_hooks_site_id(s, api_req_param(r, 0))) < 0) {
		api_reply_db(r, s, "looking up the site");
		return -1;
	}
	if (*id > 0) {
		sealed =
		    store_text(s, "SELECT webhook_secret_sealed FROM sites WHERE id = ?", "i", *id);
		if (sealed == NULL ||
		    secrets_open(sealed, "site:webhook", &secret, err, sizeof(err)) != 0)
			log_warnx("hooks: site %lld: webhook secret unavailable%s%s",
				  (long long)*id, sealed ? ": " : "", sealed ? err : "");
	}
	pthread_once(&api_hooks_once, api_hooks_decoy_init);
	key = secret ? secret : api_hooks_decoy;
	rc = key ? webhook_verify(p, api_hooks_header, r, key, body, len, err, sizeof(err))
		 : err_set(err, sizeof(err), ERR_AUTH, "signature does not match");
	if (rc == 0 && secret == NULL) /* cannot happen: nobody knows the decoy */
		rc = err_set(err, sizeof(err), ERR_AUTH, "signature does not match");
	if (secret) {
		explicit_bzero(secret, strlen(secret));
		free(secret);
	}
	free(sealed);
	if (rc == 0)
		return 0;
	if (*id > 0)
		log_warnx("hooks: site %lld: %s delivery refused: %s", (long long)*id,
			  webhook_provider_name(p), err);
	else
		log_warnx("hooks: %s: no such site: %s delivery refused", ref,
			  webhook_provider_name(p));
	/* The same answer whether the site exists or not. */
	api_reply_error(r, rc == ERR_TOOBIG ? 413 : 401,
			rc == ERR_TOOBIG ? "payload_too_large" : "unauthorized", "%s", err);
	return -1;
}

/* The reason a verified push is not deployed, or NULL. */
static const char *
api_hooks_ignore(struct store *s, int64_t id, const struct webhook_event *ev, char *why,
		 size_t whylen, int64_t *dep)
{
	const char *what;
	char *branch;
	int same;

	*dep = 0;
	if (ev->kind != WEBHOOK_PUSH)
		return "not a push event";
	if (ev->deleted)
		return "a deletion";
	if (ev->is_tag || ev->branch == NULL)
		return "not a branch push";
	branch = store_text(s, "SELECT branch FROM sites WHERE id = ?", "i", id);
	same = branch != NULL && strcmp(branch, ev->branch) == 0;
	snprintf(why, whylen, "push to %s%s", ev->branch,
		 branch ? ", the site deploys another branch" : "");
	free(branch);
	if (!same)
		return why;
	if (ev->commit != NULL && sites_commit_current(s, id, ev->commit, dep, &what) == 1) {
		snprintf(why, whylen, "commit %.12s %s (deployment %lld)", ev->commit, what,
			 (long long)*dep);
		return why;
	}
	return NULL;
}

void
api_hooks_site(struct api_req *r)
{
	struct sites_deploy_req req = {0};
	struct webhook_event ev = {0};
	enum webhook_provider p;
	struct store *s = api_req_store(r);
	uint8_t sum[CRYPTO_SHA256_LEN];
	const char *body, *reason;
	char err[512], trigger[48], hash[2 * CRYPTO_SHA256_LEN + 1], why[160];
	int64_t id, dep = 0, job, receipt;
	size_t len;
	int rc;

	body = api_req_raw_body(r, &len);
	if (webhook_detect(api_hooks_header, r, &p, err, sizeof(err)) != 0) {
		api_reply_error(r, 400, "invalid_request", "%s", err);
		return;
	}
	if (api_hooks_verify(r, s, &id, p, body, len) != 0)
		return;
	if ((rc = webhook_parse(p, api_hooks_header, r, body, len, &ev, err, sizeof(err))) != 0) {
		api_reply_error(r, rc == ERR_TOOBIG ? 413 : 400, "invalid_request", "%s", err);
		goto out;
	}
	if (ev.kind == WEBHOOK_PING) {
		api_reply_json(r, 200, json_pack("{s:s}", "status", "pong"));
		goto out;
	}
	/* Once per delivery: the same body (whatever its id) or the same id again is a copy. */
	crypto_sha256(body, len, sum);
	crypto_hex(sum, sizeof(sum), hash);
	rc = deliveries_claim(s, id, ev.delivery_id, hash, &receipt, &dep, err, sizeof(err));
	if (rc == ERR_EXISTS) {
		log_info("hooks: site %lld: %s delivery %s is a copy of one received: ignored",
			 (long long)id, webhook_provider_name(p),
			 ev.delivery_id ? ev.delivery_id : "(no id)");
		api_reply_json(r, 200,
			       json_pack("{s:s, s:o}", "status", "duplicate", "deployment_id",
					 dep > 0 ? json_integer(dep) : json_null()));
		goto out;
	}
	if (rc != 0) {
		api_reply_err(r, rc, err);
		goto out;
	}
	if ((reason = api_hooks_ignore(s, id, &ev, why, sizeof(why), &dep)) != NULL) {
		deliveries_settle(s, receipt, "ignored", 0);
		api_reply_json(r, 202,
			       json_pack("{s:s, s:s}", "status", "ignored", "reason", reason));
		goto out;
	}
	snprintf(trigger, sizeof(trigger), "webhook:%s", webhook_provider_name(p));
	req.trigger = trigger;
	req.actor = trigger;
	req.commit = ev.commit;
	req.message = ev.message;
	req.author = ev.author;
	req.delivery_id = ev.delivery_id;
	if ((rc = sites_deploy(s, id, &req, &dep, &job, err, sizeof(err))) != 0) {
		deliveries_release(s, receipt);
		api_reply_err(r, rc, err);
		goto out;
	}
	deliveries_settle(s, receipt, "queued", dep);
	api_reply_json(r, 202,
		       json_pack("{s:s, s:I, s:I}", "status", "queued", "deployment_id",
				 (json_int_t)dep, "job_id", (json_int_t)job));
out:
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
