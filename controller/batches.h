/*
 * batches.h: one command (exec or script) run on many servers: a batch row and one
 * commands row per server. All at once, the commands are queued for the hub when the batch
 * is made; rolling (batch_size N), the job "batch.run" releases the next one each time one
 * ends so that N run at a time. The same job gives up on commands an agent does not take
 * within the pick-up time (state "offline") or that outlive their time limit, honours
 * cancel, and closes the batch (done: every server exited 0; failed; cancelled).
 * Command states in a batch: held (waiting for its turn), queued, sent, running, done,
 * failed, offline, cancelled.
 */
#ifndef STOKE_BATCHES_H
#define STOKE_BATCHES_H

#include <stddef.h>
#include <stdint.h>

struct store;

#define BATCHES_TIMEOUT_DEFAULT_S 600
#define BATCHES_PICKUP_DEFAULT_MS 10000
#define BATCHES_RUN_GRACE_MS 30000 /* past the time limit, before a command counts lost */

struct batches_spec {
	const char *argv_json;	   /* JSON array of strings, or NULL with script */
	const char *script;	   /* bash script text, or NULL with argv */
	const char *user;	   /* NULL = the agent's default user */
	long timeout_s;		   /* per server; 0 = BATCHES_TIMEOUT_DEFAULT_S */
	int batch_size;		   /* servers at a time; 0 = all at once */
	long pickup_ms;		   /* 0 = BATCHES_PICKUP_DEFAULT_MS */
	const char *selector_json; /* how the servers were chosen, kept for display */
	const char *actor;
};

/* Registers batch.run. Start-up only. */
void batches_register(void);

/* Makes the batch for servers (n > 0, in order) and starts it. ERR_INVAL when the command
 * does not pass agentcmd_validate (text names the field), ERR_DB. */
int batches_create(struct store *s, const struct batches_spec *spec, const int64_t *servers,
		   size_t n, int64_t *batch_id, char *err, size_t errlen);

/* Asks a running batch to stop: commands not started are dropped, running ones are
 * cancelled on their agents. ERR_NOTFOUND, ERR_CONFLICT when it has ended. */
int batches_cancel(struct store *s, int64_t id, const char *actor, char *err, size_t errlen);

/* 1 when state is one a batch ends in (done, failed, cancelled). */
int batches_final(const char *state);

/* The SQL expression (over commands c) that names a batch member's outcome: ok, failed,
 * timeout, offline, cancelled, error, running or waiting. */
extern const char batches_outcome_sql[];

#endif
