/*
 * api_json.h: what the resource handlers (api_*.c) see of the HTTP layer: the request
 * (path parameters, query, parsed body, caller), replies (JSON, errors, streams),
 * strict body validation against a field table, pagination, and rendering store rows
 * as JSON. api.c implements the request and reply part (it alone knows
 * libmicrohttpd); api_json.c implements validation, pagination and rendering.
 * Handlers run on one of a few pool threads shared by every connection: they must not
 * wait for anything slow (a long-poll parks with api_req_wait; a stream returns 0).
 */
#ifndef STOKE_API_JSON_H
#define STOKE_API_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

struct api_req;
struct api_stream;
struct store;
struct store_stmt;

/* A handler must reply exactly once (api_reply_json, api_reply_error, api_reply_stream). */
typedef void (*api_handler_fn)(struct api_req *r);

/* ---- the request (api.c) ---- */

/* The calling thread's store connection; NULL only when it cannot be opened. */
struct store *api_req_store(struct api_req *r);
/* Path parameter i (":id" segments in route order), percent-decoded; NULL if none. */
const char *api_req_param(struct api_req *r, int i);
/* Query parameter, percent-decoded; NULL when absent. */
const char *api_req_query(struct api_req *r, const char *name);
/* Request header (case-insensitive name); NULL when absent. */
const char *api_req_header(struct api_req *r, const char *name);
/* The body parsed as a JSON object (borrowed), or NULL when the request had none. */
json_t *api_req_body(struct api_req *r);
/* The body as received (NUL-terminated, at most the body limit; "" when none). For routes
 * that verify a signature over the raw bytes (webhooks, route flag API_R_RAW in api.c). */
const char *api_req_raw_body(struct api_req *r, size_t *len);
/* "token:<name>" of the authenticated caller ("anonymous" on public routes). */
const char *api_req_actor(struct api_req *r);
int64_t api_req_token_id(struct api_req *r);
/* When the request's headers had arrived (time_mono_ms): where a long-poll's wait starts. */
int64_t api_req_started_ms(struct api_req *r);
/*
 * Long-polls: instead of replying, a handler may park the request without holding a
 * thread, to be run again from the start once an event newer than after_event_id may exist
 * (events_wait's rule, spurious wake-ups included; -1: events do not matter) or at
 * wake_at_ms (time_mono_ms), whichever comes first, or when the server stops. The handler
 * must then return without replying.
 */
void api_req_wait(struct api_req *r, int64_t after_event_id, int64_t wake_at_ms);
/* Checks that every query parameter is in names (NULL-terminated), appears once and has
 * a value. Returns 0, or replies 400 invalid_parameter and returns -1. */
int api_req_query_allow(struct api_req *r, const char *const *names);

/* ---- replies (api.c) ---- */

