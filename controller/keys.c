/*
 * keys.c: attach, detach and revoke SSH keys across servers; the keys.sync job that fans
 * out one authorized_keys command per (server, user) at once and follows each to its end;
 * the keys.drift job that asks agents for reports and records drift; the hub's hello hook.
 * The API (api_keys.c) validates and calls in; agents are reached only through commands.
 */
#include "keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "err.h"
#include "events.h"
#include "hub.h"
#include "jobs.h"
#include "log.h"
#include "sm.h"
#include "sshkey.h"
#include "store.h"
#include "timeutil.h"

#define KEYS_PICKUP_MS 15000	    /* an online agent that takes no command in this is offline */
#define KEYS_RESULT_MS 60000	    /* an agent that took a command answers within this */
#define KEYS_RESENDS 5		    /* desired set changed while a command ran: send again */
#define KEYS_DRIFT_EVERY_MS 600000L /* periodic drift check (settings: keys.drift_interval_ms) */
#define KEYS_MAX_TARGETS 100000

/* ---- desired state ---- */

/* The lines of the desired set of (server, user), in key order. */
static json_t *
keys_desired(struct store *s, int64_t server, const char *user)
{
	struct store_stmt *st;
	json_t *a = json_array();
	int rc;

	st = store_query(s,
			 "SELECT k.public_key FROM server_keys sk JOIN ssh_keys k ON k.id ="
			 " sk.key_id WHERE sk.server_id = ? AND sk.user = ? AND sk.want = 1 AND"
			 " k.revoked_at IS NULL ORDER BY k.id",
			 "is", server, user);
	if (st == NULL || a == NULL) {
		store_finalize(st);
		json_decref(a);
		return NULL;
	}
	while ((rc = store_step(st)) == STORE_ROW)
		json_array_append_new(a, json_string(store_col_text(st, 0)));
	store_finalize(st);
	if (rc != STORE_DONE) {
		json_decref(a);
		return NULL;
	}
	return a;
}

static int
keys_has_line(const json_t *a, const char *line)
{
	size_t i;
	json_t *v;

	json_array_foreach(a, i, v) if (json_is_string(v) &&
					strcmp(json_string_value(v), line) == 0) return 1;
	return 0;
}

/* 1 when a and b hold the same lines (in any order). */
static int
keys_same_set(const json_t *a, const json_t *b)
{
	size_t i;
	json_t *v;

	if (json_array_size(a) != json_array_size(b))
		return 0;
	json_array_foreach(a, i, v) if (!json_is_string(v) ||
					!keys_has_line(b, json_string_value(v))) return 0;
	return 1;
}

/* Moves a server_keys row to `to` through the transitions sm_key_sync allows. */
static void
keys_row_to(struct store *s, int64_t id, const char *to, const char *error, const char *actor)
{
	char *from = store_text(s, "SELECT state FROM server_keys WHERE id = ?", "i", id);
	char e[512];

	if (from == NULL)
		return;
	if (strcmp(to, "synced") == 0 && strcmp(from, "failed") == 0)
		sm_transition(s, &sm_key_sync, id, "pending", actor, e, sizeof(e));
	if (strcmp(to, "removed") == 0 && strcmp(from, "removing") != 0)
		sm_transition(s, &sm_key_sync, id, "removing", actor, e, sizeof(e));
	if (strcmp(to, "failed") == 0) {
		if (strcmp(from, "synced") == 0)
			sm_transition(s, &sm_key_sync, id, "pending", actor, e, sizeof(e));
		if (strcmp(from, "failed") != 0)
			sm_fail(s, &sm_key_sync, id, "sync", error, actor);
		else
			store_exec(s,
				   "UPDATE server_keys SET error = ?, updated_at = ? WHERE id = ?",
				   "sii", error, store_now_ms(), id);
	} else if (sm_transition(s, &sm_key_sync, id, to, actor, e, sizeof(e)) != 0) {
		log_warnx("keys: %s", e);
	}
	free(from);
}

/* ---- queueing jobs ---- */

