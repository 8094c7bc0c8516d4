/*
 * cloud_digitalocean.c: the DigitalOcean driver (API v2: droplets, account keys). It maps
 * droplets to struct cloud_vm and tags each with its intent id; HTTP, retries and error
 * words are cloud_http.c's. Called through cloud_lookup("digitalocean").
 */
#include "cloud.h"
#include "cloud_http.h"
#include "err.h"
#include "http_client.h"
#include "log.h"
#include "timeutil.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Debian 12, the system provision-scripts/ is written for, when no image is given. */
#define CLOUD_DO_DEFAULT_IMAGE "debian-12-x64"
#define CLOUD_DO_TAG_PREFIX "stoke-intent:"
#define CLOUD_DO_PER_PAGE 200
#define CLOUD_DO_PAGES_MAX 100
#define CLOUD_DO_PATH_MAX 512
#define CLOUD_DO_KEY_MAX (16 * 1024)

static const struct cloud_api cloud_do_api = {
    .provider = "digitalocean",
    .version_path = "/v2",
};

static enum cloud_vm_state
cloud_do_state(const char *status)
{
	if (strcmp(status, "new") == 0)
		return CLOUD_VM_PENDING;
	if (strcmp(status, "active") == 0)
		return CLOUD_VM_ACTIVE;
	if (strcmp(status, "off") == 0)
		return CLOUD_VM_OFF;
	return CLOUD_VM_OTHER; /* "archive" */
}

/* A droplet object into vm. */
static int
cloud_do_parse(json_t *d, struct cloud_vm *vm, char *err, size_t errlen)
{
	json_t *v4, *net, *port;
	const char *status;
	size_t i;

	memset(vm, 0, sizeof(*vm));
	if (!json_is_object(d) || cloud_json_id(d, "id", vm->provider_id, sizeof(vm->provider_id)))
		return err_set(err, errlen, ERR_IO, "digitalocean: a droplet without an id");
	if ((status = json_string_value(json_object_get(d, "status"))) == NULL)
		return err_set(err, errlen, ERR_IO, "digitalocean: droplet %s without a status",
			       vm->provider_id);
	cloud_text_clean(status, vm->status, sizeof(vm->status));
	vm->state = cloud_do_state(vm->status);
	v4 = json_object_get(json_object_get(d, "networks"), "v4");
	json_array_foreach(v4, i, net)
	{
		const char *type = json_string_value(json_object_get(net, "type"));
		const char *ip = json_string_value(json_object_get(net, "ip_address"));
		struct in_addr a;

		if (type != NULL && ip != NULL && strcmp(type, "public") == 0 &&
		    inet_pton(AF_INET, ip, &a) == 1) {
			snprintf(vm->ipv4, sizeof(vm->ipv4), "%s", ip);
			break;
		}
	}
	/* The stand-in's sshd port; real droplets listen on 22. */
	port = json_object_get(d, "standin_ssh_port");
	vm->ssh_port = json_is_integer(port) && json_integer_value(port) > 0 &&
			       json_integer_value(port) < 65536
			   ? (int)json_integer_value(port)
			   : 22;
	snprintf(vm->ssh_user, sizeof(vm->ssh_user), "root");
	return 0;
}

/* The "links.pages.next" of a list answer: is there another page? */
static int
cloud_do_has_next(json_t *reply)
{
	return json_object_get(json_object_get(json_object_get(reply, "links"), "pages"), "next") !=
	       NULL;
}

