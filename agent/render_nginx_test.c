/*
 * render_nginx_test.c: unit tests of render_nginx.c: the exact server block text, and
 * every way a name, root or port could smuggle nginx syntax in is refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "render_nginx.h"

static const char *render_nginx_test_expected =
    "# stoke site example.com: written by stoke-agent; changes made here are overwritten.\n"
    "server {\n"
    "\tlisten 8080;\n"
    "\tlisten [::]:8080;\n"
    "\tserver_name example.com www.example.com *.cdn.example.com;\n"
    "\troot /var/www/example.com/current/public;\n"
    "\tindex index.html index.htm;\n"
    "\n"
    "\tlocation / {\n"
    "\t\ttry_files $uri $uri/ =404;\n"
    "\t}\n"
    "\n"
    "\t# .git, .env and the like are never served.\n"
    "\tlocation ~ /\\.(?!well-known) {\n"
    "\t\tdeny all;\n"
    "\t}\n"
    "}\n";

static void
render_nginx_test_exact(void **state)
{
	const char *names[] = {"example.com", "www.example.com", "*.cdn.example.com"};
	char err[256], *out = NULL;

	(void)state;
	assert_int_equal(render_nginx_site("example.com", names, 3,
					   "/var/www/example.com/current/public", 8080, 1, &out,
					   err, sizeof(err)),
			 0);
	assert_string_equal(out, render_nginx_test_expected);
	free(out);
}

static void
render_nginx_test_defaults(void **state)
{
	const char *names[] = {"a.example.org"};
	char err[256], *out = NULL;

	(void)state;
	assert_int_equal(
	    render_nginx_site("a.example.org", names, 1, "/srv/a", 0, 0, &out, err, sizeof(err)),
	    0);
	/* Port 0 means 80; no IPv6 line when asked not to. */
	assert_non_null(strstr(out, "\tlisten 80;\n\tserver_name a.example.org;\n"));
	assert_null(strstr(out, "[::]"));
	assert_non_null(strstr(out, "\troot /srv/a;\n"));
	free(out);
}

static void
render_nginx_test_bad_names(void **state)
{
	static const char *const bad[] = {
	    "example.com;",
	    "example.com}",
	    "example.com{",
	    "example.com\n",
	    "example.com\nlisten 1",
	    "example.com example.org",
	    "exa;mple.com",
	    "example.com;include /etc/passwd",
	    "$host.example.com",
	    "\"example.com\"",
	    "example.com#",
	    "",
	    "localhost",
	    "-a.example.com",
	    "EXAMPLE.com",
	    "a.*.example.com",
	    "example.com\t",
	    "example.com'",
	    "exam\\ple.com",
	    "example.com/x",
	};
	char err[256], *out = NULL;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *names[] = {"ok.example.com", bad[i]};

		assert_int_not_equal(render_nginx_site("ok.example.com", names, 2, "/srv/a", 80, 1,
						       &out, err, sizeof(err)),
				     0);
		assert_null(out);
		assert_non_null(strstr(err, "server_names[1]"));
		/* As the site's own name too. */
		assert_int_not_equal(
		    render_nginx_site(bad[i], names, 1, "/srv/a", 80, 1, &out, err, sizeof(err)),
		    0);
		assert_null(out);
	}
	{
		const char *names[] = {"example.com"};

		/* The site name is a file name: no wildcard. */
		assert_int_not_equal(render_nginx_site("*.example.com", names, 1, "/srv/a", 80, 1,
						       &out, err, sizeof(err)),
				     0);
		/* At least one server name. */
		assert_int_not_equal(render_nginx_site("example.com", names, 0, "/srv/a", 80, 1,
						       &out, err, sizeof(err)),
				     0);
		assert_int_not_equal(render_nginx_site("example.com", names, 1, "/srv/a", 65536, 1,
						       &out, err, sizeof(err)),
				     0);
		assert_null(out);
	}
}

static void
render_nginx_test_bad_roots(void **state)
{
	static const char *const bad[] = {
	    "",
	    "/",
	    "relative/path",
	    "/var/www/x;",
	    "/var/www/x; include /etc/passwd",
	    "/var/www/x}",
	    "/var/www/{x}",
	    "/var/www/x\n",
	    "/var/www/x y",
	    "/var/www/$document_root",
	    "/var/www/\"x\"",
	    "/var/www/'x'",
	    "/var/www/x#",
	    "/var/www/../etc",
	    "/var/www/..",
	    "/var/www/./x",
	    "/var//www",
	    "/var/www/",
	    "/var/www/x\\",
	    "/var/www/ü",
	};
	const char *names[] = {"example.com"};
	char err[256], *out = NULL;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_not_equal(render_nginx_root_check(bad[i], err, sizeof(err)), 0);
		assert_int_not_equal(render_nginx_site("example.com", names, 1, bad[i], 80, 1, &out,
						       err, sizeof(err)),
				     0);
		assert_null(out);
		assert_non_null(strstr(err, "root"));
	}
	assert_int_equal(
	    render_nginx_root_check("/var/www/my-site_2.example.com/public", err, sizeof(err)), 0);
	assert_int_equal(render_nginx_root_check("/var/www/.well-known-ok", err, sizeof(err)), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(render_nginx_test_exact),
	    cmocka_unit_test(render_nginx_test_defaults),
	    cmocka_unit_test(render_nginx_test_bad_names),
	    cmocka_unit_test(render_nginx_test_bad_roots),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
