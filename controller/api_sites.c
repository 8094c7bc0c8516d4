/*
 * api_sites.c: /api/v1/sites: list, get, create (the deploy key, webhook secret and CI
 * deploy token are shown once, in its answer), delete, activate/deactivate, rollback,
 * deploy, and setting the deploy script and environment; the work is queued as jobs
 * (sites.c). Never shows a site's sealed environment, deploy key or webhook secret
 * afterwards. Routed from api.c.
 */
#include "api_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "err.h"
#include "events.h"
#include "jobs.h"
#include "log.h"
#include "secrets.h"
#include "names.h"
#include "sites.h"
#include "sm.h"
#include "ssh.h"
#include "store.h"

#define API_SITES_COLS                                                                             \
	"SELECT id, server_id, domain, aliases, web_dir, repo_url, branch, deploy_script,"         \
	" zero_downtime, keep_releases, deploy_timeout_ms, deploy_key_public, known_hosts, state," \
	" progress, message, checklist, error, failed_step, failed_at, created_at,"                \
	" updated_at FROM sites"

#define API_SITES_SCRIPT_MAX (64 * 1024)
#define API_SITES_ENV_MAX 100
#define API_SITES_ENV_VALUE_MAX (32 * 1024)

/* One site rendered, or NULL. */
static json_t *
api_sites_one(struct store *s, int64_t id)
{
	struct store_stmt *st = store_query(s, API_SITES_COLS " WHERE id = ?", "i", id);
	json_t *o = NULL;

	if (st != NULL && store_step(st) == STORE_ROW)
		o = api_json_row(st);
	store_finalize(st);
	return o;
}

void
api_sites_list(struct api_req *r)
{
	static const char *const q[] = {"limit", "after", "server", NULL};
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	struct api_page pg;
	json_t *items, *o;
	int64_t server, last = 0;
	int n = 0, more = 0, rc;

	if (api_req_query_allow(r, q) != 0 || api_page_parse(r, &pg) != 0 ||
	    api_query_id(r, "server", &server) != 0)
		return;
	if (s == NULL) {
		api_reply_db(r, s, "listing sites");
		return;
	}
	st = store_query(s,
			 API_SITES_COLS " WHERE id > ? AND (? < 0 OR server_id = ?)"
					" ORDER BY id LIMIT ?",
			 "iiii", pg.after, server, server, (int64_t)pg.limit + 1);
	if (st == NULL || (items = json_array()) == NULL) {
		store_finalize(st);
		api_reply_db(r, s, "listing sites");
		return;
	}
	while ((rc = store_step(st)) == STORE_ROW) {
		if (n == pg.limit) {
			more = 1;
			break;
		}
		if ((o = api_json_row(st)) == NULL) {
			rc = -1;
			break;
		}
		last = store_col_int(st, 0);
		json_array_append_new(items, o);
		n++;
	}
	store_finalize(st);
	if (rc < 0) {
		json_decref(items);
		api_reply_db(r, s, "listing sites");
		return;
	}
	api_page_reply(r, items, more, last);
}

void
api_sites_get(struct api_req *r)
{
	static const char *const q[] = {NULL};
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	json_t *o = NULL;
	int64_t id;

	if (api_req_query_allow(r, q) != 0 ||
	    api_lookup(r, "site", "sites", "domain", api_req_param(r, 0), &id) != 0)
		return;
	st = store_query(s, API_SITES_COLS " WHERE id = ?", "i", id);
	if (st != NULL && store_step(st) == STORE_ROW)
		o = api_json_row(st);
	store_finalize(st);
	if (o == NULL) {
		api_reply_db(r, s, "reading the site");
		return;
	}
	api_reply_json(r, 200, o);
}

static int
api_sites_check_server(const char *field, const json_t *v, char *err, size_t errlen)
{
	if (json_is_integer(v)) {
		if (json_integer_value(v) < 1)
			return err_set(err, errlen, ERR_INVAL, "%s: ids are positive", field);
		return 0;
	}
	return api_check_server_name(field, v, err, errlen);
}

