/*
 * api_jobs.c: /api/v1/jobs: list (?state= ?type= ?resource_kind= ?resource_id=), get,
 * cancel and retry. The job engine (jobs.c) renders jobs and records the audit events of
 * cancel and retry; this file validates and maps errors. Routed from api.c.
 */
#include "api_json.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "jobs.h"
#include "store.h"

static const char *const api_jobs_states[] = {"queued",	      "running",   "done", "failed",
					      "failed_dirty", "cancelled", NULL};

/* [a-z0-9._-]{1,max}: job types and resource kinds. */
static int
api_jobs_word_ok(const char *s, size_t max)
{
	size_t i, n = strlen(s);

	if (n == 0 || n > max)
		return 0;
	for (i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '.' ||
		      s[i] == '_' || s[i] == '-'))
			return 0;
	return 1;
}

/* The job as parsed JSON, or NULL. */
static json_t *
api_jobs_load(struct store *s, int64_t id)
{
	char *text = jobs_get_json(s, id);
	json_t *o;

	if (text == NULL)
		return NULL;
	o = json_loads(text, 0, NULL);
	free(text);
	return o;
}

void
api_jobs_list(struct api_req *r)
{
	static const char *const q[] = {"limit",	 "after",	"state", "type",
					"resource_kind", "resource_id", NULL};
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	struct api_page pg;
	const char *state, *type, *rkind;
	int64_t rid, ids[API_LIMIT_MAX + 1];
	json_t *items, *o;
	int n = 0, i, rc;

	if (api_req_query_allow(r, q) != 0 || api_page_parse(r, &pg) != 0 ||
	    api_query_id(r, "resource_id", &rid) != 0)
		return;
	state = api_req_query(r, "state");
	type = api_req_query(r, "type");
	rkind = api_req_query(r, "resource_kind");
	if (state != NULL) {
		for (i = 0; api_jobs_states[i] != NULL; i++)
			if (strcmp(api_jobs_states[i], state) == 0)
				break;
		if (api_jobs_states[i] == NULL) {
			api_reply_error(
			    r, 400, "invalid_parameter",
			    "state: must be queued, running, done, failed or cancelled");
			return;
		}
	}
	if (type != NULL && !api_jobs_word_ok(type, 64)) {
		api_reply_error(r, 400, "invalid_parameter",
				"type: must be [a-z0-9._-], 1-64 long");
		return;
	}
	if (rkind != NULL && !api_jobs_word_ok(rkind, 32)) {
		api_reply_error(r, 400, "invalid_parameter",
				"resource_kind: must be [a-z0-9._-], 1-32 long");
		return;
	}
	if (rid >= 0 && rkind == NULL) {
		api_reply_error(r, 400, "invalid_parameter",
				"resource_id: needs resource_kind as well");
		return;
	}
	if (s == NULL) {
		api_reply_db(r, s, "listing jobs");
		return;
	}
	st = store_query(s,
			 "SELECT id FROM jobs WHERE id > ? AND (? IS NULL OR state = ?)"
			 " AND (? IS NULL OR type = ?) AND (? IS NULL OR resource_kind = ?)"
			 " AND (? < 0 OR resource_id = ?) ORDER BY id LIMIT ?",
			 "issssssiii", pg.after, state, state, type, type, rkind, rkind, rid, rid,
			 (int64_t)pg.limit + 1);
	if (st == NULL) {
		api_reply_db(r, s, "listing jobs");
		return;
	}
	while ((rc = store_step(st)) == STORE_ROW && n <= pg.limit)
		ids[n++] = store_col_int(st, 0);
	store_finalize(st);
	if (rc < 0 || (items = json_array()) == NULL) {
		api_reply_db(r, s, "listing jobs");
		return;
	}
	for (i = 0; i < n && i < pg.limit; i++) {
		/* A job cannot vanish (jobs are never deleted), so NULL is a failure. */
		if ((o = api_jobs_load(s, ids[i])) == NULL) {
			json_decref(items);
			api_reply_db(r, s, "reading a job");
			return;
		}
		json_array_append_new(items, o);
	}
	api_page_reply(r, items, n > pg.limit, n > 0 ? ids[i - 1] : 0);
}

void
api_jobs_get(struct api_req *r)
{
	static const char *const q[] = {NULL};
	struct store *s = api_req_store(r);
	json_t *o;
	int64_t id;

	if (api_req_query_allow(r, q) != 0 || api_param_id(r, 0, "job id", &id) != 0)
		return;
	if (s == NULL) {
		api_reply_db(r, s, "reading the job");
		return;
	}
	if ((o = api_jobs_load(s, id)) == NULL) {
		if (store_int(s, 0, "SELECT count(*) FROM jobs WHERE id = ?", "i", id) == 0)
			api_reply_error(r, 404, "not_found", "job %lld: not found", (long long)id);
		else
			api_reply_db(r, s, "reading the job");
		return;
	}
	api_reply_json(r, 200, o);
}

static const struct api_field api_jobs_no_fields[] = {{NULL, 0, 0, NULL}};

static void
api_jobs_act(struct api_req *r, int (*fn)(struct store *, int64_t, const char *, char *, size_t))
{
	static const char *const q[] = {NULL};
	struct store *s = api_req_store(r);
	char err[256];
	json_t *o;
	int64_t id;
	int rc;

	if (api_req_query_allow(r, q) != 0 || api_param_id(r, 0, "job id", &id) != 0 ||
	    api_json_fields(r, api_req_body(r), api_jobs_no_fields) != 0)
		return;
	if (s == NULL) {
		api_reply_db(r, s, "changing the job");
		return;
	}
	/* fn records the change and its event (with the actor) in one transaction. */
	if ((rc = fn(s, id, api_req_actor(r), err, sizeof(err))) != 0) {
		api_reply_err(r, rc, err);
		return;
	}
	if ((o = api_jobs_load(s, id)) == NULL) {
		api_reply_db(r, s, "reading the job");
		return;
	}
	api_reply_json(r, 202, json_pack("{s:o}", "job", o));
}

void
api_jobs_cancel(struct api_req *r)
{
	api_jobs_act(r, jobs_cancel);
}

void
api_jobs_retry(struct api_req *r)
{
	api_jobs_act(r, jobs_retry);
}
