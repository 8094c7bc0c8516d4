/*
 * deliveries.h: the webhook deliveries a site has received (table webhook_receipts), so
 * that each is acted on once. A delivery is known by the SHA-256 of its raw body (which the
 * git host signs) and by its delivery id (which it does not sign): a second copy with the
 * same body, whatever its id, or with the same id, is a duplicate. Kept 30 days. The only
 * writer of webhook_receipts; called by api_hooks.c after the signature was checked.
 */
#ifndef STOKE_DELIVERIES_H
#define STOKE_DELIVERIES_H

#include <stddef.h>
#include <stdint.h>

struct store;

/* How long a delivery is remembered (at least a day: git hosts redeliver within hours). */
#define DELIVERIES_KEEP_MS (30LL * 24 * 3600 * 1000)

/*
 * Records a delivery for site_id (delivery_id may be NULL; body_sha256 is 64 hex digits)
 * before it is acted on, in a transaction of its own, and forgets deliveries older than
 * DELIVERIES_KEEP_MS. Returns 0 with *receipt set; ERR_EXISTS when the site already has
 * this body or this delivery id (*prev_deployment the deployment it queued, 0 if none);
 * ERR_DB. Two copies arriving at once: exactly one gets 0.
 */
int deliveries_claim(struct store *s, int64_t site_id, const char *delivery_id,
		     const char *body_sha256, int64_t *receipt, int64_t *prev_deployment, char *err,
		     size_t errlen);
/* What came of it: outcome "queued" (with the deployment) or "ignored". */
int deliveries_settle(struct store *s, int64_t receipt, const char *outcome, int64_t deployment_id);
/* Forgets a claimed delivery that could not be handled (a database error): the git host's
 * retry is then handled afresh. */
int deliveries_release(struct store *s, int64_t receipt);

#endif
