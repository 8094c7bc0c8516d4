/*
 * api_events.c: GET /api/v1/events as Server-Sent Events: matching events after
 * Last-Event-ID (or ?after=) in batches, then live ones, keepalive every 15 s; ends when
 * the client hangs up, its token is revoked or api_stop runs. Never blocks a thread: with
 * nothing to send, the stream parks until an event may have come (api_stream_wait).
 * Writes no events (events.c). Routed from api.c.
 */
#include "api_json.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "events.h"
#include "log.h"
#include "store.h"
#include "timeutil.h"

#define API_EVENTS_BATCH 100
#define API_EVENTS_KEEPALIVE_MS 15000
#define API_EVENTS_BUF_MAX (4u * 1024 * 1024)

struct api_events_sub {
	int64_t cursor; /* every event with id <= cursor has been looked at */
	char *kind;	/* kind prefix, or NULL */
	char *rkind;	/* resource kind, or NULL */
	int64_t rid;	/* resource id, or -1 */
	struct buf out; /* formatted, not yet sent */
	size_t off;	/* sent part of out */
	int64_t last_write_ms;
	int stale; /* the last wake-up found nothing new */
};

static int
api_events_word_ok(const char *s, size_t max)
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

static void
api_events_sub_free(void *p)
{
	struct api_events_sub *sub = p;

	if (sub == NULL)
		return;
	buf_fini(&sub->out);
	free(sub->kind);
	free(sub->rkind);
	free(sub);
}

static int
api_events_match(struct api_events_sub *sub, struct store_stmt *st)
{
	const char *kind = store_col_text(st, 3), *rkind = store_col_text(st, 4);

	if (sub->kind != NULL && (kind == NULL || strncmp(kind, sub->kind, strlen(sub->kind))))
		return 0;
	if (sub->rkind != NULL && (rkind == NULL || strcmp(rkind, sub->rkind) != 0))
		return 0;
	if (sub->rid >= 0 && (store_col_is_null(st, 5) || store_col_int(st, 5) != sub->rid))
		return 0;
	return 1;
}

/* Reads the next batch after the cursor into out. Returns the number of rows looked at
 * (API_EVENTS_BATCH: there may be more), or -1 on a database error. */
static int
api_events_fill(struct api_events_sub *sub, struct store *s)
{
	struct store_stmt *st;
	json_t *o;
	char *data;
	int64_t id;
	int n = 0, rc = STORE_DONE, stop = 0;

	st = store_query(s,
			 "SELECT id, time, actor, kind, resource_kind, resource_id, data"
			 " FROM events WHERE id > ? ORDER BY id LIMIT ?",
			 "ii", sub->cursor, (int64_t)API_EVENTS_BATCH);
	if (st == NULL)
		return -1;
	while (!stop && (rc = store_step(st)) == STORE_ROW) {
		id = store_col_int(st, 0);
		if (api_events_match(sub, st)) {
			o = api_json_row(st);
			data = o ? json_dumps(o, JSON_COMPACT) : NULL;
			json_decref(o);
			if (data == NULL) {
				stop = 1; /* out of memory: send what we have */
				break;
			}
			/* Compact JSON holds no newline, so one data: line carries it. */
			if (buf_printf(&sub->out, "id: %lld\nevent: %s\ndata: %s\n\n",
				       (long long)id, store_col_text(st, 3), data) != 0) {
				if (sub->out.len > 0) {
					free(data); /* full: this one goes next time */
					stop = 1;
					break;
				}
				log_warnx("api: events: event %lld too big to stream; skipped",
					  (long long)id);
			}
			free(data);
		}
		sub->cursor = id;
		n++;
	}
	store_finalize(st);
	if (stop)
		return sub->out.len > 0 ? API_EVENTS_BATCH : -1;
	return rc == STORE_DONE ? n : -1;
}

/* Called whenever the connection can take more: sends what is buffered, else reads the
 * next events, else a keepalive when one is due, else asks to be called again when an
 * event may have come (or the keepalive falls due) and returns 0. Never blocks. */
