/*
 * crypto.c: random bytes, hex/base64, SHA-256, HMAC-SHA256, constant-time compare
 * and AES-256-GCM sealing of secrets at rest, over OpenSSL 3. It is the only file in
 * common/ that includes OpenSSL headers; the store, tokens, the API and the agent call it.
 */
#include "crypto.h"
#include "err.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define CRYPTO_NONCE_LEN 12
#define CRYPTO_TAG_LEN 16
#define CRYPTO_SEAL_PREFIX "v1:"
/* Secrets are keys and passwords; anything near this size is a mistake. */
#define CRYPTO_SEAL_MAX (64 * 1024 * 1024)

int
crypto_random(void *out, size_t len)
{
	unsigned char *p = out;

	while (len > 0) {
		int n = len > INT_MAX ? INT_MAX : (int)len;

		if (RAND_bytes(p, n) != 1)
			return ERR_CRYPTO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

void
crypto_hex(const void *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	const unsigned char *p = in;

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 0x0f];
	}
	out[2 * len] = '\0';
}

static int
crypto_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

long
crypto_unhex(const char *hex, void *out, size_t outmax)
{
	unsigned char *p = out;
	size_t len = strlen(hex);

	if (len % 2 != 0 || len / 2 > outmax || len / 2 > LONG_MAX)
		return -1;
	for (size_t i = 0; i < len / 2; i++) {
		int hi = crypto_hexval(hex[2 * i]), lo = crypto_hexval(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		p[i] = (unsigned char)(hi << 4 | lo);
	}
	return (long)(len / 2);
}

char *
crypto_base64(const void *in, size_t len)
{
	char *out;

	if (len > (size_t)INT_MAX / 4 * 3 - 3)
		return NULL;
	if ((out = malloc((len + 2) / 3 * 4 + 1)) == NULL)
		return NULL;
	EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	return out;
}

char *
crypto_base64_nopad(const void *in, size_t len)
{
	char *out = crypto_base64(in, len);
	size_t n;

	if (out == NULL)
		return NULL;
	n = strlen(out);
	while (n > 0 && out[n - 1] == '=')
		out[--n] = '\0';
	return out;
}

static int
crypto_is_b64char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/';
}

long
crypto_unbase64(const char *in, void *out, size_t outmax)
{
	size_t len = strlen(in), pad = 0, raw, n;
	unsigned char *tmp;
	int r;

	if (len % 4 != 0 || len > INT_MAX)
		return -1;
	if (len > 0 && in[len - 1] == '=')
		pad = (len > 1 && in[len - 2] == '=') ? 2 : 1;
	for (size_t i = 0; i < len - pad; i++)
		if (!crypto_is_b64char(in[i]))
			return -1;
	raw = len / 4 * 3;
	n = raw - pad;
	if (n > outmax)
		return -1;
	if (len == 0)
		return 0;
	/* EVP_DecodeBlock writes the padding as zero bytes, so decode into room for
	 * whole groups and copy the real length out. */
	if ((tmp = malloc(raw)) == NULL)
		return -1;
	r = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)len);
	if (r < 0 || (size_t)r != raw) {
		free(tmp);
		return -1;
	}
	memcpy(out, tmp, n);
	OPENSSL_cleanse(tmp, raw);
	free(tmp);
	return (long)n;
}

void
crypto_sha256(const void *in, size_t len, uint8_t out[CRYPTO_SHA256_LEN])
{
	if (EVP_Digest(in, len, out, NULL, EVP_sha256(), NULL) != 1)
		fatalx("crypto: SHA-256 failed");
}

