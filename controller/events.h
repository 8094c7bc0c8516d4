/*
 * events.h: the audit trail and the live feed. Every event is a row in the
 * events table (id, time, actor, kind, resource kind and id, JSON data) written in
 * the caller's transaction; subscribers (SSE) read rows after the id they last saw,
 * so a client that reconnects with Last-Event-ID misses nothing.
 */
#ifndef STOKE_EVENTS_H
#define STOKE_EVENTS_H

#include <stdint.h>

struct store;

/* Inserts one event (data_json may be NULL: "{}"). Inside a transaction, waiters learn of
 * it (events_last_id) and wake when the caller's store_commit succeeds; outside one, at
 * once. events_notify() wakes waiters for changes that wrote no event. */
int events_emit(struct store *s, const char *actor, const char *kind, const char *resource_kind,
		int64_t resource_id, const char *data_json);
void events_notify(void);
/* Blocks until an event newer than after_id may exist, or timeout_ms passes.
 * Returns 1 when woken, 0 on timeout. Spurious wake-ups are allowed. */
int events_wait(int64_t after_id, long timeout_ms);
/* Highest id known to this process (0 at start). */
int64_t events_last_id(void);

#endif
