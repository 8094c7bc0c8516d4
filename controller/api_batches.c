/*
 * api_batches.c: /api/v1/batches: run one command (argv or script) on servers chosen by
 * ids/names, tag or all, at once or N at a time; list, get with each server's state, exit
 * code and outcome and a summary; the output of every server in arrival order (long-poll
 * with ?wait=); cancel. batches.c does the work; routed from api.c.
 */
#include "api_json.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batches.h"
#include "err.h"
#include "events.h"
#include "fleet.h"
#include "names.h"
#include "store.h"
#include "timeutil.h"

#define API_BATCHES_OUT_DEFAULT 1000
#define API_BATCHES_OUT_MAX 5000
#define API_BATCHES_WAIT_MAX 25000

#define API_BATCHES_COLS                                                                           \
	"SELECT id, state, argv, script, user, timeout_ms, batch_size, pickup_ms, selector,"       \
	" actor, job_id, created_at, finished_at FROM batches"

static int
api_batches_check_argv(const char *field, const json_t *v, char *err, size_t errlen)
{
	size_t i;
	json_t *e;

	if (json_array_size(v) == 0)
		return err_set(err, errlen, ERR_INVAL, "%s: must not be empty", field);
	json_array_foreach(v, i, e) if (!json_is_string(e)) return err_set(
	    err, errlen, ERR_INVAL, "%s[%zu]: must be a string", field, i);
	return 0;
}

static int
api_batches_check_servers(const char *field, const json_t *v, char *err, size_t errlen)
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
api_batches_check_range(const char *field, const json_t *v, long lo, long hi, char *err,
			size_t errlen)
{
	json_int_t x = json_integer_value(v);

	if (x < lo || x > hi)
		return err_set(err, errlen, ERR_INVAL, "%s: must be %ld..%ld", field, lo, hi);
	return 0;
}

static int
api_batches_check_timeout(const char *field, const json_t *v, char *err, size_t errlen)
{
	return api_batches_check_range(field, v, 1, 86400, err, errlen);
}

static int
api_batches_check_size(const char *field, const json_t *v, char *err, size_t errlen)
{
	return api_batches_check_range(field, v, 0, 10000, err, errlen);
}

static int
api_batches_check_pickup(const char *field, const json_t *v, char *err, size_t errlen)
{
	return api_batches_check_range(field, v, 1, 3600, err, errlen);
}

static int
api_batches_check_tag(const char *field, const json_t *v, char *err, size_t errlen)
{
	char why[256];

	if (names_tag(json_string_value(v), why, sizeof(why)) != 0)
		return err_set(err, errlen, ERR_INVAL, "%s: %s", field, why);
	return 0;
}

static const struct api_field api_batches_create_fields[] = {
    {"servers", API_JSON_ARRAY, 0, api_batches_check_servers},
    {"tag", API_JSON_STRING, 0, api_batches_check_tag},
    {"all", API_JSON_BOOL, 0, NULL},
    {"argv", API_JSON_ARRAY, 0, api_batches_check_argv},
    {"script", API_JSON_STRING, 0, NULL},
    {"user", API_JSON_STRING, 0, api_check_user},
    {"timeout", API_JSON_INTEGER, 0, api_batches_check_timeout},
    {"batch_size", API_JSON_INTEGER, 0, api_batches_check_size},
    {"pickup_timeout", API_JSON_INTEGER, 0, api_batches_check_pickup},
    {NULL, 0, 0, NULL},
};