/* A path under the site's folder: relative, no "..", no empty segment. */
static int
api_sites_check_web_dir(const char *field, const json_t *v, char *err, size_t errlen)
{
	const char *p = json_string_value(v), *seg;
	size_t n = strlen(p), i, len;

	if (n == 0 || n > 255)
		return err_set(err, errlen, ERR_INVAL, "%s: must be 1-255 characters", field);
	for (i = 0; i < n; i++)
		if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
		      (p[i] >= '0' && p[i] <= '9') || strchr("._-/", p[i]) != NULL))
			return err_set(err, errlen, ERR_INVAL,
				       "%s: may hold only letters, digits, '.', '_', '-' and '/'",
				       field);
	for (seg = p; *seg != '\0'; seg += len + (seg[len] == '/')) {
		len = strcspn(seg, "/");
		if (len == 0)
			return err_set(err, errlen, ERR_INVAL,
				       "%s: must be a relative path without empty parts", field);
		if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
			return err_set(err, errlen, ERR_INVAL,
				       "%s: must not contain '.' or '..' parts", field);
	}
	if (p[n - 1] == '/')
		return err_set(err, errlen, ERR_INVAL, "%s: must not end with '/'", field);
	return 0;
}

static int
api_sites_check_script(const char *field, const json_t *v, char *err, size_t errlen)
{
	if (json_string_length(v) > API_SITES_SCRIPT_MAX)
		return err_set(err, errlen, ERR_INVAL, "%s: at most %d bytes", field,
			       API_SITES_SCRIPT_MAX);
	return 0;
}

static int
api_sites_check_known_hosts(const char *field, const json_t *v, char *err, size_t errlen)
{
	char why[256];

	if (names_known_hosts(json_string_value(v), why, sizeof(why)) != 0)
		return err_set(err, errlen, ERR_INVAL, "%s: %s", field, why);
	return 0;
}

static int
api_sites_check_env(const char *field, const json_t *v, char *err, size_t errlen)
{
	const char *key;
	json_t *val;
	size_t i;

	if (json_object_size(v) > API_SITES_ENV_MAX)
		return err_set(err, errlen, ERR_INVAL, "%s: at most %d variables", field,
			       API_SITES_ENV_MAX);
	json_object_foreach((json_t *)v, key, val)
	{
		int ok =
		    strlen(key) >= 1 && strlen(key) <= 128 && !(key[0] >= '0' && key[0] <= '9');

		for (i = 0; ok && key[i] != '\0'; i++)
			ok = (key[i] >= 'A' && key[i] <= 'Z') || (key[i] >= 'a' && key[i] <= 'z') ||
			     (key[i] >= '0' && key[i] <= '9') || key[i] == '_';
		if (!ok)
			return err_set(err, errlen, ERR_INVAL,
				       "%s: %.64s: names are [A-Za-z_][A-Za-z0-9_]*, 1-128 long",
				       field, key);
		if (!json_is_string(val))
			return err_set(err, errlen, ERR_INVAL, "%s.%s: must be a string", field,
				       key);
		if (json_string_length(val) > API_SITES_ENV_VALUE_MAX)
			return err_set(err, errlen, ERR_INVAL, "%s.%s: at most %d bytes", field,
				       key, API_SITES_ENV_VALUE_MAX);
	}
	return 0;
}

static int
api_sites_check_keep(const char *field, const json_t *v, char *err, size_t errlen)
{
	if (json_integer_value(v) < 1 || json_integer_value(v) > 50)
		return err_set(err, errlen, ERR_INVAL, "%s: must be 1..50", field);
	return 0;
}

static int
api_sites_check_timeout(const char *field, const json_t *v, char *err, size_t errlen)
{
	if (json_integer_value(v) < 1000 || json_integer_value(v) > 86400000)
		return err_set(err, errlen, ERR_INVAL, "%s: must be 1000..86400000 (1 s to 24 h)",
			       field);
	return 0;
}

static const struct api_field api_sites_create_fields[] = {
    {"server", API_JSON_STRING | API_JSON_INTEGER, 1, api_sites_check_server},
    {"domain", API_JSON_STRING, 1, api_check_domain},
    {"aliases", API_JSON_ARRAY, 0, api_check_domains},
    {"web_dir", API_JSON_STRING, 0, api_sites_check_web_dir},
    {"repo_url", API_JSON_STRING, 0, api_check_repo_url},
    {"branch", API_JSON_STRING, 0, api_check_branch},
    {"deploy_script", API_JSON_STRING, 0, api_sites_check_script},
    {"known_hosts", API_JSON_STRING, 0, api_sites_check_known_hosts},
    {"env", API_JSON_OBJECT, 0, api_sites_check_env},
    {"zero_downtime", API_JSON_BOOL, 0, NULL},
    {"keep_releases", API_JSON_INTEGER, 0, api_sites_check_keep},
    {"deploy_timeout_ms", API_JSON_INTEGER, 0, api_sites_check_timeout},
    {NULL, 0, 0, NULL},
};

