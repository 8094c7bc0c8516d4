/*
 * cmd_table.c: the table mapping each command kind of the protobuf oneof to its
 * handler, and the life cycle of a command's result. The channel (agent_main.c)
 * looks handlers up here; it runs none of them itself.
 */
#include "cmd.h"

#include <stdlib.h>
#include <string.h>

static const struct cmd_kind cmd_table[] = {
    {"exec", STOKE__COMMAND__KIND_EXEC, cmd_exec},
    {"write_file", STOKE__COMMAND__KIND_WRITE_FILE, cmd_write_file},
    {"script", STOKE__COMMAND__KIND_SCRIPT, cmd_script},
    {"nginx_site", STOKE__COMMAND__KIND_NGINX_SITE, cmd_nginx_site},
    {"git_checkout", STOKE__COMMAND__KIND_GIT_CHECKOUT, cmd_git_checkout},
    {"authorized_keys", STOKE__COMMAND__KIND_AUTHORIZED_KEYS, cmd_authorized_keys},
    {"service", STOKE__COMMAND__KIND_SERVICE, cmd_service},
    {"facts", STOKE__COMMAND__KIND_FACTS, cmd_facts},
};

const struct cmd_kind *
cmd_lookup(Stoke__Command__KindCase kind)
{
	for (size_t i = 0; i < sizeof(cmd_table) / sizeof(cmd_table[0]); i++)
		if (cmd_table[i].kind == kind)
			return &cmd_table[i];
	return NULL;
}

void
cmd_result_init(struct cmd_result *r)
{
	/* exit_code 0: the channel's own answers (a cancel that found its command) succeed
	 * as they are; every handler sets -1 first and 0 when it succeeds. */
	memset(r, 0, sizeof(*r));
}

void
cmd_result_fini(struct cmd_result *r)
{
	if (r == NULL)
		return;
	free(r->result_json);
	r->result_json = NULL;
	if (r->facts != NULL)
		stoke__facts__free_unpacked(r->facts, NULL);
	r->facts = NULL;
}
