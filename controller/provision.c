/*
 * provision.c: server.provision and server.delete (see provision.h). Each step is
 * idempotent: the intent id is stored before the provider is called and the VM is looked
 * up by it, the host key is pinned the first time it is seen, the agent enrollment is
 * redone only until the agent said hello. Provisioning output is the server's log
 * (output_lines owner "server").
 */
#include "provision.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "atomicfile.h"
#include "cloud.h"
#include "crypto.h"
#include "enroll.h"
#include "err.h"
#include "events.h"
#include "jobs.h"
#include "log.h"
#include "secrets.h"
#include "sm.h"
#include "ssh.h"
#include "store.h"
#include "timeutil.h"

/* The configuration as a snapshot: made whole by provision_configure() before the job
 * workers start, then never changed (a reload would publish a new snapshot, which new steps
 * take; the old one is kept, since a running step may hold it). NULL until then: a step
 * that finds none fails before it touches anything. */
static _Atomic(const struct provision_config *) prov_snapshot;

static char *
prov_dup(const char *s)
{
	return s ? strdup(s) : NULL;
}

int
provision_configure(const struct provision_config *c, char *err, size_t errlen)
{
	struct provision_config *pc;

	if (c->data_dir == NULL || c->agent_url == NULL || c->scripts_dir == NULL ||
	    c->agent_binary == NULL || c->unit_file == NULL)
		return err_set(err, errlen, ERR_INVAL,
			       "provisioning: data_dir, agent_url, provision_scripts, agent_binary"
			       " and agent_unit must all be set");
	if ((pc = calloc(1, sizeof(*pc))) == NULL)
		return err_set(err, errlen, ERR_NOMEM, "out of memory");
	*pc = *c;
	pc->data_dir = prov_dup(c->data_dir);
	pc->server_name = prov_dup(c->server_name);
	pc->agent_url = prov_dup(c->agent_url);
	pc->agent_binary = prov_dup(c->agent_binary);
	pc->scripts_dir = prov_dup(c->scripts_dir);
	pc->unit_file = prov_dup(c->unit_file);
	pc->do_url = prov_dup(c->do_url);
	pc->hz_url = prov_dup(c->hz_url);
	pc->do_token = pc->hz_token = NULL; /* kept sealed in settings */
	if (pc->ssh_wait_ms <= 0)
		pc->ssh_wait_ms = 300000;
	if (pc->active_wait_ms <= 0)
		pc->active_wait_ms = 600000;
	if (pc->agent_wait_ms <= 0)
		pc->agent_wait_ms = 120000;
	atomic_store(&prov_snapshot, pc);
	return 0;
}

/* The configuration snapshot, or NULL with the reason in err. */
static const struct provision_config *
prov_conf(char *err, size_t errlen)
{
	const struct provision_config *pc = atomic_load(&prov_snapshot);

	if (pc == NULL)
		err_set(err, errlen, ERR_BUSY,
			"the controller's provisioning configuration is not loaded yet");
	return pc;
}

struct prov_server {
	int64_t id, ssh_port;
	char *name, *provider, *region, *size, *image, *provider_id, *intent_id, *ipv4, *ssh_user;
	char *host_key, *pub, *priv_sealed, *deploy_user, *state;
};

static void
prov_server_fini(struct prov_server *v)
{
	free(v->name);
	free(v->provider);
	free(v->region);
	free(v->size);
	free(v->image);
	free(v->provider_id);
	free(v->intent_id);
	free(v->ipv4);
	free(v->ssh_user);
	free(v->host_key);
	free(v->pub);
	free(v->priv_sealed);
	free(v->deploy_user);
	free(v->state);
	memset(v, 0, sizeof(*v));
}

static char *
prov_col(struct store_stmt *st, int i)
{
	return store_col_is_null(st, i) ? NULL : strdup(store_col_text(st, i));
}

static int
prov_load(struct store *s, int64_t id, struct prov_server *v, char *err, size_t errlen)
{
	struct store_stmt *st;

	memset(v, 0, sizeof(*v));
	st = store_query(s,
			 "SELECT id, name, provider, region, size, image, provider_id, intent_id,"
			 " ipv4, ssh_port, ssh_user, host_key_sha256, ssh_public_key,"
			 " ssh_private_sealed, deploy_user, state FROM servers WHERE id = ?",
			 "i", id);
	if (st == NULL || store_step(st) != STORE_ROW) {
		store_finalize(st);
		return err_set(err, errlen, ERR_NOTFOUND, "server %lld: not found", (long long)id);
	}
	v->id = store_col_int(st, 0);
	v->name = prov_col(st, 1);
	v->provider = prov_col(st, 2);
	v->region = prov_col(st, 3);
	v->size = prov_col(st, 4);
	v->image = prov_col(st, 5);
	v->provider_id = prov_col(st, 6);
	v->intent_id = prov_col(st, 7);
	v->ipv4 = prov_col(st, 8);
	v->ssh_port = store_col_int(st, 9);
	v->ssh_user = prov_col(st, 10);
	v->host_key = prov_col(st, 11);
	v->pub = prov_col(st, 12);
	v->priv_sealed = prov_col(st, 13);
	v->deploy_user = prov_col(st, 14);
	v->state = prov_col(st, 15);
	store_finalize(st);
	return 0;
}

