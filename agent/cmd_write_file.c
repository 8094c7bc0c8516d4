/*
 * cmd_write_file.c: the write_file command: replace one file atomically under the agent's
 * write_roots, with owner, group and mode, as the file's owner. Where, as whom and with
 * which mode is the policy's decision (policy.c), which also pins the folder by a
 * descriptor; this file only writes.
 */
#include "cmd.h"
#include "agent_config.h"
#include "crypto.h"
#include "err.h"
#include "policy.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Writes all of data to fd. */
static int
cmd_write_file_all(int fd, const uint8_t *data, size_t len)
{
	while (len > 0) {
		ssize_t w = write(fd, data, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		data += w;
		len -= (size_t)w;
	}
	return 0;
}

/*
 * Replaces base in the pinned folder dfd atomically: a new temp file beside it (never
 * following a link), its group and mode, fsync, rename over base, fsync the folder. Runs
 * with the file system identity of the file's owner (policy_fs_enter), so the kernel
 * refuses what the owner may not do. On failure the temp file is removed.
 */
static int
cmd_write_file_put(const struct policy_write *w, const uint8_t *data, size_t len, char *err,
		   size_t errlen)
{
	static atomic_uint seq;
	char tmp[NAME_MAX + 1];
	struct stat st;
	int fd = -1, rc;

	for (int i = 0; fd == -1 && i < 100; i++) {
		if (snprintf(tmp, sizeof(tmp), ".%.200s.stoke-%ld-%u", w->base, (long)getpid(),
			     atomic_fetch_add(&seq, 1)) >= (int)sizeof(tmp))
			return err_set(err, errlen, ERR_INVAL, "file name too long");
		fd =
		    openat(w->dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd == -1 && errno != EEXIST)
			return err_set(err, errlen, ERR_IO, "create temp file: %s",
				       strerror(errno));
	}
	if (fd == -1)
		return err_set(err, errlen, ERR_IO, "create temp file: %s", strerror(EEXIST));
	if (cmd_write_file_all(fd, data, len) == -1) {
		rc = err_set(err, errlen, ERR_IO, "write: %s", strerror(errno));
		goto fail;
	}
	/* The owner is already right (created as the owner, or as root for root); the
	 * group may differ from the one the file was created with. */
	if (fstat(fd, &st) == -1 ||
	    ((st.st_uid != w->uid || st.st_gid != w->gid) && fchown(fd, w->uid, w->gid) == -1)) {
		rc = err_set(err, errlen, ERR_IO, "chown %ld:%ld: %s", (long)w->uid, (long)w->gid,
			     strerror(errno));
		goto fail;
	}
	/* After fchown, which may clear set-id bits. */
	if (fchmod(fd, w->mode & 07777) == -1) {
		rc = err_set(err, errlen, ERR_IO, "chmod %04o: %s", (unsigned)(w->mode & 07777),
			     strerror(errno));
		goto fail;
	}
	if (fsync(fd) == -1) {
		rc = err_set(err, errlen, ERR_IO, "fsync: %s", strerror(errno));
		goto fail;
	}
	if (close(fd) == -1) {
		fd = -1;
		rc = err_set(err, errlen, ERR_IO, "close: %s", strerror(errno));
		goto fail;
	}
	fd = -1;
	if (renameat(w->dfd, tmp, w->dfd, w->base) == -1) {
		rc = err_set(err, errlen, ERR_IO, "rename from temp file: %s", strerror(errno));
		goto fail;
	}
	if (fsync(w->dfd) == -1)
		return err_set(err, errlen, ERR_IO, "fsync folder: %s", strerror(errno));
	return 0;
fail:
	if (fd != -1)
		close(fd);
	unlinkat(w->dfd, tmp, 0);
	return rc;
}

void
cmd_write_file(struct cmd_ctx *ctx, const Stoke__Command *cmd, struct cmd_result *res)
{
	const Stoke__WriteFileCommand *wf = cmd->write_file;
	const struct agent_config *cfg = ctx->cfg;
	char why[1024], hex[2 * CRYPTO_SHA256_LEN + 1], name[64];
	uint8_t sum[CRYPTO_SHA256_LEN];
	struct policy_write w;
	struct policy_fs fs;
	struct passwd pw, *pwp = NULL;
	char mem[16384];
	int rc;
	json_t *j;

	res->exit_code = -1; /* until the command succeeds */
	w.dfd = -1;
	if (cmd->kind_case != STOKE__COMMAND__KIND_WRITE_FILE || wf == NULL) {
		err_set(res->error, sizeof(res->error), ERR_INVAL,
			"write_file: not a write_file command");
		return;
	}
	/* The policy decides everything: where, as whom, which mode (policy.c). */
	if ((rc = policy_check(cfg, cmd, why, sizeof(why))) != 0) {
		err_set(res->error, sizeof(res->error), rc, "write_file: %s", why);
		return;
	}
	if ((rc = policy_write_open(cfg, wf, &w, why, sizeof(why))) != 0) {
		err_set(res->error, sizeof(res->error), rc, "write_file %s: %s", wf->path, why);
		return;
	}
	name[0] = '\0';
	if (getpwuid_r(w.uid, &pw, mem, sizeof(mem), &pwp) == 0 && pwp != NULL)
		snprintf(name, sizeof(name), "%s", pw.pw_name);
	if ((rc = policy_fs_enter(&fs, w.uid, w.gid, name[0] != '\0' ? name : NULL, why,
				  sizeof(why))) != 0) {
		err_set(res->error, sizeof(res->error), rc, "write_file %s: %s", wf->path, why);
		goto fail;
	}
	rc = cmd_write_file_put(&w, wf->content.data, wf->content.len, why, sizeof(why));
	policy_fs_leave(&fs);
	if (rc != 0) {
		err_set(res->error, sizeof(res->error), rc, "write_file %s: %s (as %s)", wf->path,
			why, name[0] != '\0' ? name : "its owner");
		goto fail;
	}

	crypto_sha256(wf->content.data, wf->content.len, sum);
	crypto_hex(sum, sizeof(sum), hex);
	snprintf(why, sizeof(why), "%04o", (unsigned)w.mode);
	j = json_pack("{s:s, s:I, s:s, s:s}", "path", wf->path, "size", (json_int_t)wf->content.len,
		      "sha256", hex, "mode", why);
	if (j != NULL) {
		res->result_json = json_dumps(j, JSON_COMPACT);
		json_decref(j);
	}
	res->exit_code = 0;
fail:
	policy_write_fini(&w);
}
