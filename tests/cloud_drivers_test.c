/*
 * cloud_drivers_test.c: the cloud drivers (digitalocean, hetzner, custom) against the
 * stand-in cloud (tests/standin_cloud.py, started here with python3 on a free port):
 * lifecycle, no duplicate VM, provider words of 401/404/409/422, 429 waits, 5xx retries, a
 * timeout, an oversized answer, paging. Judged by exit code; ctest runs it (label integration).
 */
#include "cloud.h"
#include "cloud_http.h"
#include "crypto.h"
#include "err.h"
#include "http_client.h"
#include "log.h"
#include "timeutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define CT_DO_TOKEN "do-test-token-1f6c"
#define CT_HZ_TOKEN "hz-test-token-94ab"
#define CT_BOOT_MS "1500" /* long enough that a loaded machine still sees "booting" */
#define CT_ERR 1024

static struct {
	pid_t standin;
	char dir[PATH_MAX];
	char url[256];
	struct http_client *ctl;
	int failed;
} ct;

#define CT_CHECK(cond, ...)                                                                        \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			ct_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                           \
			return -1;                                                                 \
		}                                                                                  \
	} while (0)

static void __attribute__((format(printf, 4, 5)))
ct_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "FAIL %s:%d: %s: ", file, line, cond);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	ct.failed = 1;
}

/* ---- the stand-in process ---------------------------------------------------------------- */

