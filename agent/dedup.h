/*
 * dedup.h: the agent's journal of command ids, so a command re-sent by the controller
 * (at-least-once delivery) runs once, across agent restarts. An append-only file in
 * the state dir ("R id" received, fsync'd; "D id" finished, not), compacted when
 * it grows. Thread-safe.
 */
#ifndef STOKE_AGENT_DEDUP_H
#define STOKE_AGENT_DEDUP_H

#include <stddef.h>
#include <stdint.h>

struct dedup;

int dedup_open(const char *state_dir, struct dedup **out, char *err, size_t errlen);
void dedup_close(struct dedup *d);
/* Records id as received. Returns 1 if it is new, 0 if it was seen before, -1 on error. */
int dedup_receive(struct dedup *d, uint64_t id);
int dedup_done(struct dedup *d, uint64_t id);
/* Ids received but never finished when the journal was opened (the agent died while
 * they ran). Returns how many were written to ids. */
size_t dedup_unfinished(struct dedup *d, uint64_t *ids, size_t max);

#endif
