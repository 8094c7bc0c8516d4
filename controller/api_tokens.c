/*
 * api_tokens.c: /api/v1/tokens: list (never the token or its hash), create (the token is
 * shown once, in the 201 reply) and revoke, each change with an audit event in the same
 * transaction. Hashing and lookup are tokens.c's. Routed from api.c.
 */
#include "api_json.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "events.h"
#include "log.h"
#include "store.h"
#include "tokens.h"

#define API_TOKENS_COLS                                                                            \
	"SELECT id, name, prefix, created_at, last_used_at, revoked_at FROM api_tokens"

void
api_tokens_list(struct api_req *r)
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
		api_reply_db(r, s, "listing tokens");
		return;
	}
	st = store_query(s, API_TOKENS_COLS " WHERE id > ? ORDER BY id LIMIT ?", "ii", pg.after,
			 (int64_t)pg.limit + 1);
	if (st == NULL || (items = json_array()) == NULL) {
		store_finalize(st);
		api_reply_db(r, s, "listing tokens");
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
		api_reply_db(r, s, "listing tokens");
		return;
	}
	api_page_reply(r, items, more, last);
}

static const struct api_field api_tokens_create_fields[] = {
    {"name", API_JSON_STRING, 1, api_check_label},
    {NULL, 0, 0, NULL},
};

void
api_tokens_create(struct api_req *r)
{
	static const char *const q[] = {NULL};
	struct store *s = api_req_store(r);
	const char *name;
	char err[256], *plain = NULL, *data = NULL;
	json_t *ev;
	int64_t id;
	int rc;

	if (api_req_query_allow(r, q) != 0 ||
	    api_json_fields(r, api_req_body(r), api_tokens_create_fields) != 0)
		return;
	name = json_string_value(json_object_get(api_req_body(r), "name"));
	if (s == NULL) {
		api_reply_db(r, s, "creating a token");
		return;
	}
	if (store_begin(s) != 0) {
		api_reply_db(r, s, "creating a token");
		return;
	}
	if ((rc = tokens_create(s, name, &plain, &id, err, sizeof(err))) != 0) {
		store_rollback(s);
		api_reply_err(r, rc, err);
		return;
	}
	/* The prefix the list shows, never more of the token. */
	if ((ev = json_pack("{s:s, s:s%}", "name", name, "prefix", plain, strnlen(plain, 8))) !=
	    NULL) {
		data = json_dumps(ev, JSON_COMPACT);
		json_decref(ev);
	}
	if (data == NULL ||
	    events_emit(s, api_req_actor(r), "token.created", "token", id, data) != 0 ||
	    store_commit(s) != 0) {
		api_reply_db(r, s, "creating a token");
		store_rollback(s);
		goto out;
	}
	events_notify();
	log_info("token %lld (%s) created by %s", (long long)id, name, api_req_actor(r));
	api_reply_json(
	    r, 201,
	    json_pack("{s:I, s:s, s:s}", "id", (json_int_t)id, "name", name, "token", plain));
out:
	if (plain != NULL) {
		explicit_bzero(plain, strlen(plain));
		free(plain);
	}
	free(data);
}

static const struct api_field api_tokens_no_fields[] = {{NULL, 0, 0, NULL}};

void
api_tokens_revoke(struct api_req *r)
{
	static const char *const q[] = {NULL};
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	char err[256];
	json_t *o = NULL;
	int64_t id;
	int rc;

	if (api_req_query_allow(r, q) != 0 || api_param_id(r, 0, "token id", &id) != 0 ||
	    api_json_fields(r, api_req_body(r), api_tokens_no_fields) != 0)
		return;
	if (s == NULL || store_begin(s) != 0) {
		api_reply_db(r, s, "revoking a token");
		return;
	}
	if ((rc = tokens_revoke(s, id, err, sizeof(err))) != 0) {
		store_rollback(s);
		api_reply_err(r, rc, err);
		return;
	}
	if (events_emit(s, api_req_actor(r), "token.revoked", "token", id, NULL) != 0 ||
	    store_commit(s) != 0) {
		api_reply_db(r, s, "revoking a token");
		store_rollback(s);
		return;
	}
	events_notify();
	log_info("token %lld revoked by %s", (long long)id, api_req_actor(r));
	st = store_query(s, API_TOKENS_COLS " WHERE id = ?", "i", id);
	if (st != NULL && store_step(st) == STORE_ROW)
		o = api_json_row(st);
	store_finalize(st);
	if (o == NULL) {
		api_reply_db(r, s, "reading the token");
		return;
	}
	api_reply_json(r, 200, o);
}
