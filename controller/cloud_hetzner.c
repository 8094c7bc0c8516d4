/*
 * cloud_hetzner.c: the Hetzner Cloud driver (API v1: servers, ssh_keys). It maps servers to
 * struct cloud_vm and labels each with its intent id (stoke-intent=ID); HTTP, retries and
 * error words are cloud_http.c's. Called through cloud_lookup("hetzner").
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
#define CLOUD_HZ_DEFAULT_IMAGE "debian-12"
#define CLOUD_HZ_LABEL "stoke-intent"
#define CLOUD_HZ_PER_PAGE 50
#define CLOUD_HZ_PAGES_MAX 200
#define CLOUD_HZ_PATH_MAX 512
#define CLOUD_HZ_KEY_MAX (16 * 1024)

static const struct cloud_api cloud_hz_api = {
    .provider = "hetzner",
    .version_path = "/v1",
};

static enum cloud_vm_state
cloud_hz_state(const char *status)
{
	if (strcmp(status, "initializing") == 0 || strcmp(status, "starting") == 0)
		return CLOUD_VM_PENDING;
	if (strcmp(status, "running") == 0)
		return CLOUD_VM_ACTIVE;
	if (strcmp(status, "off") == 0 || strcmp(status, "stopping") == 0)
		return CLOUD_VM_OFF;
	return CLOUD_VM_OTHER; /* deleting, migrating, rebuilding, unknown */
}

/* A server object into vm. */
static int
cloud_hz_parse(json_t *s, struct cloud_vm *vm, char *err, size_t errlen)
{
	const char *status, *ip;
	json_t *port;
	struct in_addr a;

	memset(vm, 0, sizeof(*vm));
	if (!json_is_object(s) || cloud_json_id(s, "id", vm->provider_id, sizeof(vm->provider_id)))
		return err_set(err, errlen, ERR_IO, "hetzner: a server without an id");
	if ((status = json_string_value(json_object_get(s, "status"))) == NULL)
		return err_set(err, errlen, ERR_IO, "hetzner: server %s without a status",
			       vm->provider_id);
	cloud_text_clean(status, vm->status, sizeof(vm->status));
	vm->state = cloud_hz_state(vm->status);
	ip = json_string_value(
	    json_object_get(json_object_get(json_object_get(s, "public_net"), "ipv4"), "ip"));
	if (ip != NULL && inet_pton(AF_INET, ip, &a) == 1)
		snprintf(vm->ipv4, sizeof(vm->ipv4), "%s", ip);
	/* The stand-in's sshd port; real servers listen on 22. */
	port = json_object_get(s, "standin_ssh_port");
	vm->ssh_port = json_is_integer(port) && json_integer_value(port) > 0 &&
			       json_integer_value(port) < 65536
			   ? (int)json_integer_value(port)
			   : 22;
	snprintf(vm->ssh_user, sizeof(vm->ssh_user), "root");
	return 0;
}

/* meta.pagination.next_page of a list answer: is there another page? */
static int
cloud_hz_has_next(json_t *reply)
{
	return json_is_integer(json_object_get(
	    json_object_get(json_object_get(reply, "meta"), "pagination"), "next_page"));
}

static int
cloud_hz_find_by_intent(struct cloud_ctx *ctx, const char *intent_id, struct cloud_vm *vm,
			int *found, char *err, size_t errlen)
{
	struct cloud_reply r;
	char path[CLOUD_HZ_PATH_MAX], sel[CLOUD_INTENT_MAX + sizeof(CLOUD_HZ_LABEL) + 2];
	char *esel = NULL;
	json_t *list, *s;
	size_t i;
	int page, ret;

	*found = 0;
	cloud_reply_init(&r);
	if ((ret = cloud_intent_valid(intent_id, err, errlen)) != 0)
		goto out;
	snprintf(sel, sizeof(sel), CLOUD_HZ_LABEL "=%s", intent_id);
	if ((esel = http_escape(sel)) == NULL) {
		ret = err_set(err, errlen, ERR_NOMEM, "out of memory");
		goto out;
	}
	for (page = 1; page <= CLOUD_HZ_PAGES_MAX; page++) {
		snprintf(path, sizeof(path), "/servers?label_selector=%s&page=%d&per_page=%d", esel,
			 page, CLOUD_HZ_PER_PAGE);
		if ((ret = cloud_http_call(ctx, &cloud_hz_api, "GET", path, NULL, 0, &r, err,
					   errlen)) != 0)
			goto out;
		list = json_object_get(r.json, "servers");
		if (!json_is_array(list)) {
			ret = err_set(err, errlen, ERR_IO,
				      "hetzner: GET /servers: no \"servers\" in the answer");
			goto out;
		}
		json_array_foreach(list, i, s)
		{
			if ((ret = cloud_hz_parse(s, vm, err, errlen)) != 0)
				goto out;
			if (strcmp(vm->status, "deleting") == 0)
				continue;
			*found = 1;
			goto out;
		}
		if (json_array_size(list) == 0 || !cloud_hz_has_next(r.json))
			break;
	}
	memset(vm, 0, sizeof(*vm));
out:
	free(esel);
	cloud_reply_fini(&r);
	return ret;
}

