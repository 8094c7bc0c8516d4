/*
 * fuzz_wire.c: libFuzzer target for what reaches the agent and the controller from the
 * network: the stream is cut into frames with the agent's codec (wire_frame_next, limits as
 * the agent sets them) and every frame's body is decoded as an Envelope, as both ends do.
 */
#include <stddef.h>
#include <stdint.h>

#include "stoke.pb-c.h"
#include "wire_frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *body;
	size_t off = 0, bodylen, used;
	uint32_t id;
	char why[128];
	int rv;

	if (size >= 8)
		(void)wire_frame_sp_check(data, WIRE_PROTO_REP0);
	while ((rv = wire_frame_next(data + off, size - off, 1 << 20, &id, &body, &bodylen, &used,
				     why, sizeof(why))) == 1) {
		Stoke__Envelope *e = stoke__envelope__unpack(NULL, bodylen, body);

		stoke__envelope__free_unpacked(e, NULL);
		off += used;
	}
	return 0;
}
