/*
 * wire_frame.h: the byte layout of the channel's wire protocol (nng's SP "req0" over a
 * stream), as pure functions with no I/O: the 8-byte SP header each side sends first, and
 * frames of a 64-bit big-endian length, a 32-bit request id and the message. wire.c does the
 * sockets and TLS; tests and fuzzers call these directly.
 */
#ifndef STOKE_WIRE_FRAME_H
#define STOKE_WIRE_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define WIRE_FRAME_HDR 12    /* length (8) + request id (4) */
#define WIRE_PROTO_REQ0 0x30 /* nng's protocol numbers: req0 is the agent, */
#define WIRE_PROTO_REP0 0x31 /* rep0 the controller */

/* The SP header this side (protocol proto) sends. */
void wire_frame_sp_header(uint8_t out[8], unsigned proto);
/* 0 when peer is an SP header of protocol proto, -1 otherwise. */
int wire_frame_sp_check(const uint8_t peer[8], unsigned proto);

/* Writes one frame (WIRE_FRAME_HDR + len bytes) at out. */
void wire_frame_put(uint8_t *out, uint32_t id, const void *msg, size_t len);

/*
 * Looks for one complete frame at the start of buf (len bytes). Returns 1 with *id, *body
 * (pointing into buf), *bodylen and *used (bytes the frame takes) set; 0 when more bytes are
 * needed; -1 when the frame is malformed: a length below 4 or a body over max bytes (why then
 * says so). Never reads past buf + len.
 */
int wire_frame_next(const uint8_t *buf, size_t len, size_t max, uint32_t *id, const uint8_t **body,
		    size_t *bodylen, size_t *used, char *why, size_t whylen);

#endif
