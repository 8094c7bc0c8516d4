/*
 * cmd_write_file.c: the write_file command: replace one file atomically under the agent's
 * write_roots, with owner, group and mode. Links are followed only where they stay inside a
 * root; the folder is pinned by a descriptor so it cannot be swapped before the write.
 */
#include "cmd.h"
#include "agent_config.h"
#include "atomicfile.h"
#include "crypto.h"
#include "err.h"
#include "names.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CMD_WRITE_FILE_DEFAULT_MODE 0644

/* Absolute, no empty, "." or ".." part, no trailing '/', no control characters. */
static int
cmd_write_file_path_check(const char *path, char *err, size_t errlen)
{
	size_t len = strlen(path);

	if (path[0] != '/')
		return err_set(err, errlen, ERR_INVAL, "path must be absolute");
	if (len < 2 || len >= PATH_MAX - 64)
		return err_set(err, errlen, ERR_INVAL, "path must be 2-%d characters",
			       PATH_MAX - 65);
	for (const char *p = path; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return err_set(err, errlen, ERR_INVAL,
				       "path must not contain control characters");
	for (const char *p = path; *p != '\0';) {
		const char *part = p + 1, *next = strchr(part, '/');
		size_t n = next != NULL ? (size_t)(next - part) : strlen(part);

		if (n == 0)
			return err_set(err, errlen, ERR_INVAL,
				       "path must be normalised (no \"//\" and no trailing '/')");
		if ((n == 1 && part[0] == '.') || (n == 2 && part[0] == '.' && part[1] == '.'))
			return err_set(err, errlen, ERR_INVAL,
				       "path must be normalised (no \".\" or \"..\" parts)");
		if (next == NULL)
			break;
		p = next;
	}
	return 0;
}

/* 1 when path equals dir or lies under it. */
static int
cmd_write_file_under(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	if (n == 1 && dir[0] == '/')
		return 1;
	return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/*
 * Whether path is under one of the ':'-separated roots: lexically (as written) when real
 * is 0, or physically (compared with each root's resolved path) when real is 1.
 */
static int
cmd_write_file_in_roots(const char *roots, const char *path, int real, int strict)
{
	char root[PATH_MAX], resolved[PATH_MAX];
	const char *p = roots, *colon;

	if (roots == NULL)
		return 0;
	for (;; p = colon + 1) {
		size_t n;

		colon = strchr(p, ':');
		n = colon != NULL ? (size_t)(colon - p) : strlen(p);
		if (n > 0 && n < sizeof(root) && p[0] == '/') {
			memcpy(root, p, n);
			root[n] = '\0';
			while (n > 1 && root[n - 1] == '/')
				root[--n] = '\0';
			if (!real) {
				/* The file itself must be below the root, never the root. */
				if (cmd_write_file_under(path, root) &&
				    (!strict || strcmp(path, root) != 0))
					return 1;
			} else if (realpath(root, resolved) != NULL &&
				   cmd_write_file_under(path, resolved)) {
				return 1;
			}
		}
		if (colon == NULL)
			return 0;
	}
}

static int
cmd_write_file_owner(const char *owner, const char *group, uid_t *uid, gid_t *gid, char *err,
		     size_t errlen)
{
	char mem[16384], why[128];
	struct passwd pw, *pwp = NULL;
	struct group gr, *grp = NULL;
	int rc;

	if (owner[0] != '\0') {
		if (names_user(owner, why, sizeof(why)) != 0)
			return err_set(err, errlen, ERR_INVAL, "owner: %s", why);
		rc = getpwnam_r(owner, &pw, mem, sizeof(mem), &pwp);
		if (pwp == NULL)
			return err_set(err, errlen, rc != 0 ? ERR_IO : ERR_NOTFOUND,
				       "owner: user %s %s", owner,
				       rc != 0 ? strerror(rc) : "does not exist");
		*uid = pw.pw_uid;
		*gid = pw.pw_gid;
	}
	if (group[0] != '\0') {
		/* Group names follow the same grammar as user names. */
		if (names_user(group, why, sizeof(why)) != 0)
			return err_set(err, errlen, ERR_INVAL, "group: %s", why);
		rc = getgrnam_r(group, &gr, mem, sizeof(mem), &grp);
		if (grp == NULL)
			return err_set(err, errlen, rc != 0 ? ERR_IO : ERR_NOTFOUND, "group: %s %s",
				       group, rc != 0 ? strerror(rc) : "does not exist");
		*gid = gr.gr_gid;
	}
	return 0;
}

/* Replaces every "/proc/self/fd/N" in an atomicfile error with the real folder. */
static void
cmd_write_file_fix_err(const char *in, const char *fdpath, const char *dir, char *out,
		       size_t outlen)
{
	size_t fl = strlen(fdpath), o = 0;

	for (const char *p = in; *p != '\0' && o + 1 < outlen;) {
		if (strncmp(p, fdpath, fl) == 0) {
			int n = snprintf(out + o, outlen - o, "%s", dir);

			o = n < 0 || (size_t)n >= outlen - o ? outlen - 1 : o + (size_t)n;
			p += fl;
			continue;
		}
		out[o++] = *p++;
	}
	out[o < outlen ? o : outlen - 1] = '\0';
}

void
cmd_write_file(struct cmd_ctx *ctx, const Stoke__Command *cmd, struct cmd_result *res)
{
	const Stoke__WriteFileCommand *wf = cmd->write_file;
	const struct agent_config *cfg = ctx->cfg;
	char dir[PATH_MAX], rdir[PATH_MAX], fdpath[64], fdlink[PATH_MAX], target[PATH_MAX + 80];
	char why[1024], hex[2 * CRYPTO_SHA256_LEN + 1];
	uint8_t sum[CRYPTO_SHA256_LEN];
	const char *base;
	struct stat st;
	uid_t uid = (uid_t)-1;
	gid_t gid = (gid_t)-1;
	mode_t mode;
	ssize_t n;
	int dfd = -1, exists;
	json_t *j;

	res->exit_code = -1; /* until the command succeeds */
	if (cmd->kind_case != STOKE__COMMAND__KIND_WRITE_FILE || wf == NULL) {
		err_set(res->error, sizeof(res->error), ERR_INVAL,
			"write_file: not a write_file "
			"command");
		return;
	}
	if (cmd_write_file_path_check(wf->path, why, sizeof(why)) != 0) {
		err_set(res->error, sizeof(res->error), ERR_INVAL, "write_file: %s", why);
		return;
	}
	if (!cmd_write_file_in_roots(cfg->write_roots, wf->path, 0, 1)) {
		err_set(res->error, sizeof(res->error), ERR_AUTH,
			"write_file %s: not under one of the allowed folders (write_roots %s)",
			wf->path, cfg->write_roots != NULL ? cfg->write_roots : "");
		return;
	}
	if (wf->mode > 07777) {
		err_set(res->error, sizeof(res->error), ERR_INVAL,
			"write_file %s: mode %o is more than 07777", wf->path, wf->mode);
		return;
	}
	if (cmd_write_file_owner(wf->owner, wf->group, &uid, &gid, why, sizeof(why)) != 0) {
		err_set(res->error, sizeof(res->error), ERR_INVAL, "write_file %s: %s", wf->path,
			why);
		return;
	}

	base = strrchr(wf->path, '/') + 1;
	memcpy(dir, wf->path, (size_t)(base - wf->path));
	dir[base - wf->path] = '\0';
	if (realpath(dir, rdir) == NULL) {
		err_set(res->error, sizeof(res->error), ERR_IO, "write_file %s: folder %s: %s",
			wf->path, dir, strerror(errno));
		return;
	}
	/* Pin the folder, then check where it really is: a link swapped in after realpath()
	 * is seen here. */
	if ((dfd = open(rdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) == -1) {
		err_set(res->error, sizeof(res->error), ERR_IO, "write_file %s: folder %s: %s",
			wf->path, rdir, strerror(errno));
		return;
	}
	snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", dfd);
	if ((n = readlink(fdpath, fdlink, sizeof(fdlink) - 1)) <= 0) {
		err_set(res->error, sizeof(res->error), ERR_IO, "write_file %s: %s: %s", wf->path,
			fdpath, n < 0 ? strerror(errno) : "empty");
		goto fail;
	}
	fdlink[n] = '\0';
	if (!cmd_write_file_in_roots(cfg->write_roots, fdlink, 1, 0)) {
		err_set(res->error, sizeof(res->error), ERR_AUTH,
			"write_file %s: the folder is really %s, which is not under one of the "
			"allowed folders (write_roots %s)",
			wf->path, fdlink, cfg->write_roots);
		goto fail;
	}

	exists = fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0;
	if (!exists && errno != ENOENT) {
		err_set(res->error, sizeof(res->error), ERR_IO, "write_file %s: %s", wf->path,
			strerror(errno));
		goto fail;
	}
	if (exists && !S_ISREG(st.st_mode)) {
		err_set(res->error, sizeof(res->error), ERR_INVAL,
			"write_file %s: exists and is %s, not a regular file", wf->path,
			S_ISLNK(st.st_mode)   ? "a symbolic link"
			: S_ISDIR(st.st_mode) ? "a folder"
					      : "something else");
		goto fail;
	}
	/* What the command does not say is kept from the file it replaces. */
	if (exists && wf->owner[0] == '\0')
		uid = st.st_uid;
	if (exists && wf->owner[0] == '\0' && wf->group[0] == '\0')
		gid = st.st_gid;
	mode = wf->mode != 0 ? (mode_t)wf->mode
	       : exists	     ? st.st_mode & 07777
			     : CMD_WRITE_FILE_DEFAULT_MODE;

	snprintf(target, sizeof(target), "%s/%s", fdpath, base);
	if (atomicfile_write(target, wf->content.data, wf->content.len, mode, uid, gid, why,
			     sizeof(why)) != 0) {
		char fixed[1024];

		cmd_write_file_fix_err(why, fdpath, fdlink, fixed, sizeof(fixed));
		err_set(res->error, sizeof(res->error), ERR_IO, "write_file %s: %s", wf->path,
			fixed);
		goto fail;
	}

	crypto_sha256(wf->content.data, wf->content.len, sum);
	crypto_hex(sum, sizeof(sum), hex);
	snprintf(why, sizeof(why), "%04o", (unsigned)mode);
	j = json_pack("{s:s, s:I, s:s, s:s}", "path", wf->path, "size", (json_int_t)wf->content.len,
		      "sha256", hex, "mode", why);
	if (j != NULL) {
		res->result_json = json_dumps(j, JSON_COMPACT);
		json_decref(j);
	}
	res->exit_code = 0;
fail:
	if (dfd != -1)
		close(dfd);
}
