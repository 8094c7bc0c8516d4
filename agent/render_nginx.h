/*
 * render_nginx.h: the nginx server block of a site, rendered from checked fields only
 * (names_domain for every name, a strict grammar for the root), so no received text can
 * add nginx syntax. Pure: no file or process is touched; cmd_nginx_site.c writes it.
 */
#ifndef STOKE_AGENT_RENDER_NGINX_H
#define STOKE_AGENT_RENDER_NGINX_H

#include <stddef.h>

#define RENDER_NGINX_MAX_NAMES 100

/* Document root: absolute, normalised (no "//", "." or ".." part, no trailing '/'), not
 * "/", only [A-Za-z0-9._/-], at most 1024 characters. */
int render_nginx_root_check(const char *root, char *err, size_t errlen);

/*
 * Renders the server block of site `name` (a domain, no wildcard) serving server_names
 * (1-RENDER_NGINX_MAX_NAMES domains, "*." wildcards allowed) from root on port
 * (0 means 80), also on IPv6 when ipv6 is non-zero. On success *out is malloc'd text;
 * on failure ERR_INVAL and err says which field is wrong.
 */
int render_nginx_site(const char *name, const char *const *server_names, size_t nnames,
		      const char *root, unsigned port, int ipv6, char **out, char *err,
		      size_t errlen);

#endif