/* Whether provider can be used: configured with a URL, a token imported for that very
 * URL. 0, or ERR_INVAL / ERR_BUSY with the reason. */
static int
prov_provider_check(struct store *s, const char *provider, const char **url, char *err,
		    size_t errlen)
{
	const struct provision_config *pc;
	char key[64], *bound;
	int64_t n;

	if ((pc = prov_conf(err, errlen)) == NULL)
		return ERR_BUSY;
	/* A provider is used only where it is configured, and only at the URL its token was
	 * given for: never a fallback to another. */
	*url = strcmp(provider, "digitalocean") == 0 ? pc->do_url : pc->hz_url;
	if (*url == NULL || (*url)[0] == '\0')
		return err_set(err, errlen, ERR_INVAL,
			       "%s is not configured: set %s_url in stoked.conf and restart",
			       provider, provider);
	snprintf(key, sizeof(key), "token.%s", provider);
	n = store_int(s, -1, "SELECT count(*) FROM settings WHERE key = ? AND sealed = 1", "s",
		      key);
	if (n < 0)
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	if (n == 0)
		return err_set(err, errlen, ERR_INVAL,
			       "no API token for %s: set %s_token in stoked.conf and restart",
			       provider, provider);
	snprintf(key, sizeof(key), "url.%s", provider);
	bound = store_text(s, "SELECT value FROM settings WHERE key = ?", "s", key);
	if (bound != NULL && strcmp(bound, *url) != 0) {
		err_set(err, errlen, ERR_INVAL,
			"the %s API token was given for %s, but %s_url is %s: set %s_token"
			" again with the URL and restart",
			provider, bound, provider, *url, provider);
		free(bound);
		return ERR_INVAL;
	}
	free(bound);
	return 0;
}

int
provision_provider_ready(struct store *s, const char *provider, char *err, size_t errlen)
{
	const char *url;

	if (strcmp(provider, "custom") == 0)
		return 0;
	if (cloud_lookup(provider) == NULL)
		return err_set(err, errlen, ERR_INVAL, "unknown provider %s", provider);
	return prov_provider_check(s, provider, &url, err, errlen);
}

/* A provider context for a server's provider: URL from the configuration, token from the
 * sealed settings. */
static int
prov_cloud(const char *provider, const struct cloud_driver **drv, struct cloud_ctx *ctx,
	   char **token, char *err, size_t errlen)
{
	struct store *s = store_thread();
	const char *url;
	char key[64], *sealed;
	int rc;

	memset(ctx, 0, sizeof(*ctx));
	*token = NULL;
	if ((*drv = cloud_lookup(provider)) == NULL)
		return err_set(err, errlen, ERR_INVAL, "unknown provider %s", provider);
	if (strcmp(provider, "custom") == 0)
		return 0;
	if ((rc = prov_provider_check(s, provider, &url, err, errlen)) != 0)
		return rc;
	snprintf(key, sizeof(key), "token.%s", provider);
	sealed = store_text(s, "SELECT value FROM settings WHERE key = ? AND sealed = 1", "s", key);
	if (sealed == NULL)
		return err_set(err, errlen, ERR_INVAL,
			       "no API token for %s: set %s_token in stoked.conf and restart",
			       provider, provider);
	if (secrets_open(sealed, key, token, err, errlen) != 0) {
		free(sealed);
		return ERR_CRYPTO;
	}
	free(sealed);
	ctx->base_url = url;
	ctx->token = *token;
	return 0;
}

static void
prov_cloud_fini(struct cloud_ctx *ctx, char *token)
{
	cloud_ctx_fini(ctx);
	if (token) {
		explicit_bzero(token, strlen(token));
		free(token);
	}
}

/* Rank of a provisioning state (-1: not one of them). */
static int
prov_rank(const char *state)
{
	static const char *const order[] = {"pending",	     "creating",	 "booting",
					    "bootstrapping", "installing_agent", "active"};
	size_t i;

	for (i = 0; state && i < sizeof(order) / sizeof(order[0]); i++)
		if (strcmp(order[i], state) == 0)
			return (int)i;
	return -1;
}

static int
prov_move(struct job_ctx *ctx, const char *to, int percent, const char *msg, char *err,
	  size_t errlen)
{
	struct store *s = job_store(ctx);
	char *now =
	    store_text(s, "SELECT state FROM servers WHERE id = ?", "i", job_resource_id(ctx));
	int rc, later = prov_rank(now) >= prov_rank(to) && prov_rank(to) >= 0;

	free(now);
	/* A step run again (after a crash or a retry) may find the server further on. */
	if (later) {
		job_progress(ctx, percent, "%s", msg);
		return 0;
	}
	store_begin(s);
	if ((rc = sm_transition(s, &sm_server, job_resource_id(ctx), to, "system", err, errlen)) !=
	    0) {
		store_rollback(s);
		return rc;
	}
	sm_progress(s, &sm_server, job_resource_id(ctx), percent, msg);
	store_commit(s);
	job_progress(ctx, percent, "%s", msg);
	return 0;
}

static void
prov_check(struct job_ctx *ctx, const char *item, const char *detail)
{
	sm_check(job_store(ctx), &sm_server, job_resource_id(ctx), item, 1, 1, detail);
}

/* ---- steps ---- */

