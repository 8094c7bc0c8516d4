/*
 * api_keys.c: /api/v1/keys: SSH keys: list, get, add (validated and fingerprinted by
 * sshkey.c), attach to / detach from a user on chosen servers, revoke everywhere, each
 * server's sync state, drift reports, sync and drift checks on demand. The work is done by
 * jobs (keys.c); these handlers validate, record the intent and answer 202 with the job.
 * Also the server selector ({servers|tag|all}) that batches share. Routed from api.c.
 */
#include "api_json.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "events.h"
#include "fleet.h"
#include "keys.h"
#include "log.h"
#include "names.h"
#include "sshkey.h"
#include "store.h"

#define API_KEYS_COLS                                                                              \
	"SELECT id, name, type, fingerprint, comment, bits, public_key, created_at,"               \
	" revoked_at FROM ssh_keys"

void
api_keys_list(struct api_req *r)
{
	static const char *const q[] = {"limit", "after", NULL};
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	struct api_page pg;
	json_t *items, *o;
	int64_t last = 0;
	int n = 0, more = 0, rc;

	if (api_req_query_allow(r, q) != 0 || api_page_parse(r, &pg) != 0)
		return;
	if (s == NULL) {
		api_reply_db(r, s, "listing keys");
		return;
	}
	st = store_query(s, API_KEYS_COLS " WHERE id > ? ORDER BY id LIMIT ?", "ii", pg.after,
			 (int64_t)pg.limit + 1);
	if (st == NULL || (items = json_array()) == NULL) {
		store_finalize(st);
		api_reply_db(r, s, "listing keys");
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
		api_reply_db(r, s, "listing keys");
		return;
	}
	api_page_reply(r, items, more, last);
}

void
api_keys_get(struct api_req *r)
{
	static const char *const q[] = {NULL};
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	json_t *o = NULL, *servers = NULL, *e;
	int64_t id;
	int rc;

	if (api_req_query_allow(r, q) != 0 ||
	    api_lookup(r, "key", "ssh_keys", "name", api_req_param(r, 0), &id) != 0)
		return;
	st = store_query(s, API_KEYS_COLS " WHERE id = ?", "i", id);
	if (st != NULL && store_step(st) == STORE_ROW)
		o = api_json_row(st);
	store_finalize(st);
	if (o == NULL || (servers = json_array()) == NULL)
		goto fail;
	st = store_query(s,
			 "SELECT server_id, user, want, state, progress, message, error,"
			 " failed_step, failed_at, updated_at FROM server_keys WHERE key_id = ?"
			 " ORDER BY server_id, user",
			 "i", id);
	if (st == NULL)
		goto fail;
	while ((rc = store_step(st)) == STORE_ROW) {
		if ((e = api_json_row(st)) == NULL)
			break;
		json_object_set_new(e, "want", json_boolean(store_col_int(st, 2) != 0));
		json_array_append_new(servers, e);
	}
	store_finalize(st);
	if (rc != STORE_DONE)
		goto fail;
	json_object_set_new(o, "servers", servers);
	api_reply_json(r, 200, o);
	return;
fail:
	json_decref(o);
	json_decref(servers);
	api_reply_db(r, s, "reading the key");
}

/* ---- the server selector shared with batches ---- */

int
api_fleet_select(struct api_req *r, const json_t *body, int required, int64_t **ids, size_t *n)
{
	const json_t *servers = json_object_get(body, "servers");
	const json_t *tag = json_object_get(body, "tag"), *all = json_object_get(body, "all");
	char err[512];
	int rc;

	*ids = NULL;
	*n = 0;
	if (all != NULL && !json_is_true(all)) {
		api_reply_error(r, 400, "invalid_field", "all: must be true when given");
		return -1;
	}
	if (!required && servers == NULL && tag == NULL && all == NULL)
		return 0;
	if (servers == NULL && tag == NULL && all == NULL) {
		api_reply_error(r, 400, "missing_field",
				"servers: give one of servers, tag or all");
		return -1;
	}
	rc = fleet_select(api_req_store(r), servers, json_string_value(tag), all != NULL, ids, n,
			  err, sizeof(err));
	if (rc == ERR_INVAL) {
		api_reply_error(r, 400, "invalid_field", "%s", err);
		return -1;
	}
	if (rc != 0) {
		api_reply_err(r, rc, err);
		return -1;
	}
	return 0;
}

