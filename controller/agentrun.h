/*
 * agentrun.h: for job steps: run one command on a server's agent and wait for it.
 * The command row is remembered in the job's data under a key, so a step resumed
 * after a crash waits for the command it already queued instead of queueing another.
 */
#ifndef STOKE_AGENTRUN_H
#define STOKE_AGENTRUN_H

#include <stddef.h>
#include <stdint.h>

struct job_ctx;

struct agentrun_opts {
	const char *key;	/* job data key ("cmd:checkout"); must be unique per step */
	const char *owner_kind; /* "deployment", "site", "server" (whose log it is) */
	int64_t owner_id;
	long timeout_ms;     /* 0 = 10 minutes */
	char **result_json;  /* if not NULL: the command's result (malloc'd) */
	int64_t *command_id; /* if not NULL: the command's id */
};

/* Queues kind/payload for server_id (unless this step already did) and waits until it
 * finishes. 0 when it succeeded; ERR_CANCELLED when the job was cancelled (the command
 * is cancelled too); ERR_TIMEOUT; ERR_IO with the agent's error text otherwise. */
int agentrun(struct job_ctx *ctx, int64_t server_id, const char *kind, const char *payload_json,
	     const struct agentrun_opts *o, char *err, size_t errlen);

#endif
