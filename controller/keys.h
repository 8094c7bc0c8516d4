/*
 * keys.h: SSH keys across the fleet. A key is attached to a user on servers (rows of
 * server_keys with want = 1), detached or revoked (want = 0); the desired set of a server
 * and user is every attached, unrevoked key. Job type "keys.sync" applies desired sets
 * through the agents' authorized_keys command, one command per (server, user), all at
 * once, and moves each row pending -> synced | failed (removing -> removed); a server whose
 * agent is offline stays pending and is synced when its agent says hello. Job type
 * "keys.drift" asks agents for a report of the file (report_only) and records what differs
 * from the desired set (key_drift). Calls block on the store; none waits for agents
 * except the job steps.
 */
#ifndef STOKE_KEYS_H
#define STOKE_KEYS_H

#include <stddef.h>
#include <stdint.h>

struct store;

/* Registers keys.sync and keys.drift. Start-up only. */
void keys_register(void);

/*
 * Each returns 0 and the id of the sync job it queued in *job (0 when there was nothing to
 * do), or an ERR_* with text: ERR_NOTFOUND (no such attachment), ERR_CONFLICT (key
 * revoked), ERR_DB. Each runs in its own transaction.
 */
int keys_attach(struct store *s, int64_t key_id, const char *user, const int64_t *servers, size_t n,
		const char *actor, int64_t *job, char *err, size_t errlen);
int keys_detach(struct store *s, int64_t key_id, const char *user, const int64_t *servers, size_t n,
		const char *actor, int64_t *job, char *err, size_t errlen);
/* Revokes the key: detached everywhere, never attachable again. */
int keys_revoke(struct store *s, int64_t key_id, const char *actor, int64_t *job, char *err,
		size_t errlen);
/* Applies the desired sets again on servers (n = 0: every server with attachments),
 * rewriting each managed block, which undoes hand edits inside it. */
int keys_sync(struct store *s, const int64_t *servers, size_t n, const char *actor, int64_t *job,
	      char *err, size_t errlen);
/* Queues a drift check of servers (n = 0: every server with attachments). */
int keys_drift_check(struct store *s, const int64_t *servers, size_t n, const char *actor,
		     int64_t *job, char *err, size_t errlen);

/* The hub's hook, inside its transaction, when an agent says hello: queues a sync of that
 * server if any of its keys is not in its desired state, and keeps a periodic drift check
 * scheduled. Never fails the caller (problems are logged). */
void keys_agent_hello(struct store *s, int64_t server_id);

#endif
