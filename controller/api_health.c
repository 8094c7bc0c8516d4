/*
 * api_health.c: GET /api/v1/health, the one endpoint without a token: says the
 * daemon answers and which version and schema it runs. It checks the database can
 * be read; it does not check agents or workers. Routed from api.c.
 */
#include "api_json.h"

#include "store.h"

#ifndef STOKE_VERSION
#define STOKE_VERSION "0.0.0"
#endif

void
api_health_get(struct api_req *r)
{
	static const char *const api_health_query[] = {NULL};
	struct store *s;
	int schema;

	if (api_req_query_allow(r, api_health_query) != 0)
		return;
	if ((s = api_req_store(r)) == NULL) {
		api_reply_error(r, 500, "internal", "cannot open the database");
		return;
	}
	if ((schema = store_schema_version(s)) <= 0) {
		api_reply_error(r, 500, "internal", "cannot read the database schema: %s",
				store_errmsg(s));
		return;
	}
	api_reply_json(r, 200,
		       json_pack("{s:s, s:s, s:i}", "status", "ok", "version", STOKE_VERSION,
				 "schema", schema));
}