static int
keys_enqueue(struct store *s, const char *type, const int64_t *servers, size_t n, const char *user,
	     int force, const char *actor, const char *rkind, int64_t rid, int64_t run_after,
	     int64_t *job, char *err, size_t errlen)
{
	struct jobs_enqueue_opts o = {0};
	json_t *p = json_object(), *a = NULL;
	char *text = NULL;
	size_t i;
	int rc;

	if (p == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	if (n > 0) {
		a = json_array();
		for (i = 0; a != NULL && i < n; i++)
			json_array_append_new(a, json_integer((json_int_t)servers[i]));
		json_object_set_new(p, "servers", a);
	}
	if (user != NULL)
		json_object_set_new(p, "user", json_string(user));
	if (force)
		json_object_set_new(p, "force", json_true());
	if (run_after > 0)
		json_object_set_new(p, "periodic", json_true());
	if ((text = json_dumps(p, JSON_COMPACT)) == NULL) {
		json_decref(p);
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	}
	json_decref(p);
	o.actor = actor;
	o.resource_kind = rkind;
	o.resource_id = rid;
	o.run_after_ms = run_after;
	rc = jobs_enqueue(s, type, text, &o, job, err, errlen);
	free(text);
	return rc;
}

static int
keys_key_state(struct store *s, int64_t key_id, char *err, size_t errlen)
{
	int64_t revoked = store_int(
	    s, -1, "SELECT revoked_at IS NOT NULL FROM ssh_keys WHERE id = ?", "i", key_id);

	if (revoked < 0)
		return err_set(err, errlen, ERR_NOTFOUND, "key %lld: not found", (long long)key_id);
	if (revoked)
		return err_set(err, errlen, ERR_CONFLICT,
			       "key %lld is revoked: it cannot be attached again",
			       (long long)key_id);
	return 0;
}

static void
keys_event(struct store *s, const char *actor, const char *kind, int64_t key_id, const char *user,
	   size_t n, int64_t job)
{
	json_t *o = json_pack("{s:s?, s:I, s:I}", "user", user, "servers", (json_int_t)n, "job",
			      (json_int_t)job);
	char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;

	events_emit(s, actor, kind, "key", key_id, text);
	free(text);
	json_decref(o);
}

int
keys_attach(struct store *s, int64_t key_id, const char *user, const int64_t *servers, size_t n,
	    const char *actor, int64_t *job, char *err, size_t errlen)
{
	struct store_stmt *st;
	int64_t now = store_now_ms(), row;
	size_t i;
	int rc, want = 0, found;
	char *state = NULL;

	*job = 0;
	if (store_begin(s) != 0)
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	if ((rc = keys_key_state(s, key_id, err, errlen)) != 0)
		goto fail;
	for (i = 0; i < n; i++) {
		st = store_query(s,
				 "SELECT id, want, state FROM server_keys WHERE key_id = ? AND"
				 " server_id = ? AND user = ?",
				 "iis", key_id, servers[i], user);
		found = st != NULL && store_step(st) == STORE_ROW;
		row = found ? store_col_int(st, 0) : 0;
		if (found) {
			want = (int)store_col_int(st, 1);
			free(state);
			state = strdup(store_col_text(st, 2));
		}
		store_finalize(st);
		if (found && want && state && strcmp(state, "failed") == 0)
			keys_row_to(s, row, "pending", NULL, actor);
		if (found && want)
			continue; /* attached already: the sync below checks it */
		if (found && store_exec(s, "DELETE FROM server_keys WHERE id = ?", "i", row) != 0)
			goto db;
		if (store_exec(s,
			       "INSERT INTO server_keys (key_id, server_id, user, want, state,"
			       " message, created_at, updated_at) VALUES (?, ?, ?, 1, 'pending',"
			       " 'waiting for the sync job', ?, ?)",
			       "iisii", key_id, servers[i], user, now, now) != 0)
			goto db;
	}
	if ((rc = keys_enqueue(s, "keys.sync", servers, n, user, 0, actor, "key", key_id, 0, job,
			       err, errlen)) != 0)
		goto fail;
	keys_event(s, actor, "key.attached", key_id, user, n, *job);
	if (store_commit(s) != 0)
		goto db;
	free(state);
	log_info("key %lld: attached for %s on %zu server(s) by %s; job %lld", (long long)key_id,
		 user, n, actor, (long long)*job);
	return 0;
db:
	rc = err_set(err, errlen, ERR_DB, "attaching key %lld: %s", (long long)key_id,
		     store_errmsg(s));
fail:
	free(state);
	store_rollback(s);
	*job = 0;
	return rc;
}

/* Marks rows of key_id (all, or those of user on servers) for removal; returns how many. */
static int
keys_unwant(struct store *s, int64_t key_id, const char *user, const int64_t *servers, size_t n,
	    const char *actor, json_t *touched, size_t *count)
{
	struct store_stmt *st;
	int64_t ids[512];
	size_t m, i, k;
	int rc;

	*count = 0;
	for (k = 0; k < (servers ? n : 1); k++) {
		do {
			if (servers)
				st = store_query(
				    s,
				    "SELECT id, server_id FROM server_keys WHERE key_id = ?"
				    " AND server_id = ? AND user = ? AND want = 1 LIMIT 512",
				    "iis", key_id, servers[k], user);
			else
				st = store_query(
				    s,
				    "SELECT id, server_id FROM server_keys WHERE key_id = ?"
				    " AND want = 1 LIMIT 512",
				    "i", key_id);
			if (st == NULL)
				return ERR_DB;
			m = 0;
			while ((rc = store_step(st)) == STORE_ROW && m < 512) {
				ids[m++] = store_col_int(st, 0);
				if (!servers)
					json_array_append_new(touched,
							      json_integer(store_col_int(st, 1)));
			}
			store_finalize(st);
			if (rc < 0)
				return ERR_DB;
			for (i = 0; i < m; i++) {
				if (store_exec(s,
					       "UPDATE server_keys SET want = 0, message = 'waiting"
					       " for the sync job', updated_at = ? WHERE id = ?",
					       "ii", store_now_ms(), ids[i]) != 0)
					return ERR_DB;
				keys_row_to(s, ids[i], "removing", NULL, actor);
			}
			*count += m;
		} while (m == 512);
	}
	return 0;
}

int
keys_detach(struct store *s, int64_t key_id, const char *user, const int64_t *servers, size_t n,
	    const char *actor, int64_t *job, char *err, size_t errlen)
{
	size_t count;
	int rc;

	*job = 0;
	if (store_begin(s) != 0)
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	if (store_int(s, 0, "SELECT count(*) FROM ssh_keys WHERE id = ?", "i", key_id) == 0) {
		rc = err_set(err, errlen, ERR_NOTFOUND, "key %lld: not found", (long long)key_id);
		goto fail;
	}
	if (keys_unwant(s, key_id, user, servers, n, actor, NULL, &count) != 0)
		goto db;
	if (count == 0) {
		rc = err_set(err, errlen, ERR_NOTFOUND,
			     "key %lld is not attached for %s on any of those servers",
			     (long long)key_id, user);
		goto fail;
	}
	if ((rc = keys_enqueue(s, "keys.sync", servers, n, user, 0, actor, "key", key_id, 0, job,
			       err, errlen)) != 0)
		goto fail;
	keys_event(s, actor, "key.detached", key_id, user, count, *job);
	if (store_commit(s) != 0)
		goto db;
	log_info("key %lld: detached for %s on %zu server(s) by %s; job %lld", (long long)key_id,
		 user, count, actor, (long long)*job);
	return 0;
db:
	rc = err_set(err, errlen, ERR_DB, "detaching key %lld: %s", (long long)key_id,
		     store_errmsg(s));
fail:
	store_rollback(s);
	*job = 0;
	return rc;
}

int
keys_revoke(struct store *s, int64_t key_id, const char *actor, int64_t *job, char *err,
	    size_t errlen)
{
	json_t *touched = json_array();
	int64_t *ids = NULL;
	size_t count, n, i;
	int rc;

	*job = 0;
	if (touched == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	if (store_begin(s) != 0) {
		json_decref(touched);
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	}
	if ((rc = keys_key_state(s, key_id, err, errlen)) != 0) {
		if (rc == ERR_CONFLICT)
			rc = err_set(err, errlen, ERR_CONFLICT, "key %lld is revoked already",
				     (long long)key_id);
		goto fail;
	}
	if (store_exec(s, "UPDATE ssh_keys SET revoked_at = ? WHERE id = ?", "ii", store_now_ms(),
		       key_id) != 0 ||
	    keys_unwant(s, key_id, NULL, NULL, 0, actor, touched, &count) != 0)
		goto db;
	/* Rows that were failing to be removed are retried too. */
	if (store_exec(s,
		       "UPDATE server_keys SET message = 'waiting for the sync job' WHERE key_id"
		       " = ? AND want = 0 AND state != 'removed'",
		       "i", key_id) != 0)
		goto db;
	n = json_array_size(touched);
	if ((ids = calloc(n ? n : 1, sizeof(*ids))) == NULL) {
		rc = err_set(err, errlen, ERR_NOMEM, "out of memory");
		goto fail;
	}
	for (i = 0; i < n; i++)
		ids[i] = json_integer_value(json_array_get(touched, i));
	if (n > 0 && (rc = keys_enqueue(s, "keys.sync", ids, n, NULL, 0, actor, "key", key_id, 0,
					job, err, errlen)) != 0)
		goto fail;
	keys_event(s, actor, "key.revoked", key_id, NULL, count, *job);
	if (store_commit(s) != 0)
		goto db;
	log_info("key %lld: revoked by %s; removing it from %zu server(s), job %lld",
		 (long long)key_id, actor, count, (long long)*job);
	free(ids);
	json_decref(touched);
	return 0;
db:
	rc = err_set(err, errlen, ERR_DB, "revoking key %lld: %s", (long long)key_id,
		     store_errmsg(s));
fail:
	store_rollback(s);
	free(ids);
	json_decref(touched);
	*job = 0;
	return rc;
}

int
keys_sync(struct store *s, const int64_t *servers, size_t n, const char *actor, int64_t *job,
	  char *err, size_t errlen)
{
	int rc;

	*job = 0;
	if (store_begin(s) != 0)
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	if ((rc = keys_enqueue(s, "keys.sync", servers, n, NULL, 1, actor, NULL, 0, 0, job, err,
			       errlen)) != 0 ||
	    (rc = store_commit(s)) != 0) {
		store_rollback(s);
		return rc == ERR_DB || rc < 0 ? err_set(err, errlen, ERR_DB, "%s", store_errmsg(s))
					      : rc;
	}
	return 0;
}

int
keys_drift_check(struct store *s, const int64_t *servers, size_t n, const char *actor, int64_t *job,
		 char *err, size_t errlen)
{
	int rc;

	*job = 0;
	if (store_begin(s) != 0)
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	if ((rc = keys_enqueue(s, "keys.drift", servers, n, NULL, 0, actor, NULL, 0, 0, job, err,
			       errlen)) != 0 ||
	    (rc = store_commit(s)) != 0) {
		store_rollback(s);
		return rc == ERR_DB || rc < 0 ? err_set(err, errlen, ERR_DB, "%s", store_errmsg(s))
					      : rc;
	}
	return 0;
}

/* ---- the jobs ---- */

enum keys_tstate { KT_NEW, KT_SENT, KT_DONE };
enum keys_outcome { KO_NONE, KO_OK, KO_OFFLINE, KO_FAILED };

struct keys_target {
	int64_t server;
	char user[40];
	int64_t cmd;
	int64_t sent_ms; /* monotonic: when queued (or when this attempt found it) */
	int acked;
	int resends;
	enum keys_tstate st;
	enum keys_outcome out;
};

struct keys_run {
	struct job_ctx *ctx;
	struct store *s;
	int drift; /* keys.drift: report only */
	struct keys_target *t;
	size_t n;
};

static int
keys_targets(struct keys_run *r, char *err, size_t errlen)
{
	json_t *p = json_loads(job_payload(r->ctx), 0, NULL);
	json_t *servers = json_object_get(p, "servers");
	const char *user = json_string_value(json_object_get(p, "user"));
	int force = json_is_true(json_object_get(p, "force")) || r->drift;
	char *stext = servers ? json_dumps(servers, JSON_COMPACT) : NULL, key[96], *known;
	struct store_stmt *st;
	struct keys_target *v;
	size_t cap = 0;
	int rc;

	st = store_query(r->s,
			 "SELECT DISTINCT server_id, user FROM server_keys WHERE (?1 IS NULL OR"
			 " server_id IN (SELECT value FROM json_each(?1))) AND (?2 IS NULL OR"
			 " user = ?2) AND (?3 OR (want = 1 AND state != 'synced') OR (want = 0"
			 " AND state != 'removed')) ORDER BY server_id, user",
			 "ssd", stext, user, force);
	free(stext);
	json_decref(p);
	if (st == NULL)
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(r->s));
	while ((rc = store_step(st)) == STORE_ROW && r->n < KEYS_MAX_TARGETS) {
		if (r->n == cap) {
			cap = cap ? cap * 2 : 16;
			if ((v = realloc(r->t, cap * sizeof(*v))) == NULL) {
				store_finalize(st);
				return err_set(err, errlen, ERR_NOMEM, "out of memory");
			}
			r->t = v;
		}
		v = &r->t[r->n++];
		memset(v, 0, sizeof(*v));
		v->server = store_col_int(st, 0);
		snprintf(v->user, sizeof(v->user), "%s", store_col_text(st, 1));
	}
	store_finalize(st);
	if (rc < 0)
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(r->s));
	/* Commands this job queued before a crash: wait for them, do not send again. */
	for (size_t i = 0; i < r->n; i++) {
		snprintf(key, sizeof(key), "cmd:%lld:%s", (long long)r->t[i].server, r->t[i].user);
		if ((known = job_data_get(r->ctx, key)) != NULL) {
			r->t[i].cmd = strtoll(known, NULL, 10);
			r->t[i].st = r->t[i].cmd > 0 ? KT_SENT : KT_NEW;
			r->t[i].sent_ms = time_mono_ms();
			free(known);
		}
	}
	return 0;
}

