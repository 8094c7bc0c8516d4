/*
 * secrets.c: the process's sealing key and the seal/open calls every module uses
 * for secrets kept in the database (deploy keys, per-server SSH keys, provider tokens).
 */
#include "secrets.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "crypto.h"
#include "err.h"

static uint8_t secrets_key[CRYPTO_KEY_LEN];
static int secrets_ready;

int
secrets_init(const char *data_dir, char *err, size_t errlen)
{
	char path[4096];
	int rc;

	snprintf(path, sizeof(path), "%s/secret.key", data_dir);
	if ((rc = crypto_key_load(path, secrets_key, err, errlen)) != 0)
		return rc;
	secrets_ready = 1;
	return 0;
}

int
secrets_seal(const char *plain, const char *aad, char **out, char *err, size_t errlen)
{
	if (!secrets_ready)
		return err_set(err, errlen, ERR_INTERNAL, "sealing key not loaded");
	return crypto_seal(secrets_key, plain, strlen(plain), aad, out, err, errlen);
}

int
secrets_open(const char *sealed, const char *aad, char **out, char *err, size_t errlen)
{
	size_t n;

	if (!secrets_ready)
		return err_set(err, errlen, ERR_INTERNAL, "sealing key not loaded");
	return crypto_open(secrets_key, sealed, aad, out, &n, err, errlen);
}