/* 1 when name is some site's domain or alias, 0 when free, -1 on a database error. */
static int
api_sites_name_taken(struct store *s, const char *name)
{
	return (int)store_int(s, -1,
			      "SELECT EXISTS (SELECT 1 FROM sites WHERE domain = ?1)"
			      " OR EXISTS (SELECT 1 FROM sites, json_each(sites.aliases)"
			      " WHERE json_each.value = ?1)",
			      "s", name);
}

static const char *
api_sites_str(json_t *body, const char *key, const char *def)
{
	json_t *v = json_object_get(body, key);

	return v ? json_string_value(v) : def;
}

static int64_t
api_sites_int(json_t *body, const char *key, int64_t def)
{
	json_t *v = json_object_get(body, key);

	return v ? (int64_t)json_integer_value(v) : def;
}

static void api_sites_insert(struct api_req *r, struct store *s, json_t *body);

void
api_sites_create(struct api_req *r)
{
	static const char *const q[] = {NULL};
	json_t *body = api_req_body(r), *server, *aliases;
	struct store *s = api_req_store(r);
	const char *domain;
	size_t i;
	int64_t n;
	int taken;

	if (api_req_query_allow(r, q) != 0 ||
	    api_json_fields(r, body, api_sites_create_fields) != 0)
		return;
	if (s == NULL) {
		api_reply_db(r, s, "creating a site");
		return;
	}
	server = json_object_get(body, "server");
	domain = json_string_value(json_object_get(body, "domain"));
	aliases = json_object_get(body, "aliases");
	if (json_is_integer(server))
		n = store_int(s, -1, "SELECT count(*) FROM servers WHERE id = ?", "i",
			      (int64_t)json_integer_value(server));
	else
		n = store_int(s, -1, "SELECT count(*) FROM servers WHERE name = ?", "s",
			      json_string_value(server));
	if (n < 0) {
		api_reply_db(r, s, "creating a site");
		return;
	}
	if (n == 0) {
		if (json_is_integer(server))
			api_reply_error(r, 400, "invalid_field", "server: no server with id %lld",
					(long long)json_integer_value(server));
		else
			api_reply_error(r, 400, "invalid_field", "server: no server named %s",
					json_string_value(server));
		return;
	}
	for (i = 0; i < json_array_size(aliases); i++) {
		if (strcmp(json_string_value(json_array_get(aliases, i)), domain) == 0) {
			api_reply_error(r, 400, "invalid_field", "aliases[%zu]: repeats the domain",
					i);
			return;
		}
	}
	if ((taken = api_sites_name_taken(s, domain)) != 0) {
		if (taken < 0)
			api_reply_db(r, s, "creating a site");
		else
			api_reply_error(r, 409, "conflict", "domain: %s is taken by another site",
					domain);
		return;
	}
	for (i = 0; i < json_array_size(aliases); i++) {
		const char *a = json_string_value(json_array_get(aliases, i));

		if ((taken = api_sites_name_taken(s, a)) != 0) {
			if (taken < 0)
				api_reply_db(r, s, "creating a site");
			else
				api_reply_error(r, 409, "conflict",
						"aliases[%zu]: %s is taken by another site", i, a);
			return;
		}
	}
	api_sites_insert(r, s, body);
}

/* Writes the site row with its secrets and queues site.create; replies 202 with the site,
 * the deploy key's public half, the webhook secret and the CI deploy URL token (shown once
 * here; the token is stored hashed). */
