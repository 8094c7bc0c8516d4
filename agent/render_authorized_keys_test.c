/*
 * render_authorized_keys_test.c: tests of render_authorized_keys.c: exact new texts (block
 * appended, replaced, emptied, outside lines kept and reported), broken blocks and non-plain
 * key lines refused, fingerprints equal to what ssh-keygen -lf printed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "render_authorized_keys.h"

/* Made with ssh-keygen; the fingerprints are what `ssh-keygen -lf` printed. */
#define K1                                                                                         \
	"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDra+xVfn0FAvBdVTnawIhEQdSv1cTsBrn6L3RKq+Q+H "        \
	"alice@laptop"
#define K1_FP "SHA256:q4Vncnk0cIxPt1M6WjRFOtK0I+xyQ3LqY1QIGIq8a/k"
#define K2                                                                                         \
	"ecdsa-sha2-nistp256 "                                                                     \
	"AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBDJjqn4Dmu9e1SQCilE5qbIIw70OOaDqEnIf" \
	"dG"                                                                                       \
	"Kf7Jt4Iz3+jOijUQCDZUIkvEIOUweJsmbF2Sgm8QtChYSUlfw= bob ci key"
#define K2_FP "SHA256:YxBCa8fJst90ASuun/6fGkkwMGJ0P6OIgTN9XuCFd4c"
#define K3                                                                                         \
	"ssh-rsa "                                                                                 \
	"AAAAB3NzaC1yc2EAAAADAQABAAABAQDdVm4CiA1VisAd9uRxD3CXm4LxyLIMNYUj5EwrJJDH00NcxkZL8PMMaIFU" \
	"Otv5"                                                                                     \
	"dAKPhD7ip6HruFWrOPU0bm2BWsGD2bXtAhwt4KJ6R7buh8bN1qEmI/wygV/"                              \
	"m+08egfFuCWaS3WLBHqPNzHVnXdblgup"                                                         \
	"ynUaRCrzW65YisMsRbHKb1hZH+bwUTGpUGao/"                                                    \
	"z6Sef4wqVKCSoIyUoIorb8azNnvLZFAv+pFYdjiJUynqpnIlPVo4Jj"                                   \
	"Bccokhfhv83RmWxHfd+r+wxz5HsipTo9MZYU0ngaWZB5mpohNYX56YMoFqi/"                             \
	"cAhDYeLHSSAsMkmvjzv4lh65zjq1mWJ"                                                          \
	"I7o5k9j"
#define K3_FP "SHA256:pIGuKRL4cike6p62agaOGTZgW95nUzFUDNElOrrvMx4"
#define BEGIN "# BEGIN stoke managed keys\n"
#define END "# END stoke managed keys\n"
#define HAND "from=\"10.0.0.0/8\" " K3 " hand-added"

static void
render_authorized_keys_test_fingerprints(void **state)
{
	char fp[RENDER_AUTHORIZED_KEYS_FP_LEN], err[256];

	(void)state;
	assert_int_equal(render_authorized_keys_fingerprint(K1, fp, err, sizeof(err)), 0);
	assert_string_equal(fp, K1_FP);
	assert_int_equal(render_authorized_keys_fingerprint(K2, fp, err, sizeof(err)), 0);
	assert_string_equal(fp, K2_FP);
	assert_int_equal(render_authorized_keys_fingerprint(K3, fp, err, sizeof(err)), 0);
	assert_string_equal(fp, K3_FP);
	/* The comment is not part of the key. */
	assert_int_equal(
	    render_authorized_keys_fingerprint(K3 " other comment", fp, err, sizeof(err)), 0);
	assert_string_equal(fp, K3_FP);
}

static void
render_authorized_keys_test_new_file(void **state)
{
	const char *keys[] = {K1, K2};
	struct render_authorized_keys r;
	char err[256];

	(void)state;
	assert_int_equal(render_authorized_keys(NULL, keys, 2, &r, err, sizeof(err)), 0);
	assert_string_equal(r.text, BEGIN K1 "\n" K2 "\n" END);
	assert_int_equal(r.noutside, 0);
	render_authorized_keys_fini(&r);
	assert_int_equal(render_authorized_keys("", keys, 0, &r, err, sizeof(err)), 0);
	assert_string_equal(r.text, BEGIN END);
	render_authorized_keys_fini(&r);
}