int
provision_keypair(struct store *s, int64_t id, char *err, size_t errlen)
{
	struct prov_server v;
	char *priv = NULL, *pub = NULL, *sealed = NULL, aad[64], comment[96];
	int rc;

	if ((rc = prov_load(s, id, &v, err, errlen)) != 0)
		return rc;
	if (v.pub && v.priv_sealed)
		goto out;
	snprintf(comment, sizeof(comment), "stoke@%s", v.name);
	snprintf(aad, sizeof(aad), "server:%lld:ssh_key", (long long)v.id);
	if ((rc = ssh_keygen_ed25519(comment, &priv, &pub, err, errlen)) != 0 ||
	    (rc = secrets_seal(priv, aad, &sealed, err, errlen)) != 0)
		goto out;
	if (store_exec(s,
		       "UPDATE servers SET ssh_public_key = ?, ssh_private_sealed = ? WHERE id = ?",
		       "ssi", pub, sealed, v.id) != 0)
		rc = err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
out:
	if (priv)
		explicit_bzero(priv, strlen(priv));
	free(priv);
	free(pub);
	free(sealed);
	prov_server_fini(&v);
	return rc;
}

static int
prov_step_keypair(struct job_ctx *ctx, char *err, size_t errlen)
{
	int rc = provision_keypair(job_store(ctx), job_resource_id(ctx), err, errlen);

	if (rc == 0)
		prov_check(ctx, "ssh key pair", NULL);
	return rc;
}

static int
prov_step_provider_key(struct job_ctx *ctx, char *err, size_t errlen)
{
	const struct cloud_driver *drv;
	struct cloud_ctx cc;
	struct prov_server v;
	char *token = NULL, *have, keyid[CLOUD_ID_MAX] = "", name[128];
	int rc;

	if ((rc = prov_load(job_store(ctx), job_resource_id(ctx), &v, err, errlen)) != 0)
		return rc;
	if (strcmp(v.provider, "custom") == 0 ||
	    (have = job_data_get(ctx, "provider_key")) != NULL) {
		if (strcmp(v.provider, "custom") != 0)
			free(have);
		prov_server_fini(&v);
		return 0;
	}
	job_progress(ctx, 8, "registering the SSH key at %s", v.provider);
	if ((rc = prov_cloud(v.provider, &drv, &cc, &token, err, errlen)) == 0) {
		snprintf(name, sizeof(name), "stoke-%s-%lld", v.name, (long long)v.id);
		rc = drv->key_add(&cc, name, v.pub, keyid, err, errlen);
		if (rc == 0)
			job_data_set(ctx, "provider_key", keyid);
	}
	prov_cloud_fini(&cc, token);
	prov_server_fini(&v);
	return rc;
}

static int
prov_undo_provider_key(struct job_ctx *ctx, char *err, size_t errlen)
{
	const struct cloud_driver *drv;
	struct cloud_ctx cc;
	struct prov_server v;
	char *token = NULL, *keyid = job_data_get(ctx, "provider_key");
	int rc = 0;

	if (keyid == NULL || keyid[0] == '\0') {
		free(keyid);
		return 0;
	}
	if ((rc = prov_load(job_store(ctx), job_resource_id(ctx), &v, err, errlen)) == 0 &&
	    (rc = prov_cloud(v.provider, &drv, &cc, &token, err, errlen)) == 0) {
		rc = drv->key_remove(&cc, keyid, err, errlen);
		prov_cloud_fini(&cc, token);
	}
	/* A retry registers the key again. */
	if (rc == 0)
		job_data_set(ctx, "provider_key", NULL);
	prov_server_fini(&v);
	free(keyid);
	return rc;
}

static int
prov_step_create(struct job_ctx *ctx, char *err, size_t errlen)
{
	struct store *s = job_store(ctx);
	const struct cloud_driver *drv;
	struct cloud_create_req req = {0};
	struct cloud_vm vm;
	struct cloud_ctx cc;
	struct prov_server v;
	char *token = NULL, *keyid = NULL, intent[40];
	const char *keys[1];
	int rc;

	if ((rc = prov_load(s, job_resource_id(ctx), &v, err, errlen)) != 0)
		return rc;
	if ((rc = prov_move(ctx, "creating", 15, "creating the server", err, errlen)) != 0)
		goto out;
	/* The intent id is stored before the provider is called: a retry finds the VM. */
	if (v.intent_id == NULL) {
		char *t = crypto_token("", 12);

		snprintf(intent, sizeof(intent), "%s", t ? t : "");
		free(t);
		store_exec(s, "UPDATE servers SET intent_id = ? WHERE id = ?", "si", intent, v.id);
	} else
		snprintf(intent, sizeof(intent), "%s", v.intent_id);
	if ((rc = prov_cloud(v.provider, &drv, &cc, &token, err, errlen)) != 0)
		goto out;
	keyid = job_data_get(ctx, "provider_key");
	keys[0] = keyid;
	req.name = v.name;
	req.region = v.region;
	req.size = v.size;
	req.image = v.image;
	req.intent_id = intent;
	req.key_ids = keys;
	req.nkey_ids = keyid && keyid[0] ? 1 : 0;
	req.address = v.ipv4;
	req.ssh_port = (int)v.ssh_port;
	req.ssh_user = v.ssh_user;
	memset(&vm, 0, sizeof(vm));
	if ((rc = drv->create(&cc, &req, &vm, err, errlen)) == 0) {
		store_exec(s, "UPDATE servers SET provider_id = ? WHERE id = ?", "si",
			   vm.provider_id, v.id);
		prov_check(ctx, "server created at the provider", vm.provider_id);
		log_info("server %lld (%s): %s made %s", (long long)v.id, v.name, v.provider,
			 vm.provider_id);
	}
	prov_cloud_fini(&cc, token);
out:
	free(keyid);
	prov_server_fini(&v);
	return rc;
}

