/*
 * api_commands.c: /api/v1/commands: agent commands (?server=, ?batch=), one command,
 * and its output. Payload values that may carry secrets are redacted. Running commands
 * is not built yet (no route). Routed from api.c.
 */
#include "api_json.h"

#include <string.h>

#include "store.h"

#define API_COMMANDS_COLS                                                                  \
	"SELECT id, server_id, batch_id, kind, payload, state, acked, exit_code, signal,"   \
	" error, result, created_at, sent_at, started_at, finished_at FROM commands"

/* Keys whose values are never shown (environments, file contents, keys, secrets). */
static const char *const api_commands_secret_keys[] = {
    "env", "environment", "content", "contents", "data", "key", "private_key",
    "deploy_key", "secret", "password", "token", NULL};

static void
api_commands_redact(json_t *v, int depth)
{
	const char *key;
	json_t *e;
	size_t i;

	if (depth > 8)
		return;
	if (json_is_array(v)) {
		json_array_foreach(v, i, e)
			api_commands_redact(e, depth + 1);
		return;
	}
	if (!json_is_object(v))
		return;
	json_object_foreach(v, key, e) {
		for (i = 0; api_commands_secret_keys[i] != NULL; i++)
			if (strcmp(key, api_commands_secret_keys[i]) == 0)
				break;
		if (api_commands_secret_keys[i] != NULL)
			json_object_set_new(v, key, json_string("(redacted)"));
		else
			api_commands_redact(e, depth + 1);
	}
}

static json_t *
api_commands_render(struct store_stmt *st)
{
	json_t *o = api_json_row(st);

	if (o != NULL)
		api_commands_redact(json_object_get(o, "payload"), 0);
	return o;
}

void
api_commands_list(struct api_req *r)
{
	static const char *const q[] = {"limit", "after", "server", "batch", NULL};
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	struct api_page pg;
	json_t *items, *o;
	int64_t server, batch, last = 0;
	int n = 0, more = 0, rc;

	if (api_req_query_allow(r, q) != 0 || api_page_parse(r, &pg) != 0 ||
	    api_query_id(r, "server", &server) != 0 || api_query_id(r, "batch", &batch) != 0)
		return;
	if (s == NULL) {
		api_reply_db(r, s, "listing commands");
		return;
	}
	st = store_query(s,
			 API_COMMANDS_COLS " WHERE id > ? AND (? < 0 OR server_id = ?)"
					   " AND (? < 0 OR batch_id = ?) ORDER BY id LIMIT ?",
			 "iiiiii", pg.after, server, server, batch, batch, (int64_t)pg.limit + 1);
	if (st == NULL || (items = json_array()) == NULL) {
		store_finalize(st);
		api_reply_db(r, s, "listing commands");
		return;
	}
	while ((rc = store_step(st)) == STORE_ROW) {
		if (n == pg.limit) {
			more = 1;
			break;
		}
		if ((o = api_commands_render(st)) == NULL) {
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
		api_reply_db(r, s, "listing commands");
		return;
	}
	api_page_reply(r, items, more, last);
}

void
api_commands_get(struct api_req *r)
{
	static const char *const q[] = {NULL};
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	json_t *o = NULL;
	int64_t id;

	if (api_req_query_allow(r, q) != 0 ||
	    api_lookup(r, "command", "commands", NULL, api_req_param(r, 0), &id) != 0)
		return;
	st = store_query(s, API_COMMANDS_COLS " WHERE id = ?", "i", id);
	if (st != NULL && store_step(st) == STORE_ROW)
		o = api_commands_render(st);
	store_finalize(st);
	if (o == NULL) {
		api_reply_db(r, s, "reading the command");
		return;
	}
	api_reply_json(r, 200, o);
}

void
api_commands_output(struct api_req *r)
{
	int64_t id;

	if (api_lookup(r, "command", "commands", NULL, api_req_param(r, 0), &id) != 0)
		return;
	api_output_page(r, "command", id);
}
