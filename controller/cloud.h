/*
 * cloud.h: the cloud provider driver interface. One driver per provider (cloud_digitalocean.c,
 * cloud_hetzner.c, cloud_custom.c), found by name with cloud_lookup(). Drivers talk to the
 * provider's REST API through cloud_http.h (libcurl, retries, the provider's error words).
 *
 * Every driver call blocks (at most the request timeout times the retries, plus the waits a
 * rate limit asks for) and returns 0 or an ERR_* code with readable text in err, worded by
 * the provider when the provider refused ("digitalocean: 422 unprocessable_entity: ...").
 * Codes: ERR_AUTH (401/403), ERR_INVAL (400/422), ERR_NOTFOUND (404), ERR_EXISTS (409),
 * ERR_BUSY (429 or 5xx still failing after the retries: try again later), ERR_TIMEOUT (a
 * request took longer than timeout_ms; never retried here), ERR_TOOBIG (an answer over
 * body_max), ERR_IO (cannot reach the API).
 *
 * Idempotence: create() first looks the intent id up and returns the VM it finds, so a job
 * that retries (or a controller restarted after the call) never makes a second VM; delete()
 * and key_remove() of something already gone succeed; key_add() of a key the provider
 * already holds returns that key's id.
 */
#ifndef STOKE_CLOUD_H
#define STOKE_CLOUD_H

#include <stddef.h>

#define CLOUD_ID_MAX 128    /* provider ids of VMs and keys, as text */
#define CLOUD_STATUS_MAX 32 /* the provider's status word */
#define CLOUD_ADDR_MAX 256  /* an IPv4 address (custom: any host name or address) */
#define CLOUD_USER_MAX 64   /* the SSH login user */
#define CLOUD_INTENT_MAX 63 /* longest intent id (a Hetzner label value) */
#define CLOUD_NAME_MAX 64   /* a driver's name */

/* Where a VM is in its life, whatever the provider calls it. */
enum cloud_vm_state {
	CLOUD_VM_PENDING, /* being made or booting (DO "new", Hetzner "initializing"/"starting") */
	CLOUD_VM_ACTIVE,  /* running (DO "active", Hetzner "running") */
	CLOUD_VM_OFF,	  /* exists, powered off (or, at the stand-in, its sshd failed) */
	CLOUD_VM_OTHER,	  /* anything else: "archive", "deleting", "migrating"... */
};

struct cloud_vm {
	char provider_id[CLOUD_ID_MAX]; /* the provider's id ("3164444"); custom: user@host:port */
	char status[CLOUD_STATUS_MAX];	/* the provider's word: "new", "active", "running", "off" */
	enum cloud_vm_state state;
	char ipv4[CLOUD_ADDR_MAX]; /* public IPv4, "" until assigned; custom: the address given */
	int ssh_port;		   /* 22, unless the provider said otherwise (the stand-in does) */
	char ssh_user[CLOUD_USER_MAX]; /* "root" at the clouds; custom: as given */
};

struct cloud_create_req {
	const char *name;   /* host name of the VM */
	const char *region; /* DO region slug ("nyc3"), Hetzner location ("fsn1") */
	const char *size;   /* DO size slug ("s-1vcpu-1gb"), Hetzner server type ("cx22") */
	const char *image;  /* "debian-12-x64" (DO), "debian-12" (Hetzner) */
	/* Recorded by the job before the call; the VM is tagged (DO "stoke-intent:ID") or
	 * labelled (Hetzner stoke-intent=ID) with it. 1-63 chars of [A-Za-z0-9_-]. */
	const char *intent_id;
	/* Provider SSH keys to install for root: ids from key_add(), or (DO) MD5 fingerprints,
	 * (Hetzner) key names. May be NULL when nkey_ids is 0. */
	const char *const *key_ids;
	size_t nkey_ids;
	const char *user_data; /* cloud-init user data, or NULL */
	/* custom only: the existing server. */
	const char *address;  /* host name or address */
	int ssh_port;	      /* 0 = 22 */
	const char *ssh_user; /* NULL = "root" */
};

