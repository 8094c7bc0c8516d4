/*
 * jobs.c: the durable job engine: enqueue, claim with a lease, run a job type's
 * steps in order committing each, retry with backoff, undo in reverse on final
 * failure or cancel, resume after a crash. Worker threads and one heartbeat
 * thread; every write goes through the worker's own store connection.
 */
#include "jobs.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "crypto.h"
#include "err.h"
#include "events.h"
#include "log.h"
#include "store.h"
#include "timeutil.h"

#define JOBS_MAX_TYPES 64
#define JOBS_MAX_WORKERS 64
#define JOBS_ERRLEN 1024

static const struct job_type *jobs_types[JOBS_MAX_TYPES];
static size_t jobs_ntypes;

/* Wakes idle workers of every engine in the process when a job is enqueued. */
static pthread_mutex_t jobs_wake_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t jobs_wake_cond = PTHREAD_COND_INITIALIZER;
static uint64_t jobs_wake_gen;

struct job_ctx {
	struct jobs_engine *engine;
	struct store *store;
	int64_t id;
	const struct job_type *type;
	char *payload;
	char *resource_kind;
	int64_t resource_id;
	int attempt;
	int resumes;	    /* claims after a lease expiry (a crash), not attempts */
	int cleanup;	    /* claimed to finish an undo (end_state set) */
	int dirty;	    /* was failed_dirty: the resource already followed its end */
	char end_state[16]; /* cleanup: "failed" or "cancelled" */
	int64_t deadline;   /* epoch ms, 0 = none */
	atomic_int cancel;
	atomic_int active;
};

struct jobs_engine {
	struct jobs_engine_opts opts;
	char owner[40];
	char *db_path;
	char *queue;
	pthread_t workers[JOBS_MAX_WORKERS];
	struct job_ctx *current[JOBS_MAX_WORKERS];
	pthread_mutex_t mtx;
	pthread_t heartbeat;
	pthread_cond_t hb_cond;
	atomic_int stopping;
};

struct jobs_worker_arg {
	struct jobs_engine *e;
	int index;
};

int
jobs_register(const struct job_type *type)
{
	size_t i;

	for (i = 0; i < jobs_ntypes; i++)
		if (strcmp(jobs_types[i]->name, type->name) == 0)
			return ERR_EXISTS;
	if (jobs_ntypes == JOBS_MAX_TYPES)
		return ERR_TOOBIG;
	jobs_types[jobs_ntypes++] = type;
	return 0;
}

const struct job_type *
jobs_type(const char *name)
{
	size_t i;

	for (i = 0; name && i < jobs_ntypes; i++)
		if (strcmp(jobs_types[i]->name, name) == 0)
			return jobs_types[i];
	return NULL;
}

static void
jobs_wake(void)
{
	pthread_mutex_lock(&jobs_wake_mtx);
	jobs_wake_gen++;
	pthread_cond_broadcast(&jobs_wake_cond);
	pthread_mutex_unlock(&jobs_wake_mtx);
}

static void
jobs_event(struct store *s, int64_t id, const char *actor, const char *kind, json_t *data)
{
	char *text = data ? json_dumps(data, JSON_COMPACT) : NULL;

	events_emit(s, actor ? actor : "system", kind, "job", id, text);
	free(text);
	json_decref(data);
}

static void
jobs_state_event(struct store *s, int64_t id, const char *actor, const char *state,
		 const char *step, const char *error)
{
	jobs_event(s, id, actor, "job.state",
		   json_pack("{s:s, s:s?, s:s?}", "state", state, "step", step, "error", error));
}

int
jobs_enqueue(struct store *s, const char *type, const char *payload_json,
	     const struct jobs_enqueue_opts *opts, int64_t *id, char *err, size_t errlen)
{
	static const struct jobs_enqueue_opts none;
	const struct job_type *t;
	json_t *p = NULL;
	int64_t now = store_now_ms(), jid;
	int max_attempts;
	long timeout;

	if (opts == NULL)
		opts = &none;
	if ((t = jobs_type(type)) == NULL)
		return err_set(err, errlen, ERR_INVAL, "unknown job type %s", type);
	if (payload_json == NULL)
		payload_json = "{}";
	if ((p = json_loads(payload_json, 0, NULL)) == NULL || !json_is_object(p)) {
		json_decref(p);
		return err_set(err, errlen, ERR_INVAL, "job payload must be a JSON object");
	}
	json_decref(p);
	max_attempts = opts->max_attempts > 0 ? opts->max_attempts
					      : (t->max_attempts > 0 ? t->max_attempts : 3);
	timeout = opts->timeout_ms > 0 ? opts->timeout_ms : t->timeout_ms;
	if (store_exec(
		s,
		"INSERT INTO jobs (type, queue, payload, max_attempts, timeout_ms, run_after,"
		" resource_kind, resource_id, actor, created_at, updated_at)"
		" VALUES (?,?,?,?,?,?,?,?,?,?,?)",
		"sssdiisisii", type, opts->queue ? opts->queue : "default", payload_json,
		max_attempts, (int64_t)timeout, opts->run_after_ms ? opts->run_after_ms : now,
		opts->resource_kind, opts->resource_id, opts->actor ? opts->actor : "system", now,
		now) != 0)
		return err_set(err, errlen, ERR_DB, "enqueue %s: %s", type, store_errmsg(s));
	jid = store_last_id(s);
	if (id)
		*id = jid;
	jobs_state_event(s, jid, opts->actor, "queued", NULL, NULL);
	log_info("job %lld [%s]: queued", (long long)jid, type);
	jobs_wake();
	return 0;
}

/* ---- for steps ---- */

int64_t
job_id(struct job_ctx *ctx)
{
	return ctx->id;
}

