/*
 * secrets.h: sealing of secrets at rest with the controller's key file (loaded once at
 * start-up from DATA_DIR/secret.key, mode 0600, outside the database). Thread-safe after
 * secrets_init.
 */
#ifndef STOKE_SECRETS_H
#define STOKE_SECRETS_H

#include <stddef.h>

int secrets_init(const char *data_dir, char *err, size_t errlen);
/* Seals text bound to aad ("server:4:ssh_key"); *out malloc'd. */
int secrets_seal(const char *plain, const char *aad, char **out, char *err, size_t errlen);
/* Opens a sealed value; *out malloc'd (wipe it after use). */
int secrets_open(const char *sealed, const char *aad, char **out, char *err, size_t errlen);

#endif
