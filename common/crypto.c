/*
 * crypto.c: the backend-free crypto helpers: secure random (getrandom), hex and base64,
 * constant-time compare, tokens and the sealing key file. The hashes and sealing live in a
 * backend (crypto_openssl.c for the controller, crypto_mbedtls.c for the agent); nothing
 * here includes a crypto library's headers. The store, tokens, the API and the agent call it.
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
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

int
crypto_random(void *out, size_t len)
{
	unsigned char *p = out;

	/* getrandom(2) blocks only until the kernel's pool is first seeded; large requests
	 * and signals can return fewer bytes than asked. */
	while (len > 0) {
		ssize_t n = getrandom(p, len, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
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

static const char crypto_b64_digits[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *
crypto_base64(const void *in, size_t len)
{
	const unsigned char *p = in;
	char *out, *o;
	size_t i;

	if (len > SIZE_MAX / 4 * 3 - 3)
		return NULL;
	if ((out = malloc((len + 2) / 3 * 4 + 1)) == NULL)
		return NULL;
	o = out;
	for (i = 0; len - i >= 3; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];

		*o++ = crypto_b64_digits[v >> 18];
		*o++ = crypto_b64_digits[v >> 12 & 0x3f];
		*o++ = crypto_b64_digits[v >> 6 & 0x3f];
		*o++ = crypto_b64_digits[v & 0x3f];
	}
	if (i < len) {
		uint32_t v = (uint32_t)p[i] << 16;

		if (len - i == 2)
			v |= (uint32_t)p[i + 1] << 8;
		*o++ = crypto_b64_digits[v >> 18];
		*o++ = crypto_b64_digits[v >> 12 & 0x3f];
		*o++ = len - i == 2 ? crypto_b64_digits[v >> 6 & 0x3f] : '=';
		*o++ = '=';
	}
	*o = '\0';
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

/* The value of a base64 digit, -1 for anything else ('=' included). */
static int
crypto_b64val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

long
crypto_unbase64(const char *in, void *out, size_t outmax)
{
	unsigned char *p = out;
	size_t len = strlen(in), pad = 0, n, o = 0;

	if (len % 4 != 0 || len / 4 * 3 > LONG_MAX)
		return -1;
	if (len > 0 && in[len - 1] == '=')
		pad = in[len - 2] == '=' ? 2 : 1;
	/* Check everything before writing: on -1, out is untouched. */
	for (size_t i = 0; i < len - pad; i++)
		if (crypto_b64val(in[i]) < 0)
			return -1;
	n = len / 4 * 3 - pad;
	if (n > outmax)
		return -1;
	/* As OpenSSL's EVP_DecodeBlock did before: the unused low bits of a padded last group
	 * are not checked. */
	for (size_t i = 0; i < len; i += 4) {
		uint32_t v = 0;

		for (size_t j = 0; j < 4; j++) {
			int d = crypto_b64val(in[i + j]);

			v = v << 6 | (uint32_t)(d < 0 ? 0 : d); /* d < 0: padding */
		}
		p[o++] = (unsigned char)(v >> 16);
		if (o < n)
			p[o++] = (unsigned char)(v >> 8);
		if (o < n)
			p[o++] = (unsigned char)v;
	}
	return (long)n;
}

void
crypto_sha256_hex(const char *s, char out[65])
{
	uint8_t md[CRYPTO_SHA256_LEN];

	crypto_sha256(s, strlen(s), md);
	crypto_hex(md, sizeof(md), out);
}

int
crypto_memeq(const void *a, const void *b, size_t len)
{
	/* volatile: every byte is read whatever the ones before held. */
	const volatile unsigned char *x = a, *y = b;
	unsigned char diff = 0;

	for (size_t i = 0; i < len; i++)
		diff |= x[i] ^ y[i];
	return diff == 0;
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
	explicit_bzero(rnd, nbytes);
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
	explicit_bzero(key, CRYPTO_KEY_LEN);
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
	explicit_bzero(key, CRYPTO_KEY_LEN);
	return rc;
}