static int
ct_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void
ct_dump_log(void)
{
	char path[PATH_MAX + 32], line[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/standin.log", ct.dir);
	if ((f = fopen(path, "r")) == NULL)
		return;
	fprintf(stderr, "--- %s:\n", path);
	while (fgets(line, sizeof(line), f) != NULL)
		fputs(line, stderr);
	fclose(f);
}

static void
ct_stop(void)
{
	int64_t end;
	int st;

	http_client_free(ct.ctl);
	ct.ctl = NULL;
	if (ct.standin > 0) {
		kill(ct.standin, SIGTERM);
		end = time_mono_ms() + 10000;
		while (waitpid(ct.standin, &st, WNOHANG) == 0) {
			if (time_mono_ms() > end) {
				kill(ct.standin, SIGKILL);
				waitpid(ct.standin, &st, 0);
				break;
			}
			time_sleep_ms(20);
		}
		ct.standin = 0;
	}
	if (ct.failed)
		ct_dump_log();
	if (ct.dir[0] != '\0')
		nftw(ct.dir, ct_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static int
ct_start(void)
{
	const char *src = getenv("STOKE_SRC");
	const char *py = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
	char script[PATH_MAX], urlfile[PATH_MAX + 16], logfile[PATH_MAX + 16];
	struct http_client_opts o = {0};
	char err[CT_ERR];
	int64_t end;
	FILE *f;
	int st;

	snprintf(ct.dir, sizeof(ct.dir), "/tmp/stoke-cloud-test.XXXXXX");
	if (mkdtemp(ct.dir) == NULL) {
		perror("mkdtemp");
		ct.dir[0] = '\0';
		return -1;
	}
	snprintf(script, sizeof(script), "%s/tests/standin_cloud.py", src != NULL ? src : "..");
	snprintf(urlfile, sizeof(urlfile), "%s/url", ct.dir);
	snprintf(logfile, sizeof(logfile), "%s/standin.log", ct.dir);
	ct.standin = fork();
	if (ct.standin == -1) {
		perror("fork");
		return -1;
	}
	if (ct.standin == 0) {
		int fd = open(logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		sigset_t none;

		/* The stand-in (and, through it, its VMs) ends when this test does; a signal
		 * blocked by whoever started the test would be held, so none is. */
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() == 1)
			_exit(127);
		if (fd != -1) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execlp(py, py, script, "--url-file", urlfile, "--boot-ms", CT_BOOT_MS, "--page-max",
		       "5", "--do-token", CT_DO_TOKEN, "--hetzner-token", CT_HZ_TOKEN,
		       (char *)NULL);
		_exit(127);
	}
	end = time_mono_ms() + 20000;
	for (;;) {
		if ((f = fopen(urlfile, "r")) != NULL) {
			char *ok = fgets(ct.url, sizeof(ct.url), f);

			fclose(f);
			if (ok != NULL) {
				ct.url[strcspn(ct.url, "\r\n")] = '\0';
				break;
			}
		}
		if (waitpid(ct.standin, &st, WNOHANG) == ct.standin) {
			ct.standin = 0;
			fprintf(stderr, "the stand-in cloud exited at start (%s)\n", script);
			ct.failed = 1;
			return -1;
		}
		if (time_mono_ms() > end) {
			fprintf(stderr, "the stand-in cloud wrote no URL in 20 s\n");
			ct.failed = 1;
			return -1;
		}
		time_sleep_ms(20);
	}
	o.base_url = ct.url;
	o.timeout_ms = 20000;
	if (http_client_new(&o, &ct.ctl, err, sizeof(err)) != 0) {
		fprintf(stderr, "control client: %s\n", err);
		return -1;
	}
	return 0;
}

/* A control call to the stand-in: 0 when it answered 2xx. */
static int
ct_control(const char *method, const char *path, const char *body, json_t **out)
{
	struct http_response r;
	char err[CT_ERR];
	int ret = -1;

	if (out != NULL)
		*out = NULL;
	http_response_init(&r);
	if (http_request(ct.ctl, method, path, body, &r, err, sizeof(err)) != 0) {
		fprintf(stderr, "control %s %s: %s\n", method, path, err);
		goto out;
	}
	if (r.status < 200 || r.status >= 300) {
		fprintf(stderr, "control %s %s: %ld %s\n", method, path, r.status,
			r.body.data != NULL ? r.body.data : "");
		goto out;
	}
	if (out != NULL && (*out = json_loadb(r.body.data, r.body.len, 0, NULL)) == NULL)
		goto out;
	ret = 0;
out:
	http_response_fini(&r);
	return ret;
}

static int
ct_reset(void)
{
	return ct_control("POST", "/_standin/reset", NULL, NULL);
}

static int __attribute__((format(printf, 1, 2))) ct_fault(const char *fmt, ...)
{
	char body[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(body, sizeof(body), fmt, ap);
	va_end(ap);
	return ct_control("POST", "/_standin/faults", body, NULL);
}

/* How many servers the stand-in holds for provider ("do", "hetzner"); -1 on error. */
static int
ct_count_servers(const char *provider)
{
	json_t *st;
	int n;

	if (ct_control("GET", "/_standin/state", NULL, &st) != 0)
		return -1;
	n = (int)json_array_size(json_object_get(json_object_get(st, provider), "servers"));
	json_decref(st);
	return n;
}

/* How many logged requests match method, a path prefix and status (0 = any). */
static int
ct_count_requests(const char *method, const char *prefix, long status)
{
	json_t *st, *e;
	size_t i;
	int n = 0;

	if (ct_control("GET", "/_standin/state", NULL, &st) != 0)
		return -1;
	json_array_foreach(json_object_get(st, "requests"), i, e)
	{
		const char *m = json_string_value(json_object_get(e, "method"));
		const char *p = json_string_value(json_object_get(e, "path"));

		if (m != NULL && p != NULL && strcmp(m, method) == 0 &&
		    strncmp(p, prefix, strlen(prefix)) == 0 &&
		    (status == 0 || json_integer_value(json_object_get(e, "status")) == status))
			n++;
	}
	json_decref(st);
	return n;
}

/* ---- fixtures ---------------------------------------------------------------------------- */

/* A well-formed OpenSSH ed25519 public key line with random key bytes. */
static char *
ct_pubkey(const char *comment)
{
	unsigned char blob[4 + 11 + 4 + 32];
	char *b64, *line;
	size_t n;

	memcpy(blob, "\0\0\0\x0bssh-ed25519\0\0\0\x20", 19);
	if (crypto_random(blob + 19, 32) != 0 || (b64 = crypto_base64(blob, sizeof(blob))) == NULL)
		return NULL;
	n = strlen(b64) + strlen(comment) + 16;
	if ((line = malloc(n)) != NULL)
		snprintf(line, n, "ssh-ed25519 %s %s", b64, comment);
	free(b64);
	return line;
}

struct ct_prov {
	const char *driver;  /* "digitalocean" */
	const char *standin; /* "do" */
	const char *token;
	const char *servers; /* "/v2/droplets" */
	const char *region;
	const char *size;
	const char *image;
	const char *new_word; /* status right after create */
	const char *up_word;  /* status once booted */
	const char *nf_words; /* start of the 404 text of get() */
};

static const struct ct_prov ct_do = {
    "digitalocean",  "do",
    CT_DO_TOKEN,     "/v2/droplets",
    "nyc3",	     "s-1vcpu-1gb",
    "debian-12-x64", "new",
    "active",	     "digitalocean: 404 not_found: The resource you requested could not be found.",
};
static const struct ct_prov ct_hz = {
    "hetzner",	 "hetzner",
    CT_HZ_TOKEN, "/v1/servers",
    "fsn1",	 "cx22",
    "debian-12", "initializing",
    "running",	 "hetzner: 404 not_found: server with ID '",
};

static void
ct_ctx(const struct ct_prov *p, struct cloud_ctx *ctx)
{
	memset(ctx, 0, sizeof(*ctx));
	ctx->base_url = ct.url;
	ctx->token = p->token;
	ctx->timeout_ms = 10000;
	ctx->backoff_ms = 50;
}

static void
ct_req(const struct ct_prov *p, struct cloud_create_req *req, const char *name, const char *intent)
{
	memset(req, 0, sizeof(*req));
	req->name = name;
	req->region = p->region;
	req->size = p->size;
	req->image = p->image;
	req->intent_id = intent;
}

/* ---- tests ------------------------------------------------------------------------------- */

/* key_add, create, find by intent, no duplicate, poll until active, get, delete (twice). */
static int
ct_lifecycle(const struct ct_prov *p)
{
	const struct cloud_driver *d = cloud_lookup(p->driver);
	struct cloud_ctx ctx;
	struct cloud_create_req req;
	struct cloud_vm vm, again, got;
	char key_id[CLOUD_ID_MAX], key_id2[CLOUD_ID_MAX], err[CT_ERR], base[512];
	const char *keys[1];
	char *pub = ct_pubkey("stoke@test");
	int found, ret;

	CT_CHECK(d != NULL && pub != NULL, "driver %s", p->driver);
	CT_CHECK(ct_reset() == 0, "reset");
	ct_ctx(p, &ctx);
	/* The base URL may carry the API version and a trailing slash. */
	snprintf(base, sizeof(base), "%s%.3s/", ct.url, p->servers);
	ctx.base_url = base;

	ret = d->key_add(&ctx, "stoke-web-1", pub, key_id, err, sizeof(err));
	CT_CHECK(ret == 0 && key_id[0] != '\0', "%s key_add: %s", p->driver, err);
	/* The same key again (say, a job step run twice): the provider refuses a duplicate,
	 * the driver finds the key it already made. */
	ret = d->key_add(&ctx, "stoke-web-1-again", pub, key_id2, err, sizeof(err));
	CT_CHECK(ret == 0 && strcmp(key_id, key_id2) == 0, "%s key_add twice: %s (%s vs %s)",
		 p->driver, err, key_id, key_id2);

	ct_req(p, &req, "web-1", "intent-life-1");
	keys[0] = key_id;
	req.key_ids = keys;
	req.nkey_ids = 1;
	req.user_data = "#cloud-config\nruncmd:\n  - touch /test.txt\n";
	ret = d->create(&ctx, &req, &vm, err, sizeof(err));
	CT_CHECK(ret == 0, "%s create: %s", p->driver, err);
	CT_CHECK(vm.provider_id[0] != '\0' && vm.state == CLOUD_VM_PENDING &&
		     strcmp(vm.status, p->new_word) == 0,
		 "%s created: id '%s' status '%s'", p->driver, vm.provider_id, vm.status);
	CT_CHECK(strcmp(vm.ssh_user, "root") == 0 && vm.ssh_port == 22, "user %s port %d",
		 vm.ssh_user, vm.ssh_port);

	ret = d->find_by_intent(&ctx, "intent-life-1", &got, &found, err, sizeof(err));
	CT_CHECK(ret == 0 && found && strcmp(got.provider_id, vm.provider_id) == 0,
		 "%s find_by_intent: ret %d found %d id %s: %s", p->driver, ret, found,
		 got.provider_id, err);
	ret = d->find_by_intent(&ctx, "intent-other", &got, &found, err, sizeof(err));
	CT_CHECK(ret == 0 && !found, "%s find_by_intent of another intent: %d %d", p->driver, ret,
		 found);

	/* A retried create (or one after a restart) returns the same VM. */
	ret = d->create(&ctx, &req, &again, err, sizeof(err));
	CT_CHECK(ret == 0 && strcmp(again.provider_id, vm.provider_id) == 0,
		 "%s create again: %s (%s vs %s)", p->driver, err, again.provider_id,
		 vm.provider_id);
	CT_CHECK(ct_count_servers(p->standin) == 1, "%s: %d servers after two creates", p->driver,
		 ct_count_servers(p->standin));
	CT_CHECK(ct_count_requests("POST", p->servers, 0) == 1, "%s: %d POSTs", p->driver,
		 ct_count_requests("POST", p->servers, 0));

	/* Still booting: a wait shorter than the boot says so. */
	ret = cloud_wait_active(d, &ctx, vm.provider_id, 50, 20, &got, err, sizeof(err));
	CT_CHECK(ret == ERR_TIMEOUT && strstr(err, "still") != NULL, "%s short wait: %d %s",
		 p->driver, ret, err);
	ret = cloud_wait_active(d, &ctx, vm.provider_id, 15000, 50, &got, err, sizeof(err));
	CT_CHECK(ret == 0, "%s wait_active: %s", p->driver, err);
	CT_CHECK(got.state == CLOUD_VM_ACTIVE && strcmp(got.status, p->up_word) == 0 &&
		     strcmp(got.ipv4, "127.0.0.1") == 0,
		 "%s active: status %s ip %s", p->driver, got.status, got.ipv4);

	ret = d->get(&ctx, vm.provider_id, &got, err, sizeof(err));
	CT_CHECK(ret == 0 && strcmp(got.ipv4, "127.0.0.1") == 0, "%s get: %s", p->driver, err);

	ret = d->delete (&ctx, vm.provider_id, err, sizeof(err));
	CT_CHECK(ret == 0, "%s delete: %s", p->driver, err);
	ret = d->delete (&ctx, vm.provider_id, err, sizeof(err));
	CT_CHECK(ret == 0, "%s delete of a deleted VM: %s", p->driver, err);
	ret = d->get(&ctx, vm.provider_id, &got, err, sizeof(err));
	CT_CHECK(ret == ERR_NOTFOUND && strncmp(err, p->nf_words, strlen(p->nf_words)) == 0,
		 "%s get after delete: %d %s", p->driver, ret, err);
	ret = d->find_by_intent(&ctx, "intent-life-1", &got, &found, err, sizeof(err));
	CT_CHECK(ret == 0 && !found, "%s find after delete: %d %d", p->driver, ret, found);
	CT_CHECK(ct_count_servers(p->standin) == 0, "%s: servers left", p->driver);

	ret = d->key_remove(&ctx, key_id, err, sizeof(err));
	CT_CHECK(ret == 0, "%s key_remove: %s", p->driver, err);
	ret = d->key_remove(&ctx, key_id, err, sizeof(err));
	CT_CHECK(ret == 0, "%s key_remove of a removed key: %s", p->driver, err);

	/* Ids that could walk the API's paths are refused before any request. */
	ret = d->get(&ctx, "../account", &got, err, sizeof(err));
	CT_CHECK(ret == ERR_INVAL, "%s get of a bad id: %d", p->driver, ret);
	ret = d->find_by_intent(&ctx, "a b", &got, &found, err, sizeof(err));
	CT_CHECK(ret == ERR_INVAL, "%s bad intent: %d", p->driver, ret);
	cloud_ctx_fini(&ctx);
	free(pub);
	return 0;
}

static int
ct_custom(void)
{
	const struct cloud_driver *d = cloud_lookup("custom");
	struct cloud_create_req req;
	struct cloud_vm vm, got;
	struct cloud_ctx ctx = {0};
	char err[CT_ERR], key_id[CLOUD_ID_MAX];
	int found;

	CT_CHECK(d != NULL && cloud_lookup("digitalocean") == &cloud_digitalocean &&
		     cloud_lookup("hetzner") == &cloud_hetzner && cloud_lookup("aws") == NULL,
		 "lookup");
	memset(&req, 0, sizeof(req));
	req.name = "box";
	req.intent_id = "intent-custom";
	req.address = "203.0.113.5";
	req.ssh_port = 2222;
	req.ssh_user = "deploy";
	CT_CHECK(d->create(&ctx, &req, &vm, err, sizeof(err)) == 0, "create: %s", err);
	CT_CHECK(strcmp(vm.provider_id, "deploy@203.0.113.5:2222") == 0 &&
		     vm.state == CLOUD_VM_ACTIVE && strcmp(vm.ipv4, "203.0.113.5") == 0 &&
		     vm.ssh_port == 2222 && strcmp(vm.ssh_user, "deploy") == 0,
		 "vm %s %s %d %s", vm.provider_id, vm.ipv4, vm.ssh_port, vm.ssh_user);
	CT_CHECK(d->get(&ctx, vm.provider_id, &got, err, sizeof(err)) == 0 &&
		     memcmp(&got, &vm, sizeof(vm)) == 0,
		 "get: %s", err);
	req.address = "2001:db8::1";
	req.ssh_port = 0;
	req.ssh_user = NULL;
	CT_CHECK(d->create(&ctx, &req, &vm, err, sizeof(err)) == 0 &&
		     strcmp(vm.provider_id, "root@[2001:db8::1]:22") == 0,
		 "v6 create: %s %s", err, vm.provider_id);
	/* The id may be read from the very struct being filled. */
	CT_CHECK(d->get(&ctx, vm.provider_id, &vm, err, sizeof(err)) == 0 &&
		     strcmp(vm.ipv4, "2001:db8::1") == 0 && vm.ssh_port == 22,
		 "v6 get: %s", err);
	CT_CHECK(d->find_by_intent(&ctx, "intent-custom", &got, &found, err, sizeof(err)) == 0 &&
		     !found,
		 "find");
	CT_CHECK(d->delete (&ctx, vm.provider_id, err, sizeof(err)) == 0, "delete");
	CT_CHECK(d->key_add(&ctx, "k", "ssh-ed25519 AAAA", key_id, err, sizeof(err)) == 0 &&
		     key_id[0] == '\0',
		 "key_add");
	req.address = "203.0.113.5; rm -rf /";
	CT_CHECK(d->create(&ctx, &req, &vm, err, sizeof(err)) == ERR_INVAL, "bad address");
	req.address = "203.0.113.5";
	req.ssh_user = "-oProxyCommand=x";
	CT_CHECK(d->create(&ctx, &req, &vm, err, sizeof(err)) == ERR_INVAL, "bad user");
	CT_CHECK(d->get(&ctx, "nonsense", &got, err, sizeof(err)) == ERR_INVAL, "bad id");
	return 0;
}

/* 401 in each provider's words, and the token never in the text. */
static int
ct_auth(const struct ct_prov *p, const char *words)
{
	const struct cloud_driver *d = cloud_lookup(p->driver);
	struct cloud_ctx ctx;
	struct cloud_vm vm;
	char err[CT_ERR];
	int ret;

	ct_ctx(p, &ctx);
	ctx.token = "wrong-token-8d1e";
	ret = d->get(&ctx, "1", &vm, err, sizeof(err));
	CT_CHECK(ret == ERR_AUTH && strcmp(err, words) == 0, "%s 401: %d '%s'", p->driver, ret,
		 err);
	CT_CHECK(strstr(err, "8d1e") == NULL, "token in error text");
	cloud_ctx_fini(&ctx);
	return 0;
}

/* Refusals shown as the provider worded them; nothing left behind. */
static int
ct_refusals(void)
{
	const struct cloud_driver *dd = &cloud_digitalocean, *hd = &cloud_hetzner;
	struct cloud_ctx dctx, hctx;
	struct cloud_create_req req;
	struct cloud_vm vm;
	char err[CT_ERR], key_id[CLOUD_ID_MAX];
	const char *bogus[] = {"999"};
	char *pub1 = ct_pubkey("a"), *pub2 = ct_pubkey("b");
	int ret;

	CT_CHECK(pub1 != NULL && pub2 != NULL && ct_reset() == 0, "setup");
	ct_ctx(&ct_do, &dctx);
	ct_ctx(&ct_hz, &hctx);

	ct_req(&ct_do, &req, "bad_name!", "intent-ref-1");
	ret = dd->create(&dctx, &req, &vm, err, sizeof(err));
	CT_CHECK(ret == ERR_INVAL &&
		     strcmp(err, "digitalocean: 422 unprocessable_entity: Only valid hostname "
				 "characters are allowed. (a-z, A-Z, 0-9, . and -)") == 0,
		 "do 422: %d '%s'", ret, err);
	ct_req(&ct_do, &req, "web-2", "intent-ref-2");
	req.key_ids = bogus;
	req.nkey_ids = 1;
	ret = dd->create(&dctx, &req, &vm, err, sizeof(err));
	CT_CHECK(ret == ERR_INVAL && strcmp(err, "digitalocean: 422 unprocessable_entity: You "
						 "specified invalid ssh key ids for Droplet "
						 "creation.") == 0,
		 "do 422 keys: %d '%s'", ret, err);
	ret = dd->key_add(&dctx, "k", "ssh-rsa AEXAMPLE", key_id, err, sizeof(err));
	CT_CHECK(ret == ERR_INVAL && strstr(err, "digitalocean: 422 unprocessable_entity: Key "
						 "invalid") == err,
		 "do bad key: %d '%s'", ret, err);
	CT_CHECK(ct_count_servers("do") == 0, "do: a refused create left a droplet");

	ct_req(&ct_hz, &req, "bad_name!", "intent-ref-3");
	ret = hd->create(&hctx, &req, &vm, err, sizeof(err));
	CT_CHECK(ret == ERR_INVAL &&
		     strcmp(err, "hetzner: 400 invalid_input: invalid input in field 'name'") == 0,
		 "hz 400: %d '%s'", ret, err);
	ct_req(&ct_hz, &req, "dup", "intent-ref-4");
	CT_CHECK(hd->create(&hctx, &req, &vm, err, sizeof(err)) == 0, "hz create: %s", err);
	ct_req(&ct_hz, &req, "dup", "intent-ref-5");
	ret = hd->create(&hctx, &req, &vm, err, sizeof(err));
	CT_CHECK(ret == ERR_EXISTS &&
		     strcmp(err, "hetzner: 409 uniqueness_error: server name is already used") == 0,
		 "hz 409: %d '%s'", ret, err);
	CT_CHECK(ct_count_servers("hetzner") == 1, "hz: %d servers", ct_count_servers("hetzner"));
	/* Same name, another key: that is not ours, so the refusal stands. */
	CT_CHECK(hd->key_add(&hctx, "laptop", pub1, key_id, err, sizeof(err)) == 0, "hz key: %s",
		 err);
	ret = hd->key_add(&hctx, "laptop", pub2, key_id, err, sizeof(err));
	CT_CHECK(ret == ERR_EXISTS && strcmp(err, "hetzner: 409 uniqueness_error: SSH key with the "
						  "same name already exists") == 0,
		 "hz key 409: %d '%s'", ret, err);
	cloud_ctx_fini(&dctx);
	cloud_ctx_fini(&hctx);
	free(pub1);
	free(pub2);
	return 0;
}

/* Makes one VM at p and waits until it is active; its id into id. */
static int
ct_one_vm(const struct ct_prov *p, struct cloud_ctx *ctx, const char *intent, char *id,
	  size_t idlen)
{
	const struct cloud_driver *d = cloud_lookup(p->driver);
	struct cloud_create_req req;
	struct cloud_vm vm;
	char err[CT_ERR];

	ct_req(p, &req, intent, intent);
	CT_CHECK(d->create(ctx, &req, &vm, err, sizeof(err)) == 0, "%s create: %s", p->driver, err);
	CT_CHECK(cloud_wait_active(d, ctx, vm.provider_id, 15000, 50, &vm, err, sizeof(err)) == 0,
		 "%s wait: %s", p->driver, err);
	snprintf(id, idlen, "%s", vm.provider_id);
	return 0;
}

/* 429: the wait the provider asks for (RateLimit-Reset, Retry-After) is waited out. */
static int
ct_rate_limit(const struct ct_prov *p)
{
	const struct cloud_driver *d = cloud_lookup(p->driver);
	struct cloud_ctx ctx;
	struct cloud_vm vm;
	char id[CLOUD_ID_MAX], err[CT_ERR];
	int64_t t0, ms;
	int ret;

	CT_CHECK(ct_reset() == 0, "reset");
	ct_ctx(p, &ctx);
	if (ct_one_vm(p, &ctx, "intent-rl", id, sizeof(id)) != 0)
		return -1;

	/* RateLimit-Reset one second ahead, no Retry-After (Hetzner's way). */
	CT_CHECK(ct_fault("{\"provider\":\"%s\",\"path_prefix\":\"%s/\",\"method\":\"GET\","
			  "\"status\":429,\"count\":1,\"reset_s\":1}",
			  p->standin, p->servers) == 0,
		 "fault");
	t0 = time_mono_ms();
	ret = d->get(&ctx, id, &vm, err, sizeof(err));
	ms = time_mono_ms() - t0;
	CT_CHECK(ret == 0, "%s get after 429: %s", p->driver, err);
	CT_CHECK(ms >= 1000 && ms < 5000, "%s waited %lld ms for a 1 s reset", p->driver,
		 (long long)ms);
	CT_CHECK(ct_count_requests("GET", p->servers, 429) == 1, "one 429");

	/* Retry-After in seconds wins over the reset (DigitalOcean's burst limit). */
	CT_CHECK(ct_fault("{\"provider\":\"%s\",\"path_prefix\":\"%s/\",\"method\":\"GET\","
			  "\"status\":429,\"count\":1,\"retry_after\":1}",
			  p->standin, p->servers) == 0,
		 "fault");
	t0 = time_mono_ms();
	ret = d->get(&ctx, id, &vm, err, sizeof(err));
	ms = time_mono_ms() - t0;
	CT_CHECK(ret == 0 && ms >= 1000 && ms < 5000, "%s Retry-After: %s after %lld ms", p->driver,
		 err, (long long)ms);

	/* Retry-After as an HTTP date. */
	CT_CHECK(ct_fault("{\"provider\":\"%s\",\"path_prefix\":\"%s/\",\"method\":\"GET\","
			  "\"status\":429,\"count\":1,\"retry_after\":\"date\"}",
			  p->standin, p->servers) == 0,
		 "fault");
	t0 = time_mono_ms();
	ret = d->get(&ctx, id, &vm, err, sizeof(err));
	ms = time_mono_ms() - t0;
	CT_CHECK(ret == 0 && ms < 5000, "%s Retry-After date: %s after %lld ms", p->driver, err,
		 (long long)ms);

	/* A wait longer than the cap is cut to the cap. */
	ctx.max_wait_ms = 300;
	CT_CHECK(ct_fault("{\"provider\":\"%s\",\"path_prefix\":\"%s/\",\"method\":\"GET\","
			  "\"status\":429,\"count\":1,\"reset_s\":3600}",
			  p->standin, p->servers) == 0,
		 "fault");
	t0 = time_mono_ms();
	ret = d->get(&ctx, id, &vm, err, sizeof(err));
	ms = time_mono_ms() - t0;
	CT_CHECK(ret == 0 && ms >= 300 && ms < 3000, "%s capped wait: %s after %lld ms", p->driver,
		 err, (long long)ms);

	/* A rate limit that does not lift: given up, in the provider's words. */
	ctx.max_retries = 1;
	CT_CHECK(ct_fault("{\"provider\":\"%s\",\"path_prefix\":\"%s/\",\"method\":\"GET\","
			  "\"status\":429,\"count\":-1,\"retry_after\":0}",
			  p->standin, p->servers) == 0,
		 "fault");
	ret = d->get(&ctx, id, &vm, err, sizeof(err));
	CT_CHECK(
	    ret == ERR_BUSY && strstr(err, "(gave up after 2 tries)") != NULL &&
		(strstr(err, "digitalocean: 429 too_many_requests: API rate limit exceeded.") ==
		     err ||
		 strstr(err, "hetzner: 429 rate_limit_exceeded: limit of 3600 requests per "
			     "hour reached") == err),
	    "%s 429 for good: %d '%s'", p->driver, ret, err);
	CT_CHECK(ct_control("DELETE", "/_standin/faults", NULL, NULL) == 0, "clear faults");
	cloud_ctx_fini(&ctx);
	return 0;
}

/* 5xx: retried; a create is never sent twice when the first one made the VM. */
static int
ct_server_errors(const struct ct_prov *p)
{
	const struct cloud_driver *d = cloud_lookup(p->driver);
	struct cloud_ctx ctx;
	struct cloud_create_req req;
	struct cloud_vm vm;
	char id[CLOUD_ID_MAX], err[CT_ERR];
	int ret;

	CT_CHECK(ct_reset() == 0, "reset");
	ct_ctx(p, &ctx);
	if (ct_one_vm(p, &ctx, "intent-5xx", id, sizeof(id)) != 0)
		return -1;

	CT_CHECK(ct_fault("{\"provider\":\"%s\",\"path_prefix\":\"%s/\",\"method\":\"GET\","
			  "\"status\":500,\"count\":1}",
			  p->standin, p->servers) == 0 &&
		     ct_fault("{\"provider\":\"%s\",\"path_prefix\":\"%s/\",\"method\":\"GET\","
			      "\"status\":503,\"count\":1}",
			      p->standin, p->servers) == 0,
		 "faults");
	ret = d->get(&ctx, id, &vm, err, sizeof(err));
	CT_CHECK(ret == 0 && vm.state == CLOUD_VM_ACTIVE, "%s get after 500, 503: %s", p->driver,
		 err);
	CT_CHECK(ct_count_requests("GET", p->servers, 500) == 1 &&
		     ct_count_requests("GET", p->servers, 503) == 1,
		 "%s: the 5xx were not seen", p->driver);

	/* A 503 before the create was done: asked again, one VM. */
	CT_CHECK(ct_fault("{\"provider\":\"%s\",\"path_prefix\":\"%s\",\"method\":\"POST\","
			  "\"status\":503,\"count\":1}",
			  p->standin, p->servers) == 0,
		 "fault");
	ct_req(p, &req, "web-5xx-a", "intent-5xx-a");
	ret = d->create(&ctx, &req, &vm, err, sizeof(err));
	CT_CHECK(ret == 0 && vm.provider_id[0] != '\0', "%s create after 503: %s", p->driver, err);
	CT_CHECK(ct_count_requests("POST", p->servers, 0) == 3, "%s: %d POSTs (want 1 + 503 + 1)",
		 p->driver, ct_count_requests("POST", p->servers, 0));
	CT_CHECK(ct_count_servers(p->standin) == 2, "%s: %d servers", p->driver,
		 ct_count_servers(p->standin));

	/* A 500 after the VM was made: found by its intent, not made twice. */
	CT_CHECK(ct_fault("{\"provider\":\"%s\",\"path_prefix\":\"%s\",\"method\":\"POST\","
			  "\"status\":500,\"count\":1,\"after\":true}",
			  p->standin, p->servers) == 0,
		 "fault");
	ct_req(p, &req, "web-5xx-b", "intent-5xx-b");
	ret = d->create(&ctx, &req, &vm, err, sizeof(err));
	CT_CHECK(ret == 0 && vm.provider_id[0] != '\0', "%s create after a late 500: %s", p->driver,
		 err);
	CT_CHECK(ct_count_requests("POST", p->servers, 0) == 4, "%s: %d POSTs (want 4)", p->driver,
		 ct_count_requests("POST", p->servers, 0));
	CT_CHECK(ct_count_servers(p->standin) == 3, "%s: %d servers (want 3)", p->driver,
		 ct_count_servers(p->standin));

	/* 5xx for good: given up after the retries, in the provider's words. */
	ctx.max_retries = 2;
	CT_CHECK(ct_fault("{\"provider\":\"%s\",\"path_prefix\":\"%s/\",\"method\":\"GET\","
			  "\"status\":500,\"count\":-1}",
			  p->standin, p->servers) == 0,
		 "fault");
	ret = d->get(&ctx, id, &vm, err, sizeof(err));
	CT_CHECK(ret == ERR_BUSY && strstr(err, "(gave up after 3 tries)") != NULL &&
		     strncmp(err, p->driver, strlen(p->driver)) == 0 &&
		     strstr(err, ": 500 ") != NULL,
		 "%s 500 for good: %d '%s'", p->driver, ret, err);
	CT_CHECK(ct_control("DELETE", "/_standin/faults", NULL, NULL) == 0, "clear faults");
	cloud_ctx_fini(&ctx);
	return 0;
}

/* A request slower than the timeout is reported as a timeout, and the context still works. */
static int
ct_timeout(const struct ct_prov *p)
{
	const struct cloud_driver *d = cloud_lookup(p->driver);
	struct cloud_ctx ctx;
	struct cloud_vm vm;
	char id[CLOUD_ID_MAX], err[CT_ERR];
	int64_t t0, ms;
	int ret;

	CT_CHECK(ct_reset() == 0, "reset");
	ct_ctx(p, &ctx);
	if (ct_one_vm(p, &ctx, "intent-timeout", id, sizeof(id)) != 0)
		return -1;
	ctx.timeout_ms = 400;
	cloud_ctx_fini(&ctx); /* timeouts are set when the client opens */
	CT_CHECK(ct_fault("{\"provider\":\"%s\",\"path_prefix\":\"%s/\",\"method\":\"GET\","
			  "\"delay_ms\":2000,\"count\":1}",
			  p->standin, p->servers) == 0,
		 "fault");
	t0 = time_mono_ms();
	ret = d->get(&ctx, id, &vm, err, sizeof(err));
	ms = time_mono_ms() - t0;
	CT_CHECK(ret == ERR_TIMEOUT && strncmp(err, p->driver, strlen(p->driver)) == 0 &&
		     strstr(err, "timed out") != NULL,
		 "%s timeout: %d '%s'", p->driver, ret, err);
	CT_CHECK(ms >= 350 && ms < 1800, "%s timed out after %lld ms", p->driver, (long long)ms);
	ret = d->get(&ctx, id, &vm, err, sizeof(err));
	CT_CHECK(ret == 0, "%s get after a timeout: %s", p->driver, err);
	cloud_ctx_fini(&ctx);
	return 0;
}

/* An answer over body_max is refused, not read whole. */
static int
ct_too_big(const struct ct_prov *p)
{
	const struct cloud_driver *d = cloud_lookup(p->driver);
	struct cloud_ctx ctx;
	struct cloud_vm vm;
	char id[CLOUD_ID_MAX], err[CT_ERR];
	int ret;

	CT_CHECK(ct_reset() == 0, "reset");
	ct_ctx(p, &ctx);
	if (ct_one_vm(p, &ctx, "intent-big", id, sizeof(id)) != 0)
		return -1;
	CT_CHECK(ct_fault("{\"provider\":\"%s\",\"path_prefix\":\"%s/\",\"method\":\"GET\","
			  "\"pad_bytes\":%d,\"count\":1}",
			  p->standin, p->servers, 2 * 1024 * 1024) == 0,
		 "fault");
	ret = d->get(&ctx, id, &vm, err, sizeof(err));
	CT_CHECK(ret == ERR_TOOBIG && strstr(err, "over 1048576 bytes") != NULL,
		 "%s oversized: %d '%s'", p->driver, ret, err);
	ret = d->get(&ctx, id, &vm, err, sizeof(err));
	CT_CHECK(ret == 0, "%s get after an oversized answer: %s", p->driver, err);
	/* A smaller padding passes the default limit. */
	CT_CHECK(ct_fault("{\"provider\":\"%s\",\"path_prefix\":\"%s/\",\"method\":\"GET\","
			  "\"pad_bytes\":%d,\"count\":1}",
			  p->standin, p->servers, 512 * 1024) == 0,
		 "fault");
	ret = d->get(&ctx, id, &vm, err, sizeof(err));
	CT_CHECK(ret == 0, "%s 512 KiB answer: %s", p->driver, err);
	cloud_ctx_fini(&ctx);
	return 0;
}

/* A key already registered is found across pages (the stand-in pages by 5 here). */
static int
ct_paging(const struct ct_prov *p)
{
	const struct cloud_driver *d = cloud_lookup(p->driver);
	struct cloud_ctx ctx;
	char *pubs[12] = {0}, name[32], ids[12][CLOUD_ID_MAX], again[CLOUD_ID_MAX], err[CT_ERR];
	int i, ret = 0;

	CT_CHECK(ct_reset() == 0, "reset");
	ct_ctx(p, &ctx);
	for (i = 0; i < 12; i++) {
		snprintf(name, sizeof(name), "key-%d", i);
		if ((pubs[i] = ct_pubkey(name)) == NULL ||
		    d->key_add(&ctx, name, pubs[i], ids[i], err, sizeof(err)) != 0) {
			ct_fail(__FILE__, __LINE__, "key_add", "%s %s: %s", p->driver, name, err);
			ret = -1;
			goto out;
		}
	}
	if (d->key_add(&ctx, "key-11-again", pubs[11], again, err, sizeof(err)) != 0 ||
	    strcmp(again, ids[11]) != 0) {
		ct_fail(__FILE__, __LINE__, "paged key lookup", "%s: %s (%s vs %s)", p->driver, err,
			again, ids[11]);
		ret = -1;
	}
out:
	for (i = 0; i < 12; i++)
		free(pubs[i]);
	cloud_ctx_fini(&ctx);
	return ret;
}

/* The wait rules on their own. */
static int
ct_wait_rules(void)
{
	struct cloud_ctx ctx = {0};
	long long now = 1700000000123LL;
	long w;

	ctx.max_wait_ms = 10000;
	ctx.backoff_ms = 500;
	CT_CHECK(cloud_http_wait_ms(&ctx, 429, 3, -1, now, 1) == 3000, "retry-after");
	CT_CHECK(cloud_http_wait_ms(&ctx, 503, 30, -1, now, 1) == 10000, "retry-after capped");
	CT_CHECK(cloud_http_wait_ms(&ctx, 429, 2, 1700000009, now, 1) == 2000, "retry-after wins");
	CT_CHECK(cloud_http_wait_ms(&ctx, 429, -1, 1700000002, now, 1) == 1877, "reset");
	CT_CHECK(cloud_http_wait_ms(&ctx, 429, -1, 1800000000, now, 1) == 10000, "reset capped");
	w = cloud_http_wait_ms(&ctx, 429, -1, 1600000000, now, 1);
	CT_CHECK(w >= 500 && w <= 550, "a past reset backs off: %ld", w);
	w = cloud_http_wait_ms(&ctx, 500, -1, 1700000002, now, 3);
	CT_CHECK(w >= 2000 && w <= 2200, "5xx ignores the reset, backs off: %ld", w);
	CT_CHECK(cloud_http_wait_ms(&ctx, 500, -1, -1, now, 40) == 10000, "backoff capped");
	return 0;
}

/* No image given: Debian 12 (what provision-scripts/ is written for) is asked for. */
static int
ct_default_image(const struct ct_prov *p)
{
	const struct cloud_driver *d = cloud_lookup(p->driver);
	struct http_client_opts o = {0};
	struct http_client *c = NULL;
	struct http_response r;
	struct cloud_ctx ctx;
	struct cloud_create_req req;
	struct cloud_vm vm;
	char err[CT_ERR], path[256];
	const char *slug = NULL;
	json_t *j = NULL, *srv;
	int ret;

	CT_CHECK(d != NULL && ct_reset() == 0, "driver %s", p->driver);
	ct_ctx(p, &ctx);
	ct_req(p, &req, "web-img", "intent-img-1");
	req.image = NULL;
	ret = d->create(&ctx, &req, &vm, err, sizeof(err));
	cloud_ctx_fini(&ctx);
	CT_CHECK(ret == 0, "%s create without an image: %s", p->driver, err);
	o.base_url = ct.url;
	o.token = p->token;
	CT_CHECK(http_client_new(&o, &c, err, sizeof(err)) == 0, "client: %s", err);
	http_response_init(&r);
	snprintf(path, sizeof(path), "%s/%s", p->servers, vm.provider_id);
	ret = http_get(c, path, &r, err, sizeof(err));
	if (ret == 0 && r.status == 200)
		j = json_loadb(r.body.data, r.body.len, 0, NULL);
	http_response_fini(&r);
	http_client_free(c);
	srv = json_object_get(j, strcmp(p->standin, "do") == 0 ? "droplet" : "server");
	slug = json_string_value(json_object_get(json_object_get(srv, "image"),
						 strcmp(p->standin, "do") == 0 ? "slug" : "name"));
	ret = slug != NULL && strcmp(slug, p->image) == 0;
	if (!ret)
		ct_fail(__FILE__, __LINE__, "default image", "%s: image %s, want %s", p->driver,
			slug ? slug : "(none)", p->image);
	json_decref(j);
	return ret ? 0 : -1;
}

int
main(void)
{
	int bad = 0;

	log_init("cloud_drivers_test", LOG_LEVEL_INFO);
	signal(SIGPIPE, SIG_IGN);
	bad |= ct_wait_rules() != 0;
	bad |= ct_custom() != 0;
	if (ct_start() != 0) {
		ct.failed = 1;
		ct_stop();
		return 1;
	}
	bad |= ct_lifecycle(&ct_do) != 0;
	bad |= ct_lifecycle(&ct_hz) != 0;
	bad |= ct_default_image(&ct_do) != 0;
	bad |= ct_default_image(&ct_hz) != 0;
	bad |= ct_auth(&ct_do, "digitalocean: 401 unauthorized: Unable to authenticate you.") != 0;
	bad |= ct_auth(&ct_hz, "hetzner: 401 unauthorized: unable to authenticate") != 0;
	bad |= ct_refusals() != 0;
	bad |= ct_rate_limit(&ct_do) != 0;
	bad |= ct_rate_limit(&ct_hz) != 0;
	bad |= ct_server_errors(&ct_do) != 0;
	bad |= ct_server_errors(&ct_hz) != 0;
	bad |= ct_timeout(&ct_do) != 0;
	bad |= ct_timeout(&ct_hz) != 0;
	bad |= ct_too_big(&ct_do) != 0;
	bad |= ct_too_big(&ct_hz) != 0;
	bad |= ct_paging(&ct_do) != 0;
	bad |= ct_paging(&ct_hz) != 0;
	ct.failed |= bad;
	ct_stop();
	printf("%s\n", bad ? "cloud_drivers_test: FAILED" : "cloud_drivers_test: all passed");
	return bad ? 1 : 0;
}