void
crypto_sha256_hex(const char *s, char out[65])
{
	uint8_t md[CRYPTO_SHA256_LEN];

	crypto_sha256(s, strlen(s), md);
	crypto_hex(md, sizeof(md), out);
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
crypto_memeq(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}

char *
crypto_token(const char *prefix, size_t nbytes)
{
	size_t plen = prefix != NULL ? strlen(prefix) : 0;
	unsigned char *rnd;
	char *out = NULL;

	if (nbytes == 0 || nbytes > 1024)
		return NULL;
	if ((rnd = malloc(nbytes)) == NULL)
		return NULL;
	if (crypto_random(rnd, nbytes) != 0)
		goto fail;
	if ((out = malloc(plen + 2 * nbytes + 1)) == NULL)
		goto fail;
	memcpy(out, prefix, plen);
	crypto_hex(rnd, nbytes, out + plen);
fail:
	OPENSSL_cleanse(rnd, nbytes);
	free(rnd);
	return out;
}

/* Creates a new key file with O_EXCL. Returns ERR_EXISTS when another process
 * created it first, so the caller reads that one. */
static int
crypto_key_create(const char *path, uint8_t key[CRYPTO_KEY_LEN], char *err, size_t errlen)
{
	const uint8_t *p = key;
	size_t left = CRYPTO_KEY_LEN;
	int fd, rc;

	if (crypto_random(key, CRYPTO_KEY_LEN) != 0)
		return err_set(err, errlen, ERR_CRYPTO, "%s: no random bytes for a new key", path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd == -1) {
		if (errno == EEXIST)
			return ERR_EXISTS;
		return err_set(err, errlen, ERR_IO, "%s: create key file: %s", path,
			       strerror(errno));
	}
	while (left > 0) {
		ssize_t w = write(fd, p, left);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			rc = err_set(err, errlen, ERR_IO, "%s: write key file: %s", path,
				     w < 0 ? strerror(errno) : "short write");
			goto fail;
		}
		p += w;
		left -= (size_t)w;
	}
	if (fchmod(fd, 0600) == -1 || fsync(fd) == -1) {
		rc = err_set(err, errlen, ERR_IO, "%s: key file: %s", path, strerror(errno));
		goto fail;
	}
	if (close(fd) == -1) {
		fd = -1;
		rc = err_set(err, errlen, ERR_IO, "%s: close key file: %s", path, strerror(errno));
		goto fail;
	}
	log_info("created sealing key file %s", path);
	return 0;

fail:
	if (fd != -1)
		close(fd);
	unlink(path);
	OPENSSL_cleanse(key, CRYPTO_KEY_LEN);
	return rc;
}

int
crypto_key_load(const char *path, uint8_t key[CRYPTO_KEY_LEN], char *err, size_t errlen)
{
	struct stat st;
	size_t got = 0;
	int fd = -1, rc;

	for (int attempt = 0; attempt < 2; attempt++) {
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd != -1 || errno != ENOENT)
			break;
		rc = crypto_key_create(path, key, err, errlen);
		if (rc != ERR_EXISTS)
			return rc;
	}
	if (fd == -1)
		return err_set(err, errlen, ERR_IO, "%s: open key file: %s", path, strerror(errno));
	if (fstat(fd, &st) == -1) {
		rc = err_set(err, errlen, ERR_IO, "%s: stat key file: %s", path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = err_set(err, errlen, ERR_CRYPTO, "%s: key file is not a regular file", path);
		goto fail;
	}
	if ((st.st_mode & 077) != 0) {
		rc = err_set(err, errlen, ERR_CRYPTO,
			     "%s: key file has mode %04o; it must not be accessible by group or "
			     "others (chmod 600 %s)",
			     path, (unsigned)(st.st_mode & 07777), path);
		goto fail;
	}
	if (st.st_size != CRYPTO_KEY_LEN) {
		rc = err_set(err, errlen, ERR_CRYPTO,
			     "%s: key file must be exactly %d bytes, it has %lld", path,
			     CRYPTO_KEY_LEN, (long long)st.st_size);
		goto fail;
	}
	while (got < CRYPTO_KEY_LEN) {
		ssize_t r = read(fd, key + got, CRYPTO_KEY_LEN - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			rc = err_set(err, errlen, r < 0 ? ERR_IO : ERR_CRYPTO,
				     "%s: read key file: %s", path,
				     r < 0 ? strerror(errno) : "file is shorter than 32 bytes");
			goto fail;
		}
		got += (size_t)r;
	}
	close(fd);
	return 0;

fail:
	close(fd);
	OPENSSL_cleanse(key, CRYPTO_KEY_LEN);
	return rc;
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
