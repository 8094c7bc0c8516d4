/*
 * crypto.h: small crypto helpers: secure random, hex and base64, SHA-256, HMAC-SHA256,
 * constant-time compare, and AES-256-GCM sealing of secrets at rest under a key file kept
 * outside the database (mode 0600). Thread-safe. crypto.c holds what needs no crypto
 * library; the hashes come from crypto_openssl.c (stoke_common: controller, CLI) or
 * crypto_mbedtls.c (stoke_common_mbedtls: the agent, which has no crypto_seal/crypto_open).
 */
#ifndef STOKE_CRYPTO_H
#define STOKE_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define CRYPTO_SHA256_LEN 32
#define CRYPTO_KEY_LEN 32

/* "openssl" or "mbedtls": the backend this program was linked with. */
const char *crypto_backend(void);

/* Kernel random bytes (getrandom); 0, or ERR_CRYPTO when the kernel gives none. */
int crypto_random(void *out, size_t len);
/* Writes 2*len hex chars + NUL into out (size >= 2*len+1). */
void crypto_hex(const void *in, size_t len, char *out);
/* Decodes hex; returns decoded length or -1 on bad input / too long. */
long crypto_unhex(const char *hex, void *out, size_t outmax);
/* Standard base64 with padding; returns malloc'd NUL-terminated string. */
char *crypto_base64(const void *in, size_t len);
/* Base64 without '=' padding (as ssh-keygen fingerprints). */
char *crypto_base64_nopad(const void *in, size_t len);
/* Decodes standard base64 (padding required, no whitespace); returns length or -1. */
long crypto_unbase64(const char *in, void *out, size_t outmax);
void crypto_sha256(const void *in, size_t len, uint8_t out[CRYPTO_SHA256_LEN]);
/* Hex SHA-256 of a string into out[65]. */
void crypto_sha256_hex(const char *s, char out[65]);
void crypto_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
			uint8_t out[CRYPTO_SHA256_LEN]);
/* Constant-time equality of two buffers of the same length: 1 equal, 0 not. */
int crypto_memeq(const void *a, const void *b, size_t len);
/* Random token of nbytes entropy as hex with prefix (e.g. "stk_"); malloc'd. */
char *crypto_token(const char *prefix, size_t nbytes);

/* Loads the 32-byte sealing key from path, creating it (mode 0600) when absent.
 * Refuses a key file readable by group or others. */
int crypto_key_load(const char *path, uint8_t key[CRYPTO_KEY_LEN], char *err, size_t errlen);
/* AES-256-GCM (OpenSSL backend only): output is "v1:" + base64(nonce(12) || ciphertext ||
 * tag(16)); malloc'd. aad (may be NULL) binds the secret to its place (e.g. "server:42:ssh_key").
 */
int crypto_seal(const uint8_t key[CRYPTO_KEY_LEN], const void *plain, size_t len, const char *aad,
		char **out, char *err, size_t errlen);
/* Inverse of crypto_seal; *out is malloc'd, NUL-terminated, *outlen its length. */
int crypto_open(const uint8_t key[CRYPTO_KEY_LEN], const char *sealed, const char *aad, char **out,
		size_t *outlen, char *err, size_t errlen);

#endif