static json_t *
cloud_hz_create_body(const struct cloud_create_req *req)
{
	json_t *b, *keys;
	size_t i;
	int bad = 0;

	b = json_pack("{s:s, s:s, s:s, s:b, s:{s:s, s:s}}", "name", req->name, "server_type",
		      req->size, "image",
		      req->image && req->image[0] ? req->image : CLOUD_HZ_DEFAULT_IMAGE,
		      "start_after_create", 1, "labels", CLOUD_HZ_LABEL, req->intent_id,
		      "managed-by", "stoke");
	if (b == NULL || (keys = json_array()) == NULL) {
		json_decref(b);
		return NULL;
	}
	for (i = 0; i < req->nkey_ids; i++) {
		const char *k = req->key_ids[i];

		/* ids are numbers; anything else is a key name */
		if (cloud_numeric_id(k) == 0)
			bad |= json_array_append_new(keys, json_integer(strtoll(k, NULL, 10)));
		else
			bad |= json_array_append_new(keys, json_string(k));
	}
	bad |= json_object_set_new(b, "ssh_keys", keys);
	if (req->region != NULL && req->region[0] != '\0')
		bad |= json_object_set_new(b, "location", json_string(req->region));
	if (req->user_data != NULL)
		bad |= json_object_set_new(b, "user_data", json_string(req->user_data));
	if (bad) {
		json_decref(b);
		return NULL;
	}
	return b;
}

static int
cloud_hz_create(struct cloud_ctx *ctx, const struct cloud_create_req *req, struct cloud_vm *vm,
		char *err, size_t errlen)
{
	struct cloud_reply r;
	json_t *body = NULL;
	int found, tries = 0, max = cloud_http_max_retries(ctx), ret;

	cloud_reply_init(&r);
	memset(vm, 0, sizeof(*vm));
	if (req->name == NULL || req->size == NULL) {
		ret = err_set(err, errlen, ERR_INVAL,
			      "hetzner: a server needs a name and a server type");
		goto out;
	}
	if ((ret = cloud_hz_find_by_intent(ctx, req->intent_id, vm, &found, err, errlen)) != 0)
		goto out;
	if (found) {
		log_info("hetzner: server %s was already made for intent %s", vm->provider_id,
			 req->intent_id);
		goto out;
	}
	if ((body = cloud_hz_create_body(req)) == NULL) {
		ret = err_set(err, errlen, ERR_INVAL,
			      "hetzner: cannot encode the request (bad UTF-8?)");
		goto out;
	}
	for (;;) {
		tries++;
		ret = cloud_http_call(ctx, &cloud_hz_api, "POST", "/servers", body, CLOUD_HTTP_ONCE,
				      &r, err, errlen);
		if (ret == 0)
			break;
		if (!(ret == ERR_BUSY && r.status >= 500) || tries > max)
			goto out;
		/* A 5xx may come after the server was made: look before asking again. */
		time_sleep_ms(
		    cloud_http_wait_ms(ctx, r.status, r.retry_after_s, -1, time_now_ms(), tries));
		if ((ret = cloud_hz_find_by_intent(ctx, req->intent_id, vm, &found, err, errlen)) !=
		    0)
			goto out;
		if (found) {
			log_info("hetzner: server %s was made despite a %ld answer",
				 vm->provider_id, r.status);
			goto out;
		}
		log_info("hetzner: POST /servers: %ld; try %d of %d", r.status, tries + 1, max + 1);
	}
	ret = cloud_hz_parse(json_object_get(r.json, "server"), vm, err, errlen);
	if (ret == 0)
		log_info("hetzner: server %s made for intent %s", vm->provider_id, req->intent_id);
out:
	json_decref(body);
	cloud_reply_fini(&r);
	return ret;
}

static int
cloud_hz_get(struct cloud_ctx *ctx, const char *provider_id, struct cloud_vm *vm, char *err,
	     size_t errlen)
{
	struct cloud_reply r;
	char path[CLOUD_HZ_PATH_MAX];
	int ret;

	/* provider_id may point into vm: it is read before vm is cleared. */
	if (cloud_numeric_id(provider_id) != 0) {
		memset(vm, 0, sizeof(*vm));
		return err_set(err, errlen, ERR_INVAL, "hetzner: bad server id");
	}
	snprintf(path, sizeof(path), "/servers/%s", provider_id);
	memset(vm, 0, sizeof(*vm));
	cloud_reply_init(&r);
	if ((ret = cloud_http_call(ctx, &cloud_hz_api, "GET", path, NULL, 0, &r, err, errlen)) == 0)
		ret = cloud_hz_parse(json_object_get(r.json, "server"), vm, err, errlen);
	cloud_reply_fini(&r);
	return ret;
}

