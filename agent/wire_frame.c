/*
 * wire_frame.c: the channel's framing as pure functions (see wire_frame.h). No I/O, no
 * allocation; called by wire.c's I/O thread, the unit tests and the fuzzer.
 */
#include "wire_frame.h"

#include <stdio.h>
#include <string.h>

static void
wire_frame_put_be(uint8_t *p, uint64_t v, int n)
{
	while (n-- > 0) {
		p[n] = (uint8_t)v;
		v >>= 8;
	}
}

static uint64_t
wire_frame_get_be(const uint8_t *p, int n)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

void
wire_frame_sp_header(uint8_t out[8], unsigned proto)
{
	out[0] = 0;
	out[1] = 'S';
	out[2] = 'P';
	out[3] = 0;
	out[4] = (uint8_t)(proto >> 8);
	out[5] = (uint8_t)proto;
	out[6] = out[7] = 0;
}

int
wire_frame_sp_check(const uint8_t peer[8], unsigned proto)
{
	uint8_t want[8];

	wire_frame_sp_header(want, proto);
	return memcmp(peer, want, sizeof(want)) == 0 ? 0 : -1;
}

void
wire_frame_put(uint8_t *out, uint32_t id, const void *msg, size_t len)
{
	wire_frame_put_be(out, 4 + (uint64_t)len, 8);
	wire_frame_put_be(out + 8, id, 4);
	if (len > 0)
		memcpy(out + WIRE_FRAME_HDR, msg, len);
}

int
wire_frame_next(const uint8_t *buf, size_t len, size_t max, uint32_t *id, const uint8_t **body,
		size_t *bodylen, size_t *used, char *why, size_t whylen)
{
	uint64_t n;

	if (len < 8)
		return 0;
	n = wire_frame_get_be(buf, 8);
	if (n < 4 || n - 4 > max) {
		snprintf(why, whylen, "a frame of %llu bytes (most accepted: %zu)",
			 (unsigned long long)n, max + 4);
		return -1;
	}
	if (len - 8 < n)
		return 0;
	*id = (uint32_t)wire_frame_get_be(buf + 8, 4);
	*body = buf + WIRE_FRAME_HDR;
	*bodylen = (size_t)n - 4;
	*used = 8 + (size_t)n;
	return 1;
}