static int
prov_delete_vm(struct job_ctx *ctx, char *err, size_t errlen)
{
	struct store *s = job_store(ctx);
	const struct cloud_driver *drv;
	struct cloud_ctx cc;
	struct cloud_vm vm;
	struct prov_server v;
	char *token = NULL;
	int rc, found = 0;

	if ((rc = prov_load(s, job_resource_id(ctx), &v, err, errlen)) != 0)
		return rc == ERR_NOTFOUND ? 0 : rc;
	/* Custom servers are not Stoke's to delete; without an intent id no create call
	 * was ever made (the provider need not even be configured). */
	if (strcmp(v.provider, "custom") == 0 || (v.provider_id == NULL && v.intent_id == NULL)) {
		prov_server_fini(&v);
		return 0;
	}
	if ((rc = prov_cloud(v.provider, &drv, &cc, &token, err, errlen)) != 0)
		goto out;
	/* A VM made by a call whose answer was lost is found by its intent id. */
	if (v.provider_id == NULL && v.intent_id &&
	    (rc = drv->find_by_intent(&cc, v.intent_id, &vm, &found, err, errlen)) == 0 && found)
		v.provider_id = strdup(vm.provider_id);
	if (rc == 0 && v.provider_id) {
		rc = drv->delete (&cc, v.provider_id, err, errlen);
		/* The pinned host key and the address were that VM's: a new one has others. */
		if (rc == 0)
			store_exec(s,
				   "UPDATE servers SET provider_id = NULL, host_key_sha256 = NULL,"
				   " ipv4 = NULL WHERE id = ?",
				   "i", v.id);
		if (rc == 0)
			log_info("server %lld (%s): %s deleted %s", (long long)v.id, v.name,
				 v.provider, v.provider_id);
	}
	prov_cloud_fini(&cc, token);
out:
	prov_server_fini(&v);
	return rc;
}

static int
prov_undo_create(struct job_ctx *ctx, char *err, size_t errlen)
{
	return prov_delete_vm(ctx, err, errlen);
}

static int
prov_step_active(struct job_ctx *ctx, char *err, size_t errlen)
{
	const struct provision_config *pc;
	struct store *s = job_store(ctx);
	const struct cloud_driver *drv;
	struct cloud_ctx cc;
	struct cloud_vm vm;
	struct prov_server v;
	char *token = NULL;
	int rc;

	if ((pc = prov_conf(err, errlen)) == NULL)
		return ERR_BUSY;
	if ((rc = prov_load(s, job_resource_id(ctx), &v, err, errlen)) != 0)
		return rc;
	if ((rc = prov_move(ctx, "booting", 25, "waiting for the server to boot", err, errlen)) !=
	    0)
		goto out;
	if ((rc = prov_cloud(v.provider, &drv, &cc, &token, err, errlen)) != 0)
		goto out;
	memset(&vm, 0, sizeof(vm));
	rc = cloud_wait_active(drv, &cc, v.provider_id, pc->active_wait_ms, 1000, &vm, err, errlen);
	if (rc == 0) {
		if (vm.ipv4[0] == '\0')
			rc = err_set(err, errlen, ERR_IO, "%s reports no public IPv4 for %s",
				     v.provider, v.provider_id);
		else {
			store_exec(s, "UPDATE servers SET ipv4 = ?, ssh_port = ? WHERE id = ?",
				   "sdi", vm.ipv4, vm.ssh_port > 0 ? vm.ssh_port : 22, v.id);
			prov_check(ctx, "server running", vm.ipv4);
		}
	}
	prov_cloud_fini(&cc, token);
out:
	prov_server_fini(&v);
	return rc;
}

/* ---- SSH ---- */

static int
prov_cancel_cb(void *arg)
{
	return job_cancelled(arg) || job_stopping(arg);
}

struct prov_log {
	struct job_ctx *ctx;
	int64_t seq;
};

static void
prov_log_line(void *arg, enum ssh_stream stream, const char *text, size_t len)
{
	struct prov_log *l = arg;
	struct store *s = job_store(l->ctx);
	char *line = strndup(text, len);

	if (line == NULL)
		return;
	l->seq++;
	store_exec(s,
		   "INSERT OR IGNORE INTO output_lines (owner_kind, owner_id, seq, stream, time,"
		   " text) VALUES ('server', ?, ?, ?, ?, ?)",
		   "iisis", job_resource_id(l->ctx), l->seq,
		   stream == SSH_STDERR ? "stderr" : "stdout", store_now_ms(), line);
	events_notify();
	if (strncmp(line, "==> ", 4) == 0)
		job_progress(l->ctx, 55, "%s", line + 4);
	free(line);
}