static void
api_sites_insert(struct api_req *r, struct store *s, json_t *body)
{
	json_t *server = json_object_get(body, "server"), *v, *o;
	char *priv = NULL, *pub = NULL, *key_sealed = NULL, *secret = NULL, *secret_sealed = NULL;
	char *token = NULL, *env_text = NULL, *env_sealed = NULL, *aliases = NULL, *root = NULL;
	char err[1024], path[512], hash[65], ref[32];
	const char *domain = json_string_value(json_object_get(body, "domain"));
	int64_t server_id, id, job, now = store_now_ms();

	if (json_is_integer(server))
		snprintf(ref, sizeof(ref), "%lld", (long long)json_integer_value(server));
	if (api_lookup(r, "server", "servers", "name",
		       json_is_integer(server) ? ref : json_string_value(server), &server_id) != 0)
		return;
	root = store_text(s, "SELECT sites_root FROM servers WHERE id = ?", "i", server_id);
	snprintf(path, sizeof(path), "%s/%s", root ? root : "/var/www", domain);
	if (ssh_keygen_ed25519(domain, &priv, &pub, err, sizeof(err)) != 0 ||
	    secrets_seal(priv, "site:deploy_key", &key_sealed, err, sizeof(err)) != 0 ||
	    (secret = crypto_token("", 24)) == NULL ||
	    secrets_seal(secret, "site:webhook", &secret_sealed, err, sizeof(err)) != 0 ||
	    (token = crypto_token("dpl_", 24)) == NULL) {
		api_reply_error(r, 500, "internal", "making the site's secrets: %s", err);
		goto out;
	}
	crypto_sha256_hex(token, hash);
	if ((v = json_object_get(body, "env")) != NULL &&
	    ((env_text = json_dumps(v, JSON_COMPACT)) == NULL ||
	     secrets_seal(env_text, "site:env", &env_sealed, err, sizeof(err)) != 0)) {
		api_reply_error(r, 500, "internal", "sealing the environment: %s", err);
		goto out;
	}
	/* No aliases: "[]" (a json_array() made for it here was never freed). */
	v = json_object_get(body, "aliases");
	aliases = v ? json_dumps(v, JSON_COMPACT) : strdup("[]");
	if (store_begin(s) != 0)
		goto dbfail;
	if (store_exec(
		s,
		"INSERT INTO sites (id, server_id, domain, aliases, web_dir, repo_url, branch,"
		" deploy_script, env_sealed, zero_downtime, keep_releases, deploy_timeout_ms,"
		" deploy_key_public, deploy_key_sealed, webhook_secret_sealed,"
		" deploy_token_hash, path, known_hosts, created_at, updated_at)"
		/* never a deleted site's id (id_high, migration 12) */
		" VALUES ((SELECT last + 1 FROM id_high WHERE name = 'sites'),"
		" ?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
		"isssssssddissssssii", server_id, domain, aliases,
		api_sites_str(body, "web_dir", "public"), api_sites_str(body, "repo_url", NULL),
		api_sites_str(body, "branch", "main"),
		api_sites_str(body, "deploy_script", sites_default_script), env_sealed,
		json_is_true(json_object_get(body, "zero_downtime")),
		(int)api_sites_int(body, "keep_releases", 5),
		api_sites_int(body, "deploy_timeout_ms", 600000), pub, key_sealed, secret_sealed,
		hash, path, api_sites_str(body, "known_hosts", NULL), now, now) != 0) {
		if (store_err_is_unique(s)) {
			store_rollback(s);
			api_reply_error(r, 409, "conflict", "domain: %s is taken by another site",
					domain);
			goto out;
		}
		goto dbfail;
	}
	id = store_last_id(s);
	sm_check(s, &sm_site, id, "nginx site", 0, 1, NULL);
	sm_check(s, &sm_site, id, "folders", 0, 1, NULL);
	if (sm_transition(s, &sm_site, id, "creating", api_req_actor(r), err, sizeof(err)) != 0 ||
	    sites_job(s, id, "site.create", "{}", api_req_actor(r), &job, err, sizeof(err)) != 0 ||
	    events_emit(s, api_req_actor(r), "site.created", "site", id, NULL) != 0) {
		store_rollback(s);
		api_reply_error(r, 500, "internal", "creating the site: %s", err);
		goto out;
	}
	if (store_commit(s) != 0)
		goto dbfail;
	log_info("site %lld (%s): created by %s, job %lld", (long long)id, domain, api_req_actor(r),
		 (long long)job);
	o = api_sites_one(s, id);
	api_reply_json(r, 202,
		       json_pack("{s:o?, s:I, s:s, s:s, s:s}", "site", o, "job_id", (json_int_t)job,
				 "deploy_key_public", pub, "webhook_secret", secret, "deploy_token",
				 token));
	goto out;
dbfail:
	api_reply_db(r, s, "creating the site");
	store_rollback(s);
out:
	if (priv)
		explicit_bzero(priv, strlen(priv));
	if (env_text)
		explicit_bzero(env_text, strlen(env_text));
	free(priv);
	free(pub);
	free(key_sealed);
	free(secret);
	free(secret_sealed);
	free(token);
	free(env_text);
	free(env_sealed);
	free(aliases);
	free(root);
}

/* Site lookup by id or domain; replies 404 itself. */
static int
api_sites_ref(struct api_req *r, int64_t *id)
{
	return api_lookup(r, "site", "sites", "domain", api_req_param(r, 0), id);
}