/* The batch with its summary and, when servers is set, every server's row. */
static json_t *
api_batches_render(struct store *s, int64_t id, int servers)
{
	struct store_stmt *st;
	json_t *o = NULL, *sum, *list = NULL, *e;
	char sql[1024];
	int rc;

	st = store_query(s, API_BATCHES_COLS " WHERE id = ?", "i", id);
	if (st != NULL && store_step(st) == STORE_ROW)
		o = api_json_row(st);
	store_finalize(st);
	if (o == NULL)
		return NULL;
	/* argv and selector are JSON; timeouts in seconds as they were given */
	json_object_set_new(o, "argv",
			    json_loads(json_string_value(json_object_get(o, "argv")), 0, NULL));
	json_object_set_new(o, "selector",
			    json_loads(json_string_value(json_object_get(o, "selector")), 0, NULL));
	json_object_set_new(
	    o, "timeout",
	    json_integer(json_integer_value(json_object_get(o, "timeout_ms")) / 1000));
	json_object_set_new(
	    o, "pickup_timeout",
	    json_integer(json_integer_value(json_object_get(o, "pickup_ms")) / 1000));
	json_object_del(o, "timeout_ms");
	json_object_del(o, "pickup_ms");
	if (json_is_null(json_object_get(o, "argv")))
		json_object_del(o, "argv");
	snprintf(sql, sizeof(sql),
		 "SELECT count(*), sum(o = 'ok'), sum(o = 'failed'), sum(o = 'timeout'),"
		 " sum(o = 'offline'), sum(o = 'cancelled'), sum(o = 'error'), sum(o ="
		 " 'running'), sum(o = 'waiting') FROM (SELECT %s AS o FROM commands c WHERE"
		 " c.batch_id = ?)",
		 batches_outcome_sql);
	st = store_query(s, sql, "i", id);
	if (st == NULL || store_step(st) != STORE_ROW)
		goto fail;
	sum = json_pack(
	    "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "servers",
	    (json_int_t)store_col_int(st, 0), "ok", (json_int_t)store_col_int(st, 1), "failed",
	    (json_int_t)store_col_int(st, 2), "timeout", (json_int_t)store_col_int(st, 3),
	    "offline", (json_int_t)store_col_int(st, 4), "cancelled",
	    (json_int_t)store_col_int(st, 5), "error", (json_int_t)store_col_int(st, 6), "running",
	    (json_int_t)store_col_int(st, 7), "waiting", (json_int_t)store_col_int(st, 8));
	store_finalize(st);
	st = NULL;
	json_object_set_new(o, "summary", sum);
	/* Every server has ended but batch.run has not closed the batch yet (it looks a
	 * moment later): show the state it is about to record. */
	if (!batches_final(json_string_value(json_object_get(o, "state"))) &&
	    json_integer_value(json_object_get(sum, "running")) == 0 &&
	    json_integer_value(json_object_get(sum, "waiting")) == 0) {
		const char *st_now = json_string_value(json_object_get(o, "state"));

		json_object_set_new(
		    o, "state",
		    json_string(st_now && strcmp(st_now, "cancelling") == 0 ? "cancelled"
				: json_integer_value(json_object_get(sum, "ok")) ==
					json_integer_value(json_object_get(sum, "servers"))
				    ? "done"
				    : "failed"));
	}
	if (!servers)
		return o;
	snprintf(sql, sizeof(sql),
		 "SELECT c.server_id, sv.name AS server, c.id AS command_id, c.state, %s AS"
		 " outcome, c.exit_code, c.signal, c.error, c.started_at, c.finished_at, CASE"
		 " WHEN c.finished_at IS NOT NULL AND c.started_at IS NOT NULL THEN"
		 " c.finished_at - c.started_at END AS duration_ms FROM commands c JOIN servers"
		 " sv ON sv.id = c.server_id WHERE c.batch_id = ? ORDER BY c.id",
		 batches_outcome_sql);
	if ((st = store_query(s, sql, "i", id)) == NULL || (list = json_array()) == NULL)
		goto fail;
	while ((rc = store_step(st)) == STORE_ROW) {
		if ((e = api_json_row(st)) == NULL)
			goto fail;
		json_array_append_new(list, e);
	}
	if (rc != STORE_DONE)
		goto fail;
	store_finalize(st);
	json_object_set_new(o, "servers", list);
	return o;
fail:
	store_finalize(st);
	json_decref(list);
	json_decref(o);
	return NULL;
}