static int
prov_connect(struct job_ctx *ctx, struct prov_server *v, struct ssh_conn **c, int wait, char *err,
	     size_t errlen)
{
	const struct provision_config *pc;
	struct ssh_opts o = {0};
	char *priv = NULL, aad[64], seen[128] = "";
	int rc;

	if ((pc = prov_conf(err, errlen)) == NULL)
		return ERR_BUSY;
	snprintf(aad, sizeof(aad), "server:%lld:ssh_key", (long long)v->id);
	if ((rc = secrets_open(v->priv_sealed, aad, &priv, err, errlen)) != 0)
		return rc;
	o.host = v->ipv4;
	o.port = (int)v->ssh_port;
	o.user = v->ssh_user;
	o.private_pem = priv;
	o.pinned_sha256 = v->host_key;
	o.cancel_cb = prov_cancel_cb;
	o.cancel_arg = ctx;
	if (wait)
		rc = ssh_wait(&o, pc->ssh_wait_ms, NULL, NULL, c, seen, sizeof(seen), err, errlen);
	else
		rc = ssh_connect(&o, c, seen, sizeof(seen), err, errlen);
	explicit_bzero(priv, strlen(priv));
	free(priv);
	if (rc == 0 && v->host_key == NULL && seen[0]) {
		/* Trust on first use: pin what we saw. */
		store_exec(job_store(ctx), "UPDATE servers SET host_key_sha256 = ? WHERE id = ?",
			   "si", seen, v->id);
		v->host_key = strdup(seen);
		log_info("server %lld (%s): pinned host key %s", (long long)v->id, v->name, seen);
	}
	if (rc == ERR_AUTH && strstr(err, "mismatch"))
		rc = ERR_INVAL; /* never retried: someone must look */
	return rc;
}

static int
prov_step_ssh(struct job_ctx *ctx, char *err, size_t errlen)
{
	struct prov_server v;
	struct ssh_conn *c = NULL;
	int rc;

	if ((rc = prov_load(job_store(ctx), job_resource_id(ctx), &v, err, errlen)) != 0)
		return rc;
	if ((rc = prov_move(ctx, "bootstrapping", 35, "waiting for SSH", err, errlen)) == 0 &&
	    (rc = prov_connect(ctx, &v, &c, 1, err, errlen)) == 0)
		prov_check(ctx, "ssh host key pinned", v.host_key);
	ssh_close(c);
	prov_server_fini(&v);
	return rc;
}

static int
prov_read(const char *dir, const char *name, char **text, size_t *len, char *err, size_t errlen)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return atomicfile_read(path, 64u << 20, text, len, err, errlen);
}

static int
prov_run(struct job_ctx *ctx, struct ssh_conn *c, const char *const *argv, struct prov_log *log,
	 long timeout_ms, char *err, size_t errlen)
{
	int status = -1, rc;

	if ((rc = ssh_exec(c, argv, prov_log_line, log, timeout_ms, &status, err, errlen)) != 0)
		return rc;
	if (status != 0)
		return err_set(err, errlen, ERR_IO, "%s exited with %d (see the server's log)",
			       argv[0], status);
	(void)ctx;
	return 0;
}

struct prov_capture {
	char text[512];
};

static void
prov_capture_line(void *arg, enum ssh_stream stream, const char *text, size_t len)
{
	struct prov_capture *c = arg;

	if (stream == SSH_STDOUT && c->text[0] == '\0')
		snprintf(c->text, sizeof(c->text), "%.*s", (int)len, text);
}

/* The stand-in cloud's test hosts share the test machine and say so in their sessions'
 * STOKE_STANDIN_ROOT: sites live inside that folder and run as its owner. */
static void
prov_sandbox(struct job_ctx *ctx, struct ssh_conn *c, struct prov_server *v)
{
	const char *argv[] = {"sh", "-c", "printf '%s\\n' \"${STOKE_STANDIN_ROOT:-}\"; id -un",
			      NULL};
	struct prov_capture cap = {{0}};
	char err[256], root[600];
	int status = -1;

	if (ssh_exec(c, argv, prov_capture_line, &cap, 30000, &status, err, sizeof(err)) != 0 ||
	    status != 0 || cap.text[0] != '/')
		return;
	snprintf(root, sizeof(root), "%s/var/www", cap.text);
	store_exec(job_store(ctx),
		   "UPDATE servers SET sites_root = ?, deploy_user = ? WHERE id = ?", "ssi", root,
		   v->ssh_user, v->id);
	log_info("server %lld (%s): a stand-in sandbox; sites in %s", (long long)v->id, v->name,
		 root);
}

static int
prov_step_provision(struct job_ctx *ctx, char *err, size_t errlen)
{
	const struct provision_config *pc;
	struct store *s = job_store(ctx);
	struct prov_log log = {.ctx = ctx};
	struct prov_server v;
	struct ssh_conn *c = NULL;
	char *script = NULL, user[64];
	size_t len;
	int rc;

	if ((pc = prov_conf(err, errlen)) == NULL)
		return ERR_BUSY;
	if ((rc = prov_load(s, job_resource_id(ctx), &v, err, errlen)) != 0)
		return rc;
	log.seq = store_int(s, 0,
			    "SELECT max(seq) FROM output_lines WHERE owner_kind = 'server' AND"
			    " owner_id = ?",
			    "i", v.id);
	job_progress(ctx, 45, "running provision.sh");
	snprintf(user, sizeof(user), "STOKE_DEPLOY_USER=%s", v.deploy_user);
	{
		char rpath[64], *rnd = crypto_token("", 8);
		const char *argv[] = {"env", user, "bash", rpath, NULL};

		snprintf(rpath, sizeof(rpath), "/tmp/stoke-provision-%s.sh", rnd ? rnd : "x");
		free(rnd);

		const char *rm[] = {"rm", "-f", rpath, NULL};
		char scratch[256];

		if ((rc = prov_read(pc->scripts_dir, "provision.sh", &script, &len, err, errlen)) !=
			0 ||
		    (rc = prov_connect(ctx, &v, &c, 0, err, errlen)) != 0)
			goto out;
		if ((rc = ssh_upload(c, rpath, script, len, 0700, err, errlen)) == 0)
			rc = prov_run(ctx, c, argv, &log, 3600000, err, errlen);
		/* nothing of ours left in /tmp, whatever happened */
		prov_run(ctx, c, rm, &log, 60000, scratch, sizeof(scratch));
		if (rc != 0)
			goto out;
	}
	prov_check(ctx, "provisioned", NULL);
	prov_sandbox(ctx, c, &v);
out:
	ssh_close(c);
	free(script);
	prov_server_fini(&v);
	return rc;
}

