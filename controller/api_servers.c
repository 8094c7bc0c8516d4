/*
 * api_servers.c: /api/v1/servers: list, get, create (queues server.provision), delete
 * (server.delete), retry, the provisioning log, and PATCH of tags, sites_root and
 * deploy_user (store only, with a server.updated event). Does not
 * talk to providers or agents. Routed from api.c.
 */
#include "api_json.h"

#include <string.h>

#include "err.h"
#include "events.h"
#include "jobs.h"
#include "log.h"
#include "names.h"
#include "provision.h"
#include "sm.h"
#include "store.h"
#include "timeutil.h"

#define API_SERVERS_COLS                                                                           \
	"SELECT id, name, provider, region, size, image, provider_id, ipv4, ssh_port,"             \
	" ssh_user, host_key_sha256, state, progress, message, checklist, error,"                  \
	" failed_step, failed_at, agent_status, agent_version, last_seen, facts,"                  \
	" created_at, updated_at, sites_root, deploy_user, ssh_public_key FROM servers"

static const char *const api_servers_providers[] = {"digitalocean", "hetzner", "custom", NULL};

/* What a failed job of the server left undone (failed_dirty: e.g. a VM at the provider
 * whose delete failed), or null: the undo is retried until it finishes. */
static json_t *
api_servers_cleanup(struct store *s, int64_t id)
{
	struct store_stmt *st;
	json_t *o = json_null();
	char iso[32];

	st =
	    store_query(s,
			"SELECT j.id, j.type, j.message, j.run_after, j.undo_attempts,"
			" (SELECT provider_id FROM servers WHERE id = ?1)"
			" FROM jobs j WHERE j.state = 'failed_dirty' AND j.resource_kind = 'server'"
			" AND j.resource_id = ?1 ORDER BY j.id DESC LIMIT 1",
			"i", id);
	if (st != NULL && store_step(st) == STORE_ROW) {
		time_iso(store_col_int(st, 3), iso);
		o = json_pack("{s:I, s:s, s:s?, s:s, s:I, s:s?}", "job",
			      (json_int_t)store_col_int(st, 0), "job_type", store_col_text(st, 1),
			      "error", store_col_text(st, 2), "next_try", iso, "tries",
			      (json_int_t)store_col_int(st, 4), "provider_id",
			      store_col_text(st, 5));
		if (o == NULL)
			o = json_null();
	}
	store_finalize(st);
	return o;
}

/* The server of the current row as the API shows it: agent fields grouped, tags added. */
static json_t *
api_servers_render(struct store *s, struct store_stmt *st)
{
	struct store_stmt *tq;
	json_t *o, *agent, *tags;
	int64_t id;
	int rc;

	if ((o = api_json_row(st)) == NULL)
		return NULL;
	id = json_integer_value(json_object_get(o, "id"));
	agent = json_pack("{s:O, s:O, s:O, s:O}", "status", json_object_get(o, "agent_status"),
			  "version", json_object_get(o, "agent_version"), "last_seen",
			  json_object_get(o, "last_seen"), "facts", json_object_get(o, "facts"));
	json_object_del(o, "agent_status");
	json_object_del(o, "agent_version");
	json_object_del(o, "last_seen");
	json_object_del(o, "facts");
	tags = json_array();
	tq =
	    store_query(s, "SELECT tag FROM server_tags WHERE server_id = ? ORDER BY tag", "i", id);
	if (agent == NULL || tags == NULL || tq == NULL)
		goto fail;
	while ((rc = store_step(tq)) == STORE_ROW)
		json_array_append_new(tags, json_string(store_col_text(tq, 0)));
	if (rc != STORE_DONE)
		goto fail;
	store_finalize(tq);
	json_object_set_new(o, "agent", agent);
	json_object_set_new(o, "tags", tags);
	json_object_set_new(o, "cleanup", api_servers_cleanup(s, id));
	return o;
fail:
	store_finalize(tq);
	json_decref(agent);
	json_decref(tags);
	json_decref(o);
	return NULL;
}

