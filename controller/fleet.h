/*
 * fleet.h: choosing servers for fleet operations (keys, batches): a list of ids or names,
 * a tag, or all. Resolves against the store; knows nothing of HTTP.
 */
#ifndef STOKE_FLEET_H
#define STOKE_FLEET_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct store;

/*
 * Resolves exactly one of servers (a JSON array of ids and names), tag, or all (non-zero)
 * to the distinct ids of servers not being deleted, in id order. *ids is malloc'd (free it)
 * and *n > 0 on success. ERR_INVAL with text naming the field ("servers[2]: no server
 * named web-9", "tag web: no server has it", "give one of servers, tag or all").
 */
int fleet_select(struct store *s, const json_t *servers, const char *tag, int all, int64_t **ids,
		 size_t *n, char *err, size_t errlen);

/* The selector as stored and shown: {"servers":[...]}, {"tag":"web"} or {"all":true};
 * malloc'd JSON text. */
char *fleet_describe(const json_t *servers, const char *tag, int all);

#endif