/* Sets the message of the rows of a target that are not in their final state. */
static void
keys_rows_message(struct store *s, const struct keys_target *t, const char *msg)
{
	store_exec(s,
		   "UPDATE server_keys SET message = ?, updated_at = ? WHERE server_id = ? AND"
		   " user = ? AND ((want = 1 AND state != 'synced') OR (want = 0 AND state !="
		   " 'removed'))",
		   "siis", msg, store_now_ms(), t->server, t->user);
}

/* Rows of a target to their end state after a successful sync that wrote `sent`. */
static void
keys_rows_synced(struct store *s, const struct keys_target *t, const json_t *sent)
{
	struct store_stmt *st;
	int64_t ids[1024];
	int wants[1024], inset[1024];
	size_t n = 0, i;

	st = store_query(s,
			 "SELECT sk.id, sk.want AND k.revoked_at IS NULL, k.public_key FROM"
			 " server_keys sk JOIN ssh_keys k ON k.id = sk.key_id WHERE sk.server_id ="
			 " ? AND sk.user = ?",
			 "is", t->server, t->user);
	while (st && store_step(st) == STORE_ROW && n < 1024) {
		ids[n] = store_col_int(st, 0);
		wants[n] = (int)store_col_int(st, 1);
		inset[n] = keys_has_line(sent, store_col_text(st, 2));
		n++;
	}
	store_finalize(st);
	for (i = 0; i < n; i++) {
		if (wants[i] && inset[i])
			keys_row_to(s, ids[i], "synced", NULL, "system");
		else if (!wants[i] && !inset[i])
			keys_row_to(s, ids[i], "removed", NULL, "system");
		store_exec(s, "UPDATE server_keys SET message = NULL, progress = 100 WHERE id = ?",
			   "i", ids[i]);
	}
}

