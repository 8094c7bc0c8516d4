/*
 * enroll.c: agent enrollment and revocation (see enroll.h). Writes the bundle
 * atomically, keys and secret mode 0600, and commits the server row only after the
 * bundle is complete, so a failure leaves no half-made enrollment.
 */
#include "enroll.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "atomicfile.h"
#include "buf.h"
#include "ca.h"
#include "crypto.h"
#include "err.h"
#include "events.h"
#include "log.h"
#include "names.h"
#include "sm.h"
#include "store.h"

static int
enroll_write(const char *dir, const char *name, const char *text, mode_t mode, char *err,
	     size_t errlen)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return atomicfile_write(path, text, strlen(text), mode, (uid_t)-1, (gid_t)-1, err, errlen);
}

int
enroll_agent(struct store *s, const char *name, const struct enroll_opts *o, int64_t *server_id,
	     char *err, size_t errlen)
{
	char *crt = NULL, *key = NULL, *ca = NULL, *secret = NULL, *agent_id = NULL;
	char hash[65], dir[4096], why[256], cafile[4096];
	struct buf conf;
	int64_t id, now = store_now_ms();
	size_t n;
	int rc;

	buf_init(&conf, 64 * 1024);
	if (names_server(name, why, sizeof(why)) != 0)
		return err_set(err, errlen, ERR_INVAL, "server name %s: %s", name, why);
	if (realpath(o->out_dir, dir) == NULL) {
		if (mkdir(o->out_dir, 0700) == -1 && errno != EEXIST)
			return err_set(err, errlen, ERR_IO, "%s: %s", o->out_dir, strerror(errno));
		if (realpath(o->out_dir, dir) == NULL)
			return err_set(err, errlen, ERR_IO, "%s: %s", o->out_dir, strerror(errno));
	}
	chmod(dir, 0700);
	agent_id = crypto_token("agt_", 12);
	secret = crypto_token("", 32);
	if (agent_id == NULL || secret == NULL) {
		rc = err_set(err, errlen, ERR_CRYPTO, "cannot make random values");
		goto out;
	}
	crypto_sha256_hex(secret, hash);
	if ((rc = ca_issue_client(o->data_dir, agent_id, &crt, &key, err, errlen)) != 0)
		goto out;
	snprintf(cafile, sizeof(cafile), "%s/ca/ca.crt", o->data_dir);
	if ((rc = atomicfile_read(cafile, 1 << 20, &ca, &n, err, errlen)) != 0)
		goto out;
	buf_printf(&conf,
		   "# stoke-agent configuration for server %s, made by `stoked agent enroll`.\n"
		   "controller %s\n"
		   "server_name %s\n"
		   "agent_id %s\n"
		   "ca_file %s/ca.crt\n"
		   "cert_file %s/agent.crt\n"
		   "key_file %s/agent.key\n"
		   "secret_file %s/secret\n"
		   "state_dir %s%s\n",
		   name, o->controller, o->server_name, agent_id, dir, dir, dir, dir,
		   o->state_dir ? o->state_dir : dir, o->state_dir ? "" : "/state");
	if (o->extra_conf)
		buf_puts(&conf, o->extra_conf);
	if ((rc = enroll_write(dir, "agent.key", key, 0600, err, errlen)) != 0 ||
	    (rc = enroll_write(dir, "secret", secret, 0600, err, errlen)) != 0 ||
	    (rc = enroll_write(dir, "agent.crt", crt, 0644, err, errlen)) != 0 ||
	    (rc = enroll_write(dir, "ca.crt", ca, 0644, err, errlen)) != 0 ||
	    (rc = enroll_write(dir, "agent.conf", conf.data, 0600, err, errlen)) != 0)
		goto out;
	if (store_begin(s) != 0) {
		rc = err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
		goto out;
	}
	id = store_int(s, 0, "SELECT id FROM servers WHERE name = ? AND state != 'deleted'", "s",
		       name);
	if (id == 0) {
		if (store_exec(s,
			       "INSERT INTO servers (name, provider, state, created_at, updated_at)"
			       " VALUES (?, 'custom', 'installing_agent', ?, ?)",
			       "sii", name, now, now) != 0) {
			rc = err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
			store_rollback(s);
			goto out;
		}
		id = store_last_id(s);
		events_emit(s, "system", "server.created", "server", id, NULL);
	}
	store_exec(s,
		   "UPDATE servers SET agent_id = ?, agent_secret_hash = ?, agent_revoked = 0,"
		   " updated_at = ? WHERE id = ?",
		   "ssii", agent_id, hash, now, id);
	sm_check(s, &sm_server, id, "agent hello", 0, 1, NULL);
	events_emit(s, "system", "agent.enrolled", "server", id, NULL);
	if (store_commit(s) != 0) {
		rc = err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
		store_rollback(s);
		goto out;
	}
	log_info("server %lld (%s): agent %s enrolled, bundle in %s", (long long)id, name, agent_id,
		 dir);
	if (server_id)
		*server_id = id;
out:
	if (key)
		explicit_bzero(key, strlen(key));
	if (secret)
		explicit_bzero(secret, strlen(secret));
	free(key);
	free(secret);
	free(crt);
	free(ca);
	free(agent_id);
	buf_fini(&conf);
	return rc;
}

int
enroll_revoke(struct store *s, const char *name, char *err, size_t errlen)
{
	int64_t id = store_int(s, 0,
			       "SELECT id FROM servers WHERE (name = ?1 OR CAST(id AS TEXT) = ?1)"
			       " AND state != 'deleted'",
			       "s", name);

	if (id == 0)
		return err_set(err, errlen, ERR_NOTFOUND, "server %s: not found", name);
	if (store_exec(s,
		       "UPDATE servers SET agent_revoked = 1, agent_status = 'offline',"
		       " updated_at = ? WHERE id = ?",
		       "ii", store_now_ms(), id) != 0)
		return err_set(err, errlen, ERR_DB, "%s", store_errmsg(s));
	events_emit(s, "system", "agent.revoked", "server", id, NULL);
	log_info("server %lld (%s): agent revoked", (long long)id, name);
	return 0;
}
