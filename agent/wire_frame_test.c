/*
 * wire_frame_test.c: the channel's framing without sockets: SP headers, frames written and
 * read back (one, several, split at every byte), and malformed input (short lengths,
 * oversized bodies, truncated frames) refused or waited for, never read past.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "wire_frame.h"

static void
wire_frame_test_sp_header(void **state)
{
	uint8_t h[8], bad[8];
	static const uint8_t nng_req0[8] = {0, 'S', 'P', 0, 0, 0x30, 0, 0};

	(void)state;
	wire_frame_sp_header(h, WIRE_PROTO_REQ0);
	assert_memory_equal(h, nng_req0, 8); /* what nng's req0 sends */
	assert_int_equal(wire_frame_sp_check(h, WIRE_PROTO_REQ0), 0);
	assert_int_equal(wire_frame_sp_check(h, WIRE_PROTO_REP0), -1);
	for (int i = 0; i < 8; i++) {
		memcpy(bad, h, 8);
		bad[i] ^= 0x40;
		assert_int_equal(wire_frame_sp_check(bad, WIRE_PROTO_REQ0), -1);
	}
}

static void
wire_frame_test_round_trip(void **state)
{
	uint8_t buf[3 * (WIRE_FRAME_HDR + 16)];
	const char *msgs[] = {"", "a", "sixteen bytes!!!"};
	const uint8_t *body;
	size_t off = 0, bodylen, used, i;
	uint32_t id;
	char why[128];

	(void)state;
	for (i = 0; i < 3; i++) {
		wire_frame_put(buf + off, 0x80000000u + (uint32_t)i, msgs[i], strlen(msgs[i]));
		off += WIRE_FRAME_HDR + strlen(msgs[i]);
	}
	assert_int_equal(buf[7], 4); /* big-endian length: id + empty body */
	assert_int_equal(buf[8], 0x80);
	for (i = 0, off = 0; i < 3; i++) {
		assert_int_equal(wire_frame_next(buf + off, sizeof(buf) - off, 1024, &id, &body,
						 &bodylen, &used, why, sizeof(why)),
				 1);
		assert_int_equal(id, 0x80000000u + (uint32_t)i);
		assert_int_equal(bodylen, strlen(msgs[i]));
		assert_memory_equal(body, msgs[i], bodylen);
		off += used;
	}
}

/* A frame cut anywhere is waited for, not misread. */
static void
wire_frame_test_split(void **state)
{
	uint8_t buf[WIRE_FRAME_HDR + 5];
	const uint8_t *body;
	size_t bodylen, used, n;
	uint32_t id;
	char why[128];

	(void)state;
	wire_frame_put(buf, 7, "hello", 5);
	for (n = 0; n < sizeof(buf); n++)
		assert_int_equal(
		    wire_frame_next(buf, n, 1024, &id, &body, &bodylen, &used, why, sizeof(why)),
		    0);
	assert_int_equal(
	    wire_frame_next(buf, sizeof(buf), 1024, &id, &body, &bodylen, &used, why, sizeof(why)),
	    1);
	assert_int_equal(used, sizeof(buf));
}

static void
wire_frame_test_malformed(void **state)
{
	uint8_t buf[WIRE_FRAME_HDR + 8];
	const uint8_t *body;
	size_t bodylen, used;
	uint32_t id;
	char why[128];
	int len;

	(void)state;
	/* lengths 0..3 cannot hold the request id */
	for (len = 0; len < 4; len++) {
		memset(buf, 0, sizeof(buf));
		buf[7] = (uint8_t)len;
		assert_int_equal(wire_frame_next(buf, sizeof(buf), 1024, &id, &body, &bodylen,
						 &used, why, sizeof(why)),
				 -1);
	}
	/* a body over the limit, also a length near 2^64 (no wrap-around) */
	wire_frame_put(buf, 1, "12345678", 8);
	assert_int_equal(
	    wire_frame_next(buf, sizeof(buf), 7, &id, &body, &bodylen, &used, why, sizeof(why)),
	    -1);
	assert_non_null(strstr(why, "most accepted: 11"));
	memset(buf, 0xff, 8);
	assert_int_equal(
	    wire_frame_next(buf, sizeof(buf), 1024, &id, &body, &bodylen, &used, why, sizeof(why)),
	    -1);
	/* a length the buffer does not hold yet: more is needed */
	memset(buf, 0, sizeof(buf));
	buf[6] = 1; /* 256 bytes */
	assert_int_equal(
	    wire_frame_next(buf, sizeof(buf), 1024, &id, &body, &bodylen, &used, why, sizeof(why)),
	    0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(wire_frame_test_sp_header),
	    cmocka_unit_test(wire_frame_test_round_trip),
	    cmocka_unit_test(wire_frame_test_split),
	    cmocka_unit_test(wire_frame_test_malformed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