static void
keys_rows_failed(struct store *s, const struct keys_target *t, const char *error)
{
	struct store_stmt *st;
	int64_t ids[1024];
	size_t n = 0, i;

	st = store_query(s,
			 "SELECT id FROM server_keys WHERE server_id = ? AND user = ? AND ((want ="
			 " 1 AND state != 'synced') OR (want = 0 AND state != 'removed') OR state"
			 " = 'synced')",
			 "is", t->server, t->user);
	while (st && store_step(st) == STORE_ROW && n < 1024)
		ids[n++] = store_col_int(st, 0);
	store_finalize(st);
	for (i = 0; i < n; i++) {
		keys_row_to(s, ids[i], "failed", error, "system");
		store_exec(s, "UPDATE server_keys SET message = NULL WHERE id = ?", "i", ids[i]);
	}
}

/* A JSON array of {line, fingerprint} of lines not in skip; the fingerprint is the agent's
 * (fps, may be NULL) or computed here, null for a line that is not a bare key. */
static json_t *
keys_pairs(json_t *lines, json_t *fps, const json_t *skip)
{
	json_t *out = json_array(), *v, *fp;
	struct sshkey *k;
	char why[256];
	size_t i;

	json_array_foreach(lines, i, v)
	{
		if (!json_is_string(v) || (skip && keys_has_line(skip, json_string_value(v))))
			continue;
		fp = json_array_get(fps, i);
		if (json_is_string(fp))
			json_incref(fp);
		else if (sshkey_parse(json_string_value(v), &k, why, sizeof(why)) == 0) {
			fp = json_string(k->fingerprint);
			sshkey_free(k);
		} else
			fp = json_null();
		json_array_append_new(out, json_pack("{s:O, s:o}", "line", v, "fingerprint", fp));
	}
	return out;
}

