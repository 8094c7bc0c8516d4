/*
 * wire.h: the agent's transport to the controller: nng's SP request/reply protocol
 * ("req0", answered by the controller's nng "rep0" socket) over TLS over TCP, what nng
 * calls tls+tcp://, spoken directly on one socket with mbedTLS by one I/O thread.
 *
 * Why not nng itself: every message through nng 1.5 passes several of its threads (the
 * poller, task queue threads, the caller), which was most of the agent's CPU per command
 * (docs/performance.md). The wire format is the one nng speaks (the SP header exchange,
 * 64-bit length-prefixed messages, a 32-bit request id echoed by the replier), so the
 * controller's nng socket does not see a difference.
 *
 * Calls block. Like nng's req0 they survive a lost connection: a request not yet answered
 * is sent again on the next connection, until its deadline. Slots stand for nng's
 * contexts: one call at a time per slot; a slot closed with wire_close_slot fails its call
 * in progress and every later one.
 */
#ifndef STOKE_AGENT_WIRE_H
#define STOKE_AGENT_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define WIRE_SLOTS 4

enum wire_error {
	WIRE_OK = 0,
	WIRE_ETIMEDOUT, /* no answer before the deadline */
	WIRE_ECLOSED,	/* the slot (or the whole wire) was closed */
	WIRE_ENOMEM,
	WIRE_EINVAL,
};

struct wire;

struct wire_config {
	const char *url;	 /* tls+tcp://host:port (also tls+tcp4://, tls+tcp6://) */
	const char *server_name; /* DNS name the controller's certificate must carry */
	const char *ca_pem, *cert_pem, *key_pem; /* PEM text; copied (parsed) by wire_new */
	size_t recv_max; /* largest reply accepted; a larger one closes the connection */
	/* Called on the I/O thread when a connection is ready, and when it is gone. */
	void (*connected_cb)(void *arg, int up);
	void *arg;
};

/* Parses the configuration and starts the I/O thread, which connects (and reconnects,
 * 100 ms doubling to 15 s) on its own. */
int wire_new(const struct wire_config *cfg, struct wire **out, char *err, size_t errlen);
/* Sends msg on slot and waits up to timeout_ms for the reply. On success *reply (malloc'd,
 * the caller frees it) holds the reply's body. Blocks. */
int wire_call(struct wire *w, int slot, const void *msg, size_t len, long timeout_ms,
	      uint8_t **reply, size_t *replylen);
/* Closes the connection now; the I/O thread makes a new one (and sends again what was
 * not answered). For a connection that stopped answering without being closed. */
void wire_recycle(struct wire *w);
/* Whether a connection is up now (requests wait for one while there is none). */
int wire_connected(struct wire *w);
/* Fails the call in progress on slot, and every later one (safe from any thread). */
void wire_close_slot(struct wire *w, int slot);
/* Stops the I/O thread and frees everything; no call may be in progress. NULL is a no-op. */
void wire_free(struct wire *w);
const char *wire_strerror(int rv);

#endif