static int
api_keys_check_servers(const char *field, const json_t *v, char *err, size_t errlen)
{
	size_t i;
	json_t *e;

	if (json_array_size(v) == 0 || json_array_size(v) > 10000)
		return err_set(err, errlen, ERR_INVAL, "%s: must hold 1 to 10000 servers", field);
	json_array_foreach(
	    v, i, e) if (!json_is_string(e) &&
			 !(json_is_integer(e) &&
			   json_integer_value(e) >
			       0)) return err_set(err, errlen, ERR_INVAL,
						  "%s[%zu]: must be a server id or name", field, i);
	return 0;
}

static int
api_keys_check_tag(const char *field, const json_t *v, char *err, size_t errlen)
{
	char why[256];

	if (names_tag(json_string_value(v), why, sizeof(why)) != 0)
		return err_set(err, errlen, ERR_INVAL, "%s: %s", field, why);
	return 0;
}

/* Key names: how the CLI refers to keys. */
static int
api_keys_check_name(const char *field, const json_t *v, char *err, size_t errlen)
{
	const char *p = json_string_value(v), *q;
	size_t n = strlen(p);

	if (n == 0 || n > 64)
		return err_set(err, errlen, ERR_INVAL, "%s: must be 1-64 characters", field);
	for (q = p; *q != '\0'; q++)
		if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
		      (*q >= '0' && *q <= '9') || strchr("._@+-", *q) != NULL))
			return err_set(err, errlen, ERR_INVAL,
				       "%s: may hold only letters, digits and . _ @ + -", field);
	if (!((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= 'A' && p[0] <= 'Z') ||
	      (p[0] >= '0' && p[0] <= '9')))
		return err_set(err, errlen, ERR_INVAL, "%s: must start with a letter or digit",
			       field);
	if (strspn(p, "0123456789") == n)
		return err_set(err, errlen, ERR_INVAL,
			       "%s: must not be only digits (it would read as an id)", field);
	if (strcmp(p, "drift") == 0 || strcmp(p, "sync") == 0)
		return err_set(err, errlen, ERR_INVAL, "%s: %s is a reserved word", field, p);
	return 0;
}

static const struct api_field api_keys_create_fields[] = {
    {"name", API_JSON_STRING, 1, api_keys_check_name},
    {"public_key", API_JSON_STRING, 1, NULL},
    {NULL, 0, 0, NULL},
};

static void
api_keys_reply_one(struct api_req *r, struct store *s, int status, int64_t id, const char *wrap)
{
	struct store_stmt *st = store_query(s, API_KEYS_COLS " WHERE id = ?", "i", id);
	json_t *o = NULL;

	if (st != NULL && store_step(st) == STORE_ROW)
		o = api_json_row(st);
	store_finalize(st);
	if (o == NULL) {
		api_reply_db(r, s, "reading the key");
		return;
	}
	api_reply_json(r, status, wrap ? json_pack("{s:o}", wrap, o) : o);
}

void
api_keys_create(struct api_req *r)
{
	static const char *const q[] = {NULL};
	json_t *body = api_req_body(r), *pk;
	struct store *s = api_req_store(r);
	struct sshkey *k = NULL;
	const char *name;
	char err[512], data[200];
	int64_t id, other;

	if (api_req_query_allow(r, q) != 0 || api_json_fields(r, body, api_keys_create_fields) != 0)
		return;
	name = json_string_value(json_object_get(body, "name"));
	pk = json_object_get(body, "public_key");
	if (json_string_length(pk) != strlen(json_string_value(pk))) {
		api_reply_error(r, 400, "invalid_field", "public_key: contains a NUL character");
		return;
	}
	if (sshkey_parse(json_string_value(pk), &k, err, sizeof(err)) != 0) {
		api_reply_error(r, 400, "invalid_field", "public_key: %s", err);
		return;
	}
	if (s == NULL || store_begin(s) != 0)
		goto db;
	if ((other = store_int(s, 0, "SELECT id FROM ssh_keys WHERE fingerprint = ?", "s",
			       k->fingerprint)) > 0) {
		char *oname = store_text(s, "SELECT name FROM ssh_keys WHERE id = ?", "i", other);

		store_rollback(s);
		api_reply_error(r, 409, "conflict",
				"public_key: this key (%s) is known already as %s (id %lld)",
				k->fingerprint, oname ? oname : "?", (long long)other);
		free(oname);
		goto out;
	}
	if (store_int(s, 0, "SELECT count(*) FROM ssh_keys WHERE name = ?", "s", name) > 0) {
		store_rollback(s);
		api_reply_error(r, 409, "conflict", "name: a key named %s exists already", name);
		goto out;
	}
	if (store_exec(s,
		       "INSERT INTO ssh_keys (name, type, public_key, fingerprint, comment, bits,"
		       " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
		       "sssssii", name, k->type, k->line, k->fingerprint,
		       k->comment[0] ? k->comment : NULL, (int64_t)k->bits, store_now_ms()) != 0)
		goto db_tx;
	id = store_last_id(s);
	snprintf(data, sizeof(data), "{\"fingerprint\":\"%s\",\"type\":\"%s\"}", k->fingerprint,
		 k->type);
	if (events_emit(s, api_req_actor(r), "key.added", "key", id, data) != 0 ||
	    store_commit(s) != 0)
		goto db_tx;
	log_info("key %lld (%s, %s) added by %s", (long long)id, name, k->fingerprint,
		 api_req_actor(r));
	api_keys_reply_one(r, s, 201, id, "key");
	goto out;
db_tx:
	api_reply_db(r, s, "adding the key");
	store_rollback(s);
	goto out;
db:
	api_reply_db(r, s, "adding the key");
out:
	sshkey_free(k);
}