static void
api_sites_reply_job(struct api_req *r, struct store *s, int64_t id, int64_t job)
{
	api_reply_json(
	    r, 202,
	    json_pack("{s:o?, s:I}", "site", api_sites_one(s, id), "job_id", (json_int_t)job));
}

/* Moves the site to `to` (if not NULL) and queues a job, in one transaction. */
static void
api_sites_queue(struct api_req *r, int64_t id, const char *to, const char *type,
		const char *payload)
{
	struct store *s = api_req_store(r);
	char err[1024];
	int64_t job;
	int rc;

	if (store_begin(s) != 0) {
		api_reply_db(r, s, "queuing the site job");
		return;
	}
	if (to &&
	    (rc = sm_transition(s, &sm_site, id, to, api_req_actor(r), err, sizeof(err))) != 0) {
		store_rollback(s);
		api_reply_err(r, rc, err);
		return;
	}
	if ((rc = sites_job(s, id, type, payload, api_req_actor(r), &job, err, sizeof(err))) != 0 ||
	    store_commit(s) != 0) {
		store_rollback(s);
		api_reply_err(r, rc ? rc : ERR_DB, rc ? err : store_errmsg(s));
		return;
	}
	api_sites_reply_job(r, s, id, job);
}

static int
api_sites_state_is(struct store *s, int64_t id, const char *a, const char *b)
{
	char *st = store_text(s, "SELECT state FROM sites WHERE id = ?", "i", id);
	int ok = st && (strcmp(st, a) == 0 || (b && strcmp(st, b) == 0));

	free(st);
	return ok;
}

/* POST /sites/{id}/activate and /deactivate. */
static void
api_sites_toggle(struct api_req *r, int enabled)
{
	struct store *s = api_req_store(r);
	int64_t id;

	if (api_sites_ref(r, &id) != 0)
		return;
	if (!api_sites_state_is(s, id, enabled ? "inactive" : "active", NULL)) {
		api_reply_error(r, 409, "conflict", "site %lld is not %s", (long long)id,
				enabled ? "inactive" : "active");
		return;
	}
	api_sites_queue(r, id, NULL, "site.toggle",
			enabled ? "{\"enabled\":1}" : "{\"enabled\":0}");
}

void
api_sites_activate(struct api_req *r)
{
	api_sites_toggle(r, 1);
}

void
api_sites_deactivate(struct api_req *r)
{
	api_sites_toggle(r, 0);
}

void
api_sites_delete(struct api_req *r)
{
	int64_t id;

	if (api_sites_ref(r, &id) != 0)
		return;
	api_sites_queue(r, id, "deleting", "site.delete", "{}");
}

void
api_sites_rollback(struct api_req *r)
{
	static const struct api_field fields[] = {{"release", API_JSON_INTEGER, 0, NULL},
						  {NULL, 0, 0, NULL}};
	json_t *body = api_req_body(r);
	char payload[64];
	int64_t id;

	if (api_sites_ref(r, &id) != 0 || api_json_fields(r, body, fields) != 0)
		return;
	if (!api_sites_state_is(api_req_store(r), id, "active", "inactive")) {
		api_reply_error(r, 409, "conflict", "site %lld is not active", (long long)id);
		return;
	}
	snprintf(payload, sizeof(payload), "{\"release\":%lld}",
		 (long long)api_sites_int(body, "release", 0));
	api_sites_queue(r, id, NULL, "site.rollback", payload);
}

static int
api_sites_check_commit(const char *field, const json_t *v, char *err, size_t errlen)
{
	const char *c = json_string_value(v);
	size_t n = strlen(c), i;

	for (i = 0; i < n; i++)
		if (!((c[i] >= '0' && c[i] <= '9') || (c[i] >= 'a' && c[i] <= 'f')))
			break;
	if (n < 7 || n > 40 || i != n)
		return err_set(err, errlen, ERR_INVAL, "%s: must be 7-40 lower-case hex digits",
			       field);
	return 0;
}

