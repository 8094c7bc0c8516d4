/*
 * agentrun.c: run a command on an agent from a job step and wait for its result
 * (see agentrun.h). Waits on the event feed, re-reading the command row; never holds
 * a transaction while waiting.
 */
#include "agentrun.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentcmd.h"
#include "commands.h"
#include "err.h"
#include "events.h"
#include "hub.h"
#include "jobs.h"
#include "log.h"
#include "store.h"
#include "timeutil.h"

static int
agentrun_queue(struct job_ctx *ctx, int64_t server_id, const char *kind, const char *payload,
	       const struct agentrun_opts *o, int64_t *id, char *err, size_t errlen)
{
	struct store *s = job_store(ctx);
	char *normal = NULL, *shown = NULL, *sealed = NULL, idtext[32];
	int rc;

	if ((rc = agentcmd_validate(kind, payload, &normal, err, errlen)) != 0)
		return rc;
	/* Environments and keys are kept sealed: the row shows "(sealed)". */
	rc = commands_payload_seal(normal, &shown, &sealed, err, errlen);
	explicit_bzero(normal, strlen(normal));
	free(normal);
	normal = NULL;
	if (rc != 0)
		return rc;
	if (store_begin(s) != 0) {
		rc = err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
		goto out;
	}
	if (store_exec(s,
		       "INSERT INTO commands (server_id, kind, payload, payload_sealed, owner_kind,"
		       " owner_id, created_at) VALUES (?,?,?,?,?,?,?)",
		       "issssii", server_id, kind, shown, sealed, o->owner_kind, o->owner_id,
		       store_now_ms()) != 0) {
		store_rollback(s);
		rc = err_set(err, errlen, ERR_DB, "queue %s: %s", kind, store_errmsg(s));
		goto out;
	}
	*id = store_last_id(s);
	snprintf(idtext, sizeof(idtext), "%lld", (long long)*id);
	store_exec(s,
		   "INSERT INTO job_data (job_id, key, value) VALUES (?,?,?)"
		   " ON CONFLICT (job_id, key) DO UPDATE SET value = excluded.value",
		   "iss", job_id(ctx), o->key, idtext);
	events_emit(s, "system", "command.state", "command", *id, "{\"state\":\"queued\"}");
	if (store_commit(s) != 0) {
		store_rollback(s);
		rc = err_set(err, errlen, ERR_DB, "queue %s: %s", kind, store_errmsg(s));
		goto out;
	}
	hub_notify();
out:
	free(shown);
	free(sealed);
	return rc;
}

static void
agentrun_cancel(struct store *s, int64_t server_id, int64_t id)
{
	char payload[64];

	snprintf(payload, sizeof(payload), "{\"command_id\":%lld}", (long long)id);
	store_exec(s,
		   "UPDATE commands SET state = 'cancelled', error = 'cancelled', finished_at = ?"
		   " WHERE id = ? AND state = 'queued'",
		   "ii", store_now_ms(), id);
	if (store_changes(s) == 0)
		store_exec(s,
			   "INSERT INTO commands (server_id, kind, payload, created_at)"
			   " VALUES (?, 'cancel', ?, ?)",
			   "isi", server_id, payload, store_now_ms());
	hub_notify();
}

int
agentrun(struct job_ctx *ctx, int64_t server_id, const char *kind, const char *payload_json,
	 const struct agentrun_opts *o, char *err, size_t errlen)
{
	struct store *s = job_store(ctx);
	struct store_stmt *st;
	char *known = job_data_get(ctx, o->key), *state = NULL;
	int64_t id = 0, deadline, seen;
	long timeout = o->timeout_ms > 0 ? o->timeout_ms : 600000;
	int rc;

	if (o->result_json)
		*o->result_json = NULL;
	if (known)
		id = strtoll(known, NULL, 10);
	free(known);
	/* A command of this step from before a crash: wait for it rather than run it twice. */
	if (id == 0 || store_int(s, 0, "SELECT count(*) FROM commands WHERE id = ?", "i", id) == 0)
		if ((rc = agentrun_queue(ctx, server_id, kind, payload_json, o, &id, err,
					 errlen)) != 0)
			return rc;
	if (o->command_id)
		*o->command_id = id;
	/* An undo has nothing to do on a server that is gone (deleted, its agent revoked). */
	if (job_undoing(ctx) &&
	    store_int(s, 1, /* no row: gone too */
		      "SELECT state IN ('deleting', 'deleted') OR agent_revoked FROM servers"
		      " WHERE id = ?",
		      "i", server_id) != 0) {
		agentrun_cancel(s, server_id, id);
		return 0;
	}
	/* An undo does not wait for an agent that is away: its command stays queued for the
	 * agent's return, and the undo, tried again later, finds it done. */
	if (job_undoing(ctx) &&
	    store_int(s, 0, "SELECT agent_status = 'online' FROM servers WHERE id = ?", "i",
		      server_id) == 0)
		return err_set(err, errlen, ERR_BUSY,
			       "the server's agent is offline: %s waits for it (the undo is tried"
			       " again)",
			       kind);
	deadline = time_mono_ms() + timeout;
	for (;;) {
		seen = events_last_id();
		st = store_query(
		    s, "SELECT state, exit_code, error, result FROM commands WHERE id = ?", "i",
		    id);
		if (st && store_step(st) == STORE_ROW) {
			free(state);
			state = strdup(store_col_text(st, 0));
			if (strcmp(state, "done") == 0) {
				if (o->result_json && !store_col_is_null(st, 3))
					*o->result_json = strdup(store_col_text(st, 3));
				rc = 0;
				goto out;
			}
			if (strcmp(state, "failed") == 0 || strcmp(state, "cancelled") == 0) {
				rc = err_set(err, errlen, ERR_IO, "%s (exit %lld)",
					     store_col_is_null(st, 2) ? "command failed"
								      : store_col_text(st, 2),
					     (long long)store_col_int(st, 1));
				if (o->result_json && !store_col_is_null(st, 3))
					*o->result_json = strdup(store_col_text(st, 3));
				goto out;
			}
		}
		store_finalize(st);
		st = NULL;
		if (job_stopping(ctx)) {
			/* the command goes on; the step, run again after the restart, waits for it
			 */
			rc = err_set(err, errlen, ERR_BUSY, "the controller is stopping");
			goto out;
		}
		if (job_cancelled(ctx)) {
			agentrun_cancel(s, server_id, id);
			rc = err_set(err, errlen, ERR_CANCELLED, "cancelled while %s ran", kind);
			goto out;
		}
		if (time_mono_ms() > deadline) {
			agentrun_cancel(s, server_id, id);
			rc = err_set(err, errlen, ERR_TIMEOUT,
				     "%s: no result after %ld s (agent %s)", kind, timeout / 1000,
				     state ? state : "?");
			goto out;
		}
		events_wait(seen, 500);
	}
out:
	store_finalize(st);
	free(state);
	return rc;
}