/* Records a drift report: the block's lines against the desired set, keys outside it. */
static void
keys_record_drift(struct store *s, const struct keys_target *t, const char *result,
		  const char *error)
{
	json_t *r = result ? json_loads(result, 0, NULL) : NULL, *desired, *managed, *missing,
	       *extra, *outside, *v;
	const char *broken = json_string_value(json_object_get(r, "broken"));
	char *ms = NULL, *es = NULL, *os = NULL, data[256];
	const char *state;
	size_t i;
	int was_drift;

	desired = keys_desired(s, t->server, t->user);
	if (error != NULL || r == NULL || desired == NULL) {
		store_exec(
		    s,
		    "INSERT INTO key_drift (server_id, user, state, error, checked_at) VALUES"
		    " (?, ?, 'error', ?, ?) ON CONFLICT (server_id, user) DO UPDATE SET"
		    " state = 'error', error = excluded.error, checked_at ="
		    " excluded.checked_at",
		    "issi", t->server, t->user, error ? error : "no report", store_now_ms());
		json_decref(r);
		json_decref(desired);
		return;
	}
	managed = json_object_get(r, "managed");
	missing = json_array();
	if (json_is_array(managed)) {
		/* A report: the block as found against the desired set. */
		json_array_foreach(desired, i, v) if (!keys_has_line(managed, json_string_value(v)))
		    json_array_append(missing, v);
		extra = keys_pairs(managed, json_object_get(r, "managed_fingerprints"), desired);
	} else {
		/* A sync's result: the block was just written as desired. */
		extra = json_array();
	}
	outside = keys_pairs(json_object_get(r, "outside"),
			     json_object_get(r, "outside_fingerprints"), NULL);
	state =
	    broken || json_array_size(missing) || json_array_size(extra) || json_array_size(outside)
		? "drift"
		: "clean";
	was_drift = store_int(s, 0,
			      "SELECT count(*) FROM key_drift WHERE server_id = ? AND user = ? AND"
			      " state = 'drift'",
			      "is", t->server, t->user) > 0;
	ms = json_dumps(missing, JSON_COMPACT);
	es = json_dumps(extra, JSON_COMPACT);
	os = json_dumps(outside, JSON_COMPACT);
	store_exec(s,
		   "INSERT INTO key_drift (server_id, user, state, path, missing, extra, outside,"
		   " error, checked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (server_id,"
		   " user) DO UPDATE SET state = excluded.state, path = excluded.path, missing ="
		   " excluded.missing, extra = excluded.extra, outside = excluded.outside, error ="
		   " excluded.error, checked_at = excluded.checked_at",
		   "isssssssi", t->server, t->user, state,
		   json_string_value(json_object_get(r, "path")), ms ? ms : "[]", es ? es : "[]",
		   os ? os : "[]", broken, store_now_ms());
	if (strcmp(state, "drift") == 0 && !was_drift) {
		snprintf(data, sizeof(data),
			 "{\"user\":\"%s\",\"missing\":%zu,\"extra\":%zu,\"outside\":%zu}", t->user,
			 json_array_size(missing), json_array_size(extra),
			 json_array_size(outside));
		events_emit(s, "system", "key.drift", "server", t->server, data);
		log_info("keys: server %lld user %s: drift (%zu missing, %zu extra in the block, "
			 "%zu outside)",
			 (long long)t->server, t->user, json_array_size(missing),
			 json_array_size(extra), json_array_size(outside));
	}
	free(ms);
	free(es);
	free(os);
	json_decref(missing);
	json_decref(extra);
	json_decref(outside);
	json_decref(desired);
	json_decref(r);
}