int
job_attempt(struct job_ctx *ctx)
{
	return ctx->attempt;
}

const char *
job_payload(struct job_ctx *ctx)
{
	return ctx->payload;
}

struct store *
job_store(struct job_ctx *ctx)
{
	return ctx->store;
}

const char *
job_resource_kind(struct job_ctx *ctx)
{
	return ctx->resource_kind;
}

int64_t
job_resource_id(struct job_ctx *ctx)
{
	return ctx->resource_id;
}

static int
jobs_timed_out(struct job_ctx *ctx)
{
	return ctx->deadline > 0 && store_now_ms() > ctx->deadline;
}

int
job_cancelled(struct job_ctx *ctx)
{
	return atomic_load(&ctx->cancel) || jobs_timed_out(ctx);
}

int
job_undoing(struct job_ctx *ctx)
{
	return ctx->cleanup;
}

int
job_stopping(struct job_ctx *ctx)
{
	return atomic_load(&ctx->engine->stopping);
}

int
job_progress(struct job_ctx *ctx, int percent, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (percent < 0)
		percent = 0;
	if (percent > 100)
		percent = 100;
	/* Progress only goes forward (step boundaries and steps both report it). */
	if (store_exec(ctx->store,
		       "UPDATE jobs SET progress = max(progress, ?), message = ?, updated_at = ?"
		       " WHERE id = ?",
		       "dsii", percent, msg, store_now_ms(), ctx->id) != 0)
		return ERR_DB;
	percent = (int)store_int(ctx->store, percent, "SELECT progress FROM jobs WHERE id = ?", "i",
				 ctx->id);
	jobs_event(ctx->store, ctx->id, NULL, "job.progress",
		   json_pack("{s:i, s:s}", "progress", percent, "message", msg));
	return 0;
}

int
job_data_set(struct job_ctx *ctx, const char *key, const char *value)
{
	return store_exec(ctx->store,
			  "INSERT INTO job_data (job_id, key, value) VALUES (?,?,?)"
			  " ON CONFLICT (job_id, key) DO UPDATE SET value = excluded.value",
			  "iss", ctx->id, key, value);
}

char *
job_data_get(struct job_ctx *ctx, const char *key)
{
	return store_text(ctx->store, "SELECT value FROM job_data WHERE job_id = ? AND key = ?",
			  "is", ctx->id, key);
}

/* ---- the worker ---- */

static long
jobs_backoff(const struct job_type *t, int attempts)
{
	long base = t->backoff_ms > 0 ? t->backoff_ms : 1000;
	long cap = t->backoff_max_ms > 0 ? t->backoff_max_ms : 300000;
	long d = base;
	int i;

	for (i = 1; i < attempts && d < cap; i++)
		d *= 2;
	return d < cap ? d : cap;
}

#define JOBS_CLAIM_SQL                                                                             \
	"SELECT id FROM jobs WHERE ((state = 'queued' AND run_after <= ?1)" /* an expired lease of \
									     * another process;    \
									     * never one of this   \
									     * process, whose      \
									     * worker is alive     \
									     * even when the       \
									     * heartbeat runs late \
									     */                    \
	" OR (state = 'running' AND lease_until < ?1 AND lease_owner != ?3)" /* an undo that did   \
										not finish, due    \
										again, and not     \
										being finished now \
									      */                   \
	" OR (state = 'failed_dirty' AND run_after <= ?1"                                          \
	" AND (lease_until IS NULL OR (lease_until < ?1 AND lease_owner != ?3))))"                 \
	" AND (?2 IS NULL OR queue = ?2)" /* a "serial:" queue runs its jobs one at a time, in     \
					     order */                                              \
	" AND (queue NOT LIKE 'serial:%' OR NOT EXISTS (SELECT 1 FROM jobs j2"                     \
	" WHERE j2.queue = jobs.queue AND j2.id < jobs.id"                                         \
	" AND j2.state IN ('queued', 'running')))"                                                 \
	" ORDER BY run_after, id LIMIT 1"

/* 1 when a job could be claimed now (read only; the claim itself checks again). */
static int
jobs_claimable(struct jobs_engine *e, struct store *s, int64_t now)
{
	struct store_stmt *st = store_query(s, JOBS_CLAIM_SQL, "iss", now, e->queue, e->owner);
	int rc = st != NULL && store_step(st) == STORE_ROW;

	store_finalize(st);
	return rc;
}