void
api_batches_create(struct api_req *r)
{
	static const char *const q[] = {NULL};
	json_t *body = api_req_body(r), *argv, *script, *v, *o;
	struct store *s = api_req_store(r);
	struct batches_spec spec = {0};
	char err[512], *argv_text = NULL, *selector = NULL;
	int64_t *ids = NULL, id;
	size_t n;
	int rc;

	if (api_req_query_allow(r, q) != 0 ||
	    api_json_fields(r, body, api_batches_create_fields) != 0)
		return;
	argv = json_object_get(body, "argv");
	script = json_object_get(body, "script");
	if ((argv == NULL) == (script == NULL)) {
		api_reply_error(r, 400, argv ? "invalid_field" : "missing_field",
				"argv: give exactly one of argv or script");
		return;
	}
	if (script != NULL && (json_string_length(script) == 0 ||
			       json_string_length(script) != strlen(json_string_value(script)))) {
		api_reply_error(r, 400, "invalid_field", "script: must be non-empty text");
		return;
	}
	if (api_fleet_select(r, body, 1, &ids, &n) != 0)
		return;
	if ((argv && (argv_text = json_dumps(argv, JSON_COMPACT)) == NULL) ||
	    (selector = fleet_describe(json_object_get(body, "servers"),
				       json_string_value(json_object_get(body, "tag")),
				       json_object_get(body, "all") != NULL)) == NULL) {
		api_reply_error(r, 500, "internal", "out of memory");
		goto out;
	}
	spec.argv_json = argv_text;
	spec.script = json_string_value(script);
	spec.user = json_string_value(json_object_get(body, "user"));
	spec.timeout_s = (v = json_object_get(body, "timeout")) ? (long)json_integer_value(v) : 0;
	spec.batch_size =
	    (v = json_object_get(body, "batch_size")) ? (int)json_integer_value(v) : 0;
	spec.pickup_ms =
	    (v = json_object_get(body, "pickup_timeout")) ? (long)json_integer_value(v) * 1000 : 0;
	spec.selector_json = selector;
	spec.actor = api_req_actor(r);
	rc = batches_create(s, &spec, ids, n, &id, err, sizeof(err));
	if (rc == ERR_INVAL) {
		api_reply_error(r, 400, "invalid_field", "%s", err);
		goto out;
	}
	if (rc != 0) {
		api_reply_err(r, rc, err);
		goto out;
	}
	if ((o = api_batches_render(s, id, 1)) == NULL)
		o = json_pack("{s:I, s:s}", "id", (json_int_t)id, "state", "running");
	api_reply_json(r, 202, json_pack("{s:o}", "batch", o));
out:
	free(ids);
	free(argv_text);
	free(selector);
}

void
api_batches_list(struct api_req *r)
{
	static const char *const q[] = {"limit", "after", NULL};
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	struct api_page pg;
	json_t *items, *o;
	int64_t ids[API_LIMIT_MAX + 1], last = 0;
	int n = 0, more = 0, rc, i;

	if (api_req_query_allow(r, q) != 0 || api_page_parse(r, &pg) != 0)
		return;
	st = store_query(s, "SELECT id FROM batches WHERE id > ? ORDER BY id LIMIT ?", "ii",
			 pg.after, (int64_t)pg.limit + 1);
	if (st == NULL || (items = json_array()) == NULL) {
		store_finalize(st);
		api_reply_db(r, s, "listing batches");
		return;
	}
	while ((rc = store_step(st)) == STORE_ROW) {
		if (n == pg.limit) {
			more = 1;
			break;
		}
		ids[n++] = store_col_int(st, 0);
	}
	store_finalize(st);
	for (i = 0; rc >= 0 && i < n; i++) {
		if ((o = api_batches_render(s, ids[i], 0)) == NULL) {
			rc = -1;
			break;
		}
		json_array_append_new(items, o);
		last = ids[i];
	}
	if (rc < 0) {
		json_decref(items);
		api_reply_db(r, s, "listing batches");
		return;
	}
	api_page_reply(r, items, more, last);
}

void
api_batches_get(struct api_req *r)
{
	static const char *const q[] = {NULL};
	json_t *o;
	int64_t id;

	if (api_req_query_allow(r, q) != 0 ||
	    api_lookup(r, "batch", "batches", NULL, api_req_param(r, 0), &id) != 0)
		return;
	if ((o = api_batches_render(api_req_store(r), id, 1)) == NULL) {
		api_reply_db(r, api_req_store(r), "reading the batch");
		return;
	}
	api_reply_json(r, 200, o);
}

