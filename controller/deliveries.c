/*
 * deliveries.c: webhook deliveries already received, per site (see deliveries.h): claim
 * before acting, settle with the outcome, release on failure. Owns webhook_receipts.
 * Called by api_hooks.c; no HTTP, no logging of secrets (it sees none).
 */
#include "deliveries.h"

#include "err.h"
#include "store.h"

int
deliveries_claim(struct store *s, int64_t site_id, const char *delivery_id, const char *body_sha256,
		 int64_t *receipt, int64_t *prev_deployment, char *err, size_t errlen)
{
	int64_t now = store_now_ms(), prev;

	*receipt = 0;
	*prev_deployment = 0;
	if (store_begin(s) != 0)
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	store_exec(s, "DELETE FROM webhook_receipts WHERE site_id = ? AND received_at < ?", "ii",
		   site_id, now - DELIVERIES_KEEP_MS);
	prev = store_int(s, -1,
			 "SELECT coalesce(deployment_id, 0) FROM webhook_receipts WHERE site_id = ?"
			 " AND (body_sha256 = ? OR delivery_id = ?) ORDER BY id LIMIT 1",
			 "iss", site_id, body_sha256, delivery_id);
	if (prev >= 0) {
		store_rollback(s);
		*prev_deployment = prev;
		return err_set(err, errlen, ERR_EXISTS, "delivery already received");
	}
	if (store_exec(s,
		       "INSERT INTO webhook_receipts (site_id, delivery_id, body_sha256,"
		       " received_at) VALUES (?,?,?,?)",
		       "issi", site_id, delivery_id, body_sha256, now) != 0) {
		/* A copy claimed between the look and the insert (the unique indexes). */
		int dup = store_err_is_unique(s);

		store_rollback(s);
		if (dup)
			return err_set(err, errlen, ERR_EXISTS, "delivery already received");
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	}
	*receipt = store_last_id(s);
	if (store_commit(s) != 0) {
		store_rollback(s);
		*receipt = 0;
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	}
	return 0;
}

int
deliveries_settle(struct store *s, int64_t receipt, const char *outcome, int64_t deployment_id)
{
	return store_exec(s,
			  "UPDATE webhook_receipts SET outcome = ?, deployment_id = nullif(?, 0)"
			  " WHERE id = ?",
			  "sii", outcome, deployment_id, receipt) == 0
		   ? 0
		   : ERR_DB;
}

int
deliveries_release(struct store *s, int64_t receipt)
{
	return store_exec(s, "DELETE FROM webhook_receipts WHERE id = ?", "i", receipt) == 0
		   ? 0
		   : ERR_DB;
}
