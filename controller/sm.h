/*
 * sm.h: resource state machines (server, site, deployment, key sync). A machine is
 * a table of states and allowed transitions, each with an optional guard; the one
 * function sm_transition() checks the guard, writes the new state with progress,
 * message and time in the caller's transaction, emits an event and logs [a] -> [b].
 */
#ifndef STOKE_SM_H
#define STOKE_SM_H

#include <stddef.h>
#include <stdint.h>

struct store;

struct sm_transition {
	const char *from; /* "*" = any state */
	const char *to;
	/* Returns 0 if allowed, or fills why ("missing: agent hello, host key pinned"). */
	int (*guard)(struct store *s, int64_t id, char *why, size_t whylen);
};

struct sm_def {
	const char *kind;	   /* "server" */
	const char *table;	   /* "servers": has columns state, progress, message, checklist,
				      error, failed_step, failed_at, updated_at */
	const char *const *states; /* NULL-terminated */
	const struct sm_transition *transitions;
	size_t ntransitions;
};

extern const struct sm_def sm_server, sm_site, sm_deployment, sm_key_sync;

int sm_is_state(const struct sm_def *def, const char *state);
/* Moves id to state `to` if a transition allows it. ERR_CONFLICT with text
 * "server 4: cannot go from active to creating" or the guard's reason. */
int sm_transition(struct store *s, const struct sm_def *def, int64_t id, const char *to,
		  const char *actor, char *err, size_t errlen);
/* Moves to "failed", keeping step and error and the time. */
int sm_fail(struct store *s, const struct sm_def *def, int64_t id, const char *step,
	    const char *error, const char *actor);
int sm_progress(struct store *s, const struct sm_def *def, int64_t id, int percent,
		const char *message);
/* Sets one checklist item: {"item", "done", "required", "detail"}; detail may be NULL
 * ("links (have 2, need 3)"). */
int sm_check(struct store *s, const struct sm_def *def, int64_t id, const char *item, int done,
	     int required, const char *detail);
/* Words for the required items not done, "a, b (have 1, need 2)"; malloc'd, "" when none. */
char *sm_missing(struct store *s, const struct sm_def *def, int64_t id);

#endif