static void
render_authorized_keys_test_append_keeps_outside(void **state)
{
	const char *keys[] = {K2};
	/* No final newline on the hand-added line: the block still starts on its own line. */
	const char *cur = "# my keys\n\n" HAND;
	struct render_authorized_keys r;
	char err[256];

	(void)state;
	assert_int_equal(render_authorized_keys(cur, keys, 1, &r, err, sizeof(err)), 0);
	assert_string_equal(r.text, "# my keys\n\n" HAND "\n" BEGIN K2 "\n" END);
	/* Comments and blank lines are not keys; the options line is reported as found. */
	assert_int_equal(r.noutside, 1);
	assert_string_equal(r.outside[0], HAND);
	render_authorized_keys_fini(&r);
}

static void
render_authorized_keys_test_replace_block(void **state)
{
	const char *keys[] = {K3, K1};
	const char *cur = K2 " before\n" BEGIN K1 "\n" K2 "\n" END "# tail\n" K1 " after";
	struct render_authorized_keys r, again;
	char err[256];

	(void)state;
	assert_int_equal(render_authorized_keys(cur, keys, 2, &r, err, sizeof(err)), 0);
	assert_string_equal(r.text,
			    K2 " before\n" BEGIN K3 "\n" K1 "\n" END "# tail\n" K1 " after");
	assert_int_equal(r.noutside, 2);
	assert_string_equal(r.outside[0], K2 " before");
	assert_string_equal(r.outside[1], K1 " after");
	/* Applying the same list again changes nothing. */
	assert_int_equal(render_authorized_keys(r.text, keys, 2, &again, err, sizeof(err)), 0);
	assert_string_equal(again.text, r.text);
	render_authorized_keys_fini(&again);
	render_authorized_keys_fini(&r);

	/* An empty list empties the block and keeps the rest. */
	assert_int_equal(render_authorized_keys(cur, NULL, 0, &r, err, sizeof(err)), 0);
	assert_string_equal(r.text, K2 " before\n" BEGIN END "# tail\n" K1 " after");
	render_authorized_keys_fini(&r);
}

static void
render_authorized_keys_test_broken_blocks(void **state)
{
	static const char *const bad[] = {
	    "x\n" BEGIN K1 "\n", END BEGIN K1 "\n" END, BEGIN END BEGIN END,
	    K1 "\n" END,	 BEGIN BEGIN END,
	};
	const char *keys[] = {K1};
	struct render_authorized_keys r;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_not_equal(render_authorized_keys(bad[i], keys, 1, &r, err, sizeof(err)),
				     0);
		assert_null(r.text);
		assert_non_null(strstr(err, "by hand"));
	}
}

static void
render_authorized_keys_test_bad_keys(void **state)
{
	static const char *const bad[] = {
	    "",
	    K1 "\n" K2,
	    K1 "\n",
	    K1 "\r",
	    "command=\"/bin/sh\" " K1,
	    "no-pty " K1,
	    " " K1,
	    "ssh-ed25519",
	    "ssh-ed25519 ",
	    "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
	    "ssh-ed25519 not-base64!!",
	    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",
	    /* An ed25519 blob under another type name. */
	    "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIDra+xVfn0FAvBdVTnawIhEQdSv1cTsBrn6L3RKq+Q+H",
	    K1 " comment\twith tab",
	    K1 " comment \x1b[31m",
	    "ssh-ed25519\tAAAAC3NzaC1lZDI1NTE5AAAAIDra+xVfn0FAvBdVTnawIhEQdSv1cTsBrn6L3RKq+Q+H",
	};
	struct render_authorized_keys r;
	char err[256], fp[RENDER_AUTHORIZED_KEYS_FP_LEN];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *keys[] = {K2, bad[i]};

		assert_int_not_equal(render_authorized_keys_check(bad[i], err, sizeof(err)), 0);
		assert_int_not_equal(
		    render_authorized_keys_fingerprint(bad[i], fp, err, sizeof(err)), 0);
		assert_int_not_equal(render_authorized_keys("", keys, 2, &r, err, sizeof(err)), 0);
		assert_null(r.text);
		assert_non_null(strstr(err, "keys[1]"));
	}
	assert_int_equal(render_authorized_keys_check(K1, err, sizeof(err)), 0);
	assert_int_equal(render_authorized_keys_check(K2, err, sizeof(err)), 0);
	assert_int_equal(render_authorized_keys_check(K3 " ", err, sizeof(err)), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(render_authorized_keys_test_fingerprints),
	    cmocka_unit_test(render_authorized_keys_test_new_file),
	    cmocka_unit_test(render_authorized_keys_test_append_keeps_outside),
	    cmocka_unit_test(render_authorized_keys_test_replace_block),
	    cmocka_unit_test(render_authorized_keys_test_broken_blocks),
	    cmocka_unit_test(render_authorized_keys_test_bad_keys),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
