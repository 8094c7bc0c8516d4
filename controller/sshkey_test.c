/*
 * sshkey_test.c: sshkey_parse against keys that the real ssh-keygen makes at test time
 * (Ed25519, ECDSA P-256/384/521, RSA 2048/3072, and hand-built security-key blobs): the
 * fingerprint, bits and type must equal what `ssh-keygen -lf` prints; and every refusal
 * (DSA, short RSA, private key, several keys, options, type mismatch, bad base64,
 * embedded newline or CR, absurd comments) with its reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "crypto.h"
#include "err.h"
#include "sshkey.h"

static char kt_dir[128];

/* Runs argv, stdout into out (NUL-terminated); returns the exit status. */
static int
kt_run(char *const argv[], char *out, size_t outlen)
{
	int fds[2], status;
	size_t n = 0;
	ssize_t r;
	pid_t pid;

	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(fds[1], 1);
		close(fds[0]);
		close(fds[1]);
		execv(argv[0], argv);
		_exit(127);
	}
	close(fds[1]);
	while (n + 1 < outlen && (r = read(fds[0], out + n, outlen - 1 - n)) > 0)
		n += (size_t)r;
	out[n] = '\0';
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char *
kt_read(const char *path)
{
	static char buf[32768];
	FILE *f = fopen(path, "r");
	size_t n;

	assert_non_null(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void
kt_write(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* Makes a key with ssh-keygen; returns the path of the private key. */
static const char *
kt_keygen(const char *type, const char *bits, const char *name)
{
	static char path[256];
	char out[4096];
	char *argv[16];
	int i = 0;

	snprintf(path, sizeof(path), "%s/%s", kt_dir, name);
	argv[i++] = "/usr/bin/ssh-keygen";
	argv[i++] = "-q";
	argv[i++] = "-t";
	argv[i++] = (char *)type;
	if (bits) {
		argv[i++] = "-b";
		argv[i++] = (char *)bits;
	}
	argv[i++] = "-N";
	argv[i++] = "";
	argv[i++] = "-C";
	argv[i++] = "test key ünïcode@host";
	argv[i++] = "-f";
	argv[i++] = path;
	argv[i] = NULL;
	assert_int_equal(kt_run(argv, out, sizeof(out)), 0);
	return path;
}

/* "PATH.pub" of a private key path (a static buffer). */
static const char *
kt_pub(const char *priv)
{
	static char path[300];

	snprintf(path, sizeof(path), "%s.pub", priv);
	return path;
}

/* Parses pubpath with sshkey_parse and compares with ssh-keygen -lf on it. */
static void
kt_compare(const char *pubpath)
{
	char out[4096], want[512], err[512];
	char *argv[] = {"/usr/bin/ssh-keygen", "-l", "-f", (char *)pubpath, NULL};
	struct sshkey *k = NULL;
	const char *text = kt_read(pubpath);
	int rc;

	rc = sshkey_parse(text, &k, err, sizeof(err));
	if (rc != 0)
		fail_msg("%s: refused: %s", pubpath, err);
	assert_int_equal(kt_run(argv, out, sizeof(out)), 0);
	out[strcspn(out, "\n")] = '\0';
	snprintf(want, sizeof(want), "%d %s %s (%s)", k->bits, k->fingerprint,
		 k->comment[0] ? k->comment : "no comment", k->label);
	if (strcmp(out, want) != 0)
		fail_msg("ssh-keygen -lf says \"%s\"; sshkey says \"%s\"", out, want);
	/* The normalised line is the .pub line itself. */
	assert_int_equal(strncmp(k->line, text, strlen(k->line)), 0);
	sshkey_free(k);
}

static void
kt_generated(void **state)
{
	static const struct {
		const char *type, *bits, *name;
	} keys[] = {
	    {"ed25519", NULL, "ed"},   {"ecdsa", "256", "ec256"},  {"ecdsa", "384", "ec384"},
	    {"ecdsa", "521", "ec521"}, {"rsa", "2048", "rsa2048"}, {"rsa", "3072", "rsa3072"},
	};
	char pub[300];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		snprintf(pub, sizeof(pub), "%s.pub",
			 kt_keygen(keys[i].type, keys[i].bits, keys[i].name));
		kt_compare(pub);
	}
}

/* Appends an RFC 4253 string to blob. */
static size_t
kt_put(uint8_t *blob, size_t off, const void *data, size_t len)
{
	blob[off] = (uint8_t)(len >> 24);
	blob[off + 1] = (uint8_t)(len >> 16);
	blob[off + 2] = (uint8_t)(len >> 8);
	blob[off + 3] = (uint8_t)len;
	memcpy(blob + off + 4, data, len);
	return off + 4 + len;
}

static char *
kt_line(const char *type, const uint8_t *blob, size_t len, const char *comment)
{
	char *b64 = crypto_base64(blob, len), *line;

	assert_non_null(b64);
	assert_true(asprintf(&line, "%s %s%s%s\n", type, b64, comment ? " " : "",
			     comment ? comment : "") > 0);
	free(b64);
	return line;
}

/* Security-key types cannot be generated without a token: build their blobs. */
static void
kt_security_keys(void **state)
{
	uint8_t blob[512], pk[32], point[65];
	char path[300], *line;
	size_t n;

	(void)state;
	crypto_random(pk, sizeof(pk));
	n = kt_put(blob, 0, "sk-ssh-ed25519@openssh.com", 26);
	n = kt_put(blob, n, pk, 32);
	n = kt_put(blob, n, "ssh:", 4);
	line = kt_line("sk-ssh-ed25519@openssh.com", blob, n, "yubi");
	snprintf(path, sizeof(path), "%s/sked.pub", kt_dir);
	kt_write(path, line);
	free(line);
	kt_compare(path);

	/* A real P-256 point: from a generated ECDSA key's blob. */
	{
		char *text = kt_read(kt_pub(kt_keygen("ecdsa", "256", "skec")));
		char b64[512];
		uint8_t raw[512];
		long rl;

		sscanf(text, "%*s %511s", b64);
		rl = crypto_unbase64(b64, raw, sizeof(raw));
		assert_true(rl > 65);
		memcpy(point, raw + rl - 65, 65);
	}
	n = kt_put(blob, 0, "sk-ecdsa-sha2-nistp256@openssh.com", 34);
	n = kt_put(blob, n, "nistp256", 8);
	n = kt_put(blob, n, point, 65);
	n = kt_put(blob, n, "ssh:", 4);
	line = kt_line("sk-ecdsa-sha2-nistp256@openssh.com", blob, n, NULL);
	snprintf(path, sizeof(path), "%s/skec.pub", kt_dir);
	kt_write(path, line);
	free(line);
	kt_compare(path);
}

static void
kt_refused(const char *what, const char *text, const char *reason)
{
	struct sshkey *k = (struct sshkey *)1;
	char err[512] = "";
	int rc = sshkey_parse(text, &k, err, sizeof(err));

	if (rc == 0)
		fail_msg("%s: accepted, should be refused (%s)", what, reason);
	assert_int_equal(rc, ERR_INVAL);
	assert_null(k);
	if (strstr(err, reason) == NULL)
		fail_msg("%s: refused with \"%s\", expected it to say \"%s\"", what, err, reason);
}

static void
kt_refusals(void **state)
{
	char pub[32768], pub2[32768], buf[70000], b64[8192], *line;
	uint8_t blob[4096], big[256];
	char priv[300];
	size_t n;

	(void)state;
	snprintf(priv, sizeof(priv), "%s", kt_keygen("ed25519", NULL, "r-ed"));
	snprintf(pub, sizeof(pub), "%s", kt_read(kt_pub(priv)));
	snprintf(pub2, sizeof(pub2), "%s", kt_read(kt_pub(kt_keygen("ed25519", NULL, "r-ed2"))));
	sscanf(pub, "%*s %8191s", b64);

	kt_refused("empty", "", "empty");
	kt_refused("blank", " \n\n", "empty");
	/* DSA: a hand-made ssh-dss blob (p, q, g, y) */
	memset(big, 0x5a, sizeof(big));
	big[0] = 0x7f;
	n = kt_put(blob, 0, "ssh-dss", 7);
	n = kt_put(blob, n, big, 128);
	n = kt_put(blob, n, big, 20);
	n = kt_put(blob, n, big, 128);
	n = kt_put(blob, n, big, 128);
	line = kt_line("ssh-dss", blob, n, "old");
	kt_refused("DSA", line, "DSA keys are refused");
	free(line);
	/* short RSA, made by ssh-keygen */
	snprintf(buf, sizeof(buf), "%s", kt_read(kt_pub(kt_keygen("rsa", "1024", "r-rsa1024"))));
	kt_refused("RSA 1024", buf, "this RSA key has 1024 bits; at least 2048");
	/* the private key pasted by mistake */
	kt_refused("private key", kt_read(priv), "this is a private key");
	{
		char pem[300], out[64];
		char *argv[] = {
		    "/usr/bin/openssl", "genpkey", "-algorithm", "ed25519", "-out", pem, NULL};

		snprintf(pem, sizeof(pem), "%s/pkcs8.pem", kt_dir);
		assert_int_equal(kt_run(argv, out, sizeof(out)), 0);
		kt_refused("PKCS#8 private key", kt_read(pem), "this is a private key");
	}
	/* several keys */
	snprintf(pub2, sizeof(pub2), "%s", kt_read(kt_pub(kt_keygen("ed25519", NULL, "r-ed3"))));
	snprintf(buf, sizeof(buf), "%s%s", pub, pub2);
	kt_refused("two keys", buf, "holds 2 keys");
	snprintf(buf, sizeof(buf), "%s\n%s\n", pub, pub2);
	kt_refused("two keys, blank line between", buf, "holds 2 keys");
	/* options */
	snprintf(buf, sizeof(buf), "command=\"/bin/ls\" %s", pub);
	kt_refused("command= prefix", buf, "starts with options");
	snprintf(buf, sizeof(buf), "no-pty %s", pub);
	kt_refused("no-pty prefix", buf, "starts with options");
	snprintf(buf, sizeof(buf), "restrict,from=\"10.0.0.1\" %s", pub);
	kt_refused("restrict prefix", buf, "starts with options");
	/* inner type differs */
	snprintf(buf, sizeof(buf), "ssh-rsa %s me@host\n", b64);
	kt_refused("ed25519 blob under ssh-rsa", buf, "the type and the key do not match");
	snprintf(buf, sizeof(buf), "ecdsa-sha2-nistp256 %s\n", b64);
	kt_refused("ed25519 blob under ecdsa", buf, "is of type \"ssh-ed25519\"");
	/* bad base64 */
	snprintf(buf, sizeof(buf), "ssh-ed25519 %s me\n", b64);
	buf[20] = '!';
	kt_refused("bad base64 character", buf, "not valid base64");
	snprintf(buf, sizeof(buf), "ssh-ed25519 %.*s me\n", (int)strlen(b64) - 1, b64);
	kt_refused("truncated base64", buf, "not valid base64");
	/* cut blob: valid base64 of a shorter blob */
	n = kt_put(blob, 0, "ssh-ed25519", 11);
	n = kt_put(blob, n, big, 16);
	line = kt_line("ssh-ed25519", blob, n, NULL);
	kt_refused("short ed25519 key", line, "32-byte Ed25519 key");
	free(line);
	n = kt_put(blob, 0, "ssh-ed25519", 11);
	n = kt_put(blob, n, big, 32);
	blob[n++] = 0;
	line = kt_line("ssh-ed25519", blob, n, NULL);
	kt_refused("trailing bytes", line, "bytes after the key");
	free(line);
	/* embedded newline and CR */
	snprintf(buf, sizeof(buf), "ssh-ed25519 %s\nme@host\n", b64);
	kt_refused("embedded newline", buf, "embedded newline");
	snprintf(buf, sizeof(buf), "ssh-ed25519 %s\rme@host\n", b64);
	kt_refused("embedded CR", buf, "embedded carriage return");
	/* absurd comments */
	memset(big, 'a', 255);
	snprintf(buf, sizeof(buf), "ssh-ed25519 %s %.255s%.255s\n", b64, (char *)big, (char *)big);
	kt_refused("long comment", buf, "the comment is 510 bytes long");
	snprintf(buf, sizeof(buf), "ssh-ed25519 %s evil\x1b[31mred\n", b64);
	kt_refused("escape in comment", buf, "control character");
	snprintf(buf, sizeof(buf), "ssh-ed25519 %s evil\xe2\x80\xaeowt\n", b64);
	kt_refused("bidi override in comment", buf, "text direction");
	snprintf(buf, sizeof(buf), "ssh-ed25519 %s bad\xff\xfe\n", b64);
	kt_refused("invalid UTF-8 in comment", buf, "not valid UTF-8");
	snprintf(buf, sizeof(buf), "ssh-ed25519 %s tab\there\n", b64);
	kt_refused("tab in comment", buf, "control characters");
	/* other refusals */
	kt_refused("unknown type", "ssh-foo AAAA\n", "unknown key type");
	snprintf(buf, sizeof(buf), "ssh-ed25519-cert-v01@openssh.com %s\n", b64);
	kt_refused("certificate", buf, "certificates are not taken");
	kt_refused("RFC 4716",
		   "---- BEGIN SSH2 PUBLIC KEY ----\nAAAA\n---- END SSH2 PUBLIC KEY ----\n",
		   "RFC 4716");
	kt_refused("missing data", "ssh-ed25519\n", "missing");
	memset(buf, 'A', 20000);
	buf[20000] = '\0';
	kt_refused("huge input", buf, "at most 16384");
}

static void
kt_accepted_forms(void **state)
{
	char pub[8192], buf[9000], err[512], b64[8192];
	struct sshkey *k = NULL;

	(void)state;
	snprintf(pub, sizeof(pub), "%s", kt_read(kt_pub(kt_keygen("ed25519", NULL, "a-ed"))));
	sscanf(pub, "%*s %8191s", b64);
	/* Saved on Windows: "\r\n" at the end. */
	snprintf(buf, sizeof(buf), "ssh-ed25519 %s win@host\r\n", b64);
	assert_int_equal(sshkey_parse(buf, &k, err, sizeof(err)), 0);
	assert_string_equal(k->comment, "win@host");
	sshkey_free(k);
	/* Tabs between the fields, no comment, blanks around. */
	snprintf(buf, sizeof(buf), "  ssh-ed25519\t%s  \n", b64);
	assert_int_equal(sshkey_parse(buf, &k, err, sizeof(err)), 0);
	assert_string_equal(k->comment, "");
	assert_int_equal(strncmp(k->line, "ssh-ed25519 ", 12), 0);
	assert_string_equal(k->line + 12, b64);
	sshkey_free(k);
	sshkey_free(NULL);
}

static int
kt_setup(void **state)
{
	(void)state;
	snprintf(kt_dir, sizeof(kt_dir), "/tmp/stoke-sshkey-test-XXXXXX");
	assert_non_null(mkdtemp(kt_dir));
	return 0;
}

static int
kt_teardown(void **state)
{
	char out[64];
	char *argv[] = {"/bin/rm", "-rf", kt_dir, NULL};

	(void)state;
	kt_run(argv, out, sizeof(out));
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(kt_generated),
	    cmocka_unit_test(kt_security_keys),
	    cmocka_unit_test(kt_refusals),
	    cmocka_unit_test(kt_accepted_forms),
	};

	return cmocka_run_group_tests(tests, kt_setup, kt_teardown);
}
