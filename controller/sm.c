/*
 * sm.c: the resource state machines (server, site, deployment, key sync) as
 * tables, and the one function that moves a resource between states. Writes go
 * into the caller's transaction; jobs decide when to move, this file decides
 * whether the move is allowed.
 */
#include "sm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "buf.h"
#include "err.h"
#include "events.h"
#include "log.h"
#include "store.h"

/* The guard needs the def; guards are per machine, so each machine gets a thin wrapper. */
#define SM_CHECKLIST_GUARD(fn, def)                                                                \
	static int fn(struct store *s, int64_t id, char *why, size_t whylen)                       \
	{                                                                                          \
		return sm_guard_for(&def, s, id, why, whylen);                                     \
	}

static int sm_guard_for(const struct sm_def *def, struct store *s, int64_t id, char *why,
			size_t whylen);

/* Server: pending → creating → booting → bootstrapping → installing_agent → active. */
static const char *const sm_server_states[] = {
    "pending",		"creating", "booting",	 "bootstrapping",
    "installing_agent", "active",   "suspended", "failed",
    "deleting",		"deleted",  NULL};
static int sm_server_ready(struct store *s, int64_t id, char *why, size_t whylen);
static const struct sm_transition sm_server_tr[] = {
    {"pending", "creating", NULL},
    {"creating", "booting", NULL},
    {"booting", "bootstrapping", NULL},
    {"bootstrapping", "installing_agent", NULL},
    {"installing_agent", "active", sm_server_ready},
    {"active", "suspended", NULL},
    {"suspended", "active", NULL},
    {"pending", "failed", NULL},
    {"creating", "failed", NULL},
    {"booting", "failed", NULL},
    {"bootstrapping", "failed", NULL},
    {"installing_agent", "failed", NULL},
    {"deleting", "failed", NULL},
    /* retry resumes at the failed step's state */
    {"failed", "pending", NULL},
    {"failed", "creating", NULL},
    {"failed", "booting", NULL},
    {"failed", "bootstrapping", NULL},
    {"failed", "installing_agent", NULL},
    {"*", "deleting", NULL},
    {"deleting", "deleted", NULL},
};
const struct sm_def sm_server = {"server", "servers", sm_server_states, sm_server_tr,
				 sizeof(sm_server_tr) / sizeof(sm_server_tr[0])};
SM_CHECKLIST_GUARD(sm_server_ready, sm_server)

/* Site: pending → creating → active ⇄ inactive; deleting → deleted. */
static const char *const sm_site_states[] = {"pending", "creating", "active",  "inactive",
					     "failed",	"deleting", "deleted", NULL};
static int sm_site_ready(struct store *s, int64_t id, char *why, size_t whylen);
static const struct sm_transition sm_site_tr[] = {
    {"pending", "creating", NULL}, {"creating", "active", sm_site_ready},
    {"active", "inactive", NULL},  {"inactive", "active", sm_site_ready},
    {"pending", "failed", NULL},   {"creating", "failed", NULL},
    {"active", "failed", NULL},	   {"inactive", "failed", NULL},
    {"failed", "creating", NULL},  {"deleting", "failed", NULL},
    {"*", "deleting", NULL},	   {"deleting", "deleted", NULL},
};
const struct sm_def sm_site = {"site", "sites", sm_site_states, sm_site_tr,
			       sizeof(sm_site_tr) / sizeof(sm_site_tr[0])};
SM_CHECKLIST_GUARD(sm_site_ready, sm_site)

/* Deployment: pending → running → finished | failed | cancelled. */
static const char *const sm_deployment_states[] = {"pending", "running",   "finished",
						   "failed",  "cancelled", NULL};
static const struct sm_transition sm_deployment_tr[] = {
    {"pending", "running", NULL}, {"running", "finished", NULL},  {"running", "failed", NULL},
    {"pending", "failed", NULL},  {"pending", "cancelled", NULL}, {"running", "cancelled", NULL},
};
const struct sm_def sm_deployment = {"deployment", "deployments", sm_deployment_states,
				     sm_deployment_tr,
				     sizeof(sm_deployment_tr) / sizeof(sm_deployment_tr[0])};

/* Key sync (one key, one server, one user): pending → synced | failed. */
static const char *const sm_key_sync_states[] = {"pending",  "synced",	"failed",
						 "removing", "removed", NULL};