/* Sends body (ownership taken, may be NULL on allocation failure -> 500). */
void api_reply_json(struct api_req *r, int status, json_t *body);
/* {"error":{"code","message"}} */
void api_reply_error(struct api_req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Maps an ERR_* code to a status and code (not found 404, conflict/exists 409, inval 400
 * invalid_field, auth 401, the rest 500 internal) with msg as the message. */
void api_reply_err(struct api_req *r, int code, const char *msg);

/*
 * Streams a body of unknown length (chunked). fn fills at most max bytes of buf and
 * returns how many (> 0), 0 when it has nothing to send now, or API_STREAM_END /
 * API_STREAM_ERROR. It must not block: before returning 0 it calls api_stream_wait to say
 * when to be called again (else in 1 s); the connection is parked meanwhile. A stream
 * counts against its token's cap (429 too_many_streams past it) and ends when the token is
 * revoked. free_fn(cls) runs once when the stream ends, whatever the reason; on failure to
 * reply it runs before api_reply_stream returns.
 */
#define API_STREAM_END ((ssize_t)-1)
#define API_STREAM_ERROR ((ssize_t)-2)
typedef ssize_t (*api_stream_fn)(struct api_stream *s, void *cls, char *buf, size_t max);
void api_reply_stream(struct api_req *r, const char *content_type, api_stream_fn fn, void *cls,
		      void (*free_fn)(void *));
/* 0 while the stream may go on, API_STREAM_STOPPING when the daemon stops,
 * API_STREAM_HUNGUP when the peer has hung up. Does not block. */
#define API_STREAM_STOPPING 1
#define API_STREAM_HUNGUP 2
int api_stream_closing(struct api_stream *s);
/* Call fn again once an event newer than after_event_id may exist (-1: events do not
 * matter) or at wake_at_ms (time_mono_ms), whichever comes first; the peer hanging up or
 * the server stopping also calls it. For fn's next return of 0. */
void api_stream_wait(struct api_stream *s, int64_t after_event_id, int64_t wake_at_ms);

/* ---- validation (api_json.c) ---- */

enum api_json_type {
	API_JSON_STRING = 1 << 0,
	API_JSON_INTEGER = 1 << 1,
	API_JSON_BOOL = 1 << 2,
	API_JSON_ARRAY = 1 << 3,
	API_JSON_OBJECT = 1 << 4,
};

/*
 * One accepted body field. check (may be NULL) runs after the type test; it returns 0,
 * or ERR_INVAL with the whole message in err, starting with the field name
 * ("tags[2]: must start with a letter or digit").
 */
struct api_field {
	const char *name;
	unsigned types; /* API_JSON_* mask */
	int required;
	int (*check)(const char *field, const json_t *v, char *err, size_t errlen);
};

/*
 * Checks obj (NULL counts as {}) against fields, a table ended by a row with a NULL
 * name: unknown_field, then missing_field, then invalid_field (type, then check), each
 * naming the field. Returns 0, or replies 400 and returns -1.
 */
int api_json_fields(struct api_req *r, const json_t *obj, const struct api_field *fields);

/* Checks for api_field.check. Strings: */
int api_check_server_name(const char *field, const json_t *v, char *err, size_t errlen);
int api_check_domain(const char *field, const json_t *v, char *err, size_t errlen);
int api_check_branch(const char *field, const json_t *v, char *err, size_t errlen);
int api_check_user(const char *field, const json_t *v, char *err, size_t errlen);
int api_check_repo_url(const char *field, const json_t *v, char *err, size_t errlen);
int api_check_label(const char *field, const json_t *v, char *err, size_t errlen);
/* [a-z0-9][a-z0-9._-]{0,63}: provider regions, sizes, images. */
int api_check_slug(const char *field, const json_t *v, char *err, size_t errlen);
int api_check_ipv4(const char *field, const json_t *v, char *err, size_t errlen);
int api_check_port(const char *field, const json_t *v, char *err, size_t errlen);
/* Arrays: at most 32 distinct tags (names_tag) / domains (wildcards allowed). */
int api_check_tags(const char *field, const json_t *v, char *err, size_t errlen);
int api_check_domains(const char *field, const json_t *v, char *err, size_t errlen);

/* ---- query parameters and pagination (api_json.c) ---- */

#define API_LIMIT_DEFAULT 50
#define API_LIMIT_MAX 200

struct api_page {
	int limit;     /* 1..200 */
	int64_t after; /* items with id (or seq) > after */
};

/* Parses a decimal integer in [min, max] without sign, spaces or leading zeros.
 * Returns 0 or -1. */
int api_parse_int(const char *s, int64_t min, int64_t max, int64_t *out);
/* ?limit= and ?after=; replies 400 invalid_parameter and returns -1 when bad. */
int api_page_parse(struct api_req *r, struct api_page *p);
/* Integer query parameter (absent: *out = -1). Replies 400 and returns -1 when bad. */
int api_query_id(struct api_req *r, const char *name, int64_t *out);
/* Path parameter i as a positive id. Replies 400 invalid_parameter and returns -1
 * when it is not one ("what" names the resource: "job id"). */
int api_param_id(struct api_req *r, int i, const char *what, int64_t *out);
/*
 * Finds the row of table (a constant) named by ref: a positive id, else the value of
 * name_col (may be NULL: ids only). Replies 404 not_found ("server web-9: not found")
 * or 500 and returns -1 when there is none.
 */
int api_lookup(struct api_req *r, const char *kind, const char *table, const char *name_col,
	       const char *ref, int64_t *id);
/* Replies 500 internal naming what failed and the database's words. */
void api_reply_db(struct api_req *r, struct store *s, const char *what);
/* Replies 200 {"items": items, "next": last or null} (items taken). */
void api_page_reply(struct api_req *r, json_t *items, int more, int64_t last);

/* ---- rendering (api_json.c) ---- */

/*
 * The current row as an object keyed by column name: integers and text as they are,
 * NULL as null; columns named *_at, time, last_seen and run_after become ISO 8601
 * strings; checklist, facts, data, payload, result and aliases are parsed as JSON;
 * zero_downtime, acked and cancel_requested become booleans.
 */
json_t *api_json_row(struct store_stmt *st);
/* Epoch ms as an ISO 8601 string. */
json_t *api_json_time(int64_t ms);

/* ---- the handlers, one file per resource family; routes are in api.c ---- */

void api_health_get(struct api_req *r);
void api_servers_list(struct api_req *r);
void api_servers_get(struct api_req *r);
void api_servers_create(struct api_req *r);
void api_servers_patch(struct api_req *r);
void api_servers_delete(struct api_req *r);
void api_servers_retry(struct api_req *r);
void api_servers_log(struct api_req *r);
void api_sites_list(struct api_req *r);
void api_sites_get(struct api_req *r);
void api_sites_create(struct api_req *r);
void api_sites_activate(struct api_req *r);
void api_sites_deactivate(struct api_req *r);
void api_sites_delete(struct api_req *r);
void api_sites_rollback(struct api_req *r);
void api_sites_deploy(struct api_req *r);
void api_sites_script(struct api_req *r);
void api_sites_env(struct api_req *r);
void api_sites_known_hosts(struct api_req *r);
void api_deployments_cancel(struct api_req *r);
void api_hooks_site(struct api_req *r);
void api_hooks_deploy(struct api_req *r);
void api_keys_list(struct api_req *r);
void api_keys_get(struct api_req *r);
void api_keys_create(struct api_req *r);
void api_keys_attach(struct api_req *r);
void api_keys_detach(struct api_req *r);
void api_keys_revoke(struct api_req *r);
void api_keys_servers(struct api_req *r);
void api_keys_drift(struct api_req *r);
void api_keys_drift_check(struct api_req *r);
void api_keys_sync(struct api_req *r);
void api_batches_list(struct api_req *r);
void api_batches_create(struct api_req *r);
void api_batches_get(struct api_req *r);
void api_batches_output(struct api_req *r);
void api_batches_cancel(struct api_req *r);
void api_deployments_list(struct api_req *r);
void api_deployments_get(struct api_req *r);
void api_deployments_log(struct api_req *r);
void api_commands_list(struct api_req *r);
void api_commands_get(struct api_req *r);
void api_commands_output(struct api_req *r);
void api_commands_create(struct api_req *r);
void api_jobs_list(struct api_req *r);
void api_jobs_get(struct api_req *r);
void api_jobs_cancel(struct api_req *r);
void api_jobs_retry(struct api_req *r);
void api_tokens_list(struct api_req *r);
void api_tokens_create(struct api_req *r);
void api_tokens_revoke(struct api_req *r);
void api_audit_list(struct api_req *r);
void api_events_get(struct api_req *r);

/* Shared by keys and batches (api_keys.c): the body's server selector, one of "servers"
 * (ids and names), "tag" or "all": true, as distinct ids in *ids (malloc'd). With required
 * 0 and none given, *n = 0. Replies 400 and returns -1 when it is bad or matches nothing. */
int api_fleet_select(struct api_req *r, const json_t *body, int required, int64_t **ids, size_t *n);

/* Shared by deployments and commands: output_lines of one owner as a page. */
void api_output_page(struct api_req *r, const char *owner_kind, int64_t owner_id);

#endif
