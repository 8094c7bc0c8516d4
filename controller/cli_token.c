/*
 * cli_token.c: `stoke token list|create|revoke`, the API tokens. A token's secret is printed
 * only by `token create` (the one time the API shows it); lists show its prefix.
 * stoke.c dispatches here through cli_token_family.
 */
#include "cli.h"

#include <inttypes.h>
#include <stdlib.h>

static int
cli_token_list(struct cli *cli, const struct cli_args *args)
{
	static const char *const hdr[] = {"ID",	     "NAME",	  "PREFIX",
					  "CREATED", "LAST USED", "REVOKED"};
	struct cli_table *t = NULL;
	json_t *list = NULL, *tok;
	size_t i;
	int ret;

	(void)args;
	if ((ret = cli_api_list(cli, "/tokens", &list)) != 0)
		goto out;
	if (cli->json) {
		ret = cli_print_json(cli, list);
		goto out;
	}
	if ((t = cli_table_new(6, hdr)) == NULL)
		goto nomem;
	json_array_foreach(json_object_get(list, "items"), i, tok)
	{
		char id[32], created[32], used[32], revoked[32];
		const char *row[6];

		snprintf(id, sizeof(id), "%" PRId64, cli_jint(tok, "id"));
		row[0] = id;
		row[1] = cli_jstr(tok, "name");
		row[2] = cli_jstr(tok, "prefix");
		row[3] = cli_age(tok, "created_at", created, sizeof(created));
		row[4] = cli_age(tok, "last_used_at", used, sizeof(used));
		row[5] = cli_age(tok, "revoked_at", revoked, sizeof(revoked));
		if (cli_table_add(t, row) != 0)
			goto nomem;
	}
	cli_table_print(t, stdout);
	ret = CLI_EXIT_OK;
	goto out;
nomem:
	ret = cli_error("out of memory");
out:
	cli_table_free(t);
	json_decref(list);
	return ret;
}

static int
cli_token_create(struct cli *cli, const struct cli_args *args)
{
	json_t *body = NULL, *res = NULL, *tok;
	int ret;

	if ((body = json_pack("{s:s}", "name", args->pos[0])) == NULL) {
		ret = cli_error("out of memory");
		goto out;
	}
	if ((ret = cli_api(cli, "POST", "/tokens", body, &res, NULL)) != 0)
		goto out;
	if (cli->json) {
		ret = cli_print_json(cli, res);
		goto out;
	}
	tok = json_object_get(res, "token");
	if (!json_is_string(tok)) {
		ret = cli_error("POST /api/v1/tokens: the answer has no token");
		goto out;
	}
	/* The token alone on stdout (for TOKEN=$(stoke token create ci)); the note on stderr. */
	printf("%s\n", json_string_value(tok));
	fprintf(stderr, "token %" PRId64 " '%s' created; it is shown only this once\n",
		cli_jint(res, "id"), cli_jstr(res, "name"));
	ret = CLI_EXIT_OK;
out:
	json_decref(body);
	json_decref(res);
	return ret;
}

static int
cli_token_revoke(struct cli *cli, const struct cli_args *args)
{
	json_t *res = NULL;
	char path[64];
	int64_t id;
	int ret;

	if ((ret = cli_parse_id(args->pos[0], "token", &id)) != 0)
		return ret;
	snprintf(path, sizeof(path), "/tokens/%" PRId64, id);
	if ((ret = cli_api(cli, "DELETE", path, NULL, &res, NULL)) != 0)
		goto out;
	if (cli->json)
		ret = cli_print_json(cli, res);
	else
		printf("token %" PRId64 " '%s' revoked\n", id, cli_jstr(res, "name"));
out:
	json_decref(res);
	return ret;
}

static const struct cli_cmd cli_token_cmds[] = {
    {"list", "", 0, 0, "", "list API tokens (never their secret)", cli_token_list},
    {"create", "", 1, 1, "NAME", "create a token and print it (shown only once)", cli_token_create},
    {"revoke", "", 1, 1, "ID", "revoke a token", cli_token_revoke},
};

const struct cli_family cli_token_family = {
    "token",
    "API tokens",
    cli_token_cmds,
    sizeof(cli_token_cmds) / sizeof(cli_token_cmds[0]),
};
