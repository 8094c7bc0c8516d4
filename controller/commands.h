/*
 * commands.h: how an agent command's payload is kept in the commands table. Values that
 * may be secret (environments, file contents, keys, passwords, tokens) are never stored in
 * clear: the row's payload shows them as "(sealed)" and the whole payload is also kept
 * sealed beside it, opened only by the hub when it sends the command.
 */
#ifndef STOKE_COMMANDS_H
#define STOKE_COMMANDS_H

#include <stddef.h>

#include <jansson.h>

/* Splits payload_json (a JSON object) into what may be shown (*shown, malloc'd: secret
 * values replaced by "(sealed)") and, when it held any secret value, the whole payload
 * sealed (*sealed, malloc'd; NULL when there was nothing to hide). */
int commands_payload_seal(const char *payload_json, char **shown, char **sealed, char *err,
			  size_t errlen);
/* The payload to send: sealed opened when not NULL, else a copy of shown. *payload malloc'd;
 * wipe it after use. */
int commands_payload_open(const char *shown, const char *sealed, char **payload, char *err,
			  size_t errlen);
/* Replaces the values of secret keys in v (objects and arrays, 8 levels deep) by with;
 * returns how many it replaced. */
int commands_redact(json_t *v, const char *with);

#endif
