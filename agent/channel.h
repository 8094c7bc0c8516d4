/*
 * channel.h: the agent's end of the channel: dials the controller over tls+tcp with
 * mutual TLS (always verifying the controller's DNS name; transport in wire.c), keeps one
 * poll outstanding, runs each command it receives once (journal in dedup.c) in its own
 * thread, and sends output chunks and results on a second slot, each until acknowledged.
 */
#ifndef STOKE_AGENT_CHANNEL_H
#define STOKE_AGENT_CHANNEL_H

#include <stddef.h>

struct agent_config;
struct channel;

int channel_start(const struct agent_config *cfg, struct channel **out, char *err, size_t errlen);
/* Runs the poll loop until channel_stop (from another thread or a signal handler thread). */
void channel_run(struct channel *ch);
void channel_stop(struct channel *ch);
void channel_free(struct channel *ch);

#endif
