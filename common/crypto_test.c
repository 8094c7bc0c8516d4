/*
 * crypto_test.c: unit tests of crypto.c and its backend against published vectors (FIPS
 * 180-2, RFC 4231, RFC 4648), the key file rules and sealing (round trip and tampering).
 * Built twice: with the OpenSSL backend, and with the agent's mbedTLS backend
 * (CRYPTO_TEST_NO_SEAL: that one has no sealing), so both must give the same answers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto.h"
#include "err.h"

#ifndef CRYPTO_TEST_BACKEND
#error "CRYPTO_TEST_BACKEND names the backend this test is linked with"
#endif

static void
crypto_test_backend(void **state)
{
	(void)state;
	/* The build links the backend it means to prove. */
	assert_string_equal(crypto_backend(), CRYPTO_TEST_BACKEND);
}

static void
crypto_test_hexstr(const uint8_t *md, size_t len, const char *want)
{
	char hex[2 * 64 + 1];

	assert_true(len <= 64);
	crypto_hex(md, len, hex);
	assert_string_equal(hex, want);
}

static void
crypto_test_sha256(void **state)
{
	uint8_t md[CRYPTO_SHA256_LEN];
	char hex[65];

	(void)state;
	crypto_sha256("abc", 3, md);
	crypto_test_hexstr(md, sizeof(md),
			   "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	crypto_sha256("", 0, md);
	crypto_test_hexstr(md, sizeof(md),
			   "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	crypto_sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", hex);
	assert_string_equal(hex,
			    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void
crypto_test_sha256_long(void **state)
{
	static const struct {
		size_t len;
		const char *want;
	} sizes[] = {
	    /* Around the padding boundary: 55 bytes fit one block with the length, 56 do not. */
	    {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
	    {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
	    {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
	    /* FIPS 180-2: one million 'a'. */
	    {1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
	};
	uint8_t md[CRYPTO_SHA256_LEN];
	char *a = malloc(1000000);

	(void)state;
	assert_non_null(a);
	memset(a, 'a', 1000000);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		crypto_sha256(a, sizes[i].len, md);
		crypto_test_hexstr(md, sizeof(md), sizes[i].want);
	}
	free(a);
}

static void
crypto_test_hmac(void **state)
{
	static const char case7[] =
	    "This is a test using a larger than block-size key and a larger than block-size "
	    "data. The key needs to be hashed before being used by the HMAC algorithm.";
	uint8_t key[20], longkey[131], msg[50], md[CRYPTO_SHA256_LEN];

	(void)state;
	/* RFC 4231 test case 1 */
	memset(key, 0x0b, sizeof(key));
	crypto_hmac_sha256(key, sizeof(key), "Hi There", 8, md);
	crypto_test_hexstr(md, sizeof(md),
			   "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
	/* RFC 4231 test case 2 */
	crypto_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, md);
	crypto_test_hexstr(md, sizeof(md),
			   "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	/* RFC 4231 test case 3: 50 bytes of 0xdd under 20 bytes of 0xaa. */
	memset(key, 0xaa, sizeof(key));
	memset(msg, 0xdd, 50);
	crypto_hmac_sha256(key, sizeof(key), msg, 50, md);
	crypto_test_hexstr(md, sizeof(md),
			   "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
	/* RFC 4231 test cases 6 and 7: a key longer than the block is hashed first. */
	memset(longkey, 0xaa, sizeof(longkey));
	crypto_hmac_sha256(longkey, sizeof(longkey),
			   "Test Using Larger Than Block-Size Key - Hash Key First", 54, md);
	crypto_test_hexstr(md, sizeof(md),
			   "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
	crypto_hmac_sha256(longkey, sizeof(longkey), case7, strlen(case7), md);
	crypto_test_hexstr(md, sizeof(md),
			   "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
	/* Empty key and message (a well-known value). */
	crypto_hmac_sha256("", 0, "", 0, md);
	crypto_test_hexstr(md, sizeof(md),
			   "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

static void
crypto_test_hex(void **state)
{
	uint8_t in[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff}, out[8];
	char hex[13];

	(void)state;
	crypto_hex(in, sizeof(in), hex);
	assert_string_equal(hex, "00017f80abff");
	assert_int_equal(crypto_unhex(hex, out, sizeof(out)), 6);
	assert_memory_equal(out, in, 6);
	assert_int_equal(crypto_unhex("00017F80ABFF", out, sizeof(out)), 6);
	assert_memory_equal(out, in, 6);
	assert_int_equal(crypto_unhex("", out, sizeof(out)), 0);
	assert_int_equal(crypto_unhex("abc", out, sizeof(out)), -1);
	assert_int_equal(crypto_unhex("zz", out, sizeof(out)), -1);
	assert_int_equal(crypto_unhex("0g", out, sizeof(out)), -1);
	assert_int_equal(crypto_unhex(" 00", out, sizeof(out)), -1);
	assert_int_equal(crypto_unhex("000102", out, 2), -1);
	assert_int_equal(crypto_unhex("0001", out, 2), 2);
	crypto_hex(in, 0, hex);
	assert_string_equal(hex, "");
}

static void
crypto_test_base64_vectors(void **state)
{
	/* RFC 4648 section 10 */
	static const char *const enc[] = {"",	      "Zg==",	  "Zm8=",    "Zm9v",
					  "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	static const char *const nopad[] = {"",	      "Zg",	 "Zm8",	    "Zm9v",
					    "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
	const char *plain = "foobar";
	char out[16];

	(void)state;
	for (size_t n = 0; n <= 6; n++) {
		char *s = crypto_base64(plain, n), *t = crypto_base64_nopad(plain, n);

		assert_non_null(s);
		assert_non_null(t);
		assert_string_equal(s, enc[n]);
		assert_string_equal(t, nopad[n]);
		memset(out, 0x55, sizeof(out));
		assert_int_equal(crypto_unbase64(s, out, sizeof(out)), (long)n);
		assert_memory_equal(out, plain, n);
		/* Exactly enough room is enough; one byte less is not. */
		assert_int_equal(crypto_unbase64(s, out, n), (long)n);
		if (n > 0)
			assert_int_equal(crypto_unbase64(s, out, n - 1), -1);
		free(s);
		free(t);
	}
}

static void
crypto_test_base64_alphabet(void **state)
{
	/* Each of the 64 digits once, in order: the whole table, '+' and '/' included. */
	static const uint8_t all[48] = {0x00, 0x10, 0x83, 0x10, 0x51, 0x87, 0x20, 0x92, 0x8b, 0x30,
					0xd3, 0x8f, 0x41, 0x14, 0x93, 0x51, 0x55, 0x97, 0x61, 0x96,
					0x9b, 0x71, 0xd7, 0x9f, 0x82, 0x18, 0xa3, 0x92, 0x59, 0xa7,
					0xa2, 0x9a, 0xab, 0xb2, 0xdb, 0xaf, 0xc3, 0x1c, 0xb3, 0xd3,
					0x5d, 0xb7, 0xe3, 0x9e, 0xbb, 0xf3, 0xdf, 0xbf};
	static const char want[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	uint8_t out[48];
	char *s;

	(void)state;
	s = crypto_base64(all, sizeof(all));
	assert_string_equal(s, want);
	free(s);
	assert_int_equal(crypto_unbase64(want, out, sizeof(out)), 48);
	assert_memory_equal(out, all, 48);
	s = crypto_base64("\xfb\xff", 2);
	assert_string_equal(s, "+/8=");
	free(s);
	s = crypto_base64_nopad("\xff", 1);
	assert_string_equal(s, "/w");
	free(s);
	assert_int_equal(crypto_unbase64("+/8=", out, sizeof(out)), 2);
	assert_memory_equal(out, "\xfb\xff", 2);
}

static void
crypto_test_base64_roundtrip(void **state)
{
	uint8_t in[64], out[64];

	(void)state;
	for (size_t n = 0; n <= sizeof(in); n++) {
		char *s;

		assert_int_equal(crypto_random(in, sizeof(in)), 0);
		s = crypto_base64(in, n);
		assert_non_null(s);
		assert_int_equal(strlen(s), (n + 2) / 3 * 4);
		assert_int_equal(crypto_unbase64(s, out, sizeof(out)), (long)n);
		assert_memory_equal(out, in, n);
		free(s);
	}
	/* Every byte value (0x00 and 0xff included). */
	for (int i = 0; i < 64; i++)
		in[i] = (uint8_t)(i * 4 + 3);
	char *s = crypto_base64(in, 64);
	assert_int_equal(crypto_unbase64(s, out, sizeof(out)), 64);
	assert_memory_equal(in, out, 64);
	free(s);
}

static void
crypto_test_base64_invalid(void **state)
{
	static const char *const bad[] = {
	    "Zg",   "Zg=",	"Zm9",	     "Zm9v\n",	 "Zm9v ",    " Zm9v", "Zm 9v",
	    "Zm=v", "Z===",	"====",	     "Zm9v====", "Zm9*",     "Zm9-",  "Zm9_",
	    "=Zm9", "Zg==Zg==", "Zm9vYg=\n", "Zm9\tv",	 "Zm9v\r\n", "A",     "Zm9vY===",
	};
	char out[32];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (crypto_unbase64(bad[i], out, sizeof(out)) != -1)
			fail_msg("'%s' decoded", bad[i]);
}

static void
crypto_test_memeq(void **state)
{
	(void)state;
	assert_int_equal(crypto_memeq("abcdef", "abcdef", 6), 1);
	assert_int_equal(crypto_memeq("abcdef", "abcdeg", 6), 0);
	assert_int_equal(crypto_memeq("xbcdef", "abcdef", 6), 0);
	assert_int_equal(crypto_memeq("a", "b", 0), 1);
	/* A difference in the last byte of a long buffer, and in a high bit only. */
	{
		uint8_t x[100], y[100];

		memset(x, 0x5a, sizeof(x));
		memcpy(y, x, sizeof(y));
		assert_int_equal(crypto_memeq(x, y, sizeof(x)), 1);
		y[99] ^= 0x80;
		assert_int_equal(crypto_memeq(x, y, sizeof(x)), 0);
		assert_int_equal(crypto_memeq(x, y, 99), 1);
	}
}

static void
crypto_test_random_token(void **state)
{
	uint8_t a[32], b[32], zero[32] = {0};
	char *t1, *t2;

	(void)state;
	assert_int_equal(crypto_random(a, sizeof(a)), 0);
	assert_int_equal(crypto_random(b, sizeof(b)), 0);
	assert_memory_not_equal(a, b, sizeof(a));
	assert_memory_not_equal(a, zero, sizeof(a));

	t1 = crypto_token("stk_", 32);
	t2 = crypto_token("stk_", 32);
	assert_non_null(t1);
	assert_non_null(t2);
	assert_int_equal(strlen(t1), 4 + 64);
	assert_memory_equal(t1, "stk_", 4);
	assert_int_equal(strspn(t1 + 4, "0123456789abcdef"), 64);
	assert_string_not_equal(t1, t2);
	free(t1);
	free(t2);
	t1 = crypto_token("", 4);
	assert_int_equal(strlen(t1), 8);
	free(t1);

	/* A large read is filled to its end. */
	{
		size_t big = 1 << 20;
		uint8_t *p = calloc(1, big);

		assert_non_null(p);
		assert_int_equal(crypto_random(p, big), 0);
		assert_memory_not_equal(p + big - sizeof(zero), zero, sizeof(zero));
		free(p);
	}
}

struct crypto_test_dir {
	char dir[64];
	char key[128];
};

static int
crypto_test_setup(void **state)
{
	struct crypto_test_dir *d = calloc(1, sizeof(*d));

	if (d == NULL)
		return -1;
	snprintf(d->dir, sizeof(d->dir), "/tmp/crypto_test.XXXXXX");
	if (mkdtemp(d->dir) == NULL)
		return -1;
	snprintf(d->key, sizeof(d->key), "%s/secret.key", d->dir);
	*state = d;
	return 0;
}

static int
crypto_test_teardown(void **state)
{
	struct crypto_test_dir *d = *state;

	unlink(d->key);
	rmdir(d->dir);
	free(d);
	return 0;
}

static void
crypto_test_key_create_and_reload(void **state)
{
	struct crypto_test_dir *d = *state;
	uint8_t k1[CRYPTO_KEY_LEN], k2[CRYPTO_KEY_LEN], zero[CRYPTO_KEY_LEN] = {0};
	struct stat st;
	char err[256];
	mode_t old = umask(0);

	/* Created 0600 even under a permissive umask. */
	assert_int_equal(crypto_key_load(d->key, k1, err, sizeof(err)), 0);
	umask(old);
	assert_int_equal(stat(d->key, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_size, CRYPTO_KEY_LEN);
	assert_memory_not_equal(k1, zero, sizeof(k1));
	assert_int_equal(crypto_key_load(d->key, k2, err, sizeof(err)), 0);
	assert_memory_equal(k1, k2, sizeof(k1));
}

static void
crypto_test_key_bad_mode(void **state)
{
	struct crypto_test_dir *d = *state;
	uint8_t k[CRYPTO_KEY_LEN];
	char err[512];

	assert_int_equal(crypto_key_load(d->key, k, err, sizeof(err)), 0);
	assert_int_equal(chmod(d->key, 0644), 0);
	assert_int_equal(crypto_key_load(d->key, k, err, sizeof(err)), ERR_CRYPTO);
	assert_non_null(strstr(err, d->key));
	assert_non_null(strstr(err, "0644"));
	assert_non_null(strstr(err, "chmod 600"));
	assert_int_equal(chmod(d->key, 0640), 0);
	assert_int_equal(crypto_key_load(d->key, k, err, sizeof(err)), ERR_CRYPTO);
	assert_int_equal(chmod(d->key, 0604), 0);
	assert_int_equal(crypto_key_load(d->key, k, err, sizeof(err)), ERR_CRYPTO);
	assert_int_equal(chmod(d->key, 0400), 0);
	assert_int_equal(crypto_key_load(d->key, k, err, sizeof(err)), 0);
}

static void
crypto_test_key_bad_size(void **state)
{
	struct crypto_test_dir *d = *state;
	uint8_t k[CRYPTO_KEY_LEN];
	char err[512];
	int fd;

	fd = open(d->key, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "short", 5), 5);
	close(fd);
	assert_int_equal(crypto_key_load(d->key, k, err, sizeof(err)), ERR_CRYPTO);
	assert_non_null(strstr(err, "exactly 32 bytes"));
	assert_non_null(strstr(err, d->key));
	/* Empty file (e.g. a crash during creation): refused, not overwritten. */
	assert_int_equal(truncate(d->key, 0), 0);
	assert_int_equal(crypto_key_load(d->key, k, err, sizeof(err)), ERR_CRYPTO);
	assert_int_equal(truncate(d->key, 33), 0);
	assert_int_equal(crypto_key_load(d->key, k, err, sizeof(err)), ERR_CRYPTO);
}

static void
crypto_test_key_no_dir(void **state)
{
	struct crypto_test_dir *d = *state;
	uint8_t k[CRYPTO_KEY_LEN];
	char err[512], path[256];

	snprintf(path, sizeof(path), "%s/missing/secret.key", d->dir);
	assert_int_equal(crypto_key_load(path, k, err, sizeof(err)), ERR_IO);
	assert_non_null(strstr(err, path));
	/* A directory is not a key file. */
	assert_int_equal(crypto_key_load(d->dir, k, err, sizeof(err)), ERR_CRYPTO);
}

#ifndef CRYPTO_TEST_NO_SEAL
static void
crypto_test_seal_roundtrip(void **state)
{
	uint8_t key[CRYPTO_KEY_LEN];
	const char *secret = "-----BEGIN OPENSSH PRIVATE KEY-----\nxyz\n";
	char *s1 = NULL, *s2 = NULL, *plain = NULL;
	size_t len = 0;

	(void)state;
	assert_int_equal(crypto_random(key, sizeof(key)), 0);
	assert_int_equal(
	    crypto_seal(key, secret, strlen(secret), "server:42:ssh_key", &s1, NULL, 0), 0);
	assert_memory_equal(s1, "v1:", 3);
	/* 12-byte nonce + ciphertext + 16-byte tag, base64. */
	assert_int_equal(strlen(s1), 3 + (12 + strlen(secret) + 16 + 2) / 3 * 4);
	assert_int_equal(crypto_open(key, s1, "server:42:ssh_key", &plain, &len, NULL, 0), 0);
	assert_int_equal(len, strlen(secret));
	assert_string_equal(plain, secret);
	free(plain);

	/* A fresh nonce every time. */
	assert_int_equal(
	    crypto_seal(key, secret, strlen(secret), "server:42:ssh_key", &s2, NULL, 0), 0);
	assert_string_not_equal(s1, s2);
	free(s1);
	free(s2);

	/* Empty secret, NULL aad, binary content with NUL bytes. */
	assert_int_equal(crypto_seal(key, "", 0, NULL, &s1, NULL, 0), 0);
	assert_int_equal(crypto_open(key, s1, NULL, &plain, &len, NULL, 0), 0);
	assert_int_equal(len, 0);
	assert_string_equal(plain, "");
	free(plain);
	free(s1);
	assert_int_equal(crypto_seal(key, "a\0b\0c", 5, "x", &s1, NULL, 0), 0);
	assert_int_equal(crypto_open(key, s1, "x", &plain, &len, NULL, 0), 0);
	assert_int_equal(len, 5);
	assert_memory_equal(plain, "a\0b\0c", 5);
	free(plain);
	free(s1);
}

static void
crypto_test_open_rejects(void **state)
{
	uint8_t key[CRYPTO_KEY_LEN], other[CRYPTO_KEY_LEN], raw[256];
	char *sealed = NULL, *plain = NULL, *re, err[256];
	size_t len = 99;
	long rawlen;

	(void)state;
	assert_int_equal(crypto_random(key, sizeof(key)), 0);
	memcpy(other, key, sizeof(key));
	other[0] ^= 1;
	assert_int_equal(
	    crypto_seal(key, "hunter2", 7, "server:1:password", &sealed, err, sizeof(err)), 0);

	/* Wrong aad, missing aad, wrong key. */
	assert_int_equal(
	    crypto_open(key, sealed, "server:2:password", &plain, &len, err, sizeof(err)),
	    ERR_CRYPTO);
	assert_string_equal(err, "secret does not verify (wrong key or tampered)");
	assert_null(plain);
	assert_int_equal(len, 0);
	assert_int_equal(crypto_open(key, sealed, NULL, &plain, &len, err, sizeof(err)),
			 ERR_CRYPTO);
	assert_int_equal(
	    crypto_open(other, sealed, "server:1:password", &plain, &len, err, sizeof(err)),
	    ERR_CRYPTO);
	assert_string_equal(err, "secret does not verify (wrong key or tampered)");
	assert_null(plain);

	/* Flip one bit in each part: nonce, ciphertext, tag. */
	rawlen = crypto_unbase64(sealed + 3, raw, sizeof(raw));
	assert_int_equal(rawlen, 12 + 7 + 16);
	for (long i = 0; i < rawlen; i++) {
		char *s;

		raw[i] ^= 0x04;
		re = crypto_base64(raw, (size_t)rawlen);
		s = malloc(strlen(re) + 4);
		snprintf(s, strlen(re) + 4, "v1:%s", re);
		if (crypto_open(key, s, "server:1:password", &plain, &len, err, sizeof(err)) !=
		    ERR_CRYPTO)
			fail_msg("flipped byte %ld still opened", i);
		assert_null(plain);
		free(s);
		free(re);
		raw[i] ^= 0x04;
	}

	/* Truncated, bad prefix, bad base64. */
	re = crypto_base64(raw, 12 + 16 - 1);
	snprintf((char *)raw, sizeof(raw), "v1:%s", re);
	free(re);
	assert_int_equal(crypto_open(key, (char *)raw, NULL, &plain, &len, err, sizeof(err)),
			 ERR_INVAL);
	assert_string_equal(err, "sealed secret is truncated");
	assert_int_equal(crypto_open(key, "v1:AAAA", NULL, &plain, &len, err, sizeof(err)),
			 ERR_INVAL);
	assert_string_equal(err, "sealed secret is truncated");
	assert_int_equal(crypto_open(key, sealed + 3, NULL, &plain, &len, err, sizeof(err)),
			 ERR_INVAL);
	assert_string_equal(err, "sealed secret has an unknown format");
	assert_int_equal(crypto_open(key, "v2:AAAA", NULL, &plain, &len, err, sizeof(err)),
			 ERR_INVAL);
	assert_int_equal(crypto_open(key, "v1:not base64!", NULL, &plain, &len, err, sizeof(err)),
			 ERR_INVAL);
	assert_string_equal(err, "sealed secret is not valid base64");

	/* Still opens with the right key and aad. */
	assert_int_equal(
	    crypto_open(key, sealed, "server:1:password", &plain, &len, err, sizeof(err)), 0);
	assert_string_equal(plain, "hunter2");
	free(plain);
	free(sealed);
}

#endif /* CRYPTO_TEST_NO_SEAL */

#define T(f) cmocka_unit_test_setup_teardown(f, crypto_test_setup, crypto_test_teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(crypto_test_backend),
	    cmocka_unit_test(crypto_test_sha256),
	    cmocka_unit_test(crypto_test_sha256_long),
	    cmocka_unit_test(crypto_test_hmac),
	    cmocka_unit_test(crypto_test_hex),
	    cmocka_unit_test(crypto_test_base64_vectors),
	    cmocka_unit_test(crypto_test_base64_alphabet),
	    cmocka_unit_test(crypto_test_base64_roundtrip),
	    cmocka_unit_test(crypto_test_base64_invalid),
	    cmocka_unit_test(crypto_test_memeq),
	    cmocka_unit_test(crypto_test_random_token),
	    T(crypto_test_key_create_and_reload),
	    T(crypto_test_key_bad_mode),
	    T(crypto_test_key_bad_size),
	    T(crypto_test_key_no_dir),
#ifndef CRYPTO_TEST_NO_SEAL
	    cmocka_unit_test(crypto_test_seal_roundtrip),
	    cmocka_unit_test(crypto_test_open_rejects),
#endif
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