/* Queues the command of target t (in the caller's transaction). */
static int
keys_queue(struct keys_run *r, struct keys_target *t)
{
	json_t *p, *keys = r->drift ? json_array() : keys_desired(r->s, t->server, t->user);
	char *text = NULL, key[96], idtext[32];
	int rc = ERR_DB;

	if (keys == NULL)
		return ERR_DB;
	p = json_pack("{s:s, s:o}", "user", t->user, "keys", keys);
	if (p != NULL && r->drift)
		json_object_set_new(p, "report_only", json_true());
	if (p == NULL || (text = json_dumps(p, JSON_COMPACT)) == NULL)
		goto out;
	if (store_exec(r->s,
		       "INSERT INTO commands (server_id, kind, payload, owner_kind, owner_id,"
		       " created_at) VALUES (?, 'authorized_keys', ?, 'key_sync', ?, ?)",
		       "isii", t->server, text, job_id(r->ctx), store_now_ms()) != 0)
		goto out;
	t->cmd = store_last_id(r->s);
	snprintf(key, sizeof(key), "cmd:%lld:%s", (long long)t->server, t->user);
	snprintf(idtext, sizeof(idtext), "%lld", (long long)t->cmd);
	if (store_exec(r->s,
		       "INSERT INTO job_data (job_id, key, value) VALUES (?, ?, ?) ON CONFLICT"
		       " (job_id, key) DO UPDATE SET value = excluded.value",
		       "iss", job_id(r->ctx), key, idtext) != 0)
		goto out;
	events_emit(r->s, "system", "command.state", "command", t->cmd, "{\"state\":\"queued\"}");
	if (!r->drift)
		keys_rows_message(r->s, t, "sent to the agent");
	t->st = KT_SENT;
	t->acked = 0;
	t->sent_ms = time_mono_ms();
	rc = 0;
out:
	free(text);
	json_decref(p);
	return rc;
}

/* Withdraws a command not yet taken, or asks the agent to cancel one it runs. */
static void
keys_withdraw(struct store *s, const struct keys_target *t, const char *why)
{
	char payload[64];

	store_exec(s,
		   "UPDATE commands SET state = 'cancelled', error = ?, finished_at = ? WHERE id ="
		   " ? AND state IN ('queued', 'sent') AND acked = 0",
		   "sii", why, store_now_ms(), t->cmd);
	if (store_changes(s) > 0)
		return;
	snprintf(payload, sizeof(payload), "{\"command_id\":%lld}", (long long)t->cmd);
	store_exec(s,
		   "INSERT INTO commands (server_id, kind, payload, created_at) SELECT server_id,"
		   " 'cancel', ?, ? FROM commands WHERE id = ? AND state IN ('sent', 'running')",
		   "sii", payload, store_now_ms(), t->cmd);
	store_exec(s,
		   "UPDATE commands SET state = 'failed', error = ?, finished_at = ? WHERE id = ?"
		   " AND state IN ('sent', 'running')",
		   "sii", why, store_now_ms(), t->cmd);
}