static int
prov_step_agent(struct job_ctx *ctx, char *err, size_t errlen)
{
	const struct provision_config *pc;
	struct store *s = job_store(ctx);
	struct prov_log log = {.ctx = ctx};
	struct enroll_opts eo = {0};
	struct prov_server v;
	struct ssh_conn *c = NULL;
	char tmpl[] = "/tmp/stoke-bundle-XXXXXX", *bundle = NULL, *data = NULL;
	static const char *const files[] = {"agent.conf", "ca.crt", "agent.crt", "agent.key",
					    "secret"};
	char remote[256], dir[64], path[128], *rnd;
	size_t len, i;
	int rc;

	if ((pc = prov_conf(err, errlen)) == NULL)
		return ERR_BUSY;
	/* A fresh folder per attempt: never one planted by someone else, never shared. */
	rnd = crypto_token("", 8);
	snprintf(dir, sizeof(dir), "/tmp/stoke-install-%s", rnd ? rnd : "x");
	free(rnd);
	if ((rc = prov_load(s, job_resource_id(ctx), &v, err, errlen)) != 0)
		return rc;
	log.seq = store_int(s, 0,
			    "SELECT max(seq) FROM output_lines WHERE owner_kind = 'server' AND"
			    " owner_id = ?",
			    "i", v.id);
	if ((rc = prov_move(ctx, "installing_agent", 75, "installing the agent", err, errlen)) != 0)
		goto out;
	if ((bundle = mkdtemp(tmpl)) == NULL) {
		rc = err_set(err, errlen, ERR_IO, "mkdtemp: %s", strerror(errno));
		goto out;
	}
	eo.data_dir = pc->data_dir;
	eo.server_name = pc->server_name;
	eo.controller = pc->agent_url;
	eo.out_dir = bundle;
	eo.state_dir = "/var/lib/stoke-agent";
	if ((rc = enroll_agent(s, v.name, &eo, NULL, err, errlen)) != 0 ||
	    (rc = prov_connect(ctx, &v, &c, 0, err, errlen)) != 0)
		goto out;
	{
		char bdir[96];
		const char *mk[] = {"mkdir", "-m", "700", dir, bdir, NULL};

		snprintf(bdir, sizeof(bdir), "%s/bundle", dir);
		if ((rc = prov_run(ctx, c, mk, &log, 60000, err, errlen)) != 0)
			goto out;
	}
	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(remote, sizeof(remote), "%s/bundle/%s", dir, files[i]);
		if ((rc = prov_read(bundle, files[i], &data, &len, err, errlen)) != 0 ||
		    (rc = ssh_upload(c, remote, data, len, 0600, err, errlen)) != 0)
			goto out;
		explicit_bzero(data, len);
		free(data);
		data = NULL;
	}
	if ((rc = atomicfile_read(pc->agent_binary, 256u << 20, &data, &len, err, errlen)) != 0 ||
	    (snprintf(path, sizeof(path), "%s/stoke-agent", dir),
	     (rc = ssh_upload(c, path, data, len, 0755, err, errlen))) != 0)
		goto out;
	free(data);
	data = NULL;
	if ((rc = atomicfile_read(pc->unit_file, 1 << 20, &data, &len, err, errlen)) != 0 ||
	    (snprintf(path, sizeof(path), "%s/stoke-agent.service", dir),
	     (rc = ssh_upload(c, path, data, len, 0644, err, errlen))) != 0)
		goto out;
	free(data);
	data = NULL;
	if ((rc = prov_read(pc->scripts_dir, "install-agent.sh", &data, &len, err, errlen)) != 0 ||
	    (snprintf(path, sizeof(path), "%s/install-agent.sh", dir),
	     (rc = ssh_upload(c, path, data, len, 0700, err, errlen))) != 0)
		goto out;
	{
		char sh[128], bin[128], bun[128], unit[128];
		const char *argv[] = {"bash", sh,	"--binary", bin, "--bundle",
				      bun,    "--unit", unit,	    NULL};
		const char *rm[] = {"rm", "-rf", dir, NULL};

		snprintf(sh, sizeof(sh), "%s/install-agent.sh", dir);
		snprintf(bin, sizeof(bin), "%s/stoke-agent", dir);
		snprintf(bun, sizeof(bun), "%s/bundle", dir);
		snprintf(unit, sizeof(unit), "%s/stoke-agent.service", dir);

		char scratch[256];

		rc = prov_run(ctx, c, argv, &log, 600000, err, errlen);
		prov_run(ctx, c, rm, &log, 60000, scratch, sizeof(scratch));
		if (rc != 0)
			goto out;
	}
	prov_check(ctx, "agent installed", NULL);
