/*
 * crypto_mbedtls.c: the mbedTLS 2.28 backend of crypto.h: SHA-256 and HMAC-SHA256 only.
 * The agent links it (stoke_common_mbedtls) because nng already loads libmbedcrypto, so the
 * agent does not map OpenSSL's libcrypto. No sealing: crypto_seal and crypto_open exist only
 * in crypto_openssl.c, and an agent that called them would not link.
 */
#include "crypto.h"
#include "log.h"

#include <mbedtls/md.h>
#include <mbedtls/sha256.h>

const char *
crypto_backend(void)
{
	return "mbedtls";
}

void
crypto_sha256(const void *in, size_t len, uint8_t out[CRYPTO_SHA256_LEN])
{
	static const unsigned char empty[1];

	if (len == 0)
		in = empty;
	/* The last argument 0 asks for SHA-256, not SHA-224. */
	if (mbedtls_sha256_ret(in, len, out, 0) != 0)
		fatalx("crypto: SHA-256 failed");
}

void
crypto_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
		   uint8_t out[CRYPTO_SHA256_LEN])
{
	const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
	static const unsigned char empty[1];

	if (keylen == 0)
		key = empty;
	if (msglen == 0)
		msg = empty;
	if (md == NULL || mbedtls_md_get_size(md) != CRYPTO_SHA256_LEN ||
	    mbedtls_md_hmac(md, key, keylen, msg, msglen, out) != 0)
		fatalx("crypto: HMAC-SHA256 failed");
}