static const struct api_field api_keys_attach_fields[] = {
    {"user", API_JSON_STRING, 1, api_check_user},
    {"servers", API_JSON_ARRAY, 0, api_keys_check_servers},
    {"tag", API_JSON_STRING, 0, api_keys_check_tag},
    {"all", API_JSON_BOOL, 0, NULL},
    {NULL, 0, 0, NULL},
};

/* POST /keys/:id/attach and /detach. */
static void
api_keys_attach_detach(struct api_req *r, int attach)
{
	static const char *const q[] = {NULL};
	json_t *body = api_req_body(r);
	struct store *s = api_req_store(r);
	const char *user;
	int64_t key, job, *ids = NULL;
	size_t n;
	char err[512];
	int rc;

	if (api_req_query_allow(r, q) != 0 ||
	    api_lookup(r, "key", "ssh_keys", "name", api_req_param(r, 0), &key) != 0 ||
	    api_json_fields(r, body, api_keys_attach_fields) != 0 ||
	    api_fleet_select(r, body, 1, &ids, &n) != 0)
		return;
	user = json_string_value(json_object_get(body, "user"));
	rc = attach ? keys_attach(s, key, user, ids, n, api_req_actor(r), &job, err, sizeof(err))
		    : keys_detach(s, key, user, ids, n, api_req_actor(r), &job, err, sizeof(err));
	free(ids);
	if (rc != 0) {
		api_reply_err(r, rc, err);
		return;
	}
	api_reply_json(r, 202,
		       json_pack("{s:I, s:s, s:I, s:{s:I}}", "key", (json_int_t)key, "user", user,
				 "servers", (json_int_t)n, "job", "id", (json_int_t)job));
}

void
api_keys_attach(struct api_req *r)
{
	api_keys_attach_detach(r, 1);
}

void
api_keys_detach(struct api_req *r)
{
	api_keys_attach_detach(r, 0);
}

void
api_keys_revoke(struct api_req *r)
{
	static const char *const q[] = {NULL};
	struct store *s = api_req_store(r);
	int64_t key, job;
	char err[512];
	int rc;

	if (api_req_query_allow(r, q) != 0 ||
	    api_lookup(r, "key", "ssh_keys", "name", api_req_param(r, 0), &key) != 0)
		return;
	if (api_json_fields(r, api_req_body(r), (const struct api_field[]){{NULL, 0, 0, NULL}}) !=
	    0)
		return;
	if ((rc = keys_revoke(s, key, api_req_actor(r), &job, err, sizeof(err))) != 0) {
		api_reply_err(r, rc, err);
		return;
	}
	api_reply_json(r, 202,
		       json_pack("{s:I, s:b, s:o}", "key", (json_int_t)key, "revoked", 1, "job",
				 job ? json_pack("{s:I}", "id", (json_int_t)job) : json_null()));
}

