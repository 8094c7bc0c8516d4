/*
 * batches.c: fleet command batches (see batches.h): making a batch and its commands,
 * and the batch.run job that rolls, times out, cancels and closes it. Commands reach the
 * agents through the hub like any other; this file never talks to an agent itself.
 * Called by api_batches.c.
 */
#include "batches.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "agentcmd.h"
#include "commands.h"
#include "err.h"
#include "events.h"
#include "hub.h"
#include "jobs.h"
#include "log.h"
#include "store.h"
#include "timeutil.h"

#define BATCHES_CANCEL_GRACE_MS 20000
#define BATCHES_LOOK_MS 20

const char batches_outcome_sql[] =
    "CASE WHEN c.state = 'done' THEN 'ok'"
    " WHEN c.state = 'offline' THEN 'offline'"
    " WHEN c.state = 'cancelled' OR (c.state = 'failed' AND c.error LIKE 'cancelled%')"
    " THEN 'cancelled'"
    " WHEN c.state = 'failed' AND c.error LIKE 'timed out%' THEN 'timeout'"
    " WHEN c.state = 'failed' AND (c.exit_code > 0 OR (c.signal > 0 AND c.error IS NULL))"
    " THEN 'failed'"
    " WHEN c.state = 'failed' THEN 'error'"
    " WHEN c.state = 'running' THEN 'running'"
    " ELSE 'waiting' END";

int
batches_final(const char *state)
{
	return state != NULL && (strcmp(state, "done") == 0 || strcmp(state, "failed") == 0 ||
				 strcmp(state, "cancelled") == 0);
}

static int
batches_online(struct store *s, int64_t server)
{
	return store_int(s, 0,
			 "SELECT agent_status = 'online' AND agent_id IS NOT NULL AND agent_revoked"
			 " = 0 FROM servers WHERE id = ?",
			 "i", server) == 1;
}

