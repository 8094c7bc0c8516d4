/*
 * cli_server_set.c: `stoke server set SERVER [--sites-root DIR] [--deploy-user U]`, a PATCH
 * of the server's site settings (where new sites' folders go, who runs deploy scripts). The
 * API validates both. A row of cli_server_family's table (cli_server.c).
 */
#include "cli.h"

#include <inttypes.h>
#include <string.h>

int
cli_server_set(struct cli *cli, const struct cli_args *args)
{
	const char *root = cli_args_get(args, "sites-root");
	const char *user = cli_args_get(args, "deploy-user");
	json_t *body = NULL, *srv = NULL;
	struct buf path;
	int ret;

	buf_init(&path, 4096);
	if (root == NULL && user == NULL) {
		ret = cli_usage_error("stoke server set: give --sites-root DIR or --deploy-user U");
		goto out;
	}
	if ((body = json_object()) == NULL) {
		ret = cli_error("out of memory");
		goto out;
	}
	if ((root != NULL && json_object_set_new(body, "sites_root", json_string(root)) != 0) ||
	    (user != NULL && json_object_set_new(body, "deploy_user", json_string(user)) != 0)) {
		ret = cli_usage_error("stoke server set: values must be UTF-8 text");
		goto out;
	}
	if (buf_puts(&path, "/servers") != 0 || cli_path_add(&path, args->pos[0]) != 0) {
		ret = cli_usage_error("server: name too long");
		goto out;
	}
	if ((ret = cli_api(cli, "PATCH", path.data, body, &srv, NULL)) != 0)
		goto out;
	if (cli->json) {
		ret = cli_print_json(cli, srv);
		goto out;
	}
	printf("server %" PRId64 " %s: sites root %s, deploy user %s\n", cli_jint(srv, "id"),
	       cli_jstr(srv, "name"), cli_jstr(srv, "sites_root"), cli_jstr(srv, "deploy_user"));
out:
	json_decref(body);
	json_decref(srv);
	buf_fini(&path);
	return ret;
}