static int
cloud_do_find_by_intent(struct cloud_ctx *ctx, const char *intent_id, struct cloud_vm *vm,
			int *found, char *err, size_t errlen)
{
	struct cloud_reply r;
	char path[CLOUD_DO_PATH_MAX], tag[CLOUD_INTENT_MAX + sizeof(CLOUD_DO_TAG_PREFIX)];
	char *etag = NULL;
	json_t *list, *d;
	size_t i;
	int page, ret;

	*found = 0;
	cloud_reply_init(&r);
	if ((ret = cloud_intent_valid(intent_id, err, errlen)) != 0)
		goto out;
	snprintf(tag, sizeof(tag), CLOUD_DO_TAG_PREFIX "%s", intent_id);
	if ((etag = http_escape(tag)) == NULL) {
		ret = err_set(err, errlen, ERR_NOMEM, "out of memory");
		goto out;
	}
	for (page = 1; page <= CLOUD_DO_PAGES_MAX; page++) {
		snprintf(path, sizeof(path), "/droplets?tag_name=%s&page=%d&per_page=%d", etag,
			 page, CLOUD_DO_PER_PAGE);
		if ((ret = cloud_http_call(ctx, &cloud_do_api, "GET", path, NULL, 0, &r, err,
					   errlen)) != 0)
			goto out;
		list = json_object_get(r.json, "droplets");
		if (!json_is_array(list)) {
			ret = err_set(err, errlen, ERR_IO,
				      "digitalocean: GET /droplets: no \"droplets\" in the answer");
			goto out;
		}
		json_array_foreach(list, i, d)
		{
			if ((ret = cloud_do_parse(d, vm, err, errlen)) != 0)
				goto out;
			if (vm->state == CLOUD_VM_OTHER)
				continue; /* archived: gone for our purposes */
			*found = 1;
			goto out;
		}
		if (json_array_size(list) == 0 || !cloud_do_has_next(r.json))
			break;
	}
	memset(vm, 0, sizeof(*vm));
out:
	free(etag);
	cloud_reply_fini(&r);
	return ret;
}

static json_t *
cloud_do_create_body(const struct cloud_create_req *req)
{
	char tag[CLOUD_INTENT_MAX + sizeof(CLOUD_DO_TAG_PREFIX)];
	json_t *b, *keys;
	size_t i;
	int bad = 0;

	snprintf(tag, sizeof(tag), CLOUD_DO_TAG_PREFIX "%s", req->intent_id);
	b = json_pack("{s:s, s:s, s:s, s:s, s:[s,s], s:b, s:b}", "name", req->name, "region",
		      req->region, "size", req->size, "image",
		      req->image && req->image[0] ? req->image : CLOUD_DO_DEFAULT_IMAGE, "tags",
		      "stoke", tag, "ipv6", 0, "monitoring", 0);
	if (b == NULL || (keys = json_array()) == NULL) {
		json_decref(b);
		return NULL;
	}
	for (i = 0; i < req->nkey_ids; i++) {
		const char *k = req->key_ids[i];

		/* ids are numbers; anything else is sent as a fingerprint */
		if (cloud_numeric_id(k) == 0)
			bad |= json_array_append_new(keys, json_integer(strtoll(k, NULL, 10)));
		else
			bad |= json_array_append_new(keys, json_string(k));
	}
	bad |= json_object_set_new(b, "ssh_keys", keys);
	if (req->user_data != NULL)
		bad |= json_object_set_new(b, "user_data", json_string(req->user_data));
	if (bad) {
		json_decref(b);
		return NULL;
	}
	return b;
}