/*
 * How to reach one provider. The caller zeroes it, fills the public fields and calls
 * cloud_ctx_fini() when done. One context must not be used by two threads at once (it
 * keeps a connection open between calls); use one per worker thread. base_url, token,
 * the timeouts and body_max are read when the first call opens the connection (change them
 * after cloud_ctx_fini()); the retry fields are read on every call.
 */
struct cloud_ctx {
	/* The API base URL, with or without the version ("http://127.0.0.1:8080" and
	 * "http://127.0.0.1:8080/v2" are the same). Required: there is no default, so a
	 * context that names none fails before any request (never the real provider). */
	const char *base_url;
	const char *token;	 /* bearer token; only ever sent in the Authorization header */
	long connect_timeout_ms; /* 0 = 10 s */
	long timeout_ms;	 /* each request, start to end; 0 = 30 s */
	size_t body_max;	 /* longest answer accepted; 0 = 1 MiB */
	int max_retries;	 /* retries after a 429 or 5xx; 0 = 5, -1 = none */
	long max_wait_ms; /* longest wait before one retry (Retry-After is capped); 0 = 60 s */
	long backoff_ms;  /* first backoff when the provider names no wait; 0 = 500 ms */

	/* Private to cloud_http.c. */
	struct http_client *http;
	const void *http_api; /* which provider http was opened for */
};

/* Frees what the context opened (not the strings it points to). NULL is a no-op. */
void cloud_ctx_fini(struct cloud_ctx *ctx);

struct cloud_driver {
	const char *name; /* "digitalocean", "hetzner", "custom" */
	/* Makes a VM, or returns the one already made for req->intent_id. *vm is filled even
	 * when the VM is still being made (state PENDING, ipv4 maybe ""). */
	int (*create)(struct cloud_ctx *ctx, const struct cloud_create_req *req,
		      struct cloud_vm *vm, char *err, size_t errlen);
	/* ERR_NOTFOUND when the VM does not exist (any more). */
	int (*get)(struct cloud_ctx *ctx, const char *provider_id, struct cloud_vm *vm, char *err,
		   size_t errlen);
	/* *found = 1 and *vm filled when a live VM carries intent_id; *found = 0 otherwise. */
	int (*find_by_intent)(struct cloud_ctx *ctx, const char *intent_id, struct cloud_vm *vm,
			      int *found, char *err, size_t errlen);
	/* Deletes the VM; a VM already gone is success. */
	int (*delete)(struct cloud_ctx *ctx, const char *provider_id, char *err, size_t errlen);
	/* Registers an OpenSSH public key under name; key_id gets the provider's id (custom: "",
	 * it has no key store and the bootstrap installs keys over SSH). */
	int (*key_add)(struct cloud_ctx *ctx, const char *name, const char *public_key,
		       char key_id[CLOUD_ID_MAX], char *err, size_t errlen);
	/* Removes a registered key; a key already gone is success. */
	int (*key_remove)(struct cloud_ctx *ctx, const char *key_id, char *err, size_t errlen);
};

extern const struct cloud_driver cloud_digitalocean, cloud_hetzner, cloud_custom;

/* The driver called name, or NULL. */
const struct cloud_driver *cloud_lookup(const char *name);

/* 0 when s is a usable intent id (1-63 chars of [A-Za-z0-9_-]); ERR_INVAL with text. */
int cloud_intent_valid(const char *s, char *err, size_t errlen);

/*
 * Polls get() until the VM is ACTIVE with an address, or timeout_ms passes (ERR_TIMEOUT,
 * naming the last status). poll_ms is the first interval (0 = 2 s); it grows to 5 s.
 * Blocks. *vm holds the last answer either way.
 */
int cloud_wait_active(const struct cloud_driver *drv, struct cloud_ctx *ctx,
		      const char *provider_id, long timeout_ms, long poll_ms, struct cloud_vm *vm,
		      char *err, size_t errlen);

#endif