static const struct sm_transition sm_key_sync_tr[] = {
    {"pending", "synced", NULL},  {"pending", "failed", NULL}, {"synced", "pending", NULL},
    {"failed", "pending", NULL},  {"*", "removing", NULL},     {"removing", "removed", NULL},
    {"removing", "failed", NULL},
};
const struct sm_def sm_key_sync = {"key_sync", "server_keys", sm_key_sync_states, sm_key_sync_tr,
				   sizeof(sm_key_sync_tr) / sizeof(sm_key_sync_tr[0])};

int
sm_is_state(const struct sm_def *def, const char *state)
{
	size_t i;

	for (i = 0; state && def->states[i] != NULL; i++)
		if (strcmp(def->states[i], state) == 0)
			return 1;
	return 0;
}

static char *
sm_get(struct store *s, const struct sm_def *def, int64_t id, const char *col)
{
	char sql[160];

	snprintf(sql, sizeof(sql), "SELECT %s FROM %s WHERE id = ?", col, def->table);
	return store_text(s, sql, "i", id);
}

static const struct sm_transition *
sm_find(const struct sm_def *def, const char *from, const char *to)
{
	size_t i;

	for (i = 0; i < def->ntransitions; i++) {
		const struct sm_transition *t = &def->transitions[i];

		if (strcmp(t->to, to) != 0)
			continue;
		if (strcmp(t->from, from) == 0)
			return t;
		if (strcmp(t->from, "*") == 0 && strcmp(from, to) != 0 &&
		    strcmp(from, "deleted") != 0 && strcmp(from, "removed") != 0)
			return t;
	}
	return NULL;
}

static void
sm_event(struct store *s, const struct sm_def *def, int64_t id, const char *actor, const char *from,
	 const char *to)
{
	char kind[48], *data;
	json_t *o;

	snprintf(kind, sizeof(kind), "%s.state", def->kind);
	o = json_pack("{s:s, s:s}", "from", from ? from : "", "to", to);
	data = o ? json_dumps(o, JSON_COMPACT) : NULL;
	events_emit(s, actor, kind, def->kind, id, data);
	free(data);
	json_decref(o);
}

int
sm_transition(struct store *s, const struct sm_def *def, int64_t id, const char *to,
	      const char *actor, char *err, size_t errlen)
{
	const struct sm_transition *t;
	char sql[256], why[512];
	char *from;
	int rc = 0;

	if (!sm_is_state(def, to))
		return err_set(err, errlen, ERR_INTERNAL, "%s %lld: no state %s", def->kind,
			       (long long)id, to);
	if ((from = sm_get(s, def, id, "state")) == NULL)
		return err_set(err, errlen, ERR_NOTFOUND, "%s %lld: not found", def->kind,
			       (long long)id);
	if (strcmp(from, to) == 0)
		goto out; /* idempotent: a resumed step may ask again */
	if ((t = sm_find(def, from, to)) == NULL) {
		rc = err_set(err, errlen, ERR_CONFLICT, "%s %lld: cannot go from %s to %s",
			     def->kind, (long long)id, from, to);
		goto out;
	}
	if (t->guard && t->guard(s, id, why, sizeof(why)) != 0) {
		rc = err_set(err, errlen, ERR_CONFLICT, "%s %lld: cannot go from %s to %s: %s",
			     def->kind, (long long)id, from, to, why);
		goto out;
	}
	if (strcmp(to, "failed") == 0)
		snprintf(sql, sizeof(sql),
			 "UPDATE %s SET state = ?, failed_at = ?, updated_at = ? WHERE id = ?",
			 def->table);
	else
		snprintf(sql, sizeof(sql),
			 "UPDATE %s SET state = ?, error = NULL, failed_step = NULL,"
			 " failed_at = NULL, updated_at = ? WHERE id = ?",
			 def->table);
	if (strcmp(to, "failed") == 0)
		rc = store_exec(s, sql, "siii", to, store_now_ms(), store_now_ms(), id);
	else
		rc = store_exec(s, sql, "sii", to, store_now_ms(), id);
	if (rc != 0) {
		rc = err_set(err, errlen, ERR_DB, "%s %lld: %s", def->kind, (long long)id,
			     store_errmsg(s));
		goto out;
	}
	log_info("%s %lld: [%s] -> [%s]", def->kind, (long long)id, from, to);
	sm_event(s, def, id, actor, from, to);
out:
	free(from);
	return rc;
}