/* Claims one due job (queued and due, or running with an expired lease). */
static int
jobs_claim(struct jobs_engine *e, struct store *s, struct job_ctx *ctx, int *step,
	   int *step_started, char **type_name, int woken)
{
	struct store_stmt *st;
	int64_t now = store_now_ms(), id = 0, timeout = 0;
	int found = 0, resumed;

	/* On a timer, look without the write lock first: a BEGIN IMMEDIATE each time made the
	 * hub wait for the lock under load. Woken by an enqueue, take the lock at once: the
	 * wake comes before the enqueuer's commit, which a read would not see yet, while
	 * BEGIN IMMEDIATE waits for it. */
	if (!woken && !jobs_claimable(e, s, now))
		return 0;
	if (store_begin(s) != 0)
		return -1;
	st = store_query(s, JOBS_CLAIM_SQL, "iss", now, e->queue, e->owner);
	if (st && store_step(st) == STORE_ROW) {
		id = store_col_int(st, 0);
		found = 1;
	}
	store_finalize(st);
	if (!found) {
		store_rollback(s);
		return 0;
	}
	/* What the claim is: a first run or a retry (an attempt), a resume after a dead
	 * controller's lease expired (not an attempt: a crash is not the job's failure), or
	 * the end of an undo that did not finish (cleanup). */
	st = store_query(s, "SELECT state, end_state FROM jobs WHERE id = ?", "i", id);
	if (st == NULL || store_step(st) != STORE_ROW) {
		store_finalize(st);
		goto fail;
	}
	ctx->dirty = strcmp(store_col_text(st, 0), "failed_dirty") == 0;
	resumed = strcmp(store_col_text(st, 0), "running") == 0;
	ctx->cleanup = !store_col_is_null(st, 1);
	snprintf(ctx->end_state, sizeof(ctx->end_state), "%s",
		 ctx->cleanup ? store_col_text(st, 1) : "");
	store_finalize(st);
	if (store_exec(s,
		       "UPDATE jobs SET state = CASE WHEN ?1 THEN state ELSE 'running' END,"
		       " lease_owner = ?2, lease_until = ?3,"
		       " attempts = attempts + (?4 = 0 AND ?1 = 0),"
		       " resumes = resumes + (?4 AND ?5 = 0), undo_attempts = undo_attempts + ?5,"
		       " attempt_started_at = ?6, started_at = coalesce(started_at, ?6),"
		       " updated_at = ?6 WHERE id = ?7",
		       "dsiddii", ctx->dirty, e->owner, now + e->opts.lease_ms, resumed,
		       ctx->cleanup, now, id) != 0)
		goto fail;
	st = store_query(s,
			 "SELECT type, payload, step, step_started, attempts, timeout_ms,"
			 " resource_kind, coalesce(resource_id, 0), cancel_requested, resumes"
			 " FROM jobs WHERE id = ?",
			 "i", id);
	if (st == NULL || store_step(st) != STORE_ROW) {
		store_finalize(st);
		goto fail;
	}
	*type_name = strdup(store_col_text(st, 0));
	ctx->payload = strdup(store_col_text(st, 1));
	*step = (int)store_col_int(st, 2);
	*step_started = (int)store_col_int(st, 3);
	ctx->attempt = (int)store_col_int(st, 4);
	timeout = store_col_int(st, 5);
	ctx->resource_kind = store_col_is_null(st, 6) ? NULL : strdup(store_col_text(st, 6));
	ctx->resource_id = store_col_int(st, 7);
	atomic_store(&ctx->cancel, ctx->cleanup ? 0 : (int)store_col_int(st, 8));
	ctx->resumes = resumed && !ctx->cleanup ? (int)store_col_int(st, 9) : 0;
	store_finalize(st);
	ctx->id = id;
	/* The undo's steps have their own errors; the attempt's deadline is not theirs. */
	ctx->deadline = timeout > 0 && !ctx->cleanup ? now + timeout : 0;
	if (!ctx->cleanup)
		jobs_state_event(s, id, NULL, "running", NULL, NULL);
	if (store_commit(s) != 0)
		goto fail;
	return 1;
fail:
	store_rollback(s);
	return -1;
}

/* Runs the undo of every step that made something and is not undone yet (done, failed
 * while running, or whose undo failed before), last first. Returns the number of undos
 * that failed; the first one's text is in uerr. */
static int
jobs_undo(struct job_ctx *ctx, char *uerr, size_t uerrlen)
{
	const struct job_type *t = ctx->type;
	char err[JOBS_ERRLEN];
	int i, todo, rc, failed = 0;

	uerr[0] = '\0';
	for (i = (int)t->nsteps - 1; i >= 0; i--) {
		todo = store_int(ctx->store, 0,
				 "SELECT count(*) FROM job_steps WHERE job_id = ? AND idx = ?"
				 " AND state IN ('done', 'failed', 'undo_failed')",
				 "id", ctx->id, i) > 0;
		if (!todo)
			continue;
		err[0] = '\0';
		rc = t->steps[i].undo ? t->steps[i].undo(ctx, err, sizeof(err)) : 0;
		if (rc != 0) {
			failed++;
			log_warnx("job %lld [%s]: undo %s: %s", (long long)ctx->id, t->name,
				  t->steps[i].name, err);
			if (uerr[0] == '\0')
				snprintf(uerr, uerrlen, "undo %s: %s", t->steps[i].name,
					 err[0] ? err : err_str(rc));
		} else if (t->steps[i].undo)
			log_info("job %lld [%s]: undid %s", (long long)ctx->id, t->name,
				 t->steps[i].name);
		if (store_exec(ctx->store,
			       "UPDATE job_steps SET state = ?, error = ?, finished_at = ?"
			       " WHERE job_id = ? AND idx = ?",
			       "ssiid", rc ? "undo_failed" : "undone", rc ? err : NULL,
			       store_now_ms(), ctx->id, i) != 0 &&
		    rc == 0) {
			/* Not recorded as undone: it will be undone again (undos are idempotent).
			 */
			failed++;
			if (uerr[0] == '\0')
				snprintf(uerr, uerrlen, "undo %s: database: %s", t->steps[i].name,
					 store_errmsg(ctx->store));
		}
	}
	return failed;
}

