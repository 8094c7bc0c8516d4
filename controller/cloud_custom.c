/*
 * cloud_custom.c: the "custom" driver: an existing server reachable over SSH, given by
 * address, port and user. Nothing is made or deleted at any provider; the provider id is
 * "user@address:port" ("user@[v6]:port"), so get() needs no state. Called through
 * cloud_lookup("custom").
 */
#include "cloud.h"
#include "err.h"
#include "names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A host name or an IPv4/IPv6 address: letters, digits, '.', '-', ':' (v6), 1-253 chars. */
static int
cloud_custom_address_ok(const char *a)
{
	size_t n;

	if (a == NULL || a[0] == '\0' || a[0] == '-' || a[0] == '.')
		return 0;
	n = strspn(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:");
	return a[n] == '\0' && n <= 253;
}

/* The vm of an address, port and user (all checked). */
static int
cloud_custom_fill(const char *address, int port, const char *user, struct cloud_vm *vm, char *err,
		  size_t errlen)
{
	char why[256];
	int n;

	memset(vm, 0, sizeof(*vm));
	if (!cloud_custom_address_ok(address))
		return err_set(err, errlen, ERR_INVAL,
			       "custom: address: a host name or an IP address is needed");
	if (port < 1 || port > 65535)
		return err_set(err, errlen, ERR_INVAL, "custom: ssh port: must be 1 to 65535");
	if (names_user(user, why, sizeof(why)) != 0)
		return err_set(err, errlen, ERR_INVAL, "custom: ssh user: %s", why);
	n = snprintf(vm->provider_id, sizeof(vm->provider_id),
		     strchr(address, ':') != NULL ? "%s@[%s]:%d" : "%s@%s:%d", user, address, port);
	if (n < 0 || (size_t)n >= sizeof(vm->provider_id))
		return err_set(err, errlen, ERR_INVAL, "custom: address too long");
	snprintf(vm->status, sizeof(vm->status), "active");
	vm->state = CLOUD_VM_ACTIVE;
	snprintf(vm->ipv4, sizeof(vm->ipv4), "%s", address);
	vm->ssh_port = port;
	snprintf(vm->ssh_user, sizeof(vm->ssh_user), "%s", user);
	return 0;
}

static int
cloud_custom_create(struct cloud_ctx *ctx, const struct cloud_create_req *req, struct cloud_vm *vm,
		    char *err, size_t errlen)
{
	(void)ctx;
	return cloud_custom_fill(req->address, req->ssh_port > 0 ? req->ssh_port : 22,
				 req->ssh_user != NULL ? req->ssh_user : "root", vm, err, errlen);
}

static int
cloud_custom_get(struct cloud_ctx *ctx, const char *provider_id, struct cloud_vm *vm, char *err,
		 size_t errlen)
{
	char user[CLOUD_USER_MAX], addr[CLOUD_ADDR_MAX];
	const char *at, *host, *end, *colon;
	char *stop;
	long port;

	(void)ctx;
	/* provider_id may point into vm: everything is copied out before vm is filled. */
	if (provider_id == NULL || (at = strchr(provider_id, '@')) == NULL ||
	    (size_t)(at - provider_id) >= sizeof(user))
		goto bad;
	memcpy(user, provider_id, (size_t)(at - provider_id));
	user[at - provider_id] = '\0';
	host = at + 1;
	if (*host == '[') {
		host++;
		if ((end = strchr(host, ']')) == NULL || end[1] != ':')
			goto bad;
		colon = end + 1;
	} else {
		if ((colon = strrchr(host, ':')) == NULL)
			goto bad;
		end = colon;
	}
	if ((size_t)(end - host) >= sizeof(addr))
		goto bad;
	memcpy(addr, host, (size_t)(end - host));
	addr[end - host] = '\0';
	port = strtol(colon + 1, &stop, 10);
	if (colon[1] == '\0' || *stop != '\0' || port < 1 || port > 65535)
		goto bad;
	return cloud_custom_fill(addr, (int)port, user, vm, err, errlen);
bad:
	memset(vm, 0, sizeof(*vm));
	return err_set(err, errlen, ERR_INVAL, "custom: bad server id (want user@address:port)");
}

/* No provider keeps anything for a custom server: a later create() returns it as is. */
static int
cloud_custom_find_by_intent(struct cloud_ctx *ctx, const char *intent_id, struct cloud_vm *vm,
			    int *found, char *err, size_t errlen)
{
	(void)ctx;
	memset(vm, 0, sizeof(*vm));
	*found = 0;
	return cloud_intent_valid(intent_id, err, errlen);
}

static int
cloud_custom_delete(struct cloud_ctx *ctx, const char *provider_id, char *err, size_t errlen)
{
	(void)ctx;
	(void)provider_id;
	(void)err;
	(void)errlen;
	return 0; /* the server is the operator's: it stays */
}

static int
cloud_custom_key_add(struct cloud_ctx *ctx, const char *name, const char *public_key,
		     char key_id[CLOUD_ID_MAX], char *err, size_t errlen)
{
	(void)ctx;
	(void)name;
	(void)public_key;
	(void)err;
	(void)errlen;
	key_id[0] = '\0'; /* no key store: the bootstrap installs the key over SSH */
	return 0;
}

static int
cloud_custom_key_remove(struct cloud_ctx *ctx, const char *key_id, char *err, size_t errlen)
{
	(void)ctx;
	(void)key_id;
	(void)err;
	(void)errlen;
	return 0;
}

const struct cloud_driver cloud_custom = {
    .name = "custom",
    .create = cloud_custom_create,
    .get = cloud_custom_get,
    .find_by_intent = cloud_custom_find_by_intent,
    .delete = cloud_custom_delete,
    .key_add = cloud_custom_key_add,
    .key_remove = cloud_custom_key_remove,
};