int
sm_fail(struct store *s, const struct sm_def *def, int64_t id, const char *step, const char *error,
	const char *actor)
{
	char sql[200], e[512];
	int rc;

	if ((rc = sm_transition(s, def, id, "failed", actor, e, sizeof(e))) != 0) {
		log_warnx("%s", e);
		return rc;
	}
	snprintf(sql, sizeof(sql), "UPDATE %s SET error = ?, failed_step = ? WHERE id = ?",
		 def->table);
	return store_exec(s, sql, "ssi", error, step, id);
}

int
sm_progress(struct store *s, const struct sm_def *def, int64_t id, int percent, const char *message)
{
	char sql[200], kind[48], *data;
	json_t *o;

	if (percent < 0)
		percent = 0;
	if (percent > 100)
		percent = 100;
	snprintf(sql, sizeof(sql),
		 "UPDATE %s SET progress = ?, message = ?, updated_at = ? WHERE id = ?",
		 def->table);
	if (store_exec(s, sql, "dsii", percent, message, store_now_ms(), id) != 0)
		return ERR_DB;
	snprintf(kind, sizeof(kind), "%s.progress", def->kind);
	o = json_pack("{s:i, s:s?}", "progress", percent, "message", message);
	data = o ? json_dumps(o, JSON_COMPACT) : NULL;
	events_emit(s, "system", kind, def->kind, id, data);
	free(data);
	json_decref(o);
	return 0;
}

int
sm_check(struct store *s, const struct sm_def *def, int64_t id, const char *item, int done,
	 int required, const char *detail)
{
	json_t *list, *it = NULL, *name;
	char *text, *out, sql[160];
	size_t i;
	int rc;

	text = sm_get(s, def, id, "checklist");
	list = text ? json_loads(text, 0, NULL) : NULL;
	free(text);
	if (!json_is_array(list)) {
		json_decref(list);
		list = json_array();
	}
	json_array_foreach(list, i, it)
	{
		name = json_object_get(it, "item");
		if (json_is_string(name) && strcmp(json_string_value(name), item) == 0)
			break;
	}
	if (i == json_array_size(list)) {
		it = json_object();
		json_array_append_new(list, it);
	}
	json_object_set_new(it, "item", json_string(item));
	json_object_set_new(it, "done", json_boolean(done));
	json_object_set_new(it, "required", json_boolean(required));
	json_object_set_new(it, "detail", detail ? json_string(detail) : json_null());
	out = json_dumps(list, JSON_COMPACT);
	json_decref(list);
	if (out == NULL)
		return ERR_NOMEM;
	snprintf(sql, sizeof(sql), "UPDATE %s SET checklist = ?, updated_at = ? WHERE id = ?",
		 def->table);
	rc = store_exec(s, sql, "sii", out, store_now_ms(), id);
	free(out);
	return rc;
}

char *
sm_missing(struct store *s, const struct sm_def *def, int64_t id)
{
	json_t *list, *it, *detail;
	struct buf b;
	char *text;
	size_t i;

	buf_init(&b, 8192);
	text = sm_get(s, def, id, "checklist");
	list = text ? json_loads(text, 0, NULL) : NULL;
	free(text);
	json_array_foreach(list, i, it)
	{
		if (json_is_true(json_object_get(it, "done")) ||
		    !json_is_true(json_object_get(it, "required")))
			continue;
		if (b.len > 0)
			buf_puts(&b, ", ");
		buf_puts(&b, json_string_value(json_object_get(it, "item")));
		detail = json_object_get(it, "detail");
		if (json_is_string(detail))
			buf_printf(&b, " (%s)", json_string_value(detail));
	}
	json_decref(list);
	return buf_take(&b);
}

static int
sm_guard_for(const struct sm_def *def, struct store *s, int64_t id, char *why, size_t whylen)
{
	char *missing = sm_missing(s, def, id);
	int rc = 0;

	if (missing && missing[0] != '\0')
		rc = err_set(why, whylen, ERR_CONFLICT, "missing: %s", missing);
	free(missing);
	return rc;
}
