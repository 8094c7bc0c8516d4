/*
 * api_audit.c: GET /api/v1/audit: the events table as a paged list, filtered by resource
 * (?resource_kind=K&resource_id=N) and kind prefix (?kind=job.). The live feed of the
 * same rows is api_events.c. Routed from api.c.
 */
#include "api_json.h"

#include <string.h>

#include "store.h"

/* [a-z0-9._-]{1,max} */
static int
api_audit_word_ok(const char *s, size_t max)
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

void
api_audit_list(struct api_req *r)
{
	static const char *const q[] = {"limit",       "after", "resource_kind",
					"resource_id", "kind",	NULL};
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	struct api_page pg;
	const char *rkind, *kind;
	json_t *items, *o;
	int64_t rid, last = 0;
	int n = 0, more = 0, rc;

	if (api_req_query_allow(r, q) != 0 || api_page_parse(r, &pg) != 0 ||
	    api_query_id(r, "resource_id", &rid) != 0)
		return;
	rkind = api_req_query(r, "resource_kind");
	kind = api_req_query(r, "kind");
	if (rkind != NULL && !api_audit_word_ok(rkind, 32)) {
		api_reply_error(r, 400, "invalid_parameter",
				"resource_kind: must be [a-z0-9._-], 1-32 long");
		return;
	}
	if (kind != NULL && !api_audit_word_ok(kind, 64)) {
		api_reply_error(r, 400, "invalid_parameter",
				"kind: must be [a-z0-9._-], 1-64 long");
		return;
	}
	if (rid >= 0 && rkind == NULL) {
		api_reply_error(r, 400, "invalid_parameter",
				"resource_id: needs resource_kind as well");
		return;
	}
	if (s == NULL) {
		api_reply_db(r, s, "listing events");
		return;
	}
	st = store_query(
	    s,
	    "SELECT id, time, actor, kind, resource_kind, resource_id, data FROM events"
	    " WHERE id > ? AND (? IS NULL OR resource_kind = ?)"
	    " AND (? < 0 OR resource_id = ?)"
	    " AND (? IS NULL OR substr(kind, 1, length(?)) = ?)"
	    " ORDER BY id LIMIT ?",
	    "issiisssi", pg.after, rkind, rkind, rid, rid, kind, kind, kind, (int64_t)pg.limit + 1);
	if (st == NULL || (items = json_array()) == NULL) {
		store_finalize(st);
		api_reply_db(r, s, "listing events");
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
		api_reply_db(r, s, "listing events");
		return;
	}
	api_page_reply(r, items, more, last);
}
