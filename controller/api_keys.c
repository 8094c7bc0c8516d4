/*
 * api_keys.c: /api/v1/keys: list SSH keys and get one with its per-server sync state.
 * Adding, attaching and revoking keys is not built yet (no routes). Routed from api.c.
 */
#include "api_json.h"

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
