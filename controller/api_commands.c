/*
 * api_commands.c: /api/v1/commands: list, get, output, and queueing one command for one
 * server (the hub delivers it; agentcmd.c checks payloads); secrets in payloads are
 * redacted. Fleet batches are in api_batches.c. Routed from api.c.
 */
#include "api_json.h"

#include <stdlib.h>
#include <string.h>

#include "agentcmd.h"
#include "commands.h"
#include "err.h"
#include "events.h"
#include "hub.h"
#include "log.h"
#include "store.h"

#define API_COMMANDS_COLS                                                                          \
	"SELECT id, server_id, batch_id, kind, payload, state, acked, exit_code, signal,"          \
	" error, result, created_at, sent_at, started_at, finished_at FROM commands"

static json_t *
api_commands_render(struct store_stmt *st)
{
	json_t *o = api_json_row(st);

	if (o != NULL)
		commands_redact(json_object_get(o, "payload"), "(redacted)");
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

static int
api_commands_check_server(const char *field, const json_t *v, char *err, size_t errlen)
{
	if (json_is_integer(v)) {
		if (json_integer_value(v) < 1)
			return err_set(err, errlen, ERR_INVAL, "%s: ids are positive", field);
		return 0;
	}
	return api_check_server_name(field, v, err, errlen);
}

static int
api_commands_check_kind(const char *field, const json_t *v, char *err, size_t errlen)
{
	if (!agentcmd_known(json_string_value(v)))
		return err_set(err, errlen, ERR_INVAL,
			       "%s: must be exec, script, write_file, nginx_site, git_checkout, "
			       "authorized_keys, service or facts",
			       field);
	return 0;
}

static const struct api_field api_commands_create_fields[] = {
    {"server", API_JSON_STRING | API_JSON_INTEGER, 1, api_commands_check_server},
    {"kind", API_JSON_STRING, 1, api_commands_check_kind},
    {"payload", API_JSON_OBJECT, 0, NULL},
    {NULL, 0, 0, NULL},
};

/* The server named by the body's "server" (id or name): its id and state, or a reply. */
static int
api_commands_server(struct api_req *r, struct store *s, const json_t *ref, int64_t *id)
{
	struct store_stmt *st;
	char *state = NULL;
	int rc;

	if (json_is_integer(ref))
		st = store_query(s, "SELECT id, state FROM servers WHERE id = ?", "i",
				 (int64_t)json_integer_value(ref));
	else
		st = store_query(s, "SELECT id, state FROM servers WHERE name = ?", "s",
				 json_string_value(ref));
	if (st == NULL) {
		api_reply_db(r, s, "queueing a command");
		return -1;
	}
	if ((rc = store_step(st)) == STORE_ROW) {
		*id = store_col_int(st, 0);
		state = strdup(store_col_text(st, 1));
	}
	store_finalize(st);
	if (rc < 0 || (rc == STORE_ROW && state == NULL)) {
		api_reply_db(r, s, "queueing a command");
		return -1;
	}
	if (rc != STORE_ROW) {
		if (json_is_integer(ref))
			api_reply_error(r, 400, "invalid_field", "server: no server with id %lld",
					(long long)json_integer_value(ref));
		else
			api_reply_error(r, 400, "invalid_field", "server: no server named %s",
					json_string_value(ref));
		return -1;
	}
	if (strcmp(state, "deleting") == 0 || strcmp(state, "deleted") == 0) {
		api_reply_error(r, 409, "conflict", "server %lld is %s", (long long)*id, state);
		free(state);
		return -1;
	}
	free(state);
	return 0;
}

void
api_commands_create(struct api_req *r)
{
	static const char *const q[] = {NULL};
	json_t *body = api_req_body(r), *o = NULL, *payload, *ev;
	struct store *s = api_req_store(r);
	struct store_stmt *st;
	char err[512], *text = NULL, *normal = NULL, *data = NULL, *shown = NULL, *sealed = NULL;
	const char *kind;
	int64_t server, id;
	int rc;

	if (api_req_query_allow(r, q) != 0 ||
	    api_json_fields(r, body, api_commands_create_fields) != 0)
		return;
	if (s == NULL) {
		api_reply_db(r, s, "queueing a command");
		return;
	}
	kind = json_string_value(json_object_get(body, "kind"));
	payload = json_object_get(body, "payload");
	if (payload != NULL && (text = json_dumps(payload, JSON_COMPACT)) == NULL) {
		api_reply_error(r, 500, "internal", "out of memory");
		return;
	}
	rc = agentcmd_validate(kind, text ? text : "{}", &normal, err, sizeof(err));
	free(text);
	if (rc == ERR_INVAL) {
		api_reply_error(r, 400, "invalid_field", "payload.%s", err);
		return;
	}
	if (rc != 0) {
		api_reply_err(r, rc, err);
		return;
	}
	if (api_commands_server(r, s, json_object_get(body, "server"), &server) != 0)
		goto out;
	if ((ev = json_pack("{s:I, s:s}", "server_id", (json_int_t)server, "kind", kind)) != NULL)
		data = json_dumps(ev, JSON_COMPACT);
	json_decref(ev);
	if (data == NULL || commands_payload_seal(normal, &shown, &sealed, err, sizeof(err)) != 0 ||
	    store_begin(s) != 0)
		goto fail;
	if (store_exec(s,
		       "INSERT INTO commands (server_id, kind, payload, payload_sealed, state,"
		       " created_at) VALUES (?, ?, ?, ?, 'queued', ?)",
		       "isssi", server, kind, shown, sealed, store_now_ms()) != 0)
		goto fail_tx;
	id = store_last_id(s);
	if (events_emit(s, api_req_actor(r), "command.queued", "command", id, data) != 0 ||
	    store_commit(s) != 0)
		goto fail_tx;
	events_notify();
	hub_notify();
	log_info("command %lld [%s] server %lld: queued by %s", (long long)id, kind,
		 (long long)server, api_req_actor(r));
	st = store_query(s, API_COMMANDS_COLS " WHERE id = ?", "i", id);
	if (st != NULL && store_step(st) == STORE_ROW)
		o = api_commands_render(st);
	store_finalize(st);
	if (o == NULL) /* queued all the same: say so */
		o = json_pack("{s:I, s:s}", "id", (json_int_t)id, "state", "queued");
	api_reply_json(r, 202, json_pack("{s:o}", "command", o));
	goto out;
fail_tx:
	api_reply_db(r, s, "queueing a command");
	store_rollback(s);
	goto out;
fail:
	api_reply_db(r, s, "queueing a command");
out:
	free(shown);
	free(sealed);
	free(normal);
	free(data);
}