/* Ends the job: state is "done", "failed" or "cancelled". */
static void
jobs_finish(struct job_ctx *ctx, const char *state, int step, const char *error)
{
	const struct job_type *t = ctx->type;
	const char *step_name =
	    t && step >= 0 && (size_t)step < t->nsteps ? t->steps[step].name : NULL;
	struct store *s = ctx->store;
	int64_t now = store_now_ms();

	if (store_begin(s) != 0)
		log_warnx("job %lld: begin: %s", (long long)ctx->id, store_errmsg(s));
	store_exec(s,
		   "UPDATE jobs SET state = ?, error = ?, failed_step = ?, finished_at = ?,"
		   " updated_at = ?, lease_owner = NULL, lease_until = NULL, step_started = 0,"
		   " progress = CASE WHEN ?1 = 'done' THEN 100 ELSE progress END"
		   " WHERE id = ? AND lease_owner = ?",
		   "sssiiis", state, error, strcmp(state, "done") ? step_name : NULL, now, now,
		   ctx->id, ctx->engine->owner);
	if (store_changes(s) == 0) {
		store_rollback(s);
		log_warnx("job %lld: lease lost before finishing", (long long)ctx->id);
		return;
	}
	if (t && t->finished)
		t->finished(ctx, state, error);
	jobs_state_event(s, ctx->id, NULL, state, step_name, error);
	if (store_commit(s) != 0)
		log_warnx("job %lld: commit: %s", (long long)ctx->id, store_errmsg(s));
	log_info("job %lld [%s]: %s%s%s", (long long)ctx->id, t ? t->name : "?", state,
		 error ? ": " : "", error ? error : "");
}

/* Undoes what the job made and ends it in ctx->end_state; an undo that fails leaves the
 * job failed_dirty, its undo retried with backoff (capped: from then on a periodic sweep)
 * until it finishes. Nothing a job made is forgotten. */
static void
jobs_cleanup(struct job_ctx *ctx)
{
	const struct job_type *t = ctx->type;
	struct store *s = ctx->store;
	char uerr[JOBS_ERRLEN], msg[JOBS_ERRLEN + 96], *error;
	int64_t now;
	int failed, tries;
	long delay;

	failed = jobs_undo(ctx, uerr, sizeof(uerr));
	now = store_now_ms();
	error = store_text(s, "SELECT error FROM jobs WHERE id = ?", "i", ctx->id);
	tries = (int)store_int(s, 0, "SELECT undo_attempts FROM jobs WHERE id = ?", "i", ctx->id);
	if (store_begin(s) != 0) {
		log_warnx("job %lld: begin: %s", (long long)ctx->id, store_errmsg(s));
		free(error);
		return; /* the lease runs out and the cleanup is claimed again */
	}
	if (failed == 0) {
		store_exec(s,
			   "UPDATE jobs SET state = ?1, message = 'undone', finished_at = ?2,"
			   " updated_at = ?2, lease_owner = NULL, lease_until = NULL,"
			   " step_started = 0 WHERE id = ?3 AND lease_owner = ?4",
			   "siis", ctx->end_state, now, ctx->id, ctx->engine->owner);
	} else {
		delay = jobs_backoff(t, tries > 0 ? tries : 1);
		snprintf(msg, sizeof(msg), "%s (undo tried %d time%s; next in %ld s)", uerr,
			 tries > 0 ? tries : 1, tries > 1 ? "s" : "", (delay + 999) / 1000);
		store_exec(
		    s,
		    "UPDATE jobs SET state = 'failed_dirty', message = ?1, run_after = ?2,"
		    " finished_at = ?3, updated_at = ?3, lease_owner = NULL,"
		    " lease_until = NULL, step_started = 0 WHERE id = ?4 AND lease_owner = ?5",
		    "siiis", msg, now + delay, now, ctx->id, ctx->engine->owner);
	}
	if (store_changes(s) == 0) {
		store_rollback(s);
		log_warnx("job %lld: lease lost before finishing its undo", (long long)ctx->id);
		free(error);
		return;
	}
	/* The resource follows the job's end once: when it first ends, clean or dirty. */
	if (!ctx->dirty && t->finished)
		t->finished(ctx, ctx->end_state, error);
	jobs_state_event(s, ctx->id, NULL, failed ? "failed_dirty" : ctx->end_state, NULL,
			 failed ? uerr : error);
	if (store_commit(s) != 0)
		log_warnx("job %lld: commit: %s", (long long)ctx->id, store_errmsg(s));
	if (failed)
		log_warnx("job %lld [%s]: failed_dirty: %s", (long long)ctx->id, t->name, msg);
	else
		log_info("job %lld [%s]: %s%s%s", (long long)ctx->id, t->name, ctx->end_state,
			 error ? ": " : "", error ? error : "");
	free(error);
}

/* Ends the job as failed or cancelled. A type that rolls back first records its end
 * (end_state, the error, the failed step as "failed" when it may have made something), so
 * that a crash in the middle of the undo resumes the undo, never the job. */
static void
jobs_fail_final(struct job_ctx *ctx, int step, int include_step, const char *error,
		const char *state)
{
	const struct job_type *t = ctx->type;
	struct store *s = ctx->store;
	int64_t now = store_now_ms();

	if (t == NULL || !t->rollback) {
		jobs_finish(ctx, state, step, error);
		return;
	}
	if (store_begin(s) != 0)
		goto fail;
	if (include_step && step >= 0 && (size_t)step < t->nsteps &&
	    store_exec(s,
		       "INSERT INTO job_steps (job_id, idx, name, state, runs, finished_at)"
		       " VALUES (?,?,?,'failed',1,?) ON CONFLICT (job_id, idx) DO UPDATE SET"
		       " state = CASE WHEN state IN ('undone') THEN state ELSE 'failed' END,"
		       " finished_at = excluded.finished_at",
		       "idsi", ctx->id, step, t->steps[step].name, now) != 0)
		goto fail;
	if (store_exec(s,
		       "UPDATE jobs SET end_state = ?, error = ?, failed_step = ?, updated_at = ?,"
		       " undo_attempts = 1 WHERE id = ? AND lease_owner = ?",
		       "sssiis", state, error,
		       step >= 0 && (size_t)step < t->nsteps ? t->steps[step].name : NULL, now,
		       ctx->id, ctx->engine->owner) != 0 ||
	    store_changes(s) == 0 || store_commit(s) != 0)
		goto fail;
	ctx->cleanup = 1;
	ctx->dirty = 0;
	/* the cancel (or the attempt's time limit) is honoured by undoing: the undo's own
	 * waits must not see it */
	atomic_store(&ctx->cancel, 0);
	ctx->deadline = 0;
	snprintf(ctx->end_state, sizeof(ctx->end_state), "%s", state);
	jobs_cleanup(ctx);
	return;
fail:
	/* Nothing recorded: the lease runs out and the job is claimed again. */
	store_rollback(s);
	log_warnx("job %lld: cannot record its end: %s", (long long)ctx->id, store_errmsg(s));
}

