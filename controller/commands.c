/*
 * commands.c: an agent command's payload at rest (see commands.h): the secret values of a
 * payload sealed with the controller's key, a shown copy without them. Used by every writer
 * of the commands table that may carry secrets and by the hub; knows nothing of the kinds.
 */
#include "commands.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "secrets.h"

#define COMMANDS_AAD "command:payload"

/* Keys whose values are never shown nor stored in clear. */
static const char *const commands_secret_keys[] = {
    "env",	   "environment", "content", "contents", "data",  "key",
    "private_key", "deploy_key",  "secret",  "password", "token", NULL};

static int
commands_redact_depth(json_t *v, const char *with, int depth)
{
	const char *key;
	json_t *e;
	size_t i;
	int n = 0;

	if (depth > 8)
		return 0;
	if (json_is_array(v)) {
		json_array_foreach(v, i, e) n += commands_redact_depth(e, with, depth + 1);
		return n;
	}
	if (!json_is_object(v))
		return 0;
	json_object_foreach(v, key, e)
	{
		for (i = 0; commands_secret_keys[i] != NULL; i++)
			if (strcmp(key, commands_secret_keys[i]) == 0)
				break;
		if (commands_secret_keys[i] == NULL)
			n += commands_redact_depth(e, with, depth + 1);
		else if (!json_is_string(e) || strcmp(json_string_value(e), with) != 0) {
			json_object_set_new(v, key, json_string(with));
			n++;
		}
	}
	return n;
}

int
commands_redact(json_t *v, const char *with)
{
	return commands_redact_depth(v, with, 0);
}

int
commands_payload_seal(const char *payload_json, char **shown, char **sealed, char *err,
		      size_t errlen)
{
	json_t *o;
	int rc;

	*shown = *sealed = NULL;
	if ((o = json_loads(payload_json, 0, NULL)) == NULL || !json_is_object(o)) {
		json_decref(o);
		return err_set(err, errlen, ERR_INVAL, "payload must be a JSON object");
	}
	if (commands_redact(o, "(sealed)") > 0 &&
	    (rc = secrets_seal(payload_json, COMMANDS_AAD, sealed, err, errlen)) != 0) {
		json_decref(o);
		return rc;
	}
	*shown = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (*shown == NULL) {
		free(*sealed);
		*sealed = NULL;
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	}
	return 0;
}

int
commands_payload_open(const char *shown, const char *sealed, char **payload, char *err,
		      size_t errlen)
{
	*payload = NULL;
	if (sealed != NULL)
		return secrets_open(sealed, COMMANDS_AAD, payload, err, errlen);
	if ((*payload = strdup(shown)) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	return 0;
}