static int
cloud_do_create(struct cloud_ctx *ctx, const struct cloud_create_req *req, struct cloud_vm *vm,
		char *err, size_t errlen)
{
	struct cloud_reply r;
	json_t *body = NULL;
	int found, tries = 0, max = cloud_http_max_retries(ctx), ret;

	cloud_reply_init(&r);
	memset(vm, 0, sizeof(*vm));
	if (req->name == NULL || req->region == NULL || req->size == NULL) {
		ret = err_set(err, errlen, ERR_INVAL,
			      "digitalocean: a droplet needs a name, region and size");
		goto out;
	}
	if ((ret = cloud_do_find_by_intent(ctx, req->intent_id, vm, &found, err, errlen)) != 0)
		goto out;
	if (found) {
		log_info("digitalocean: droplet %s was already made for intent %s", vm->provider_id,
			 req->intent_id);
		goto out;
	}
	if ((body = cloud_do_create_body(req)) == NULL) {
		ret = err_set(err, errlen, ERR_INVAL,
			      "digitalocean: cannot encode the request (bad UTF-8?)");
		goto out;
	}
	for (;;) {
		tries++;
		ret = cloud_http_call(ctx, &cloud_do_api, "POST", "/droplets", body,
				      CLOUD_HTTP_ONCE, &r, err, errlen);
		if (ret == 0)
			break;
		if (!(ret == ERR_BUSY && r.status >= 500) || tries > max)
			goto out;
		/* A 5xx may come after the droplet was made: look before asking again. */
		time_sleep_ms(
		    cloud_http_wait_ms(ctx, r.status, r.retry_after_s, -1, time_now_ms(), tries));
		if ((ret = cloud_do_find_by_intent(ctx, req->intent_id, vm, &found, err, errlen)) !=
		    0)
			goto out;
		if (found) {
			log_info("digitalocean: droplet %s was made despite a %ld answer",
				 vm->provider_id, r.status);
			goto out;
		}
		log_info("digitalocean: POST /droplets: %ld; try %d of %d", r.status, tries + 1,
			 max + 1);
	}
	ret = cloud_do_parse(json_object_get(r.json, "droplet"), vm, err, errlen);
	if (ret == 0)
		log_info("digitalocean: droplet %s made for intent %s", vm->provider_id,
			 req->intent_id);
out:
	json_decref(body);
	cloud_reply_fini(&r);
	return ret;
}

static int
cloud_do_get(struct cloud_ctx *ctx, const char *provider_id, struct cloud_vm *vm, char *err,
	     size_t errlen)
{
	struct cloud_reply r;
	char path[CLOUD_DO_PATH_MAX];
	int ret;

	/* provider_id may point into vm: it is read before vm is cleared. */
	if (cloud_numeric_id(provider_id) != 0) {
		memset(vm, 0, sizeof(*vm));
		return err_set(err, errlen, ERR_INVAL, "digitalocean: bad droplet id");
	}
	snprintf(path, sizeof(path), "/droplets/%s", provider_id);
	memset(vm, 0, sizeof(*vm));
	cloud_reply_init(&r);
	if ((ret = cloud_http_call(ctx, &cloud_do_api, "GET", path, NULL, 0, &r, err, errlen)) == 0)
		ret = cloud_do_parse(json_object_get(r.json, "droplet"), vm, err, errlen);
	cloud_reply_fini(&r);
	return ret;
}

static int
cloud_do_delete(struct cloud_ctx *ctx, const char *provider_id, char *err, size_t errlen)
{
	struct cloud_reply r;
	char path[CLOUD_DO_PATH_MAX];
	int ret;

	if (cloud_numeric_id(provider_id) != 0)
		return err_set(err, errlen, ERR_INVAL, "digitalocean: bad droplet id");
	cloud_reply_init(&r);
	snprintf(path, sizeof(path), "/droplets/%s", provider_id);
	ret = cloud_http_call(ctx, &cloud_do_api, "DELETE", path, NULL, 0, &r, err, errlen);
	if (ret == ERR_NOTFOUND) {
		log_info("digitalocean: droplet %s was already gone", provider_id);
		ret = 0;
	} else if (ret == 0) {
		log_info("digitalocean: droplet %s deleted", provider_id);
	}
	cloud_reply_fini(&r);
	return ret;
}