static ssize_t
api_events_read_cb(struct api_stream *s, void *cls, char *dst, size_t max)
{
	struct api_events_sub *sub = cls;
	struct store *db;
	int64_t wait_after, idle;
	size_t n;
	int rows;

	for (;;) {
		if (sub->off < sub->out.len) {
			n = sub->out.len - sub->off;
			if (n > max)
				n = max;
			memcpy(dst, sub->out.data + sub->off, n);
			sub->off += n;
			if (sub->off == sub->out.len) {
				buf_reset(&sub->out);
				sub->off = 0;
			}
			sub->last_write_ms = time_mono_ms();
			return (ssize_t)n;
		}
		switch (api_stream_closing(s)) {
		case API_STREAM_STOPPING:
			return API_STREAM_END;
		case API_STREAM_HUNGUP:
			return API_STREAM_ERROR; /* nobody to end it for */
		}
		if ((db = store_thread()) == NULL)
			return API_STREAM_ERROR;
		if ((rows = api_events_fill(sub, db)) < 0) {
			log_warnx("api: events: reading events: %s", store_errmsg(db));
			return API_STREAM_ERROR;
		}
		if (sub->out.len > 0 || rows == API_EVENTS_BATCH) {
			sub->stale = 0;
			continue;
		}
		idle = time_mono_ms() - sub->last_write_ms;
		if (idle >= API_EVENTS_KEEPALIVE_MS) {
			if (buf_puts(&sub->out, ": keepalive\n\n") != 0)
				return API_STREAM_ERROR;
			continue;
		}
		/* The waker resumes the stream at once while this process knows of a newer id;
		 * when that id is not visible (not committed, or rolled back) wait past it
		 * instead of spinning: its commit wakes the stream. */
		wait_after = sub->cursor;
		if (sub->stale && events_last_id() > wait_after)
			wait_after = events_last_id();
		sub->stale = 1;
		api_stream_wait(s, wait_after, sub->last_write_ms + API_EVENTS_KEEPALIVE_MS);
		return 0;
	}
}

void
api_events_get(struct api_req *r)
{
	static const char *const q[] = {"after", "kind", "resource_kind", "resource_id", NULL};
	struct api_events_sub *sub;
	struct api_page pg;
	struct store *s = api_req_store(r);
	const char *kind, *rkind, *last;
	int64_t rid, after = -1;

	if (api_req_query_allow(r, q) != 0 || api_page_parse(r, &pg) != 0 ||
	    api_query_id(r, "resource_id", &rid) != 0)
		return;
	kind = api_req_query(r, "kind");
	rkind = api_req_query(r, "resource_kind");
	if (kind != NULL && !api_events_word_ok(kind, 64)) {
		api_reply_error(r, 400, "invalid_parameter",
				"kind: must be [a-z0-9._-], 1-64 long");
		return;
	}
	if (rkind != NULL && !api_events_word_ok(rkind, 32)) {
		api_reply_error(r, 400, "invalid_parameter",
				"resource_kind: must be [a-z0-9._-], 1-32 long");
		return;
	}
	if (rid >= 0 && rkind == NULL) {
		api_reply_error(r, 400, "invalid_parameter",
				"resource_id: needs resource_kind as well");
		return;
	}
	/* A reconnecting EventSource sends Last-Event-ID with its first URL: the header wins. */
	if ((last = api_req_header(r, "Last-Event-ID")) != NULL) {
		if (api_parse_int(last, 0, INT64_MAX, &after) != 0) {
			api_reply_error(r, 400, "invalid_parameter",
					"Last-Event-ID: must be a non-negative integer");
			return;
		}
	} else if (api_req_query(r, "after") != NULL) {
		after = pg.after;
	}
	if (s == NULL) {
		api_reply_db(r, s, "reading events");
		return;
	}
	if (after < 0) /* live events only */
		after = store_int(s, 0, "SELECT coalesce(max(id), 0) FROM events", "");
	if ((sub = calloc(1, sizeof(*sub))) == NULL) {
		api_reply_error(r, 500, "internal", "out of memory");
		return;
	}
	sub->cursor = after;
	sub->rid = rid;
	buf_init(&sub->out, API_EVENTS_BUF_MAX);
	sub->last_write_ms = time_mono_ms();
	if ((kind && (sub->kind = strdup(kind)) == NULL) ||
	    (rkind && (sub->rkind = strdup(rkind)) == NULL) ||
	    /* A first comment sends the headers at once. */
	    buf_puts(&sub->out, ": stoke events\n\n") != 0) {
		api_events_sub_free(sub);
		api_reply_error(r, 500, "internal", "out of memory");
		return;
	}
	api_reply_stream(r, "text/event-stream", api_events_read_cb, sub, api_events_sub_free);
}