out:
	if (data)
		explicit_bzero(data, len);
	free(data);
	if (bundle) {
		for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
			snprintf(remote, sizeof(remote), "%s/%s", bundle, files[i]);
			unlink(remote);
		}
		rmdir(bundle);
	}
	ssh_close(c);
	prov_server_fini(&v);
	return rc;
}

static int
prov_step_hello(struct job_ctx *ctx, char *err, size_t errlen)
{
	struct store *s = job_store(ctx);
	const struct provision_config *pc = prov_conf(err, errlen);
	int64_t id = job_resource_id(ctx), end;
	char *state;

	if (pc == NULL)
		return ERR_BUSY;
	end = time_mono_ms() + pc->agent_wait_ms;

	job_progress(ctx, 90, "waiting for the agent's hello");
	for (;;) {
		state = store_text(s, "SELECT state FROM servers WHERE id = ?", "i", id);
		/* The hello may have come before "agent installed" was ticked, when the guard
		 * still said no: try the move again now. */
		if (state && strcmp(state, "installing_agent") == 0) {
			char why[512];

			store_begin(s);
			if (sm_transition(s, &sm_server, id, "active", "system", why,
					  sizeof(why)) == 0)
				store_commit(s);
			else
				store_rollback(s);
			free(state);
			state = store_text(s, "SELECT state FROM servers WHERE id = ?", "i", id);
		}
		if (state && strcmp(state, "active") == 0) {
			free(state);
			sm_progress(s, &sm_server, id, 100, "active");
			return 0;
		}
		free(state);
		if (job_stopping(ctx))
			return err_set(err, errlen, ERR_BUSY, "the controller is stopping");
		if (job_cancelled(ctx))
			return err_set(err, errlen, ERR_CANCELLED, "cancelled");
		if (time_mono_ms() > end)
			return err_set(err, errlen, ERR_TIMEOUT,
				       "the agent did not say hello within %ld s (can the server"
				       " reach %s?)",
				       pc->agent_wait_ms / 1000, pc->agent_url);
		events_wait(events_last_id(), 500);
	}
}

static void
prov_finished(struct job_ctx *ctx, const char *state, const char *error)
{
	char *now = store_text(job_store(ctx), "SELECT state FROM servers WHERE id = ?", "i",
			       job_resource_id(ctx));
	int deleting = now && (strcmp(now, "deleting") == 0 || strcmp(now, "deleted") == 0);

	free(now);
	/* Cancelled because the server is being deleted: the delete job owns it now. */
	if (strcmp(state, "done") != 0 && !deleting)
		sm_fail(job_store(ctx), &sm_server, job_resource_id(ctx), "provision",
			error ? error : state, "system");
}

static const struct job_step prov_steps[] = {
    {"keypair", prov_step_keypair, NULL, 0},
    {"provider_key", prov_step_provider_key, prov_undo_provider_key, 0},
    {"create", prov_step_create, prov_undo_create, 0},
    {"wait_active", prov_step_active, NULL, 0},
    {"ssh", prov_step_ssh, NULL, 0},
    {"provision", prov_step_provision, NULL, 0},
    {"install_agent", prov_step_agent, NULL, 0},
    {"agent_hello", prov_step_hello, NULL, 0},
};
static const struct job_type prov_type = {.name = "server.provision",
					  .steps = prov_steps,
					  .nsteps = 8,
					  .timeout_ms = 3 * 3600 * 1000L,
					  .max_attempts = 3,
					  .backoff_ms = 5000,
					  .backoff_max_ms = 60000,
					  .rollback = 1,
					  .finished = prov_finished};

/* ---- server.delete ---- */

static int
prov_del_agent(struct job_ctx *ctx, char *err, size_t errlen)
{
	struct store *s = job_store(ctx);
	struct prov_server v;
	struct ssh_conn *c = NULL;
	int rc;

	(void)err;
	(void)errlen;
	store_exec(s, "UPDATE servers SET agent_revoked = 1, agent_status = 'offline' WHERE id = ?",
		   "i", job_resource_id(ctx));
	/* A custom server outlives Stoke: stop and remove the agent over SSH, if it answers. */
	if (prov_load(s, job_resource_id(ctx), &v, err, errlen) != 0)
		return 0;
	if (v.ipv4 && v.priv_sealed && v.host_key) {
		char e[512];
		struct prov_log log = {.ctx = ctx, .seq = 1 << 30};
		const char *argv[] = {
		    "bash", "-c",
		    "root=${STOKE_ROOT:-${STOKE_STANDIN_ROOT:-}};"
		    " if [ -z \"$root\" ] && command -v systemctl >/dev/null;"
		    " then systemctl disable --now stoke-agent 2>/dev/null || true;"
		    " fi; p=$root/var/lib/stoke-agent/agent.pid;"
		    " [ -f \"$p\" ] && kill \"$(cat \"$p\")\" 2>/dev/null; true",
		    NULL};

		rc = prov_connect(ctx, &v, &c, 0, e, sizeof(e));
		if (rc == 0)
			prov_run(ctx, c, argv, &log, 60000, e, sizeof(e));
		ssh_close(c);
	}
	prov_server_fini(&v);
	return 0;
}

