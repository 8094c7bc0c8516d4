/*
 * api_deployments.c: /api/v1/deployments: list (?site=), get, cancel, and the log (the
 * output of the commands run for the deployment). Deployments start from api_sites.c
 * and api_hooks.c. Also pages the output of commands (api_output_page). Routed from api.c.
 */
#include "api_json.h"

#include <stdlib.h>
#include <string.h>

#include "jobs.h"
#include "sm.h"
#include "store.h"

#define API_DEPLOYMENTS_COLS                                                                       \
	"SELECT id, site_id, trigger, actor, commit_hash, commit_message, commit_author,"          \
	" delivery_id, exit_code, state, progress, message, checklist, error, failed_step,"        \
	" failed_at, created_at, started_at, finished_at, updated_at, job_id, release"             \
	" FROM deployments"

void
api_deployments_list(struct api_req *r)
{
	static const char *const q[] = {"limit", "after", "site", NULL};
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	struct api_page pg;
	json_t *items, *o;
	int64_t site, last = 0;
	int n = 0, more = 0, rc;

	if (api_req_query_allow(r, q) != 0 || api_page_parse(r, &pg) != 0 ||
	    api_query_id(r, "site", &site) != 0)
		return;
	if (s == NULL) {
		api_reply_db(r, s, "listing deployments");
		return;
	}
	st = store_query(s,
			 API_DEPLOYMENTS_COLS " WHERE id > ? AND (? < 0 OR site_id = ?)"
					      " ORDER BY id LIMIT ?",
			 "iiii", pg.after, site, site, (int64_t)pg.limit + 1);
	if (st == NULL || (items = json_array()) == NULL) {
		store_finalize(st);
		api_reply_db(r, s, "listing deployments");
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
		api_reply_db(r, s, "listing deployments");
		return;
	}
	api_page_reply(r, items, more, last);
}

void
api_deployments_get(struct api_req *r)
{
	static const char *const q[] = {NULL};
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	json_t *o = NULL;
	int64_t id;

	if (api_req_query_allow(r, q) != 0 ||
	    api_lookup(r, "deployment", "deployments", NULL, api_req_param(r, 0), &id) != 0)
		return;
	st = store_query(s, API_DEPLOYMENTS_COLS " WHERE id = ?", "i", id);
	if (st != NULL && store_step(st) == STORE_ROW)
		o = api_json_row(st);
	store_finalize(st);
	if (o == NULL) {
		api_reply_db(r, s, "reading the deployment");
		return;
	}
	api_reply_json(r, 200, o);
}

void
api_output_page(struct api_req *r, const char *owner_kind, int64_t owner_id)
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
	st = store_query(s,
			 "SELECT seq, stream, time, text FROM output_lines"
			 " WHERE owner_kind = ? AND owner_id = ? AND seq > ? ORDER BY seq LIMIT ?",
			 "siii", owner_kind, owner_id, pg.after, (int64_t)pg.limit + 1);
	if (st == NULL || (items = json_array()) == NULL) {
		store_finalize(st);
		api_reply_db(r, s, "reading output");
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
		api_reply_db(r, s, "reading output");
		return;
	}
	api_page_reply(r, items, more, last);
}

void
api_deployments_log(struct api_req *r)
{
	static const char *const q[] = {"limit", "after", NULL};
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	struct api_page pg;
	json_t *items, *o;
	int64_t id, last = 0;
	int n = 0, more = 0, rc;

	if (api_lookup(r, "deployment", "deployments", NULL, api_req_param(r, 0), &id) != 0 ||
	    api_req_query_allow(r, q) != 0 || api_page_parse(r, &pg) != 0)
		return;
	/* A deployment's log is the output of the commands run for it (checkout, script,
	 * switch), in the order they arrived; the cursor is the line's row id. */
	st = store_query(s,
			 "SELECT o.id AS seq, o.stream, o.time, o.text, c.kind AS step"
			 " FROM output_lines o JOIN commands c ON o.owner_kind = 'command'"
			 " AND o.owner_id = c.id WHERE c.owner_kind = 'deployment'"
			 " AND c.owner_id = ? AND o.id > ? ORDER BY o.id LIMIT ?",
			 "iii", id, pg.after, (int64_t)pg.limit + 1);
	if (st == NULL || (items = json_array()) == NULL) {
		store_finalize(st);
		api_reply_db(r, s, "reading the log");
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
		api_reply_db(r, s, "reading the log");
		return;
	}
	api_page_reply(r, items, more, last);
}

/* POST /deployments/{id}/cancel: cancels its job; a deployment still waiting is
 * cancelled at once, a running one when its script has been stopped. */
void
api_deployments_cancel(struct api_req *r)
{
	struct store *s = api_req_store(r);
	char err[512], *state = NULL;
	int64_t id, job;
	int rc;

	if (api_lookup(r, "deployment", "deployments", NULL, api_req_param(r, 0), &id) != 0)
		return;
	job = store_int(s, 0, "SELECT coalesce(job_id, 0) FROM deployments WHERE id = ?", "i", id);
	state = store_text(s, "SELECT state FROM deployments WHERE id = ?", "i", id);
	if (state == NULL || (strcmp(state, "pending") != 0 && strcmp(state, "running") != 0)) {
		api_reply_error(r, 409, "conflict", "deployment %lld is already %s", (long long)id,
				state ? state : "gone");
		goto out;
	}
	if ((rc = jobs_cancel(s, job, api_req_actor(r), err, sizeof(err))) != 0) {
		api_reply_err(r, rc, err);
		goto out;
	}
	/* A job cancelled before it started runs no step: end the deployment here. */
	if (store_int(s, 0, "SELECT state = 'cancelled' FROM jobs WHERE id = ?", "i", job) &&
	    sm_transition(s, &sm_deployment, id, "cancelled", api_req_actor(r), err, sizeof(err)) ==
		0)
		store_exec(s, "UPDATE deployments SET finished_at = ? WHERE id = ?", "ii",
			   store_now_ms(), id);
	api_reply_json(
	    r, 202,
	    json_pack("{s:I, s:I}", "deployment_id", (json_int_t)id, "job_id", (json_int_t)job));
out:
	free(state);
}