int
batches_create(struct store *s, const struct batches_spec *spec, const int64_t *servers, size_t n,
	       int64_t *batch_id, char *err, size_t errlen)
{
	struct jobs_enqueue_opts jo = {0};
	json_t *p = NULL;
	char *text = NULL, *normal = NULL, *sealed = NULL, jp[64];
	const char *kind = spec->script ? "script" : "exec";
	long timeout = spec->timeout_s > 0 ? spec->timeout_s : BATCHES_TIMEOUT_DEFAULT_S;
	int64_t now = store_now_ms(), id = 0, job = 0, out_from;
	size_t i, queued = 0, offline = 0;
	int rc;

	*batch_id = 0;
	if (spec->script)
		p = json_pack("{s:s, s:I}", "script", spec->script, "timeout", (json_int_t)timeout);
	else if ((p = json_object()) != NULL) {
		json_t *argv = json_loads(spec->argv_json ? spec->argv_json : "null", 0, NULL);

		json_object_set_new(p, "argv", argv ? argv : json_null());
		json_object_set_new(p, "timeout", json_integer((json_int_t)timeout));
	}
	if (p != NULL && spec->user)
		json_object_set_new(p, "user", json_string(spec->user));
	if (p == NULL || (text = json_dumps(p, JSON_COMPACT)) == NULL) {
		json_decref(p);
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	}
	json_decref(p);
	rc = agentcmd_validate(kind, text, &normal, err, errlen);
	free(text);
	if (rc != 0)
		return rc;
	/* anything secret in it is kept sealed (one payload for every server) */
	text = normal;
	rc = commands_payload_seal(text, &normal, &sealed, err, errlen);
	free(text);
	if (rc != 0)
		return rc;
	if (store_begin(s) != 0) {
		free(normal);
		free(sealed);
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	}
	out_from = store_int(s, 0, "SELECT coalesce(max(id), 0) FROM output_lines", "");
	if (store_exec(
		s,
		"INSERT INTO batches (argv, script, user, timeout_ms, batch_size, state, actor,"
		" created_at, selector, pickup_ms, output_from) VALUES (?, ?, ?, ?, ?,"
		" 'running', ?, ?, ?, ?, ?)",
		"sssiisisii", spec->argv_json ? spec->argv_json : "[]", spec->script, spec->user,
		(int64_t)timeout * 1000, (int64_t)spec->batch_size, spec->actor, now,
		spec->selector_json ? spec->selector_json : "{}",
		(int64_t)(spec->pickup_ms > 0 ? spec->pickup_ms : BATCHES_PICKUP_DEFAULT_MS),
		out_from) != 0)
		goto db;
	id = store_last_id(s);
	for (i = 0; i < n; i++) {
		const char *state = "held";

		if (spec->batch_size <= 0 || i < (size_t)spec->batch_size)
			state = batches_online(s, servers[i]) ? "queued" : "offline";
		if (store_exec(s,
			       "INSERT INTO commands (server_id, batch_id, kind, payload,"
			       " payload_sealed, state, error, owner_kind, owner_id, created_at)"
			       " VALUES (?, ?, ?, ?, ?, ?, ?, 'batch', ?, ?)",
			       "iisssssii", servers[i], id, kind, normal, sealed, state,
			       strcmp(state, "offline") == 0 ? "agent offline" : NULL, id,
			       now) != 0)
			goto db;
		queued += strcmp(state, "queued") == 0;
		offline += strcmp(state, "offline") == 0;
	}
	if (offline > 0 &&
	    store_exec(
		s, "UPDATE commands SET finished_at = ? WHERE batch_id = ? AND state = 'offline'",
		"ii", now, id) != 0)
		goto db;
	snprintf(jp, sizeof(jp), "{\"batch\":%lld}", (long long)id);
	jo.actor = spec->actor;
	jo.resource_kind = "batch";
	jo.resource_id = id;
	if ((rc = jobs_enqueue(s, "batch.run", jp, &jo, &job, err, errlen)) != 0)
		goto fail;
	if (store_exec(s, "UPDATE batches SET job_id = ? WHERE id = ?", "ii", job, id) != 0)
		goto db;
	{
		char data[160];

		snprintf(data, sizeof(data),
			 "{\"servers\":%zu,\"queued\":%zu,\"offline\":%zu,\"job\":%lld}", n, queued,
			 offline, (long long)job);
		events_emit(s, spec->actor, "batch.created", "batch", id, data);
	}
	if (store_commit(s) != 0)
		goto db;
	free(normal);
	free(sealed);
	if (queued)
		hub_notify();
	log_info("batch %lld [%s]: %zu server(s), %zu queued, %zu offline, %d at a time, by %s",
		 (long long)id, kind, n, queued, offline, spec->batch_size, spec->actor);
	*batch_id = id;
	return 0;
db:
	rc = err_set(err, errlen, ERR_DB, "making the batch: %s", store_errmsg(s));
fail:
	store_rollback(s);
	free(normal);
	free(sealed);
	return rc;
}

int
batches_cancel(struct store *s, int64_t id, const char *actor, char *err, size_t errlen)
{
	char *state = store_text(s, "SELECT state FROM batches WHERE id = ?", "i", id);
	int rc = 0;

	if (state == NULL)
		return err_set(err, errlen, ERR_NOTFOUND, "batch %lld: not found", (long long)id);
	if (batches_final(state)) {
		rc = err_set(err, errlen, ERR_CONFLICT, "batch %lld has ended (%s)", (long long)id,
			     state);
		goto out;
	}
	if (store_begin(s) != 0 ||
	    store_exec(s,
		       "UPDATE batches SET state = 'cancelling' WHERE id = ? AND state = 'running'",
		       "i", id) != 0 ||
	    events_emit(s, actor, "batch.state", "batch", id, "{\"state\":\"cancelling\"}") != 0 ||
	    store_commit(s) != 0) {
		store_rollback(s);
		rc = err_set(err, errlen, ERR_DB, "cancelling batch %lld: %s", (long long)id,
			     store_errmsg(s));
		goto out;
	}
	log_info("batch %lld: cancel asked by %s", (long long)id, actor);
out:
	free(state);
	return rc;
}