/* Output text as a JSON string; bytes that are not UTF-8 become '?'. */
static json_t *
api_batches_text(const char *text)
{
	json_t *v = json_string(text);
	char *copy;

	if (v != NULL || (copy = strdup(text)) == NULL)
		return v;
	for (char *p = copy; *p != '\0'; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	v = json_string(copy);
	free(copy);
	return v;
}

/*
 * GET /batches/:id/output?after=&limit=&wait=: lines of every server's command in the
 * order they arrived; "next" is the cursor for the next call and "complete" is true once
 * the batch has ended and every line has been given.
 */
void
api_batches_output(struct api_req *r)
{
	static const char *const q[] = {"after", "limit", "wait", "format", NULL};
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	const char *w;
	json_t *items = NULL, *o;
	char *state = NULL;
	int64_t id, after = 0, limit = API_BATCHES_OUT_DEFAULT, wait = 0, from, seen, deadline, now;
	int n = 0, rc, ended = 0, compact = 0;

	if (api_req_query_allow(r, q) != 0 ||
	    api_lookup(r, "batch", "batches", NULL, api_req_param(r, 0), &id) != 0)
		return;
	if (((w = api_req_query(r, "after")) && api_parse_int(w, 0, INT64_MAX, &after) != 0) ||
	    ((w = api_req_query(r, "limit")) &&
	     api_parse_int(w, 1, API_BATCHES_OUT_MAX, &limit) != 0) ||
	    ((w = api_req_query(r, "wait")) &&
	     api_parse_int(w, 0, API_BATCHES_WAIT_MAX, &wait) != 0)) {
		api_reply_error(r, 400, "invalid_parameter",
				"after: a line id; limit: 1..%d; wait: 0..%d ms",
				API_BATCHES_OUT_MAX, API_BATCHES_WAIT_MAX);
		return;
	}
	if ((w = api_req_query(r, "format")) != NULL) {
		if (strcmp(w, "compact") != 0) {
			api_reply_error(r, 400, "invalid_parameter", "format: only compact");
			return;
		}
		compact = 1;
	}
	from = store_int(s, 0, "SELECT output_from FROM batches WHERE id = ?", "i", id);
	if (after < from)
		after = from;
	/* A long-poll runs again from the start each time it is woken (api_req_wait): its
	 * deadline counts from when the request came. */
	deadline = api_req_started_ms(r) + wait;
	seen = events_last_id();
	/* The state first: once every server has ended, every line is stored. */
	state = store_text(s, "SELECT state FROM batches WHERE id = ?", "i", id);
	ended = batches_final(state) ||
		store_int(s, 1,
			  "SELECT count(*) FROM commands WHERE batch_id = ? AND state IN"
			  " ('held', 'queued', 'sent', 'running')",
			  "i", id) == 0;
	if ((items = json_array()) == NULL)
		goto db;
	/* Lines in arrival order: walk output_lines by id from the cursor (CROSS JOIN
	 * keeps that order, so a page costs what it returns, not the whole log). */
	st = store_query(s,
			 "SELECT o.id, c.server_id, sv.name AS server, c.id AS command_id,"
			 " o.seq, o.stream, o.time, o.text FROM output_lines o CROSS JOIN"
			 " commands c CROSS JOIN servers sv WHERE o.id > ? AND +o.owner_kind ="
			 " 'command' AND c.id = o.owner_id AND c.batch_id = ? AND sv.id ="
			 " c.server_id ORDER BY o.id LIMIT ?",
			 "iii", after, id, limit);
	if (st == NULL)
		goto db;
	n = 0;
	while ((rc = store_step(st)) == STORE_ROW) {
		if (compact)
			o = json_pack("[I, I, s, o]", (json_int_t)store_col_int(st, 0),
				      (json_int_t)store_col_int(st, 3), store_col_text(st, 5),
				      api_batches_text(store_col_text(st, 7)));
		else
			o = api_json_row(st);
		if (o == NULL) {
			rc = -1;
			break;
		}
		json_array_append_new(items, o);
		after = store_col_int(st, 0);
		n++;
	}
	store_finalize(st);
	if (rc < 0)
		goto db;
	now = time_mono_ms();
	if (n == 0 && !ended && now < deadline) {
		/* Nothing yet: park until an event (or a notification of new lines) may
		 * have come, and look again at least every 250 ms. */
		json_decref(items);
		free(state);
		api_req_wait(r, seen, deadline - now < 250 ? deadline : now + 250);
		return;
	}
	api_reply_json(r, 200,
		       json_pack("{s:o, s:I, s:s?, s:b}", "items", items, "next", (json_int_t)after,
				 "state", state, "complete", ended && n < limit));
	free(state);
	return;
db:
	json_decref(items);
	free(state);
	api_reply_db(r, s, "reading the batch's output");
}

void
api_batches_cancel(struct api_req *r)
{
	static const char *const q[] = {NULL};
	struct store *s = api_req_store(r);
	char err[256];
	json_t *o;
	int64_t id;
	int rc;

	if (api_req_query_allow(r, q) != 0 ||
	    api_lookup(r, "batch", "batches", NULL, api_req_param(r, 0), &id) != 0)
		return;
	if ((rc = batches_cancel(s, id, api_req_actor(r), err, sizeof(err))) != 0) {
		api_reply_err(r, rc, err);
		return;
	}
	if ((o = api_batches_render(s, id, 0)) == NULL) {
		api_reply_db(r, s, "reading the batch");
		return;
	}
	api_reply_json(r, 202, json_pack("{s:o}", "batch", o));
}