void
api_keys_servers(struct api_req *r)
{
	static const char *const q[] = {"limit", "after", NULL};
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	struct api_page pg;
	json_t *items, *o;
	int64_t key, last = 0;
	int n = 0, more = 0, rc;

	if (api_req_query_allow(r, q) != 0 || api_page_parse(r, &pg) != 0 ||
	    api_lookup(r, "key", "ssh_keys", "name", api_req_param(r, 0), &key) != 0)
		return;
	st = store_query(s,
			 "SELECT sk.id, sk.server_id, sv.name AS server, sk.user, sk.want,"
			 " sk.state, sk.message, sk.error, sk.failed_at, sk.created_at,"
			 " sk.updated_at, sv.agent_status AS agent FROM server_keys sk JOIN servers"
			 " sv ON sv.id = sk.server_id WHERE sk.key_id = ? AND sk.id > ? ORDER BY"
			 " sk.id LIMIT ?",
			 "iii", key, pg.after, (int64_t)pg.limit + 1);
	if (st == NULL || (items = json_array()) == NULL) {
		store_finalize(st);
		api_reply_db(r, s, "listing the key's servers");
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
		json_object_set_new(o, "want", json_boolean(store_col_int(st, 4) != 0));
		last = store_col_int(st, 0);
		json_array_append_new(items, o);
		n++;
	}
	store_finalize(st);
	if (rc < 0) {
		json_decref(items);
		api_reply_db(r, s, "listing the key's servers");
		return;
	}
	api_page_reply(r, items, more, last);
}

void
api_keys_drift(struct api_req *r)
{
	static const char *const q[] = {"state", "server", NULL};
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	const char *state = api_req_query(r, "state");
	json_t *items, *o;
	int64_t server;
	int rc;

	if (api_req_query_allow(r, q) != 0 || api_query_id(r, "server", &server) != 0)
		return;
	if (state != NULL && strcmp(state, "clean") != 0 && strcmp(state, "drift") != 0 &&
	    strcmp(state, "error") != 0) {
		api_reply_error(r, 400, "invalid_parameter",
				"state: must be clean, drift or error");
		return;
	}
	st =
	    store_query(s,
			"SELECT d.server_id, sv.name AS server, d.user, d.state, d.path, d.missing,"
			" d.extra, d.outside, d.error, d.checked_at FROM key_drift d JOIN servers"
			" sv ON sv.id = d.server_id WHERE (? IS NULL OR d.state = ?) AND (? < 0 OR"
			" d.server_id = ?) ORDER BY d.server_id, d.user LIMIT 10000",
			"ssii", state, state, server, server);
	if (st == NULL || (items = json_array()) == NULL) {
		store_finalize(st);
		api_reply_db(r, s, "listing drift");
		return;
	}
	while ((rc = store_step(st)) == STORE_ROW) {
		if ((o = api_json_row(st)) == NULL) {
			rc = -1;
			break;
		}
		/* missing, extra and outside are JSON arrays */
		for (int c = 5; c <= 7; c++) {
			json_t *v = json_loads(store_col_text(st, c), 0, NULL);

			json_object_set_new(o, store_col_name(st, c), v ? v : json_array());
		}
		json_array_append_new(items, o);
	}
	store_finalize(st);
	if (rc < 0) {
		json_decref(items);
		api_reply_db(r, s, "listing drift");
		return;
	}
	api_page_reply(r, items, 0, 0);
}

static const struct api_field api_keys_sync_fields[] = {
    {"servers", API_JSON_ARRAY, 0, api_keys_check_servers},
    {"tag", API_JSON_STRING, 0, api_keys_check_tag},
    {"all", API_JSON_BOOL, 0, NULL},
    {NULL, 0, 0, NULL},
};

/* POST /keys/sync and /keys/drift/check: {servers|tag|all}, or nothing for every server
 * with keys. */
static void
api_keys_job(struct api_req *r, int drift)
{
	static const char *const q[] = {NULL};
	json_t *body = api_req_body(r);
	struct store *s = api_req_store(r);
	int64_t job, *ids = NULL;
	size_t n;
	char err[512];
	int rc;

	if (api_req_query_allow(r, q) != 0 || api_json_fields(r, body, api_keys_sync_fields) != 0 ||
	    api_fleet_select(r, body, 0, &ids, &n) != 0)
		return;
	if (json_object_get(body, "all") != NULL) {
		free(ids); /* every server: the job takes those with keys */
		ids = NULL;
		n = 0;
	}
	rc = drift ? keys_drift_check(s, ids, n, api_req_actor(r), &job, err, sizeof(err))
		   : keys_sync(s, ids, n, api_req_actor(r), &job, err, sizeof(err));
	free(ids);
	if (rc != 0) {
		api_reply_err(r, rc, err);
		return;
	}
	api_reply_json(r, 202, json_pack("{s:{s:I}}", "job", "id", (json_int_t)job));
}

void
api_keys_sync(struct api_req *r)
{
	api_keys_job(r, 0);
}

void
api_keys_drift_check(struct api_req *r)
{
	api_keys_job(r, 1);
}
