/*
 * crypto_openssl.c: the OpenSSL 3 backend of crypto.h: SHA-256, HMAC-SHA256 and the
 * AES-256-GCM sealing of secrets at rest. It is the only file in common/ that includes
 * OpenSSL headers; stoke_common (the controller, the CLI and their tests) links it. The
 * agent uses crypto_mbedtls.c instead and has no sealing.
 */
#include "crypto.h"
#include "err.h"
#include "log.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define CRYPTO_NONCE_LEN 12
#define CRYPTO_TAG_LEN 16
#define CRYPTO_SEAL_PREFIX "v1:"
/* Secrets are keys and passwords; anything near this size is a mistake. */
#define CRYPTO_SEAL_MAX (64 * 1024 * 1024)

const char *
crypto_backend(void)
{
	return "openssl";
}

void
crypto_sha256(const void *in, size_t len, uint8_t out[CRYPTO_SHA256_LEN])
{
	if (EVP_Digest(in, len, out, NULL, EVP_sha256(), NULL) != 1)
		fatalx("crypto: SHA-256 failed");
}

void
crypto_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
		   uint8_t out[CRYPTO_SHA256_LEN])
{
	static const unsigned char empty[1];
	unsigned int outlen = 0;

	if (keylen > INT_MAX)
		fatalx("crypto: HMAC key too long");
	if (keylen == 0)
		key = empty;
	if (msglen == 0)
		msg = empty;
	if (HMAC(EVP_sha256(), key, (int)keylen, msg, msglen, out, &outlen) == NULL ||
	    outlen != CRYPTO_SHA256_LEN)
		fatalx("crypto: HMAC-SHA256 failed");
}

int
crypto_seal(const uint8_t key[CRYPTO_KEY_LEN], const void *plain, size_t len, const char *aad,
	    char **out, char *err, size_t errlen)
{
	EVP_CIPHER_CTX *ctx = NULL;
	unsigned char *raw = NULL, *ct;
	char *b64 = NULL;
	size_t rawlen = CRYPTO_NONCE_LEN + len + CRYPTO_TAG_LEN;
	int n, rc;

	*out = NULL;
	if (len > CRYPTO_SEAL_MAX)
		return err_set(err, errlen, ERR_TOOBIG, "secret is larger than %d bytes",
			       CRYPTO_SEAL_MAX);
	if (plain == NULL && len > 0)
		return err_set(err, errlen, ERR_INVAL, "seal: no data");
	if ((raw = malloc(rawlen)) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	ct = raw + CRYPTO_NONCE_LEN;
	if (crypto_random(raw, CRYPTO_NONCE_LEN) != 0) {
		rc = err_set(err, errlen, ERR_CRYPTO, "seal: no random bytes for a nonce");
		goto fail;
	}
	if ((ctx = EVP_CIPHER_CTX_new()) == NULL) {
		rc = err_set(err, errlen, ERR_NOMEM, "out of memory");
		goto fail;
	}
	if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, raw) != 1 ||
	    (aad != NULL &&
	     EVP_EncryptUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)strlen(aad)) != 1) ||
	    (len > 0 && EVP_EncryptUpdate(ctx, ct, &n, plain, (int)len) != 1) ||
	    EVP_EncryptFinal_ex(ctx, ct + len, &n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, CRYPTO_TAG_LEN, ct + len) != 1) {
		rc = err_set(err, errlen, ERR_CRYPTO, "seal: AES-256-GCM failed");
		goto fail;
	}
	if ((b64 = crypto_base64(raw, rawlen)) == NULL) {
		rc = err_set(err, errlen, ERR_NOMEM, "out of memory");
		goto fail;
	}
	if ((*out = malloc(strlen(CRYPTO_SEAL_PREFIX) + strlen(b64) + 1)) == NULL) {
		rc = err_set(err, errlen, ERR_NOMEM, "out of memory");
		goto fail;
	}
	strcpy(*out, CRYPTO_SEAL_PREFIX);
	strcat(*out, b64);
	rc = 0;

fail:
	EVP_CIPHER_CTX_free(ctx);
	free(b64);
	OPENSSL_cleanse(raw, rawlen);
	free(raw);
	return rc;
}

int
crypto_open(const uint8_t key[CRYPTO_KEY_LEN], const char *sealed, const char *aad, char **out,
	    size_t *outlen, char *err, size_t errlen)
{
	const size_t plen = strlen(CRYPTO_SEAL_PREFIX);
	EVP_CIPHER_CTX *ctx = NULL;
	unsigned char *raw = NULL, *plain = NULL;
	size_t b64len, rawmax, ctlen = 0;
	long rawlen;
	int n, rc;

	*out = NULL;
	if (outlen != NULL)
		*outlen = 0;
	if (sealed == NULL || strncmp(sealed, CRYPTO_SEAL_PREFIX, plen) != 0)
		return err_set(err, errlen, ERR_INVAL, "sealed secret has an unknown format");
	b64len = strlen(sealed + plen);
	if (b64len > (size_t)CRYPTO_SEAL_MAX / 3 * 4 + 64)
		return err_set(err, errlen, ERR_TOOBIG, "sealed secret is too big");
	rawmax = b64len / 4 * 3;
	if ((raw = malloc(rawmax + 1)) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	rawlen = crypto_unbase64(sealed + plen, raw, rawmax);
	if (rawlen < 0) {
		rc = err_set(err, errlen, ERR_INVAL, "sealed secret is not valid base64");
		goto fail;
	}
	if ((size_t)rawlen < CRYPTO_NONCE_LEN + CRYPTO_TAG_LEN) {
		rc = err_set(err, errlen, ERR_INVAL, "sealed secret is truncated");
		goto fail;
	}
	ctlen = (size_t)rawlen - CRYPTO_NONCE_LEN - CRYPTO_TAG_LEN;
	if ((plain = malloc(ctlen + 1)) == NULL || (ctx = EVP_CIPHER_CTX_new()) == NULL) {
		rc = err_set(err, errlen, ERR_NOMEM, "out of memory");
		goto fail;
	}
	if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, raw) != 1 ||
	    (aad != NULL &&
	     EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)strlen(aad)) != 1) ||
	    (ctlen > 0 &&
	     EVP_DecryptUpdate(ctx, plain, &n, raw + CRYPTO_NONCE_LEN, (int)ctlen) != 1) ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, CRYPTO_TAG_LEN,
				raw + CRYPTO_NONCE_LEN + ctlen) != 1) {
		rc = err_set(err, errlen, ERR_CRYPTO, "open: AES-256-GCM failed");
		goto fail;
	}
	if (EVP_DecryptFinal_ex(ctx, plain + ctlen, &n) != 1) {
		rc = err_set(err, errlen, ERR_CRYPTO,
			     "secret does not verify (wrong key or tampered)");
		goto fail;
	}
	plain[ctlen] = '\0';
	*out = (char *)plain;
	if (outlen != NULL)
		*outlen = ctlen;
	plain = NULL;
	rc = 0;

fail:
	EVP_CIPHER_CTX_free(ctx);
	if (plain != NULL) {
		OPENSSL_cleanse(plain, ctlen + 1);
		free(plain);
	}
	free(raw);
	return rc;
}