/* Puts the job back in the queue for a later attempt. */
static void
jobs_requeue(struct job_ctx *ctx, int step, const char *error, long delay_ms, int refund)
{
	int64_t now = store_now_ms();

	store_exec(ctx->store,
		   "UPDATE jobs SET state = 'queued', run_after = ?, error = ?, step = ?,"
		   " step_started = 0, lease_owner = NULL, lease_until = NULL,"
		   " attempts = attempts - ?, updated_at = ? WHERE id = ? AND lease_owner = ?",
		   "isddiis", now + delay_ms, error, step, refund, now, ctx->id,
		   ctx->engine->owner);
	jobs_state_event(ctx->store, ctx->id, NULL, "queued", ctx->type->steps[step].name, error);
	if (error)
		log_info("job %lld [%s]: attempt %d failed in %s, retry in %ld ms: %s",
			 (long long)ctx->id, ctx->type->name, ctx->attempt,
			 ctx->type->steps[step].name, delay_ms, error);
	jobs_wake();
}

static int
jobs_mark(struct job_ctx *ctx, int step, int started, int done)
{
	const struct job_type *t = ctx->type;
	struct store *s = ctx->store;
	int64_t now = store_now_ms();
	int n = (int)t->nsteps;

	if (store_begin(s) != 0)
		return -1;
	if (done && store_exec(s,
			       "INSERT INTO job_steps (job_id, idx, name, state, runs, finished_at)"
			       " VALUES (?,?,?,'done',1,?) ON CONFLICT (job_id, idx) DO UPDATE SET"
			       " state = 'done', error = NULL, runs = runs + 1,"
			       " finished_at = excluded.finished_at",
			       "idsi", ctx->id, step, t->steps[step].name, now) != 0)
		goto fail;
	if (store_exec(s,
		       "UPDATE jobs SET step = ?, step_started = ?, progress = max(progress, ?),"
		       " message = ?, updated_at = ? WHERE id = ? AND lease_owner = ?"
		       " AND state = 'running'",
		       "dddsiis", done ? step + 1 : step, started,
		       (done ? step + 1 : step) * 100 / (n ? n : 1),
		       done ? (step + 1 < n ? t->steps[step + 1].name : "finishing")
			    : t->steps[step].name,
		       now, ctx->id, ctx->engine->owner) != 0)
		goto fail;
	if (store_changes(s) == 0) {
		store_rollback(s);
		return 1; /* lease lost */
	}
	jobs_event(s, ctx->id, NULL, "job.progress",
		   json_pack("{s:I, s:s, s:s}", "progress",
			     (json_int_t)store_int(s, 0, "SELECT progress FROM jobs WHERE id = ?",
						   "i", ctx->id),
			     "message", done ? "step done" : "step started", "step",
			     t->steps[step].name));
	if (store_commit(s) != 0)
		goto fail;
	return 0;
fail:
	store_rollback(s);
	return -1;
}

static void
jobs_run(struct job_ctx *ctx, int step, int step_started)
{
	const struct job_type *t = ctx->type;
	char err[JOBS_ERRLEN], msg[JOBS_ERRLEN + 128];
	int i, rc, retryable;

	for (i = step; (size_t)i < t->nsteps; i++) {
		const struct job_step *st = &t->steps[i];

		if (atomic_load(&ctx->cancel)) {
			jobs_fail_final(ctx, i - 1, 0, "cancelled", "cancelled");
			return;
		}
		if (atomic_load(&ctx->engine->stopping)) {
			jobs_requeue(ctx, i, NULL, 0, 1);
			return;
		}
		if (jobs_timed_out(ctx)) {
			snprintf(msg, sizeof(msg), "timed out before step %s", st->name);
			rc = ERR_TIMEOUT;
			goto failed;
		}
		if (i == step && step_started && st->once) {
			snprintf(msg, sizeof(msg),
				 "step %s was interrupted and must not run twice; check its"
				 " effect by hand, then retry",
				 st->name);
			jobs_fail_final(ctx, i, 1, msg, "failed");
			return;
		}
		if ((rc = jobs_mark(ctx, i, 1, 0)) != 0) {
			if (rc < 0)
				jobs_requeue(ctx, i, "database error", 1000, 0);
			return;
		}
		log_info("job %lld [%s]: step %s (attempt %d)", (long long)ctx->id, t->name,
			 st->name, ctx->attempt);
		err[0] = '\0';
		rc = st->run(ctx, err, sizeof(err));
		if (rc == 0 && !jobs_timed_out(ctx)) {
			if ((rc = jobs_mark(ctx, i, 0, 1)) != 0) {
				if (rc < 0)
					jobs_requeue(ctx, i, "database error", 1000, 0);
				return;
			}
			continue;
		}
		/* A graceful stop cut the step short: it runs again after the restart. */
		if (atomic_load(&ctx->engine->stopping) && !atomic_load(&ctx->cancel)) {
			log_info(
			    "job %lld [%s]: step %s stopped by the shutdown; it runs again after"
			    " the restart",
			    (long long)ctx->id, t->name, st->name);
			jobs_requeue(ctx, i, NULL, 0, 1);
			return;
		}
		if (atomic_load(&ctx->cancel)) {
			jobs_fail_final(ctx, i, 1, "cancelled", "cancelled");
			return;
		}
		if (jobs_timed_out(ctx)) {
			snprintf(msg, sizeof(msg), "timed out in step %s", st->name);
			rc = ERR_TIMEOUT;
		} else
			snprintf(msg, sizeof(msg), "%s: %s", st->name, err[0] ? err : err_str(rc));
	failed:
		retryable = !st->once && rc != ERR_INVAL && rc != ERR_CANCELLED;
		if (retryable &&
		    ctx->attempt < store_int(ctx->store, 1,
					     "SELECT max_attempts FROM jobs WHERE id = ?", "i",
					     ctx->id)) {
			jobs_requeue(ctx, i, msg, jobs_backoff(t, ctx->attempt), 0);
			return;
		}
		jobs_fail_final(ctx, i, 1, msg, "failed");
		return;
	}
	jobs_finish(ctx, "done", -1, NULL);
}

