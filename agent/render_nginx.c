/*
 * render_nginx.c: renders a site's nginx server block from checked fields. It writes no
 * file and runs nothing; cmd_nginx_site.c installs the text and tests it with nginx -t.
 */
#include "render_nginx.h"
#include "buf.h"
#include "err.h"
#include "names.h"

#include <stdlib.h>
#include <string.h>

#define RENDER_NGINX_ROOT_MAX 1024

int
render_nginx_root_check(const char *root, char *err, size_t errlen)
{
	size_t len;

	if (root == NULL || root[0] != '/')
		return err_set(err, errlen, ERR_INVAL, "must be an absolute path");
	len = strlen(root);
	if (len < 2)
		return err_set(err, errlen, ERR_INVAL, "must not be \"/\"");
	if (len > RENDER_NGINX_ROOT_MAX)
		return err_set(err, errlen, ERR_INVAL, "must be at most %d characters",
			       RENDER_NGINX_ROOT_MAX);
	for (const char *p = root; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '/' || *p == '-'))
			return err_set(err, errlen, ERR_INVAL,
				       "may contain only A-Z a-z 0-9 . _ - and /");
	for (const char *p = root; *p != '\0';) {
		const char *part = p + 1, *next = strchr(part, '/');
		size_t n = next != NULL ? (size_t)(next - part) : strlen(part);

		if (n == 0)
			return err_set(err, errlen, ERR_INVAL,
				       "must be normalised (no \"//\" and no trailing '/')");
		if ((n == 1 && part[0] == '.') || (n == 2 && part[0] == '.' && part[1] == '.'))
			return err_set(err, errlen, ERR_INVAL,
				       "must be normalised (no \".\" or \"..\" parts)");
		if (next == NULL)
			break;
		p = next;
	}
	return 0;
}

int
render_nginx_site(const char *name, const char *const *server_names, size_t nnames,
		  const char *root, unsigned port, int ipv6, char **out, char *err, size_t errlen)
{
	char why[256];
	struct buf b;
	int rc = 0;

	*out = NULL;
	if (names_domain(name, 0, why, sizeof(why)) != 0)
		return err_set(err, errlen, ERR_INVAL, "name \"%.80s\": %s", name ? name : "", why);
	if (nnames == 0)
		return err_set(err, errlen, ERR_INVAL, "server_names: at least one is needed");
	if (nnames > RENDER_NGINX_MAX_NAMES)
		return err_set(err, errlen, ERR_INVAL, "server_names: at most %d",
			       RENDER_NGINX_MAX_NAMES);
	for (size_t i = 0; i < nnames; i++)
		if (names_domain(server_names[i], 1, why, sizeof(why)) != 0)
			return err_set(err, errlen, ERR_INVAL, "server_names[%zu] \"%.80s\": %s", i,
				       server_names[i] ? server_names[i] : "", why);
	if (render_nginx_root_check(root, why, sizeof(why)) != 0)
		return err_set(err, errlen, ERR_INVAL, "root: %s", why);
	if (port == 0)
		port = 80;
	if (port > 65535)
		return err_set(err, errlen, ERR_INVAL, "listen_port: must be 1-65535");

	buf_init(&b, 256 * 1024);
	rc |= buf_printf(&b,
			 "# stoke site %s: written by stoke-agent; changes made here are "
			 "overwritten.\n"
			 "server {\n"
			 "\tlisten %u;\n",
			 name, port);
	if (ipv6)
		rc |= buf_printf(&b, "\tlisten [::]:%u;\n", port);
	rc |= buf_puts(&b, "\tserver_name");
	for (size_t i = 0; i < nnames; i++)
		rc |= buf_printf(&b, " %s", server_names[i]);
	rc |= buf_printf(&b,
			 ";\n"
			 "\troot %s;\n"
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
			 "}\n",
			 root);
	if (rc != 0) {
		buf_fini(&b);
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	}
	*out = buf_take(&b);
	return *out != NULL ? 0 : err_set(err, errlen, ERR_NOMEM, "out of memory");
}