/* Looks at target t's command; moves t on when it has ended. Caller holds a transaction. */
static void
keys_follow(struct keys_run *r, struct keys_target *t)
{
	struct store_stmt *st;
	char *state = NULL, *error = NULL, *result = NULL, *payload = NULL, why[160];
	int64_t now = time_mono_ms();
	int acked = 0, exists;

	st = store_query(r->s,
			 "SELECT state, acked, error, result, payload FROM commands WHERE id = ?",
			 "i", t->cmd);
	exists = st != NULL && store_step(st) == STORE_ROW;
	if (exists) {
		state = strdup(store_col_text(st, 0));
		acked = (int)store_col_int(st, 1);
		error = store_col_is_null(st, 2) ? NULL : strdup(store_col_text(st, 2));
		result = store_col_is_null(st, 3) ? NULL : strdup(store_col_text(st, 3));
		payload = strdup(store_col_text(st, 4));
	}
	store_finalize(st);
	if (!exists || state == NULL) {
		t->st = KT_NEW; /* gone (server deleted?): try again, or find it offline */
		goto out;
	}
	if (acked && !t->acked) {
		t->acked = 1;
		t->sent_ms = now; /* the result deadline runs from the pick-up */
	}
	if (strcmp(state, "done") == 0) {
		json_t *p = json_loads(payload, 0, NULL), *desired = NULL;

		if (r->drift) {
			keys_record_drift(r->s, t, result, NULL);
			t->out = KO_OK;
			t->st = KT_DONE;
		} else if ((desired = keys_desired(r->s, t->server, t->user)) != NULL &&
			   !keys_same_set(desired, json_object_get(p, "keys")) &&
			   t->resends < KEYS_RESENDS) {
			/* Attached or detached meanwhile: send the new set. */
			t->resends++;
			t->st = KT_NEW;
		} else {
			keys_rows_synced(r->s, t, json_object_get(p, "keys"));
			keys_record_drift(r->s, t, result, NULL);
			t->out = KO_OK;
			t->st = KT_DONE;
		}
		json_decref(desired);
		json_decref(p);
	} else if (strcmp(state, "failed") == 0 || strcmp(state, "cancelled") == 0) {
		if (r->drift)
			keys_record_drift(r->s, t, NULL, error ? error : state);
		else
			keys_rows_failed(r->s, t, error ? error : state);
		t->out = KO_FAILED;
		t->st = KT_DONE;
	} else if (!acked && now - t->sent_ms > KEYS_PICKUP_MS) {
		snprintf(why, sizeof(why), "the agent did not take the command within %d s",
			 KEYS_PICKUP_MS / 1000);
		keys_withdraw(r->s, t, why);
		if (!r->drift)
			keys_rows_message(r->s, t,
					  "agent not answering: syncs when it connects again");
		t->out = KO_OFFLINE;
		t->st = KT_DONE;
	} else if (acked && now - t->sent_ms > KEYS_RESULT_MS) {
		snprintf(why, sizeof(why), "no result from the agent within %d s",
			 KEYS_RESULT_MS / 1000);
		keys_withdraw(r->s, t, why);
		if (r->drift)
			keys_record_drift(r->s, t, NULL, why);
		else
			keys_rows_failed(r->s, t, why);
		t->out = KO_FAILED;
		t->st = KT_DONE;
	}
out:
	free(state);
	free(error);
	free(result);
	free(payload);
}

/* 1 when another authorized_keys command for (server, user) has not ended yet. */
static int
keys_busy(struct keys_run *r, const struct keys_target *t)
{
	return store_int(r->s, 0,
			 "SELECT count(*) FROM commands WHERE server_id = ? AND state IN ('queued',"
			 " 'sent', 'running') AND kind = 'authorized_keys' AND"
			 " json_extract(payload, '$.user') = ? AND id != ?",
			 "isi", t->server, t->user, t->cmd) > 0;
}

static int
keys_online(struct keys_run *r, int64_t server)
{
	return store_int(r->s, 0,
			 "SELECT agent_status = 'online' AND agent_id IS NOT NULL AND agent_revoked"
			 " = 0 FROM servers WHERE id = ?",
			 "i", server) == 1;
}

static int
keys_step_run(struct job_ctx *ctx, int drift, char *err, size_t errlen)
{
	struct keys_run r = {ctx, job_store(ctx), drift, NULL, 0};
	size_t i, done, ok, offline, failed;
	int64_t seen, last_progress = 0;
	int rc, queued;

	if ((rc = keys_targets(&r, err, errlen)) != 0)
		goto out;
	for (;;) {
		seen = events_last_id();
		queued = 0;
		if (store_begin(r.s) != 0) {
			rc = err_set(err, errlen, ERR_DB, "%s", store_errmsg(r.s));
			goto out;
		}
		done = ok = offline = failed = 0;
		for (i = 0; i < r.n; i++) {
			struct keys_target *t = &r.t[i];

			if (t->st == KT_SENT)
				keys_follow(&r, t);
			if (t->st == KT_NEW) {
				if (!keys_online(&r, t->server)) {
					if (!drift)
						keys_rows_message(r.s, t,
								  "agent offline: syncs when it "
								  "connects");
					t->out = KO_OFFLINE;
					t->st = KT_DONE;
				} else if (!keys_busy(&r, t)) {
					if (keys_queue(&r, t) != 0) {
						store_rollback(r.s);
						rc = err_set(err, errlen, ERR_DB, "queueing: %s",
							     store_errmsg(r.s));
						goto out;
					}
					queued++;
				}
			}
			if (t->st == KT_DONE) {
				done++;
				ok += t->out == KO_OK;
				offline += t->out == KO_OFFLINE;
				failed += t->out == KO_FAILED;
			}
		}
		if (store_commit(r.s) != 0) {
			store_rollback(r.s);
			rc = err_set(err, errlen, ERR_DB, "%s", store_errmsg(r.s));
			goto out;
		}
		if (queued)
			hub_notify();
		if (done == r.n || time_mono_ms() - last_progress > 1000) {
			job_progress(ctx, r.n ? (int)(done * 100 / r.n) : 100,
				     "%s %zu of %zu: %zu ok, %zu offline, %zu failed",
				     drift ? "checked" : "synced", done, r.n, ok, offline, failed);
			last_progress = time_mono_ms();
		}
		if (done == r.n)
			break;
		if (job_stopping(ctx)) {
			/* what was sent stays sent: the step, run again after the restart,
			 * follows it */
			rc = err_set(err, errlen, ERR_BUSY, "the controller is stopping");
			goto out;
		}
		if (job_cancelled(ctx)) {
			store_begin(r.s);
			for (i = 0; i < r.n; i++)
				if (r.t[i].st == KT_SENT)
					keys_withdraw(r.s, &r.t[i], "cancelled");
			store_commit(r.s);
			hub_notify();
			rc = err_set(err, errlen, ERR_CANCELLED, "cancelled");
			goto out;
		}
		events_wait(seen, 500);
	}
	log_info("job %lld [%s]: %zu target(s): %zu ok, %zu offline, %zu failed",
		 (long long)job_id(ctx), drift ? "keys.drift" : "keys.sync", r.n, ok, offline,
		 failed);
	/* A sync that failed somewhere fails (and is retried: only what is not synced is
	 * sent again); offline servers are not failures, their agent's hello syncs them. */
	rc = !drift && failed > 0 ? err_set(err, errlen, ERR_IO,
					    "%zu of %zu server/user pair(s) failed to sync (see"
					    " each key's servers)",
					    failed, r.n)
				  : 0;
out:
	free(r.t);
	return rc;
}