/* ---- the job ---- */

/* Asks agents to stop the batch's commands that run (once per command). */
static void
batches_cancel_running(struct store *s, int64_t id)
{
	store_exec(s,
		   "INSERT INTO commands (server_id, kind, payload, created_at) SELECT server_id,"
		   " 'cancel', json_object('command_id', id), ? FROM commands WHERE batch_id = ?"
		   " AND (state = 'running' OR (state = 'sent' AND acked = 1))",
		   "ii", store_now_ms(), id);
}

/* Releases held commands until `slots` are queued; offline servers are skipped. */
static int
batches_release(struct store *s, int64_t id, int64_t slots)
{
	struct store_stmt *st;
	int64_t cmd, server, now = store_now_ms();
	int released = 0;

	while (slots > 0) {
		st = store_query(s,
				 "SELECT id, server_id FROM commands WHERE batch_id = ? AND state ="
				 " 'held' ORDER BY id LIMIT 1",
				 "i", id);
		if (st == NULL || store_step(st) != STORE_ROW) {
			store_finalize(st);
			break;
		}
		cmd = store_col_int(st, 0);
		server = store_col_int(st, 1);
		store_finalize(st);
		if (batches_online(s, server)) {
			/* created_at of a released command: when it was queued for its agent */
			store_exec(
			    s, "UPDATE commands SET state = 'queued', created_at = ? WHERE id = ?",
			    "ii", now, cmd);
			slots--;
			released++;
		} else {
			store_exec(s,
				   "UPDATE commands SET state = 'offline', error = 'agent offline',"
				   " finished_at = ? WHERE id = ?",
				   "ii", now, cmd);
		}
	}
	return released;
}

/* 1 when the batch needs a change now: not running (cancel, or closed before a crash),
 * nothing left open, a pick-up or run deadline passed, or a rolling slot free. */
static int
batches_due(struct store *s, int64_t id, int64_t now, int64_t *picked, int64_t *quiet_since)
{
	struct store_stmt *st;
	int64_t size = 0, pickup = 0, timeout = 0, open = 0, held = 0, active = 0;
	int64_t unacked_since = INT64_MAX, running_since = INT64_MAX, n;
	int running = 0, rc;

	st = store_query(s,
			 "SELECT state = 'running', batch_size, pickup_ms, coalesce(timeout_ms, 0)"
			 " FROM batches WHERE id = ?",
			 "i", id);
	if (st == NULL || store_step(st) != STORE_ROW) {
		store_finalize(st);
		return 1; /* let the full pass report it */
	}
	running = (int)store_col_int(st, 0);
	size = store_col_int(st, 1);
	pickup = store_col_int(st, 2);
	timeout = store_col_int(st, 3);
	store_finalize(st);
	if (!running)
		return 1;
	st = store_query(s,
			 "SELECT state, acked, count(*), min(created_at), min(coalesce(started_at,"
			 " sent_at, created_at)) FROM commands WHERE batch_id = ? AND state IN"
			 " ('held', 'queued', 'sent', 'running') GROUP BY state, acked",
			 "i", id);
	if (st == NULL)
		return 1;
	while ((rc = store_step(st)) == STORE_ROW) {
		const char *state = store_col_text(st, 0);
		int64_t k = store_col_int(st, 2);

		open += k;
		if (strcmp(state, "held") == 0) {
			held += k;
			continue;
		}
		active += k;
		if (store_col_int(st, 1) == 0 && strcmp(state, "running") != 0) {
			if (store_col_int(st, 3) < unacked_since)
				unacked_since = store_col_int(st, 3);
		} else if (store_col_int(st, 4) < running_since) {
			running_since = store_col_int(st, 4);
		}
	}
	store_finalize(st);
	if (rc < 0)
		return 1;
	/* Agents still taking up their commands (acks can queue behind a flood of output in
	 * the hub): the pick-up deadline runs only once the batch has gone quiet. */
	n = store_int(s, -1,
		      "SELECT count(*) FROM commands WHERE batch_id = ? AND (acked = 1 OR"
		      " started_at IS NOT NULL)",
		      "i", id);
	if (n != *picked) {
		*picked = n;
		*quiet_since = now;
	}
	return open == 0 || (size > 0 && held > 0 && active < size) ||
	       (unacked_since < now - pickup && *quiet_since < now - pickup) ||
	       running_since < now - timeout - BATCHES_RUN_GRACE_MS;
}