/* Replies 200 with the server id. */
static void
api_servers_reply_one(struct api_req *r, struct store *s, int64_t id)
{
	struct store_stmt *st;
	json_t *o = NULL;

	st = store_query(s, API_SERVERS_COLS " WHERE id = ?", "i", id);
	if (st != NULL && store_step(st) == STORE_ROW)
		o = api_servers_render(s, st);
	store_finalize(st);
	if (o == NULL) {
		api_reply_db(r, s, "reading the server");
		return;
	}
	api_reply_json(r, 200, o);
}

void
api_servers_list(struct api_req *r)
{
	static const char *const q[] = {"limit", "after", "tag", "state", NULL};
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	struct api_page pg;
	const char *tag, *state;
	json_t *items, *o;
	int64_t last = 0;
	int n = 0, more = 0, rc;
	char why[256];

	if (api_req_query_allow(r, q) != 0 || api_page_parse(r, &pg) != 0)
		return;
	tag = api_req_query(r, "tag");
	state = api_req_query(r, "state");
	if (tag != NULL && names_tag(tag, why, sizeof(why)) != 0) {
		api_reply_error(r, 400, "invalid_parameter", "tag: %s", why);
		return;
	}
	if (state != NULL && !sm_is_state(&sm_server, state)) {
		api_reply_error(r, 400, "invalid_parameter", "state: no server state %.64s", state);
		return;
	}
	if (s == NULL) {
		api_reply_db(r, s, "listing servers");
		return;
	}
	st = store_query(s,
			 API_SERVERS_COLS " WHERE id > ? AND (? IS NULL OR state = ?)"
					  " AND (? IS NULL OR id IN"
					  " (SELECT server_id FROM server_tags WHERE tag = ?))"
					  " ORDER BY id LIMIT ?",
			 "issssi", pg.after, state, state, tag, tag, (int64_t)pg.limit + 1);
	if (st == NULL || (items = json_array()) == NULL) {
		store_finalize(st);
		api_reply_db(r, s, "listing servers");
		return;
	}
	while ((rc = store_step(st)) == STORE_ROW) {
		if (n == pg.limit) {
			more = 1;
			break;
		}
		if ((o = api_servers_render(s, st)) == NULL) {
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
		api_reply_db(r, s, "listing servers");
		return;
	}
	api_page_reply(r, items, more, last);
}

void
api_servers_get(struct api_req *r)
{
	static const char *const q[] = {NULL};
	int64_t id;

	if (api_req_query_allow(r, q) != 0 ||
	    api_lookup(r, "server", "servers", "name", api_req_param(r, 0), &id) != 0)
		return;
	api_servers_reply_one(r, api_req_store(r), id);
}

static int
api_servers_check_name(const char *field, const json_t *v, char *err, size_t errlen)
{
	const char *p;

	if (api_check_server_name(field, v, err, errlen) != 0)
		return ERR_INVAL;
	for (p = json_string_value(v); *p >= '0' && *p <= '9'; p++)
		;
	if (*p == '\0')
		return err_set(err, errlen, ERR_INVAL,
			       "%s: must not be only digits (it would read as an id)", field);
	return 0;
}

static int
api_servers_check_provider(const char *field, const json_t *v, char *err, size_t errlen)
{
	const char *p = json_string_value(v);
	size_t i;

	for (i = 0; p != NULL && api_servers_providers[i] != NULL; i++)
		if (strcmp(p, api_servers_providers[i]) == 0)
			return 0;
	return err_set(err, errlen, ERR_INVAL, "%s: must be one of digitalocean, hetzner, custom",
		       field);
}

/* "SHA256:" and 43 characters of unpadded base64, as `ssh-keygen -lf` prints. */
static int
api_servers_check_fp(const char *field, const json_t *v, char *err, size_t errlen)
{
	const char *p = json_string_value(v);
	size_t i;

	if (strncmp(p, "SHA256:", 7) != 0 || strlen(p) != 7 + 43)
		return err_set(err, errlen, ERR_INVAL,
			       "%s: must be SHA256: and 43 base64 characters (ssh-keygen -lf)",
			       field);
	for (i = 7; p[i]; i++)
		if (!((p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= 'a' && p[i] <= 'z') ||
		      (p[i] >= '0' && p[i] <= '9') || p[i] == '+' || p[i] == '/'))
			return err_set(err, errlen, ERR_INVAL, "%s: not base64", field);
	return 0;
}

static const struct api_field api_servers_create_fields[] = {
    {"name", API_JSON_STRING, 1, api_servers_check_name},
    {"provider", API_JSON_STRING, 1, api_servers_check_provider},
    {"region", API_JSON_STRING, 0, api_check_slug},
    {"size", API_JSON_STRING, 0, api_check_slug},
    {"image", API_JSON_STRING, 0, api_check_slug},
    {"ipv4", API_JSON_STRING, 0, api_check_ipv4},
    {"ssh_port", API_JSON_INTEGER, 0, api_check_port},
    {"ssh_user", API_JSON_STRING, 0, api_check_user},
    {"tags", API_JSON_ARRAY, 0, api_check_tags},
    {"host_key_sha256", API_JSON_STRING, 0, api_servers_check_fp},
    {NULL, 0, 0, NULL},
};

static void api_servers_insert(struct api_req *r, struct store *s, json_t *body);

/* 202 {"server": ..., "job_id": N} */
static void
api_servers_reply_job(struct api_req *r, struct store *s, int64_t id, int64_t job)
{
	struct store_stmt *st = store_query(s, API_SERVERS_COLS " WHERE id = ?", "i", id);
	json_t *o = NULL;

	if (st != NULL && store_step(st) == STORE_ROW)
		o = api_servers_render(s, st);
	store_finalize(st);
	api_reply_json(r, 202, json_pack("{s:o?, s:I}", "server", o, "job_id", (json_int_t)job));
}

void
api_servers_create(struct api_req *r)
{
	static const char *const q[] = {NULL};
	json_t *body = api_req_body(r);
	struct store *s = api_req_store(r);
	const char *provider, *name;
	int custom;
	int64_t n;

	if (api_req_query_allow(r, q) != 0 ||
	    api_json_fields(r, body, api_servers_create_fields) != 0)
		return;
	provider = json_string_value(json_object_get(body, "provider"));
	name = json_string_value(json_object_get(body, "name"));
	custom = strcmp(provider, "custom") == 0;
	if (custom && json_object_get(body, "ipv4") == NULL) {
		api_reply_error(r, 400, "missing_field", "ipv4: required when provider is custom");
		return;
	}
	if (!custom && json_object_get(body, "ipv4") != NULL) {
		api_reply_error(r, 400, "invalid_field",
				"ipv4: only for provider custom (%s assigns the address)",
				provider);
		return;
	}
	if (!custom && json_object_get(body, "region") == NULL) {
		api_reply_error(r, 400, "missing_field", "region: required for provider %s",
				provider);
		return;
	}
	if (!custom && json_object_get(body, "size") == NULL) {
		api_reply_error(r, 400, "missing_field", "size: required for provider %s",
				provider);
		return;
	}
	if (s == NULL) {
		api_reply_db(r, s, "creating a server");
		return;
	}
	n = store_int(s, -1, "SELECT count(*) FROM servers WHERE name = ?", "s", name);
	if (n < 0) {
		api_reply_db(r, s, "creating a server");
		return;
	}
	{
		char why[700];

		if (provision_provider_ready(s, provider, why, sizeof(why)) != 0) {
			api_reply_error(r, 400, "provider_not_configured", "provider: %s", why);
			return;
		}
	}
	if (n > 0) {
		api_reply_error(r, 409, "conflict", "name: a server named %s exists already", name);
		return;
	}
	api_servers_insert(r, s, body);
}

/* Writes the server (pending) with its tags and queues server.provision; 202. */
static void
api_servers_insert(struct api_req *r, struct store *s, json_t *body)
{
	json_t *tags = json_object_get(body, "tags");
	const char *provider = json_string_value(json_object_get(body, "provider"));
	char err[1024];
	int64_t id, job, now = store_now_ms();
	size_t i;
	int rc;

	if (store_begin(s) != 0)
		goto dbfail;
	if (store_exec(s,
		       "INSERT INTO servers (name, provider, region, size, image, ipv4, ssh_port,"
		       " ssh_user, host_key_sha256, created_at, updated_at)"
		       " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
		       "ssssssissii", json_string_value(json_object_get(body, "name")), provider,
		       json_string_value(json_object_get(body, "region")),
		       json_string_value(json_object_get(body, "size")),
		       json_string_value(json_object_get(body, "image")),
		       json_string_value(json_object_get(body, "ipv4")),
		       json_object_get(body, "ssh_port")
			   ? (int64_t)json_integer_value(json_object_get(body, "ssh_port"))
			   : (int64_t)22,
		       json_object_get(body, "ssh_user")
			   ? json_string_value(json_object_get(body, "ssh_user"))
			   : "root",
		       json_string_value(json_object_get(body, "host_key_sha256")), now,
		       now) != 0) {
		if (store_err_is_unique(s)) {
			store_rollback(s);
			api_reply_error(r, 409, "conflict", "name: a server with that name exists");
			return;
		}
		goto dbfail;
	}
	id = store_last_id(s);
	for (i = 0; i < json_array_size(tags); i++)
		store_exec(s, "INSERT OR IGNORE INTO server_tags (server_id, tag) VALUES (?, ?)",
			   "is", id, json_string_value(json_array_get(tags, i)));
	sm_check(s, &sm_server, id, "agent hello", 0, 1, NULL);
	/* An existing server must trust Stoke's key before the job can log in: show it now. */
	if (strcmp(provider, "custom") == 0 &&
	    (rc = provision_keypair(s, id, err, sizeof(err))) != 0) {
		store_rollback(s);
		api_reply_err(r, rc, err);
		return;
	}
	events_emit(s, api_req_actor(r), "server.created", "server", id, NULL);
	if ((rc = provision_start(s, id, api_req_actor(r), &job, err, sizeof(err))) != 0) {
		store_rollback(s);
		api_reply_err(r, rc, err);
		return;
	}
	if (store_commit(s) != 0)
		goto dbfail;
	log_info("server %lld: created (%s) by %s, job %lld", (long long)id, provider,
		 api_req_actor(r), (long long)job);
	api_servers_reply_job(r, s, id, job);
	return;
dbfail:
	api_reply_db(r, s, "creating the server");
	store_rollback(s);
}

void
api_servers_delete(struct api_req *r)
{
	struct store *s = api_req_store(r);
	char err[1024];
	int64_t id, job;
	int rc;

	if (api_lookup(r, "server", "servers", "name", api_req_param(r, 0), &id) != 0)
		return;
	if ((rc = provision_delete(s, id, api_req_actor(r), &job, err, sizeof(err))) != 0) {
		api_reply_err(r, rc, err);
		return;
	}
	api_servers_reply_job(r, s, id, job);
}

/* POST /servers/{id}/retry: the last failed provisioning resumes where it stopped. */
void
api_servers_retry(struct api_req *r)
{
	struct store *s = api_req_store(r);
	char err[1024];
	int64_t id, job;
	int rc;

	if (api_lookup(r, "server", "servers", "name", api_req_param(r, 0), &id) != 0)
		return;
	job = store_int(s, 0,
			"SELECT id FROM jobs WHERE resource_kind = 'server' AND resource_id = ?"
			" AND type = 'server.provision' ORDER BY id DESC LIMIT 1",
			"i", id);
	if (job == 0) {
		api_reply_error(r, 409, "conflict", "server %lld has no provisioning to retry",
				(long long)id);
		return;
	}
	if ((rc = jobs_retry(s, job, api_req_actor(r), err, sizeof(err))) != 0) {
		api_reply_err(r, rc, err);
		return;
	}
	api_servers_reply_job(r, s, id, job);
}

void
api_servers_log(struct api_req *r)
{
	int64_t id;

	if (api_lookup(r, "server", "servers", "name", api_req_param(r, 0), &id) != 0)
		return;
	api_output_page(r, "server", id);
}

/* Where a server's sites live: an absolute path of plain characters, no "." or "..". */
static int
api_servers_check_root(const char *field, const json_t *v, char *err, size_t errlen)
{
	const char *p = json_string_value(v), *c;

	if (p[0] != '/' || strlen(p) < 2 || strlen(p) > 200 || p[strlen(p) - 1] == '/')
		return err_set(
		    err, errlen, ERR_INVAL,
		    "%s: must be an absolute folder path (no trailing /), at most 200 long", field);
	for (c = p; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9') || strchr("/._-", *c)))
			return err_set(err, errlen, ERR_INVAL,
				       "%s: may only contain letters, digits and / . _ -", field);
	if (strstr(p, "/.") || strstr(p, "//"))
		return err_set(err, errlen, ERR_INVAL, "%s: no . or .. parts, no //", field);
	return 0;
}

static const struct api_field api_servers_patch_fields[] = {
    {"tags", API_JSON_ARRAY, 0, api_check_tags},
    {"sites_root", API_JSON_STRING, 0, api_servers_check_root},
    {"deploy_user", API_JSON_STRING, 0, api_check_user},
    {NULL, 0, 0, NULL},
};

void
api_servers_patch(struct api_req *r)
{
	static const char *const q[] = {NULL};
	json_t *body = api_req_body(r), *tags, *data;
	struct store *s = api_req_store(r);
	char *data_text = NULL;
	int64_t id;
	size_t i;

	if (api_req_query_allow(r, q) != 0 ||
	    api_lookup(r, "server", "servers", "name", api_req_param(r, 0), &id) != 0 ||
	    api_json_fields(r, body, api_servers_patch_fields) != 0)
		return;
	if (json_object_size(body) == 0) {
		api_reply_error(r, 400, "missing_field",
				"give at least one of tags, sites_root, deploy_user");
		return;
	}
	tags = json_object_get(body, "tags");
	data = json_deep_copy(body);
	if (data == NULL || (data_text = json_dumps(data, JSON_COMPACT)) == NULL) {
		json_decref(data);
		api_reply_error(r, 500, "internal", "out of memory");
		return;
	}
	json_decref(data);
	if (store_begin(s) != 0)
		goto fail;
	if (tags && store_exec(s, "DELETE FROM server_tags WHERE server_id = ?", "i", id) != 0)
		goto fail;
	if (json_object_get(body, "sites_root") &&
	    store_exec(s, "UPDATE servers SET sites_root = ? WHERE id = ?", "si",
		       json_string_value(json_object_get(body, "sites_root")), id) != 0)
		goto fail;
	if (json_object_get(body, "deploy_user") &&
	    store_exec(s, "UPDATE servers SET deploy_user = ? WHERE id = ?", "si",
		       json_string_value(json_object_get(body, "deploy_user")), id) != 0)
		goto fail;
	for (i = 0; i < json_array_size(tags); i++)
		if (store_exec(s, "INSERT INTO server_tags (server_id, tag) VALUES (?, ?)", "is",
			       id, json_string_value(json_array_get(tags, i))) != 0)
			goto fail;
	if (store_exec(s, "UPDATE servers SET updated_at = ? WHERE id = ?", "ii", store_now_ms(),
		       id) != 0)
		goto fail;
	if (events_emit(s, api_req_actor(r), "server.updated", "server", id, data_text) != 0)
		goto fail;
	if (store_commit(s) != 0)
		goto fail;
	events_notify();
	free(data_text);
	log_info("server %lld: updated by %s", (long long)id, api_req_actor(r));
	api_servers_reply_one(r, s, id);
	return;
fail:
	api_reply_db(r, s, "setting tags");
	store_rollback(s);
	free(data_text);
}
