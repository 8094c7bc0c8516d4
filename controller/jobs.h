/*
 * jobs.h: the durable job engine. Jobs are rows in SQLite; worker threads claim
 * them with a lease that a heartbeat extends; a crashed controller's leases expire
 * and another worker resumes the job at its first step not yet committed as done.
 * A job type is a table of idempotent steps, each with an undo. On final failure
 * (or cancel) completed steps are undone in reverse order. Retries back off
 * exponentially. Progress and state changes are events (see events.h).
 */
#ifndef STOKE_JOBS_H
#define STOKE_JOBS_H

#include <stddef.h>
#include <stdint.h>

struct store;
struct job_ctx;

struct job_step {
	const char *name;
	/* Returns 0 or an ERR_* code with text in err. Must be idempotent (it may run again
	 * after a crash) unless `once` is set. ERR_INVAL and ERR_CANCELLED are never retried. */
	int (*run)(struct job_ctx *ctx, char *err, size_t errlen);
	/* Undoes what run made; may be NULL. Must be idempotent. */
	int (*undo)(struct job_ctx *ctx, char *err, size_t errlen);
	/* Must never run twice: an attempt interrupted inside this step fails the job
	 * instead of running it again, and an error in it is not retried. */
	int once;
};

struct job_type {
	const char *name; /* "server.provision" */
	const struct job_step *steps;
	size_t nsteps;
	long timeout_ms;     /* whole attempt; 0 = none */
	int max_attempts;    /* default for new jobs; 0 = 3 */
	long backoff_ms;     /* first retry delay; 0 = 1000 */
	long backoff_max_ms; /* cap; 0 = 5 minutes */
	int rollback;	     /* undo completed steps on final failure / cancel */
	/* Called (may be NULL) in the job's final transaction: state is "done", "failed" or
	 * "cancelled". Lets a resource follow its job (e.g. server -> failed). */
	void (*finished)(struct job_ctx *ctx, const char *state, const char *error);
};

/* Registers a job type (the table must outlive the engine). Not thread-safe: start-up only. */
int jobs_register(const struct job_type *type);
const struct job_type *jobs_type(const char *name);

struct jobs_enqueue_opts {
	const char *queue; /* NULL = "default"; "serial:<name>" runs one job at a time, in order */
	int max_attempts;  /* 0 = type default */
	long timeout_ms;   /* 0 = type default */
	int64_t run_after_ms;	   /* absolute epoch ms; 0 = now */
	const char *resource_kind; /* "server", "site", ... may be NULL */
	int64_t resource_id;
	const char *actor; /* who asked: "token:ops", "webhook:github", "system" */
};

/* Inserts a queued job (inside the caller's transaction if one is open) and wakes a
 * worker. payload_json must be a JSON object (NULL = "{}"). */
int jobs_enqueue(struct store *s, const char *type, const char *payload_json,
		 const struct jobs_enqueue_opts *opts, int64_t *id, char *err, size_t errlen);
/* Queued: cancelled at once (undoing completed steps if the type rolls back).
 * Running: flagged; the worker stops at the next step boundary or when the step polls
 * job_cancelled(). Finished jobs: ERR_CONFLICT. */
int jobs_cancel(struct store *s, int64_t id, const char *actor, char *err, size_t errlen);
/* Failed or cancelled job: queued again with attempts reset, resuming at its first step
 * not done. Others: ERR_CONFLICT. */
int jobs_retry(struct store *s, int64_t id, const char *actor, char *err, size_t errlen);
/* The job as a JSON object (malloc'd text), or NULL with ERR_NOTFOUND. */
char *jobs_get_json(struct store *s, int64_t id);

struct jobs_engine_opts {
	const char *db_path;
	int workers;	   /* 0 = 4 */
	long lease_ms;	   /* 0 = 30000; extended every lease/3 */
	long poll_ms;	   /* idle poll when not woken; 0 = 500 */
	int max_resumes;   /* resumes after crashes before the job fails; 0 = 10 */
	const char *queue; /* NULL = all queues */
};
struct jobs_engine;
/* Starts worker threads and the heartbeat. */
int jobs_start(const struct jobs_engine_opts *opts, struct jobs_engine **out, char *err,
	       size_t errlen);
/* Asks workers to stop after their current step; running jobs keep their lease and are
 * resumed by the next engine (after the lease expires, or at once by this owner id). */
void jobs_stop(struct jobs_engine *e);

/* For steps. */
int64_t job_id(struct job_ctx *ctx);
int job_attempt(struct job_ctx *ctx);
const char *job_payload(struct job_ctx *ctx); /* JSON object text */
struct store *job_store(struct job_ctx *ctx); /* this worker's connection */
const char *job_resource_kind(struct job_ctx *ctx);
int64_t job_resource_id(struct job_ctx *ctx);
/* Non-zero when cancel was asked or the attempt's timeout passed. */
int job_cancelled(struct job_ctx *ctx);
/* Non-zero when the controller is stopping: a step waiting on something (an agent, a
 * provider) should return at once, with any error and without undoing or cancelling what it
 * started; the step runs again after the restart, as after a crash, and is not counted as an
 * attempt. */
int job_stopping(struct job_ctx *ctx);
/* Non-zero while the job undoes what it made (after a final failure or a cancel). */
int job_undoing(struct job_ctx *ctx);
/* Persists progress (0-100) and a message, publishes an event. */
int job_progress(struct job_ctx *ctx, int percent, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Durable per-job key/value data that survives crashes (e.g. intent id, provider id).
 * job_data_set commits at once. job_data_get returns malloc'd text or NULL. */
int job_data_set(struct job_ctx *ctx, const char *key, const char *value);
char *job_data_get(struct job_ctx *ctx, const char *key);

#endif
