/*
 * cloud.c: the table of cloud drivers (cloud_lookup), the intent id grammar, and waiting
 * for a new VM to become active. It speaks to no provider itself; the server jobs call
 * it, and the drivers live in cloud_<provider>.c.
 */
#include "cloud.h"
#include "err.h"
#include "timeutil.h"

#include <stdio.h>
#include <string.h>

#define CLOUD_POLL_MS 2000L
#define CLOUD_POLL_MAX_MS 5000L

static const struct cloud_driver *const cloud_drivers[] = {
    &cloud_digitalocean,
    &cloud_hetzner,
    &cloud_custom,
};

const struct cloud_driver *
cloud_lookup(const char *name)
{
	size_t i;

	if (name == NULL)
		return NULL;
	for (i = 0; i < sizeof(cloud_drivers) / sizeof(cloud_drivers[0]); i++)
		if (strcmp(cloud_drivers[i]->name, name) == 0)
			return cloud_drivers[i];
	return NULL;
}

int
cloud_intent_valid(const char *s, char *err, size_t errlen)
{
	size_t n;

	if (s == NULL || s[0] == '\0')
		return err_set(err, errlen, ERR_INVAL, "intent id: missing");
	for (n = 0; s[n] != '\0'; n++) {
		char c = s[n];

		if (n >= CLOUD_INTENT_MAX)
			return err_set(err, errlen, ERR_INVAL,
				       "intent id: longer than %d characters", CLOUD_INTENT_MAX);
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return err_set(err, errlen, ERR_INVAL,
				       "intent id: only letters, digits, '-' and '_' are allowed");
	}
	/* A Hetzner label value must start and end with a letter or digit. */
	if (s[0] == '-' || s[0] == '_' || s[n - 1] == '-' || s[n - 1] == '_')
		return err_set(err, errlen, ERR_INVAL,
			       "intent id: must start and end with a letter or digit");
	return 0;
}

int
cloud_wait_active(const struct cloud_driver *drv, struct cloud_ctx *ctx, const char *provider_id,
		  long timeout_ms, long poll_ms, struct cloud_vm *vm, char *err, size_t errlen)
{
	int64_t end = time_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	long interval = poll_ms > 0 ? poll_ms : CLOUD_POLL_MS;
	char id[CLOUD_ID_MAX]; /* provider_id may point into vm */
	int64_t left;
	int ret;

	if (snprintf(id, sizeof(id), "%s", provider_id) >= (int)sizeof(id))
		return err_set(err, errlen, ERR_INVAL, "%s: server id too long", drv->name);
	for (;;) {
		if ((ret = drv->get(ctx, id, vm, err, errlen)) != 0)
			return ret;
		if (vm->state == CLOUD_VM_ACTIVE && vm->ipv4[0] != '\0')
			return 0;
		left = end - time_mono_ms();
		if (left <= 0)
			return err_set(err, errlen, ERR_TIMEOUT,
				       "%s: server %s is still '%s'%s after %ld s", drv->name, id,
				       vm->status, vm->ipv4[0] == '\0' ? " without an address" : "",
				       (timeout_ms + 999) / 1000);
		time_sleep_ms(left < interval ? (long)left : interval);
		if (interval < CLOUD_POLL_MAX_MS)
			interval = interval * 3 / 2 > CLOUD_POLL_MAX_MS ? CLOUD_POLL_MAX_MS
									: interval * 3 / 2;
	}
}