static int
cloud_hz_delete(struct cloud_ctx *ctx, const char *provider_id, char *err, size_t errlen)
{
	struct cloud_reply r;
	char path[CLOUD_HZ_PATH_MAX];
	int ret;

	if (cloud_numeric_id(provider_id) != 0)
		return err_set(err, errlen, ERR_INVAL, "hetzner: bad server id");
	cloud_reply_init(&r);
	snprintf(path, sizeof(path), "/servers/%s", provider_id);
	ret = cloud_http_call(ctx, &cloud_hz_api, "DELETE", path, NULL, 0, &r, err, errlen);
	if (ret == ERR_NOTFOUND) {
		log_info("hetzner: server %s was already gone", provider_id);
		ret = 0;
	} else if (ret == 0) {
		log_info("hetzner: server %s deleted", provider_id);
	}
	cloud_reply_fini(&r);
	return ret;
}

/* The id of the project key whose public half is public_key: *found = 0 when none. */
static int
cloud_hz_key_find(struct cloud_ctx *ctx, const char *public_key, char key_id[CLOUD_ID_MAX],
		  int *found, char *err, size_t errlen)
{
	struct cloud_reply r;
	char want[CLOUD_HZ_KEY_MAX], have[CLOUD_HZ_KEY_MAX], path[CLOUD_HZ_PATH_MAX];
	json_t *list, *k;
	size_t i;
	int page, ret = 0;

	*found = 0;
	if (cloud_key_norm(public_key, want, sizeof(want)) != 0)
		return 0;
	cloud_reply_init(&r);
	for (page = 1; page <= CLOUD_HZ_PAGES_MAX; page++) {
		snprintf(path, sizeof(path), "/ssh_keys?page=%d&per_page=%d", page,
			 CLOUD_HZ_PER_PAGE);
		if ((ret = cloud_http_call(ctx, &cloud_hz_api, "GET", path, NULL, 0, &r, err,
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
		if (json_array_size(list) == 0 || !cloud_hz_has_next(r.json))
			break;
	}
out:
	cloud_reply_fini(&r);
	return ret;
}

static int
cloud_hz_key_add(struct cloud_ctx *ctx, const char *name, const char *public_key,
		 char key_id[CLOUD_ID_MAX], char *err, size_t errlen)
{
	struct cloud_reply r;
	json_t *body = NULL;
	char why[1024];
	int found, ret;

	key_id[0] = '\0';
	cloud_reply_init(&r);
	if (name == NULL || public_key == NULL || strlen(public_key) >= CLOUD_HZ_KEY_MAX ||
	    strpbrk(public_key, "\r\n") != NULL) {
		ret = err_set(err, errlen, ERR_INVAL, "hetzner: bad SSH key name or public key");
		goto out;
	}
	body = json_pack("{s:s, s:s, s:{s:s}}", "name", name, "public_key", public_key, "labels",
			 "managed-by", "stoke");
	if (body == NULL) {
		ret = err_set(err, errlen, ERR_INVAL, "hetzner: cannot encode the key");
		goto out;
	}
	/* Sent again after a 5xx: a key made the first time answers 409 uniqueness_error. */
	ret = cloud_http_call(ctx, &cloud_hz_api, "POST", "/ssh_keys", body, 0, &r, err, errlen);
	if (ret == 0) {
		if (cloud_json_id(json_object_get(r.json, "ssh_key"), "id", key_id, CLOUD_ID_MAX))
			ret = err_set(err, errlen, ERR_IO, "hetzner: a key without an id");
		goto out;
	}
	if (r.status != 409 || strcmp(r.code, "uniqueness_error") != 0)
		goto out;
	snprintf(why, sizeof(why), "%s", err != NULL ? err : "");
	/* The same key (not merely the same name) is already there: that is ours. */
	if (cloud_hz_key_find(ctx, public_key, key_id, &found, err, errlen) == 0 && found) {
		log_info("hetzner: key %s was already registered", key_id);
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
cloud_hz_key_remove(struct cloud_ctx *ctx, const char *key_id, char *err, size_t errlen)
{
	struct cloud_reply r;
	char path[CLOUD_HZ_PATH_MAX];
	int ret;

	if (cloud_numeric_id(key_id) != 0)
		return err_set(err, errlen, ERR_INVAL, "hetzner: bad SSH key id");
	cloud_reply_init(&r);
	snprintf(path, sizeof(path), "/ssh_keys/%s", key_id);
	ret = cloud_http_call(ctx, &cloud_hz_api, "DELETE", path, NULL, 0, &r, err, errlen);
	if (ret == ERR_NOTFOUND)
		ret = 0;
	cloud_reply_fini(&r);
	return ret;
}

const struct cloud_driver cloud_hetzner = {
    .name = "hetzner",
    .create = cloud_hz_create,
    .get = cloud_hz_get,
    .find_by_intent = cloud_hz_find_by_intent,
    .delete = cloud_hz_delete,
    .key_add = cloud_hz_key_add,
    .key_remove = cloud_hz_key_remove,
};