/* POST /sites/{id}/deploy {"commit"?}: queues a deployment. */
void
api_sites_deploy(struct api_req *r)
{
	static const struct api_field fields[] = {
	    {"commit", API_JSON_STRING, 0, api_sites_check_commit}, {NULL, 0, 0, NULL}};
	struct sites_deploy_req req = {.trigger = "api"};
	struct store *s = api_req_store(r);
	json_t *body = api_req_body(r);
	char err[1024];
	int64_t id, dep, job;
	int rc;

	if (api_sites_ref(r, &id) != 0 || api_json_fields(r, body, fields) != 0)
		return;
	if (!api_sites_state_is(s, id, "active", "inactive")) {
		api_reply_error(r, 409, "conflict", "site %lld is not ready (create it first)",
				(long long)id);
		return;
	}
	req.actor = api_req_actor(r);
	req.commit = api_sites_str(body, "commit", NULL);
	if ((rc = sites_deploy(s, id, &req, &dep, &job, err, sizeof(err))) != 0) {
		api_reply_err(r, rc, err);
		return;
	}
	api_reply_json(r, 202,
		       json_pack("{s:I, s:I, s:I}", "deployment_id", (json_int_t)dep, "site_id",
				 (json_int_t)id, "job_id", (json_int_t)job));
}

/* PUT /sites/{id}/script {"script"} and PUT /sites/{id}/env {"env": {...}}. */
void
api_sites_script(struct api_req *r)
{
	static const struct api_field fields[] = {
	    {"script", API_JSON_STRING, 1, api_sites_check_script}, {NULL, 0, 0, NULL}};
	struct store *s = api_req_store(r);
	json_t *body = api_req_body(r);
	int64_t id;

	if (api_sites_ref(r, &id) != 0 || api_json_fields(r, body, fields) != 0)
		return;
	if (store_exec(s, "UPDATE sites SET deploy_script = ?, updated_at = ? WHERE id = ?", "sii",
		       api_sites_str(body, "script", ""), store_now_ms(), id) != 0) {
		api_reply_db(r, s, "saving the script");
		return;
	}
	events_emit(s, api_req_actor(r), "site.script_changed", "site", id, NULL);
	api_reply_json(r, 200, json_pack("{s:o?}", "site", api_sites_one(s, id)));
}

/* PUT /sites/{id}/known_hosts {"known_hosts": text}: the host keys the site's SSH
 * repository is checked against ("" removes them). */
void
api_sites_known_hosts(struct api_req *r)
{
	static const struct api_field fields[] = {{"known_hosts", API_JSON_STRING, 1, NULL},
						  {NULL, 0, 0, NULL}};
	struct store *s = api_req_store(r);
	json_t *body = api_req_body(r), *v;
	char err[300];
	int64_t id;

	if (api_sites_ref(r, &id) != 0 || api_json_fields(r, body, fields) != 0)
		return;
	v = json_object_get(body, "known_hosts");
	if (json_string_length(v) > 0 &&
	    api_sites_check_known_hosts("known_hosts", v, err, sizeof(err)) != 0) {
		api_reply_error(r, 400, "invalid_field", "%s", err);
		return;
	}
	if (store_exec(s, "UPDATE sites SET known_hosts = ?, updated_at = ? WHERE id = ?", "sii",
		       json_string_length(v) > 0 ? json_string_value(v) : NULL, store_now_ms(),
		       id) != 0) {
		api_reply_db(r, s, "saving the known hosts");
		return;
	}
	events_emit(s, api_req_actor(r), "site.known_hosts_changed", "site", id, NULL);
	api_reply_json(r, 200, json_pack("{s:o?}", "site", api_sites_one(s, id)));
}

void
api_sites_env(struct api_req *r)
{
	static const struct api_field fields[] = {{"env", API_JSON_OBJECT, 1, api_sites_check_env},
						  {NULL, 0, 0, NULL}};
	struct store *s = api_req_store(r);
	json_t *body = api_req_body(r);
	char err[512], *text, *sealed = NULL;
	int64_t id;

	if (api_sites_ref(r, &id) != 0 || api_json_fields(r, body, fields) != 0)
		return;
	text = json_dumps(json_object_get(body, "env"), JSON_COMPACT);
	if (text == NULL || secrets_seal(text, "site:env", &sealed, err, sizeof(err)) != 0) {
		api_reply_error(r, 500, "internal", "sealing the environment");
		goto out;
	}
	if (store_exec(s, "UPDATE sites SET env_sealed = ?, updated_at = ? WHERE id = ?", "sii",
		       sealed, store_now_ms(), id) != 0) {
		api_reply_db(r, s, "saving the environment");
		goto out;
	}
	events_emit(s, api_req_actor(r), "site.env_changed", "site", id, NULL);
	api_reply_json(r, 200,
		       json_pack("{s:o?, s:I}", "site", api_sites_one(s, id), "env_count",
				 (json_int_t)json_object_size(json_object_get(body, "env"))));
out:
	if (text)
		explicit_bzero(text, strlen(text));
	free(text);
	free(sealed);
}