static void
jobs_ctx_clear(struct job_ctx *ctx)
{
	free(ctx->payload);
	free(ctx->resource_kind);
	ctx->payload = ctx->resource_kind = NULL;
	ctx->id = 0;
	ctx->deadline = 0;
	ctx->resumes = ctx->cleanup = ctx->dirty = 0;
	ctx->end_state[0] = '\0';
	atomic_store(&ctx->cancel, 0);
}

static void *
jobs_worker(void *arg)
{
	struct jobs_worker_arg *wa = arg;
	struct jobs_engine *e = wa->e;
	struct job_ctx *ctx = calloc(1, sizeof(*ctx));
	struct store *s = store_thread();
	int step, step_started, rc;
	char *type_name;
	uint64_t gen;
	int woken = 1; /* look with the lock: at start, after a job, after a wake */

	if (ctx == NULL || s == NULL) {
		log_warnx("jobs: worker %d cannot start", wa->index);
		free(ctx);
		free(wa);
		return NULL;
	}
	ctx->engine = e;
	ctx->store = s;
	pthread_mutex_lock(&e->mtx);
	e->current[wa->index] = ctx;
	pthread_mutex_unlock(&e->mtx);
	while (!atomic_load(&e->stopping)) {
		pthread_mutex_lock(&jobs_wake_mtx);
		gen = jobs_wake_gen;
		pthread_mutex_unlock(&jobs_wake_mtx);
		type_name = NULL;
		rc = jobs_claim(e, s, ctx, &step, &step_started, &type_name, woken);
		if (rc > 0) {
			ctx->type = jobs_type(type_name);
			atomic_store(&ctx->active, 1);
			if (ctx->type == NULL) {
				char m[200];

				snprintf(m, sizeof(m), "unknown job type %s", type_name);
				jobs_finish(ctx, "failed", -1, m);
			} else if (ctx->cleanup) {
				log_info("job %lld [%s]: finishing its undo", (long long)ctx->id,
					 ctx->type->name);
				jobs_cleanup(ctx);
			} else if (ctx->resumes > 0 && ctx->resumes > e->opts.max_resumes) {
				char m[300];

				snprintf(
				    m, sizeof(m),
				    "the controller stopped %d times while this job ran (last in"
				    " step %s): it may be what stops it; see the controller's"
				    " log, then retry",
				    ctx->resumes,
				    (size_t)step < ctx->type->nsteps ? ctx->type->steps[step].name
								     : "end");
				jobs_fail_final(ctx, step, step_started, m, "failed");
			} else {
				if (ctx->resumes > 0)
					log_info("job %lld [%s]: resuming at step %s (resume %d)",
						 (long long)ctx->id, ctx->type->name,
						 (size_t)step < ctx->type->nsteps
						     ? ctx->type->steps[step].name
						     : "end",
						 ctx->resumes);
				jobs_run(ctx, step, step_started);
			}
			atomic_store(&ctx->active, 0);
			jobs_ctx_clear(ctx);
			free(type_name);
			woken = 1;
			continue;
		}
		free(type_name);
		pthread_mutex_lock(&jobs_wake_mtx);
		if (gen == jobs_wake_gen && !atomic_load(&e->stopping)) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += e->opts.poll_ms / 1000;
			ts.tv_nsec += (e->opts.poll_ms % 1000) * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&jobs_wake_cond, &jobs_wake_mtx, &ts);
		}
		woken = gen != jobs_wake_gen;
		pthread_mutex_unlock(&jobs_wake_mtx);
	}
	pthread_mutex_lock(&e->mtx);
	e->current[wa->index] = NULL;
	pthread_mutex_unlock(&e->mtx);
	free(ctx);
	free(wa);
	return NULL;
}