static int
keys_step_sync(struct job_ctx *ctx, char *err, size_t errlen)
{
	return keys_step_run(ctx, 0, err, errlen);
}

static int
keys_step_drift(struct job_ctx *ctx, char *err, size_t errlen)
{
	return keys_step_run(ctx, 1, err, errlen);
}

static long
keys_drift_every(struct store *s)
{
	int64_t v = store_int(s, KEYS_DRIFT_EVERY_MS,
			      "SELECT CAST(value AS INTEGER) FROM settings WHERE key ="
			      " 'keys.drift_interval_ms' AND sealed = 0",
			      "");

	return v >= 1000 ? (long)v : KEYS_DRIFT_EVERY_MS;
}

/* The periodic check queues the next one as it ends (not when it was cancelled). */
static void
keys_drift_finished(struct job_ctx *ctx, const char *state, const char *error)
{
	json_t *p = json_loads(job_payload(ctx), 0, NULL);
	struct store *s = job_store(ctx);
	char err[256];
	int64_t job;

	(void)error;
	if (json_is_true(json_object_get(p, "periodic")) && strcmp(state, "cancelled") != 0 &&
	    keys_enqueue(s, "keys.drift", NULL, 0, NULL, 0, "system", NULL, 0,
			 store_now_ms() + keys_drift_every(s), &job, err, sizeof(err)) != 0)
		log_warnx("keys: cannot schedule the next drift check: %s", err);
	json_decref(p);
}

static const struct job_step keys_sync_steps[] = {{"sync", keys_step_sync, NULL, 0}};
static const struct job_step keys_drift_steps[] = {{"check", keys_step_drift, NULL, 0}};

static const struct job_type keys_sync_type = {
    "keys.sync", keys_sync_steps, 1, 0, 2, 2000, 60000, 0, NULL,
};
static const struct job_type keys_drift_type = {
    "keys.drift", keys_drift_steps, 1, 0, 2, 5000, 60000, 0, keys_drift_finished,
};

void
keys_register(void)
{
	jobs_register(&keys_sync_type);
	jobs_register(&keys_drift_type);
}

void
keys_agent_hello(struct store *s, int64_t server_id)
{
	char err[256];
	int64_t job;

	if (store_int(
		s, 0,
		"SELECT count(*) FROM server_keys WHERE server_id = ? AND ((want = 1 AND state"
		" != 'synced') OR (want = 0 AND state != 'removed'))",
		"i", server_id) > 0 &&
	    /* Only a sync queued by an earlier hello makes this one needless: that job was
	     * written in the hub's transaction with the agent's "online", so it sees it. A sync
	     * queued by someone else may run before this hello commits, find the agent
	     * offline and leave the rows waiting for a hello that has come (the chaos test
	     * found rows left "removing" so). */
	    store_int(s, 0,
		      "SELECT count(*) FROM jobs WHERE type = 'keys.sync' AND state = 'queued' AND"
		      " resource_kind = 'server' AND resource_id = ? AND actor = 'system:hello'",
		      "i", server_id) == 0) {
		if (keys_enqueue(s, "keys.sync", &server_id, 1, NULL, 0, "system:hello", "server",
				 server_id, 0, &job, err, sizeof(err)) != 0)
			log_warnx("keys: server %lld: cannot queue its key sync: %s",
				  (long long)server_id, err);
		else
			log_info("keys: server %lld is back: job %lld syncs its keys",
				 (long long)server_id, (long long)job);
	}
	if (store_int(s, 0,
		      "SELECT count(*) FROM jobs WHERE type = 'keys.drift' AND state IN ('queued',"
		      " 'running') AND json_extract(payload, '$.periodic')",
		      "") == 0 &&
	    keys_enqueue(s, "keys.drift", NULL, 0, NULL, 0, "system", NULL, 0,
			 store_now_ms() + keys_drift_every(s), &job, err, sizeof(err)) != 0)
		log_warnx("keys: cannot schedule the drift check: %s", err);
}
