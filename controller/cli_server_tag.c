/*
 * cli_server_tag.c: `stoke server tag SERVER [TAG...] [--add|--remove]`: sets a server's tags
 * (PATCH /servers/SERVER {"tags": [...]}), adds or removes some, or shows them. A row of
 * cli_server_family's table (cli_server.c).
 */
#include "cli.h"
#include "err.h"

#include <string.h>

int
cli_server_tag(struct cli *cli, const struct cli_args *args)
{
	int add = cli_args_get(args, "add") != NULL, rm = cli_args_get(args, "remove") != NULL;
	json_t *srv = NULL, *tags = NULL, *body = NULL, *res = NULL, *v;
	struct buf path;
	size_t i;
	int ret, k;

	if (add && rm)
		return cli_usage_error("give --add or --remove, not both");
	if ((add || rm) && args->npos < 2)
		return cli_usage_error("--%s needs at least one TAG", add ? "add" : "remove");
	buf_init(&path, 4096);
	if (buf_puts(&path, "/servers") != 0 || cli_path_add(&path, args->pos[0]) != 0) {
		ret = cli_error("out of memory");
		goto out;
	}
	if (args->npos == 1 || add || rm) {
		if ((ret = cli_api(cli, "GET", path.data, NULL, &srv, NULL)) != 0)
			goto out;
		tags = json_deep_copy(json_object_get(srv, "tags"));
	}
	if (args->npos == 1) {
		if (cli->json)
			ret = cli_print_json(cli, tags ? tags : json_array());
		else
			json_array_foreach(tags, i, v) printf("%s\n", json_string_value(v));
		goto out;
	}
	if (!add && !rm) {
		json_decref(tags);
		tags = json_array();
	}
	if (tags == NULL) {
		ret = cli_error("out of memory");
		goto out;
	}
	for (k = 1; k < args->npos; k++) {
		size_t found = (size_t)-1;

		json_array_foreach(tags, i, v) if (strcmp(json_string_value(v), args->pos[k]) == 0)
		    found = i;
		if (rm && found != (size_t)-1)
			json_array_remove(tags, found);
		else if (!rm && found == (size_t)-1)
			json_array_append_new(tags, json_string(args->pos[k]));
	}
	body = json_pack("{s:O}", "tags", tags);
	if ((ret = cli_api(cli, "PATCH", path.data, body, &res, NULL)) != 0)
		goto out;
	if (cli->json) {
		ret = cli_print_json(cli, res);
		goto out;
	}
	printf("%s:", cli_jstr(res, "name"));
	json_array_foreach(json_object_get(res, "tags"), i, v) printf(" %s", json_string_value(v));
	printf("\n");
out:
	json_decref(srv);
	json_decref(tags);
	json_decref(body);
	json_decref(res);
	buf_fini(&path);
	return ret;
}