/* The id of the account key whose public half is public_key: *found = 0 when none. */
static int
cloud_do_key_find(struct cloud_ctx *ctx, const char *public_key, char key_id[CLOUD_ID_MAX],
		  int *found, char *err, size_t errlen)
{
	struct cloud_reply r;
	char want[CLOUD_DO_KEY_MAX], have[CLOUD_DO_KEY_MAX], path[CLOUD_DO_PATH_MAX];
	json_t *list, *k;
	size_t i;
	int page, ret = 0;

	*found = 0;
	if (cloud_key_norm(public_key, want, sizeof(want)) != 0)
		return 0;
	cloud_reply_init(&r);
	for (page = 1; page <= CLOUD_DO_PAGES_MAX; page++) {
		snprintf(path, sizeof(path), "/account/keys?page=%d&per_page=%d", page,
			 CLOUD_DO_PER_PAGE);
		if ((ret = cloud_http_call(ctx, &cloud_do_api, "GET", path, NULL, 0, &r, err,
					   errlen)) != 0)
			break;
		list = json_object_get(r.json, "ssh_keys");
		json_array_foreach(list, i, k)
		{
			const char *pk = json_string_value(json_object_get(k, "public_key"));

			if (pk != NULL && cloud_key_norm(pk, have, sizeof(have)) == 0 &&
			    strcmp(have, want) == 0 &&
			    cloud_json_id(k, "id", key_id, CLOUD_ID_MAX) == 0) {
				*found = 1;
				goto out;
			}
		}
		if (json_array_size(list) == 0 || !cloud_do_has_next(r.json))
			break;
	}
out:
	cloud_reply_fini(&r);
	return ret;
}

static int
cloud_do_key_add(struct cloud_ctx *ctx, const char *name, const char *public_key,
		 char key_id[CLOUD_ID_MAX], char *err, size_t errlen)
{
	struct cloud_reply r;
	json_t *body = NULL;
	char why[1024];
	int found, ret;

	key_id[0] = '\0';
	cloud_reply_init(&r);
	if (name == NULL || public_key == NULL || strlen(public_key) >= CLOUD_DO_KEY_MAX ||
	    strpbrk(public_key, "\r\n") != NULL) {
		ret =
		    err_set(err, errlen, ERR_INVAL, "digitalocean: bad SSH key name or public key");
		goto out;
	}
	if ((body = json_pack("{s:s, s:s}", "name", name, "public_key", public_key)) == NULL) {
		ret = err_set(err, errlen, ERR_INVAL, "digitalocean: cannot encode the key");
		goto out;
	}
	/* Sent again after a 5xx: a key made the first time answers 422 "already in use". */
	ret =
	    cloud_http_call(ctx, &cloud_do_api, "POST", "/account/keys", body, 0, &r, err, errlen);
	if (ret == 0) {
		if (cloud_json_id(json_object_get(r.json, "ssh_key"), "id", key_id, CLOUD_ID_MAX))
			ret = err_set(err, errlen, ERR_IO, "digitalocean: a key without an id");
		goto out;
	}
	if (r.status != 422 || strstr(r.message, "already in use") == NULL)
		goto out;
	snprintf(why, sizeof(why), "%s", err != NULL ? err : "");
	if (cloud_do_key_find(ctx, public_key, key_id, &found, err, errlen) == 0 && found) {
		log_info("digitalocean: key %s was already registered", key_id);
		ret = 0;
		goto out;
	}
	ret = err_set(err, errlen, ret, "%s", why);
out:
	json_decref(body);
	cloud_reply_fini(&r);
	return ret;
}

static int
cloud_do_key_remove(struct cloud_ctx *ctx, const char *key_id, char *err, size_t errlen)
{
	struct cloud_reply r;
	char path[CLOUD_DO_PATH_MAX];
	size_t n;
	int ret;

	/* an id, or an MD5 fingerprint (hex and colons) */
	n = key_id != NULL ? strspn(key_id, "0123456789abcdef:") : 0;
	if (key_id == NULL || key_id[0] == '\0' || key_id[n] != '\0' || n > 64)
		return err_set(err, errlen, ERR_INVAL, "digitalocean: bad SSH key id");
	cloud_reply_init(&r);
	snprintf(path, sizeof(path), "/account/keys/%s", key_id);
	ret = cloud_http_call(ctx, &cloud_do_api, "DELETE", path, NULL, 0, &r, err, errlen);
	if (ret == ERR_NOTFOUND)
		ret = 0;
	cloud_reply_fini(&r);
	return ret;
}

const struct cloud_driver cloud_digitalocean = {
    .name = "digitalocean",
    .create = cloud_do_create,
    .get = cloud_do_get,
    .find_by_intent = cloud_do_find_by_intent,
    .delete = cloud_do_delete,
    .key_add = cloud_do_key_add,
    .key_remove = cloud_do_key_remove,
};