/* Extends this engine's leases and passes cancel requests to running steps. */
static void *
jobs_heartbeat(void *arg)
{
	struct jobs_engine *e = arg;
	struct store *s = store_thread();
	struct store_stmt *st;
	long period = e->opts.lease_ms / 3;
	struct timespec ts;
	int i;

	if (period > 500)
		period = 500;
	while (s && !atomic_load(&e->stopping)) {
		store_exec(s,
			   "UPDATE jobs SET lease_until = ? WHERE lease_owner = ? AND state IN"
			   " ('running', 'failed_dirty')",
			   "is", store_now_ms() + e->opts.lease_ms, e->owner);
		st = store_query(s,
				 "SELECT id FROM jobs WHERE lease_owner = ? AND state = 'running'"
				 " AND cancel_requested = 1 AND end_state IS NULL",
				 "s", e->owner);
		while (st && store_step(st) == STORE_ROW) {
			int64_t id = store_col_int(st, 0);

			pthread_mutex_lock(&e->mtx);
			for (i = 0; i < e->opts.workers; i++)
				if (e->current[i] && e->current[i]->id == id)
					atomic_store(&e->current[i]->cancel, 1);
			pthread_mutex_unlock(&e->mtx);
		}
		store_finalize(st);
		pthread_mutex_lock(&e->mtx);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += period * 1000000L;
		while (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		if (!atomic_load(&e->stopping))
			pthread_cond_timedwait(&e->hb_cond, &e->mtx, &ts);
		pthread_mutex_unlock(&e->mtx);
	}
	return NULL;
}

int
jobs_start(const struct jobs_engine_opts *opts, struct jobs_engine **out, char *err, size_t errlen)
{
	struct jobs_engine *e;
	uint8_t rnd[8];
	char hex[17];
	int i;

	*out = NULL;
	if ((e = calloc(1, sizeof(*e))) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	e->opts = *opts;
	if (e->opts.workers <= 0)
		e->opts.workers = 4;
	if (e->opts.workers > JOBS_MAX_WORKERS)
		e->opts.workers = JOBS_MAX_WORKERS;
	if (e->opts.lease_ms <= 0)
		e->opts.lease_ms = 30000;
	if (e->opts.poll_ms <= 0)
		e->opts.poll_ms = 500;
	if (e->opts.max_resumes <= 0)
		e->opts.max_resumes = 10;
	e->queue = opts->queue ? strdup(opts->queue) : NULL;
	crypto_random(rnd, sizeof(rnd));
	crypto_hex(rnd, sizeof(rnd), hex);
	snprintf(e->owner, sizeof(e->owner), "%ld-%s", (long)getpid(), hex);
	pthread_mutex_init(&e->mtx, NULL);
	pthread_cond_init(&e->hb_cond, NULL);
	for (i = 0; i < e->opts.workers; i++) {
		struct jobs_worker_arg *wa = malloc(sizeof(*wa));

		if (wa == NULL)
			fatalx("jobs: out of memory");
		wa->e = e;
		wa->index = i;
		if (pthread_create(&e->workers[i], NULL, jobs_worker, wa) != 0)
			fatal("jobs: pthread_create");
	}
	if (pthread_create(&e->heartbeat, NULL, jobs_heartbeat, e) != 0)
		fatal("jobs: pthread_create");
	log_info("jobs: %d workers, lease %ld ms, owner %s", e->opts.workers, e->opts.lease_ms,
		 e->owner);
	*out = e;
	return 0;
}

void
jobs_stop(struct jobs_engine *e)
{
	int i;

	if (e == NULL)
		return;
	atomic_store(&e->stopping, 1);
	jobs_wake();
	pthread_mutex_lock(&e->mtx);
	pthread_cond_broadcast(&e->hb_cond);
	pthread_mutex_unlock(&e->mtx);
	for (i = 0; i < e->opts.workers; i++)
		pthread_join(e->workers[i], NULL);
	pthread_join(e->heartbeat, NULL);
	pthread_mutex_destroy(&e->mtx);
	pthread_cond_destroy(&e->hb_cond);
	free(e->queue);
	free(e);
}

/* ---- control from the API ---- */

int
jobs_cancel(struct store *s, int64_t id, const char *actor, char *err, size_t errlen)
{
	char *state;
	int64_t done;
	int rc = 0;

	if (store_begin(s) != 0)
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	if ((state = store_text(s, "SELECT state FROM jobs WHERE id = ?", "i", id)) == NULL) {
		rc = err_set(err, errlen, ERR_NOTFOUND, "job %lld: not found", (long long)id);
		goto out;
	}
	if (strcmp(state, "queued") != 0 && strcmp(state, "running") != 0) {
		rc = err_set(err, errlen, ERR_CONFLICT, "job %lld: already %s", (long long)id,
			     state);
		goto out;
	}
	done = store_int(s, 0, "SELECT count(*) FROM job_steps WHERE job_id = ? AND state = 'done'",
			 "i", id);
	if (strcmp(state, "queued") == 0 && done == 0) {
		store_exec(s,
			   "UPDATE jobs SET state = 'cancelled', cancel_requested = 1,"
			   " error = 'cancelled', finished_at = ?1, updated_at = ?1 WHERE id = ?2",
			   "ii", store_now_ms(), id);
		jobs_state_event(s, id, actor, "cancelled", NULL, "cancelled");
	} else {
		/* A worker undoes what the job made (queued jobs are made due now). */
		store_exec(s,
			   "UPDATE jobs SET cancel_requested = 1, updated_at = ?1,"
			   " run_after = CASE WHEN state = 'queued' THEN ?1 ELSE run_after END"
			   " WHERE id = ?2",
			   "ii", store_now_ms(), id);
		events_emit(s, actor, "job.cancel_requested", "job", id, NULL);
	}
	if (store_commit(s) != 0)
		rc = err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	else
		log_info("job %lld: cancel asked by %s", (long long)id, actor ? actor : "system");
	jobs_wake();
out:
	if (rc)
		store_rollback(s);
	free(state);
	return rc;
}

int
jobs_retry(struct store *s, int64_t id, const char *actor, char *err, size_t errlen)
{
	char *state, *type;
	const struct job_type *t;
	int64_t from;
	int rc = 0;

	if (store_begin(s) != 0)
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	state = store_text(s, "SELECT state FROM jobs WHERE id = ?", "i", id);
	type = store_text(s, "SELECT type FROM jobs WHERE id = ?", "i", id);
	if (state == NULL) {
		rc = err_set(err, errlen, ERR_NOTFOUND, "job %lld: not found", (long long)id);
		goto out;
	}
	if (strcmp(state, "failed_dirty") == 0) {
		/* Its undo has not finished: retry means finish the undo now. */
		store_exec(s, "UPDATE jobs SET run_after = ?1, updated_at = ?1 WHERE id = ?2", "ii",
			   store_now_ms(), id);
		events_emit(s, actor, "job.cleanup_requested", "job", id, NULL);
		if (store_commit(s) != 0)
			rc = err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
		else
			log_info("job %lld [%s]: undo asked again by %s", (long long)id, type,
				 actor ? actor : "system");
		jobs_wake();
		goto out;
	}
	if (strcmp(state, "failed") != 0 && strcmp(state, "cancelled") != 0) {
		rc = err_set(err, errlen, ERR_CONFLICT,
			     "job %lld: is %s; only failed or cancelled jobs can be retried",
			     (long long)id, state);
		goto out;
	}
	if ((t = jobs_type(type)) == NULL) {
		rc = err_set(err, errlen, ERR_CONFLICT, "job %lld: unknown job type %s",
			     (long long)id, type);
		goto out;
	}
	/* Resume at the first step whose effect is not committed as done. */
	for (from = 0; (size_t)from < t->nsteps; from++)
		if (store_int(s, 0,
			      "SELECT count(*) FROM job_steps WHERE job_id = ? AND idx = ?"
			      " AND state = 'done'",
			      "ii", id, from) == 0)
			break;
	store_exec(s,
		   "UPDATE jobs SET state = 'queued', attempts = 0, resumes = 0, end_state = NULL,"
		   " undo_attempts = 0, run_after = ?1, error = NULL,"
		   " failed_step = NULL, cancel_requested = 0, finished_at = NULL, step = ?2,"
		   " step_started = 0, progress = 0, updated_at = ?1 WHERE id = ?3",
		   "iii", store_now_ms(), from, id);
	jobs_state_event(s, id, actor, "queued", NULL, NULL);
	if (store_commit(s) != 0)
		rc = err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	else
		log_info("job %lld [%s]: retry asked by %s", (long long)id, type,
			 actor ? actor : "system");
	jobs_wake();
out:
	if (rc)
		store_rollback(s);
	free(state);
	free(type);
	return rc;
}

static json_t *
jobs_time(struct store_stmt *st, int col)
{
	char iso[32];

	if (store_col_is_null(st, col))
		return json_null();
	time_iso(store_col_int(st, col), iso);
	return json_string(iso);
}

static json_t *
jobs_text(struct store_stmt *st, int col)
{
	return store_col_is_null(st, col) ? json_null() : json_string(store_col_text(st, col));
}

char *
jobs_get_json(struct store *s, int64_t id)
{
	const struct job_type *t;
	struct store_stmt *st, *ss;
	json_t *o, *steps, *res;
	char *out;
	int64_t cur;
	size_t i;

	st = store_query(s,
			 "SELECT id, type, queue, state, attempts, max_attempts, timeout_ms,"
			 " progress, message, step, error, failed_step, cancel_requested,"
			 " resource_kind, resource_id, actor, run_after, created_at, started_at,"
			 " finished_at, updated_at, resumes, undo_attempts FROM jobs WHERE id = ?",
			 "i", id);
	if (st == NULL || store_step(st) != STORE_ROW) {
		store_finalize(st);
		return NULL;
	}
	t = jobs_type(store_col_text(st, 1));
	cur = store_col_int(st, 9);
	res = store_col_is_null(st, 13) ? json_null()
					: json_pack("{s:s, s:I}", "kind", store_col_text(st, 13),
						    "id", (json_int_t)store_col_int(st, 14));
	o = json_pack("{s:I, s:s, s:s, s:s, s:i, s:i, s:I, s:i, s:o, s:o, s:o, s:b, s:o,"
		      " s:o, s:o, s:o, s:o, s:o, s:o}",
		      "id", (json_int_t)store_col_int(st, 0), "type", store_col_text(st, 1),
		      "queue", store_col_text(st, 2), "state", store_col_text(st, 3), "attempts",
		      (int)store_col_int(st, 4), "max_attempts", (int)store_col_int(st, 5),
		      "timeout_ms", (json_int_t)store_col_int(st, 6), "progress",
		      (int)store_col_int(st, 7), "message", jobs_text(st, 8), "error",
		      jobs_text(st, 10), "failed_step", jobs_text(st, 11), "cancel_requested",
		      (int)store_col_int(st, 12), "resource", res, "actor", jobs_text(st, 15),
		      "run_after", jobs_time(st, 16), "created_at", jobs_time(st, 17), "started_at",
		      jobs_time(st, 18), "finished_at", jobs_time(st, 19), "updated_at",
		      jobs_time(st, 20));
	if (o == NULL) {
		store_finalize(st);
		return NULL;
	}
	json_object_set_new(o, "resumes", json_integer(store_col_int(st, 21)));
	json_object_set_new(o, "undo_attempts", json_integer(store_col_int(st, 22)));
	json_object_set_new(o, "step",
			    t && cur >= 0 && (size_t)cur < t->nsteps
				? json_string(t->steps[cur].name)
			    : store_col_is_null(st, 11) ? json_null()
							: json_string(store_col_text(st, 11)));
	store_finalize(st);
	steps = json_array();
	for (i = 0; t && i < t->nsteps; i++) {
		char *state = NULL;

		ss = store_query(s, "SELECT state FROM job_steps WHERE job_id = ? AND idx = ?",
				 "ii", id, (int64_t)i);
		if (ss && store_step(ss) == STORE_ROW)
			state = strdup(store_col_text(ss, 0));
		store_finalize(ss);
		json_array_append_new(steps, json_pack("{s:s, s:s}", "name", t->steps[i].name,
						       "state", state ? state : "pending"));
		free(state);
	}
	json_object_set_new(o, "steps", steps);
	out = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return out;
}