static int
prov_del_vm(struct job_ctx *ctx, char *err, size_t errlen)
{
	job_progress(ctx, 40, "deleting the server at its provider");
	return prov_delete_vm(ctx, err, errlen);
}

static int
prov_del_keys(struct job_ctx *ctx, char *err, size_t errlen)
{
	struct store *s = job_store(ctx);
	int64_t id = job_resource_id(ctx);
	char *keyid = store_text(s,
				 "SELECT d.value FROM job_data d JOIN jobs j ON j.id = d.job_id"
				 " WHERE j.type = 'server.provision' AND j.resource_id = ? AND"
				 " d.key = 'provider_key' ORDER BY j.id DESC LIMIT 1",
				 "i", id);
	struct prov_server v;
	const struct cloud_driver *drv;
	struct cloud_ctx cc;
	char *token = NULL;
	int rc = 0;

	if (keyid && keyid[0] && prov_load(s, id, &v, err, errlen) == 0) {
		if ((rc = prov_cloud(v.provider, &drv, &cc, &token, err, errlen)) == 0)
			rc = drv->key_remove(&cc, keyid, err, errlen);
		prov_cloud_fini(&cc, token);
		prov_server_fini(&v);
	}
	free(keyid);
	return rc;
}

static int
prov_del_record(struct job_ctx *ctx, char *err, size_t errlen)
{
	struct store *s = job_store(ctx);
	int64_t id = job_resource_id(ctx);
	int rc;

	store_begin(s);
	/* Everything Stoke kept for the server goes with it. */
	store_exec(s, "DELETE FROM sites WHERE server_id = ?", "i", id);
	store_exec(s, "DELETE FROM server_keys WHERE server_id = ?", "i", id);
	store_exec(s,
		   "UPDATE servers SET ssh_private_sealed = NULL, agent_secret_hash = NULL,"
		   " agent_id = NULL, name = name || '.deleted-' || id WHERE id = ?",
		   "i", id);
	/* A retried delete starts from failed: through deleting, as the machine wants. */
	rc = sm_transition(s, &sm_server, id, "deleting", "system", err, errlen);
	if (rc == 0)
		rc = sm_transition(s, &sm_server, id, "deleted", "system", err, errlen);
	if (rc == 0 && store_commit(s) == 0)
		return 0;
	store_rollback(s);
	return rc ? rc : ERR_DB;
}

static void
prov_del_finished(struct job_ctx *ctx, const char *state, const char *error)
{
	if (strcmp(state, "done") != 0)
		sm_fail(job_store(ctx), &sm_server, job_resource_id(ctx), "delete",
			error ? error : state, "system");
}

static const struct job_step prov_del_steps[] = {
    {"agent", prov_del_agent, NULL, 0},
    {"vm", prov_del_vm, NULL, 0},
    {"provider_key", prov_del_keys, NULL, 0},
    {"record", prov_del_record, NULL, 0},
};
static const struct job_type prov_del_type = {.name = "server.delete",
					      .steps = prov_del_steps,
					      .nsteps = 4,
					      .timeout_ms = 1800000,
					      .max_attempts = 5,
					      .backoff_ms = 2000,
					      .finished = prov_del_finished};

void
provision_register(void)
{
	jobs_register(&prov_type);
	jobs_register(&prov_del_type);
}

int
provision_start(struct store *s, int64_t id, const char *actor, int64_t *job_id, char *err,
		size_t errlen)
{
	struct jobs_enqueue_opts o = {.resource_kind = "server", .resource_id = id, .actor = actor};
	char queue[48];

	snprintf(queue, sizeof(queue), "serial:server:%lld", (long long)id);
	o.queue = queue;
	return jobs_enqueue(s, "server.provision", "{}", &o, job_id, err, errlen);
}

int
provision_delete(struct store *s, int64_t id, const char *actor, int64_t *job_id, char *err,
		 size_t errlen)
{
	struct jobs_enqueue_opts o = {.resource_kind = "server", .resource_id = id, .actor = actor};
	struct store_stmt *st;
	char queue[48];
	int64_t ids[64];
	size_t n = 0, i;
	int rc;

	/* A provisioning still running stops first (its undo removes what it made). */
	st = store_query(s,
			 "SELECT id FROM jobs WHERE resource_kind = 'server' AND resource_id = ?"
			 " AND state IN ('queued', 'running') AND type = 'server.provision'",
			 "i", id);
	while (st && store_step(st) == STORE_ROW && n < 64)
		ids[n++] = store_col_int(st, 0);
	store_finalize(st);
	for (i = 0; i < n; i++)
		jobs_cancel(s, ids[i], actor, err, errlen);
	/* Behind the provisioning in its queue: it undoes its part first. */
	snprintf(queue, sizeof(queue), "serial:server:%lld", (long long)id);
	o.queue = queue;
	if (store_begin(s) != 0)
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	if ((rc = sm_transition(s, &sm_server, id, "deleting", actor, err, errlen)) != 0 ||
	    (rc = jobs_enqueue(s, "server.delete", "{}", &o, job_id, err, errlen)) != 0) {
		store_rollback(s);
		return rc;
	}
	if (store_commit(s) != 0) {
		store_rollback(s);
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	}
	return 0;
}