/* At most one look every BATCHES_LOOK_MS: results come in bursts. */
static void
batches_pace(int64_t *last)
{
	int64_t now = time_mono_ms(), wait = *last + BATCHES_LOOK_MS - now;

	if (wait > 0) {
		struct timespec ts = {0, (long)wait * 1000000L};

		nanosleep(&ts, NULL);
	}
	*last = time_mono_ms();
}

static int
batches_step_run(struct job_ctx *ctx, char *err, size_t errlen)
{
	json_t *p = json_loads(job_payload(ctx), 0, NULL);
	int64_t id = json_integer_value(json_object_get(p, "batch"));
	struct store *s = job_store(ctx);
	struct store_stmt *st;
	int64_t seen, now, batch_size = 0, pickup = 0, timeout = 0, active, cancel_at = 0;
	char *state = NULL, why[256];
	int released, cancel_sent = 0, rc = 0;
	int64_t last_look = 0, picked = -1, quiet_since = store_now_ms();

	json_decref(p);
	if (id <= 0)
		return err_set(err, errlen, ERR_INVAL, "payload has no batch");
	for (;;) {
		/* a graceful stop: the batch goes on and the next controller follows it */
		if (job_stopping(ctx))
			return err_set(err, errlen, ERR_BUSY, "the controller is stopping");
		seen = events_last_id();
		now = store_now_ms();
		released = 0;
		/* Look first, without the write lock (the hub needs it for every command it
		 * sends and every result): most wake-ups have nothing to do. */
		if (!job_cancelled(ctx) && !batches_due(s, id, now, &picked, &quiet_since)) {
			batches_pace(&last_look);
			events_wait(seen, 250);
			continue;
		}
		if (store_begin(s) != 0)
			return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
		st = store_query(s,
				 "SELECT state, batch_size, pickup_ms, coalesce(timeout_ms, 0) FROM"
				 " batches WHERE id = ?",
				 "i", id);
		free(state);
		state = NULL;
		if (st != NULL && store_step(st) == STORE_ROW) {
			state = strdup(store_col_text(st, 0));
			batch_size = store_col_int(st, 1);
			pickup = store_col_int(st, 2);
			timeout = store_col_int(st, 3);
		}
		store_finalize(st);
		if (state == NULL) {
			store_rollback(s);
			return err_set(err, errlen, ERR_NOTFOUND, "batch %lld is gone",
				       (long long)id);
		}
		if (batches_final(state)) {
			store_rollback(s);
			break; /* closed before a crash */
		}
		if (job_cancelled(ctx) && strcmp(state, "running") == 0) {
			store_exec(s, "UPDATE batches SET state = 'cancelling' WHERE id = ?", "i",
				   id);
			free(state);
			state = strdup("cancelling");
		}
		if (strcmp(state, "cancelling") == 0) {
			store_exec(
			    s,
			    "UPDATE commands SET state = 'cancelled', error = 'cancelled',"
			    " finished_at = ? WHERE batch_id = ? AND (state = 'held' OR (state"
			    " IN ('queued', 'sent') AND acked = 0))",
			    "ii", now, id);
			if (!cancel_sent) {
				batches_cancel_running(s, id);
				cancel_sent = 1;
				cancel_at = time_mono_ms();
				released = 1; /* the cancel commands go out */
			} else if (time_mono_ms() - cancel_at > BATCHES_CANCEL_GRACE_MS) {
				store_exec(
				    s,
				    "UPDATE commands SET state = 'cancelled', error ="
				    " 'cancelled (the agent did not confirm)', finished_at = ?"
				    " WHERE batch_id = ? AND state IN ('queued', 'sent',"
				    " 'running')",
				    "ii", now, id);
			}
		} else {
			/* Not taken by its agent in time: offline, reported, not waited for. */
			snprintf(
			    why, sizeof(why),
			    "agent offline: it did not confirm the command within %lld s (if it"
			    " had received it, it may have run it; it is told to cancel it when"
			    " it is back)",
			    (long long)(pickup / 1000));
			/* One already handed to a connection that went quiet: should its agent
			 * wake up with it, it is told to cancel it. */
			if (quiet_since < now - pickup) {
				store_exec(
				    s,
				    "INSERT INTO commands (server_id, kind, payload, created_at)"
				    " SELECT server_id, 'cancel', json_object('command_id', id), ?"
				    " FROM commands WHERE batch_id = ? AND state = 'sent' AND acked"
				    " = 0 AND created_at < ?",
				    "iii", now, id, now - pickup);
				store_exec(
				    s,
				    "UPDATE commands SET state = 'offline', error = ?, finished_at"
				    " = ? WHERE batch_id = ? AND state IN ('queued', 'sent') AND"
				    " acked = 0 AND created_at < ?",
				    "siii", why, now, id, now - pickup);
			}
			/* Started but silent well past its time limit: the agent went away. */
			snprintf(why, sizeof(why),
				 "no result from the agent %d s after the time limit",
				 BATCHES_RUN_GRACE_MS / 1000);
			store_exec(
			    s,
			    "UPDATE commands SET state = 'failed', error = ?, finished_at = ?"
			    " WHERE batch_id = ? AND (state = 'running' OR (state = 'sent' AND"
			    " acked = 1)) AND coalesce(started_at, sent_at, created_at) < ?",
			    "siii", why, now, id, now - timeout - BATCHES_RUN_GRACE_MS);
			if (batch_size > 0) {
				active =
				    store_int(s, 0,
					      "SELECT count(*) FROM commands WHERE batch_id = ? AND"
					      " state IN ('queued', 'sent', 'running')",
					      "i", id);
				if (active < batch_size)
					released = batches_release(s, id, batch_size - active);
			}
		}
		if (store_int(
			s, 1,
			"SELECT count(*) FROM commands WHERE batch_id = ? AND state IN ('held',"
			" 'queued', 'sent', 'running')",
			"i", id) == 0) {
			int64_t bad =
			    store_int(s, 1,
				      "SELECT count(*) FROM commands WHERE batch_id = ? AND"
				      " state != 'done'",
				      "i", id);
			const char *end = strcmp(state, "cancelling") == 0 ? "cancelled"
					  : bad == 0			   ? "done"
									   : "failed";
			char data[96];

			store_exec(s, "UPDATE batches SET state = ?, finished_at = ? WHERE id = ?",
				   "sii", end, now, id);
			snprintf(data, sizeof(data), "{\"state\":\"%s\",\"not_ok\":%lld}", end,
				 (long long)bad);
			events_emit(s, "system", "batch.state", "batch", id, data);
			if (store_commit(s) != 0) {
				store_rollback(s);
				rc = err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
				goto out;
			}
			log_info("batch %lld: %s (%lld server(s) not ok)", (long long)id, end,
				 (long long)bad);
			job_progress(ctx, 100, "batch %s", end);
			break;
		}
		if (store_commit(s) != 0) {
			store_rollback(s);
			rc = err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
			goto out;
		}
		if (released)
			hub_notify();
		events_wait(seen, 250);
	}
out:
	free(state);
	return rc;
}

static const struct job_step batches_steps[] = {{"run", batches_step_run, NULL, 0}};

static const struct job_type batches_type = {
    "batch.run", batches_steps, 1, 0, 5, 1000, 30000, 0, NULL,
};

void
batches_register(void)
{
	jobs_register(&batches_type);
}
