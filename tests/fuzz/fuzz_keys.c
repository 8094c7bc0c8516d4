/*
 * fuzz_keys.c: libFuzzer target for SSH public keys as users paste them (sshkey_parse), the
 * lines the agent accepts into authorized_keys, an authorized_keys file as the agent reads it
 * back (its managed block and the rest), and known_hosts text.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"
#include "render_authorized_keys.h"
#include "sshkey.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct render_authorized_keys_scan sc;
	struct render_authorized_keys r;
	struct sshkey *k = NULL;
	char *text, err[512], fp[RENDER_AUTHORIZED_KEYS_FP_LEN];
	const char *keys[1];

	if (size > 65536 || (text = malloc(size + 1)) == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if (sshkey_parse(text, &k, err, sizeof(err)) == 0)
		sshkey_free(k);
	if (render_authorized_keys_check(text, err, sizeof(err)) == 0) {
		(void)render_authorized_keys_fingerprint(text, fp, err, sizeof(err));
		keys[0] = text;
		memset(&r, 0, sizeof(r));
		if (render_authorized_keys("", keys, 1, &r, err, sizeof(err)) == 0)
			render_authorized_keys_fini(&r);
	}
	memset(&sc, 0, sizeof(sc));
	if (render_authorized_keys_scan(text, &sc, err, sizeof(err)) == 0)
		render_authorized_keys_scan_fini(&sc);
	(void)names_known_hosts(text, err, sizeof(err));
	free(text);
	return 0;
}
