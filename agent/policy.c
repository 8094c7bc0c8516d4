/*
 * policy.c: the agent's root policy (policy.h): one rule per command kind, the write_file
 * walk that decides who a file is written as, the thread's switch to that user, and the
 * walk of nginx's configuration that must be root's alone. It runs no program and writes
 * no file; the handlers (cmd_*.c) ask it before they act.
 */
#include "policy.h"
#include "agent_config.h"
#include "err.h"
#include "names.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define POLICY_NGINX_CONF "/etc/nginx/nginx.conf" /* Debian's nginx --conf-path */
#define POLICY_NGINX_PREFIX "/usr/share/nginx/"	  /* Debian's nginx --prefix */
#define POLICY_NGINX_FILE_MAX (1024 * 1024)
#define POLICY_NGINX_FILES_MAX 512
#define POLICY_NGINX_DEPTH_MAX 16
#define POLICY_NGINX_DIRS_MAX 64
#define POLICY_LINKS_MAX 16
#define POLICY_DEFAULT_MODE 0644
#define POLICY_GROUPS_MAX 256

/* ---- small helpers ---- */

/* 1 when path equals dir or lies under it. */
static int
policy_under(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	while (n > 1 && dir[n - 1] == '/')
		n--;
	if (n == 1 && dir[0] == '/')
		return 1;
	return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* Owners the policy trusts with what root runs: root, and the agent itself when it is
 * not root (then nothing it runs is root's anyway). */
static int
policy_trusted_uid(uid_t uid)
{
	return uid == 0 || uid == geteuid();
}

/* Absolute, no empty, "." or ".." part, no trailing '/', no control characters. */
static int
policy_path_check(const char *path, char *why, size_t whylen)
{
	size_t len = strlen(path);

	if (path[0] != '/')
		return err_set(why, whylen, ERR_INVAL, "path must be absolute");
	if (len < 2 || len >= PATH_MAX - 64)
		return err_set(why, whylen, ERR_INVAL, "path must be 2-%d characters",
			       PATH_MAX - 65);
	for (const char *p = path; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return err_set(why, whylen, ERR_INVAL,
				       "path must not contain control characters");
	for (const char *p = path; *p != '\0';) {
		const char *part = p + 1, *next = strchr(part, '/');
		size_t n = next != NULL ? (size_t)(next - part) : strlen(part);

		if (n == 0)
			return err_set(why, whylen, ERR_INVAL,
				       "path must be normalised (no \"//\" and no trailing '/')");
		if ((n == 1 && part[0] == '.') || (n == 2 && part[0] == '.' && part[1] == '.'))
			return err_set(why, whylen, ERR_INVAL,
				       "path must be normalised (no \".\" or \"..\" parts)");
		if (next == NULL)
			break;
		p = next;
	}
	return 0;
}

/*
 * Whether path is under one of the ':'-separated roots: lexically (as written; strictly
 * below the root) when real is 0, or physically (compared with each root's resolved path;
 * the root itself counts) when real is 1.
 */
static int
policy_in_roots(const char *roots, const char *path, int real)
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
				if (policy_under(path, root) && strcmp(path, root) != 0)
					return 1;
			} else if (realpath(root, resolved) != NULL &&
				   policy_under(path, resolved)) {
				return 1;
			}
		}
		if (colon == NULL)
			return 0;
	}
}

/* A user by name (checked with names_user first) or by uid (name NULL). */
static int
policy_user(const char *name, uid_t uid, uid_t *uid_out, gid_t *gid_out, char *name_out,
	    size_t name_len, char *home_out, size_t home_len, char *why, size_t whylen)
{
	char mem[16384], check[128];
	struct passwd pw, *pwp = NULL;
	int rc;

	if (name != NULL && names_user(name, check, sizeof(check)) != 0)
		return err_set(why, whylen, ERR_INVAL, "user \"%.64s\": %s", name, check);
	rc = name != NULL ? getpwnam_r(name, &pw, mem, sizeof(mem), &pwp)
			  : getpwuid_r(uid, &pw, mem, sizeof(mem), &pwp);
	if (pwp == NULL) {
		if (rc != 0)
			return err_set(why, whylen, ERR_IO, "user %s: %s",
				       name != NULL ? name : "?", strerror(rc));
		if (name != NULL)
			return err_set(why, whylen, ERR_NOTFOUND, "user %s does not exist", name);
		return err_set(why, whylen, ERR_NOTFOUND, "uid %ld has no passwd entry", (long)uid);
	}
	if (uid_out != NULL)
		*uid_out = pw.pw_uid;
	if (gid_out != NULL)
		*gid_out = pw.pw_gid;
	if (name_out != NULL)
		snprintf(name_out, name_len, "%s", pw.pw_name);
	if (home_out != NULL)
		snprintf(home_out, home_len, "%s", pw.pw_dir != NULL ? pw.pw_dir : "/");
	return 0;
}

/* ---- the rules, one per command kind ---- */

/* A program run as a user ("" = default_user): never root unless allow_root. */
static int
policy_run_as(const struct agent_config *cfg, const char *user, char *why, size_t whylen)
{
	const char *name = user != NULL && user[0] != '\0' ? user
			   : cfg->default_user != NULL	   ? cfg->default_user
							   : "";
	uid_t uid;
	int rc;

	if ((rc = policy_user(name, 0, &uid, NULL, NULL, 0, NULL, 0, why, whylen)) != 0)
		return rc;
	if (uid == 0 && !cfg->allow_root)
		return err_set(why, whylen, ERR_AUTH,
			       "user %s: running as root is not allowed (allow_root is off)", name);
	return 0;
}

static int
policy_rule_exec(const struct agent_config *cfg, const Stoke__Command *cmd, char *why,
		 size_t whylen)
{
	if (cmd->exec == NULL)
		return err_set(why, whylen, ERR_INVAL, "not an exec command");
	return policy_run_as(cfg, cmd->exec->user, why, whylen);
}

static int
policy_rule_script(const struct agent_config *cfg, const Stoke__Command *cmd, char *why,
		   size_t whylen)
{
	if (cmd->script == NULL)
		return err_set(why, whylen, ERR_INVAL, "not a script command");
	return policy_run_as(cfg, cmd->script->user, why, whylen);
}

static int
policy_rule_git(const struct agent_config *cfg, const Stoke__Command *cmd, char *why, size_t whylen)
{
	if (cmd->git_checkout == NULL)
		return err_set(why, whylen, ERR_INVAL, "not a git_checkout command");
	return policy_run_as(cfg, cmd->git_checkout->user, why, whylen);
}

/* authorized_keys: a built-in; root's keys are root's login, so root only with allow_root. */
static int
policy_rule_keys(const struct agent_config *cfg, const Stoke__Command *cmd, char *why,
		 size_t whylen)
{
	if (cmd->authorized_keys == NULL)
		return err_set(why, whylen, ERR_INVAL, "not an authorized_keys command");
	if (cmd->authorized_keys->user[0] == '\0')
		return err_set(why, whylen, ERR_INVAL, "user is missing");
	return policy_run_as(cfg, cmd->authorized_keys->user, why, whylen);
}

/* The owner and group a write_file command names, looked up; -1 for those it does not. */
static int
policy_write_ids(const struct agent_config *cfg, const Stoke__WriteFileCommand *wf, uid_t *uid,
		 gid_t *gid, char *why, size_t whylen)
{
	char mem[16384], check[128];
	struct group gr, *grp = NULL;
	int rc;

	*uid = (uid_t)-1;
	*gid = (gid_t)-1;
	if (wf->owner[0] != '\0') {
		if ((rc = policy_user(wf->owner, 0, uid, NULL, NULL, 0, NULL, 0, check,
				      sizeof(check))) != 0)
			return err_set(why, whylen, rc, "owner: %s", check);
		if (*uid == 0 && !cfg->allow_root)
			return err_set(why, whylen, ERR_AUTH,
				       "owner root: root-owned files are not allowed (allow_root "
				       "is off)");
	}
	if (wf->group[0] != '\0') {
		/* Group names follow the same grammar as user names. */
		if (names_user(wf->group, check, sizeof(check)) != 0)
			return err_set(why, whylen, ERR_INVAL, "group: %s", check);
		rc = getgrnam_r(wf->group, &gr, mem, sizeof(mem), &grp);
		if (grp == NULL)
			return err_set(why, whylen, rc != 0 ? ERR_IO : ERR_NOTFOUND, "group: %s %s",
				       wf->group, rc != 0 ? strerror(rc) : "does not exist");
		*gid = gr.gr_gid;
		if (*gid == 0 && !cfg->allow_root)
			return err_set(why, whylen, ERR_AUTH,
				       "group root: root-group files are not allowed (allow_root "
				       "is off)");
	}
	return 0;
}

/* Set-user-ID and set-group-ID files only with allow_root and allow_setuid. */
static int
policy_mode(const struct agent_config *cfg, const char *path, unsigned mode, char *why,
	    size_t whylen)
{
	if (mode > 07777)
		return err_set(why, whylen, ERR_INVAL, "%s: mode %o is more than 07777", path,
			       mode);
	if ((mode & 06000) != 0 && !(cfg->allow_root && cfg->allow_setuid))
		return err_set(why, whylen, ERR_AUTH,
			       "%s: mode %04o is set-user-ID or set-group-ID, which is not "
			       "allowed (it needs allow_root and allow_setuid)",
			       path, mode);
	return 0;
}

static int
policy_rule_write(const struct agent_config *cfg, const Stoke__Command *cmd, char *why,
		  size_t whylen)
{
	const Stoke__WriteFileCommand *wf = cmd->write_file;
	char sub[768];
	uid_t uid;
	gid_t gid;
	int rc;

	if (wf == NULL)
		return err_set(why, whylen, ERR_INVAL, "not a write_file command");
	if ((rc = policy_path_check(wf->path, why, whylen)) != 0)
		return rc;
	if (!policy_in_roots(cfg->write_roots, wf->path, 0))
		return err_set(why, whylen, ERR_AUTH,
			       "%s: not under one of the allowed folders (write_roots %s)",
			       wf->path, cfg->write_roots != NULL ? cfg->write_roots : "");
	if (policy_nginx_tree(cfg, wf->path))
		return err_set(why, whylen, ERR_AUTH,
			       "%s: is in nginx's configuration, which only nginx_site writes",
			       wf->path);
	if ((rc = policy_mode(cfg, wf->path, wf->mode, why, whylen)) != 0)
		return rc;
	if ((rc = policy_write_ids(cfg, wf, &uid, &gid, sub, sizeof(sub))) != 0)
		return err_set(why, whylen, rc, "%s: %s", wf->path, sub);
	return 0;
}

/* A folder root writes in: root's (or the agent's) and writable by no one else. */
static int policy_trusted_path(const char *path, int kind, int depth, char *why, size_t whylen);
enum { POLICY_FILE, POLICY_DIR_STRICT, POLICY_DIR_PASS };

/* nginx_site: a built-in, on a configuration that is root's alone. */
static int
policy_rule_nginx(const struct agent_config *cfg, const Stoke__Command *cmd, char *why,
		  size_t whylen)
{
	int rc;

	if (cmd->nginx_site == NULL)
		return err_set(why, whylen, ERR_INVAL, "not an nginx_site command");
	if ((rc = policy_trusted_path(cfg->nginx_sites_available, POLICY_DIR_STRICT, 0, why,
				      whylen)) != 0 ||
	    (rc = policy_trusted_path(cfg->nginx_sites_enabled, POLICY_DIR_STRICT, 0, why,
				      whylen)) != 0)
		return rc;
	return policy_nginx_check(cfg, why, whylen);
}

/* service: a built-in on the allow-list (cmd_service.c checks the list); starting or
 * reloading nginx loads its configuration as root, as nginx -t does. */
static int
policy_rule_service(const struct agent_config *cfg, const Stoke__Command *cmd, char *why,
		    size_t whylen)
{
	const Stoke__ServiceCommand *sv = cmd->service;

	if (sv == NULL)
		return err_set(why, whylen, ERR_INVAL, "not a service command");
	if ((strcmp(sv->name, "nginx") == 0 || strncmp(sv->name, "nginx.", 6) == 0) &&
	    (strcmp(sv->action, "start") == 0 || strcmp(sv->action, "restart") == 0 ||
	     strcmp(sv->action, "reload") == 0))
		return policy_nginx_check(cfg, why, whylen);
	return 0;
}

/* facts: a built-in that reads only. */
static int
policy_rule_allow(const struct agent_config *cfg, const Stoke__Command *cmd, char *why,
		  size_t whylen)
{
	(void)cfg;
	(void)cmd;
	(void)why;
	(void)whylen;
	return 0;
}

static const struct policy_rule {
	Stoke__Command__KindCase kind;
	int (*check)(const struct agent_config *cfg, const Stoke__Command *cmd, char *why,
		     size_t whylen);
} policy_rules[] = {
    {STOKE__COMMAND__KIND_EXEC, policy_rule_exec},
    {STOKE__COMMAND__KIND_SCRIPT, policy_rule_script},
    {STOKE__COMMAND__KIND_GIT_CHECKOUT, policy_rule_git},
    {STOKE__COMMAND__KIND_AUTHORIZED_KEYS, policy_rule_keys},
    {STOKE__COMMAND__KIND_WRITE_FILE, policy_rule_write},
    {STOKE__COMMAND__KIND_NGINX_SITE, policy_rule_nginx},
    {STOKE__COMMAND__KIND_SERVICE, policy_rule_service},
    {STOKE__COMMAND__KIND_FACTS, policy_rule_allow},
};

int
policy_check(const struct agent_config *cfg, const Stoke__Command *cmd, char *why, size_t whylen)
{
	if (cfg == NULL || cmd == NULL)
		return err_set(why, whylen, ERR_INVAL, "no command");
	for (size_t i = 0; i < sizeof(policy_rules) / sizeof(policy_rules[0]); i++)
		if (policy_rules[i].kind == cmd->kind_case)
			return policy_rules[i].check(cfg, cmd, why, whylen);
	return err_set(why, whylen, ERR_AUTH, "command kind %d has no rule: refused",
		       (int)cmd->kind_case);
}

/* ---- write_file: the walk ---- */

/* Resolves "." and ".." and empty parts of an absolute path in place. */
static void
policy_normalise(char *path)
{
	char *out = path, *p = path;

	while (*p != '\0') {
		char *part, *end;
		size_t n;

		while (*p == '/')
			p++;
		if (*p == '\0')
			break;
		part = p;
		end = strchr(part, '/');
		n = end != NULL ? (size_t)(end - part) : strlen(part);
		p = part + n;
		if (n == 1 && part[0] == '.')
			continue;
		if (n == 2 && part[0] == '.' && part[1] == '.') {
			while (out > path && *--out != '/')
				;
			continue;
		}
		*out++ = '/';
		memmove(out, part, n);
		out += n;
	}
	if (out == path)
		*out++ = '/';
	*out = '\0';
}

/*
 * The owner a walk has settled on: known once named, or once a folder or link on the way
 * belongs to a non-root user. A non-root folder or link of anyone else refuses the walk.
 */
struct policy_owner {
	uid_t uid;
	int known;
};

static int
policy_owner_meet(struct policy_owner *o, uid_t uid, const char *what, const char *path, char *why,
		  size_t whylen)
{
	if (uid == 0)
		return 0;
	if (!o->known) {
		o->uid = uid;
		o->known = 1;
		return 0;
	}
	if (uid == o->uid)
		return 0;
	return err_set(why, whylen, ERR_AUTH,
		       "%s %s belongs to uid %ld, not to root or to the file's owner (uid %ld)",
		       what, path, (long)uid, (long)o->uid);
}

/* One folder on a write's way: no one but root and the owner may write in it. last: 0 a
 * folder passed through (a root-owned sticky one may be written by others), 1 the file's
 * own folder, -1 the same before it is known to be in a root (its owner only); o NULL:
 * the owner is not looked at. */
static int
policy_write_dir_ok(const struct stat *st, const char *path, int last, struct policy_owner *o,
		    char *why, size_t whylen)
{
	int rc;

	if (o != NULL && (rc = policy_owner_meet(o, st->st_uid, "folder", path, why, whylen)) != 0)
		return rc;
	if (last < 0)
		return 0; /* the file's own folder: checked once known to be in a root */
	if ((st->st_mode & 022) != 0 && !(st->st_uid == 0 && (st->st_mode & S_ISVTX) != 0 && !last))
		return err_set(why, whylen, ERR_AUTH,
			       "folder %s is writable by its group or others (mode %04o)", path,
			       (unsigned)(st->st_mode & 07777));
	return 0;
}

/* Walks the folder dir (absolute, normalised) from "/"; see policy_write_open. */
static int
policy_write_walk(const char *dir, struct policy_owner *o, int *dfd, char real[PATH_MAX], char *why,
		  size_t whylen)
{
	char todo[2 * PATH_MAX], next[2 * PATH_MAX], link[PATH_MAX], part[NAME_MAX + 1];
	struct stat st;
	const char *p;
	int fd = -1, hops = 0, rc;
	ssize_t n;

	snprintf(todo, sizeof(todo), "%s", dir);
restart:
	if (fd != -1)
		close(fd);
	if ((fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1 || fstat(fd, &st) == -1) {
		rc = err_set(why, whylen, ERR_IO, "/: %s", strerror(errno));
		goto fail;
	}
	snprintf(real, PATH_MAX, "/");
	if ((rc = policy_write_dir_ok(&st, "/", todo[1] == '\0' ? -1 : 0, o, why, whylen)) != 0)
		goto fail;
	for (p = todo + 1; *p != '\0';) {
		const char *slash = strchr(p, '/');
		size_t len = slash != NULL ? (size_t)(slash - p) : strlen(p), rl = strlen(real);
		int nfd;

		if (len == 0 || len > NAME_MAX) {
			rc = err_set(why, whylen, ERR_INVAL, "folder %s: bad name", dir);
			goto fail;
		}
		memcpy(part, p, len);
		part[len] = '\0';
		p += len;
		if (*p == '/')
			p++;
		if (rl + 1 + len >= PATH_MAX) {
			rc = err_set(why, whylen, ERR_INVAL, "folder %s: path too long", dir);
			goto fail;
		}
		snprintf(real + rl, PATH_MAX - rl, "%s%s", rl > 1 ? "/" : "", part);
		if (fstatat(fd, part, &st, AT_SYMLINK_NOFOLLOW) == -1) {
			rc = err_set(why, whylen, ERR_IO, "folder %s: %s", real, strerror(errno));
			goto fail;
		}
		if (S_ISLNK(st.st_mode)) {
			/* Only root's or the owner's link is followed: its target is then
			 * walked from "/" with the same checks. */
			if ((rc = policy_owner_meet(o, st.st_uid, "link", real, why, whylen)) != 0)
				goto fail;
			if (++hops > POLICY_LINKS_MAX) {
				rc = err_set(why, whylen, ERR_INVAL, "folder %s: too many links",
					     dir);
				goto fail;
			}
			if ((n = readlinkat(fd, part, link, sizeof(link) - 1)) <= 0) {
				rc = err_set(why, whylen, ERR_IO, "link %s: %s", real,
					     n < 0 ? strerror(errno) : "empty");
				goto fail;
			}
			link[n] = '\0';
			real[rl] = '\0';
			if (snprintf(next, sizeof(next), "%s/%s/%s", link[0] == '/' ? "" : real,
				     link, p) >= (int)sizeof(next)) {
				rc = err_set(why, whylen, ERR_INVAL, "folder %s: path too long",
					     dir);
				goto fail;
			}
			policy_normalise(next);
			snprintf(todo, sizeof(todo), "%s", next);
			goto restart;
		}
		if (!S_ISDIR(st.st_mode)) {
			rc = err_set(why, whylen, ERR_INVAL, "folder %s: not a folder", real);
			goto fail;
		}
		nfd = openat(fd, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (nfd == -1 || fstat(nfd, &st) == -1) {
			rc = err_set(why, whylen, ERR_IO, "folder %s: %s", real,
				     errno == ELOOP ? "became a link while walked"
						    : strerror(errno));
			if (nfd != -1)
				close(nfd);
			goto fail;
		}
		close(fd);
		fd = nfd;
		if ((rc = policy_write_dir_ok(&st, real, *p == '\0' ? -1 : 0, o, why, whylen)) != 0)
			goto fail;
	}
	*dfd = fd;
	return 0;
fail:
	if (fd != -1)
		close(fd);
	*dfd = -1;
	return rc;
}

/* The authorized_keys_file template for a user, as cmd_authorized_keys.c expands it. */
static int
policy_keys_path(const char *tmpl, const char *name, const char *home, char *out, size_t outlen)
{
	size_t o = 0;

	for (const char *p = tmpl; p != NULL && *p != '\0'; p++) {
		const char *add;
		char one[2] = {*p, '\0'};

		if (*p == '%' && (p[1] == 'h' || p[1] == 'u' || p[1] == '%')) {
			p++;
			add = *p == 'h' ? home : *p == 'u' ? name : "%";
		} else {
			add = one;
		}
		if (o + strlen(add) >= outlen)
			return -1;
		memcpy(out + o, add, strlen(add));
		o += strlen(add);
	}
	out[o] = '\0';
	policy_normalise(out);
	return 0;
}

void
policy_write_fini(struct policy_write *w)
{
	if (w != NULL && w->dfd != -1)
		close(w->dfd);
	if (w != NULL)
		w->dfd = -1;
}

int
policy_write_open(const struct agent_config *cfg, const Stoke__WriteFileCommand *wf,
		  struct policy_write *w, char *why, size_t whylen)
{
	char dir[PATH_MAX], full[PATH_MAX + NAME_MAX + 2], keys[PATH_MAX], name[64], home[PATH_MAX];
	struct policy_owner o = {0, 0};
	struct stat st;
	uid_t uid;
	gid_t gid, pgid;
	size_t dl;
	int rc;

	memset(w, 0, sizeof(*w));
	w->dfd = -1;
	if ((rc = policy_path_check(wf->path, why, whylen)) != 0 ||
	    (rc = policy_write_ids(cfg, wf, &uid, &gid, why, whylen)) != 0)
		return rc;
	if (uid != (uid_t)-1) {
		o.uid = uid;
		o.known = 1;
	}
	w->base = strrchr(wf->path, '/') + 1;
	dl = (size_t)(w->base - wf->path);
	memcpy(dir, wf->path, dl);
	dir[dl > 1 ? dl - 1 : 1] = '\0';
	if ((rc = policy_write_walk(dir, &o, &w->dfd, w->real, why, whylen)) != 0)
		return rc;
	snprintf(full, sizeof(full), "%s%s%s", w->real, strcmp(w->real, "/") != 0 ? "/" : "",
		 w->base);
	if (!policy_in_roots(cfg->write_roots, w->real, 1)) {
		rc = err_set(why, whylen, ERR_AUTH,
			     "the folder is really %s, which is not under one of the allowed "
			     "folders (write_roots %s)",
			     w->real, cfg->write_roots);
		goto fail;
	}
	if (fstat(w->dfd, &st) == -1) {
		rc = err_set(why, whylen, ERR_IO, "folder %s: %s", w->real, strerror(errno));
		goto fail;
	}
	if ((rc = policy_write_dir_ok(&st, w->real, 1, NULL, why, whylen)) != 0)
		goto fail;
	if (policy_nginx_tree(cfg, full)) {
		rc = err_set(why, whylen, ERR_AUTH,
			     "really %s, in nginx's configuration, which only nginx_site writes",
			     full);
		goto fail;
	}

	w->exists = fstatat(w->dfd, w->base, &st, AT_SYMLINK_NOFOLLOW) == 0;
	if (!w->exists && errno != ENOENT) {
		rc = err_set(why, whylen, ERR_IO, "%s", strerror(errno));
		goto fail;
	}
	if (w->exists && !S_ISREG(st.st_mode)) {
		rc = err_set(why, whylen, ERR_INVAL, "exists and is %s, not a regular file",
			     S_ISLNK(st.st_mode)   ? "a symbolic link"
			     : S_ISDIR(st.st_mode) ? "a folder"
						   : "something else");
		goto fail;
	}
	/* The owner: named, else the first non-root folder's, else the file's, else root. */
	if (!o.known && w->exists)
		o.uid = st.st_uid;
	o.known = 1;
	if (w->exists && st.st_uid != 0 && st.st_uid != o.uid) {
		rc = err_set(why, whylen, ERR_AUTH,
			     "belongs to uid %ld, not to root or to the file's owner (uid %ld)",
			     (long)st.st_uid, (long)o.uid);
		goto fail;
	}
	w->uid = o.uid;
	if (w->uid == 0 && !cfg->allow_root) {
		rc = err_set(why, whylen, ERR_AUTH,
			     "the file would belong to root, which is not allowed (allow_root is "
			     "off): name its owner");
		goto fail;
	}
	if ((rc = policy_user(NULL, w->uid, NULL, &pgid, name, sizeof(name), home, sizeof(home),
			      why, whylen)) != 0)
		goto fail;
	/* The group: named, else the replaced file's when no owner is named, else the
	 * owner's own. */
	w->gid = gid != (gid_t)-1 ? gid : w->exists && wf->owner[0] == '\0' ? st.st_gid : pgid;
	if (w->gid == 0 && !cfg->allow_root) {
		rc = err_set(why, whylen, ERR_AUTH,
			     "the file would belong to the group root, which is not allowed "
			     "(allow_root is off): name its group");
		goto fail;
	}
	w->mode = wf->mode != 0 ? (mode_t)wf->mode
		  : w->exists	? st.st_mode & 07777
				: POLICY_DEFAULT_MODE;
	if ((rc = policy_mode(cfg, wf->path, (unsigned)w->mode, why, whylen)) != 0)
		goto fail;
	/* A user's SSH keys are the authorized_keys command's alone. */
	if (policy_keys_path(cfg->authorized_keys_file, name, home, keys, sizeof(keys)) == 0 &&
	    (strcmp(keys, full) == 0 || strcmp(keys, wf->path) == 0)) {
		rc = err_set(why, whylen, ERR_AUTH,
			     "is %s's authorized_keys file, which only the authorized_keys "
			     "command writes",
			     name);
		goto fail;
	}
	return 0;
fail:
	policy_write_fini(w);
	return rc;
}

/* ---- acting as a user on this thread ---- */

int
policy_fs_enter(struct policy_fs *s, uid_t uid, gid_t gid, const char *name, char *why,
		size_t whylen)
{
	gid_t groups[POLICY_GROUPS_MAX];
	int n = POLICY_GROUPS_MAX;

	memset(s, 0, sizeof(*s));
	if (geteuid() != 0) {
		if (uid != geteuid())
			return err_set(why, whylen, ERR_AUTH,
				       "the agent does not run as root and cannot act as uid %ld",
				       (long)uid);
		return 0;
	}
	if (uid == 0)
		return 0; /* root acts as itself (allow_root); the group is set by fchown */
	if ((s->ngroups = getgroups((int)(sizeof(s->groups) / sizeof(s->groups[0])), s->groups)) <
	    0)
		return err_set(why, whylen, ERR_IO, "getgroups: %s", strerror(errno));
	if (name == NULL || getgrouplist(name, gid, groups, &n) == -1) {
		groups[0] = gid;
		n = 1;
	}
	/* The raw system calls change this thread only (glibc's setgroups changes every
	 * thread of the process). */
	if (syscall(SYS_setgroups, (size_t)n, groups) == -1)
		return err_set(why, whylen, ERR_IO, "setgroups: %s", strerror(errno));
	s->switched = 1;
	setfsgid(gid);
	setfsuid(uid);
	if ((uid_t)setfsuid((uid_t)-1) != uid || (gid_t)setfsgid((gid_t)-1) != gid) {
		policy_fs_leave(s);
		return err_set(why, whylen, ERR_IO, "could not act as uid %ld gid %ld", (long)uid,
			       (long)gid);
	}
	return 0;
}

void
policy_fs_leave(struct policy_fs *s)
{
	if (s == NULL || !s->switched)
		return;
	setfsuid(geteuid());
	setfsgid(getegid());
	syscall(SYS_setgroups, (size_t)s->ngroups, s->groups);
	s->switched = 0;
}

/* ---- nginx's configuration ---- */

/* One component of policy_trusted_path: pre, as kind. */
static int
policy_trusted_one(const char *pre, int k, int depth, char *why, size_t whylen)
{
	char target[PATH_MAX];
	struct stat st;

	if (lstat(pre, &st) == -1)
		return err_set(why, whylen, ERR_IO, "%s: %s", pre, strerror(errno));
	if (!policy_trusted_uid(st.st_uid))
		return err_set(why, whylen, ERR_AUTH, "%s belongs to uid %ld, not to root", pre,
			       (long)st.st_uid);
	if (S_ISLNK(st.st_mode)) {
		if (realpath(pre, target) == NULL)
			return err_set(why, whylen, ERR_IO, "%s: %s", pre, strerror(errno));
		return policy_trusted_path(target, k, depth + 1, why, whylen);
	}
	if (k == POLICY_FILE) {
		if (!S_ISREG(st.st_mode))
			return err_set(why, whylen, ERR_AUTH, "%s is not a regular file", pre);
		if ((st.st_mode & 022) != 0)
			return err_set(why, whylen, ERR_AUTH,
				       "%s is writable by its group or others (mode %04o)", pre,
				       (unsigned)(st.st_mode & 07777));
		return 0;
	}
	if (!S_ISDIR(st.st_mode))
		return err_set(why, whylen, ERR_AUTH, "%s is not a folder", pre);
	if ((st.st_mode & 022) != 0 &&
	    !(k == POLICY_DIR_PASS && st.st_uid == 0 && (st.st_mode & S_ISVTX) != 0))
		return err_set(why, whylen, ERR_AUTH,
			       "folder %s is writable by its group or others (mode %04o)", pre,
			       (unsigned)(st.st_mode & 07777));
	return 0;
}

/*
 * Checks path and everything it passes through: each folder and link root's (or the
 * agent's); no folder writable by group or others except a root-owned sticky one passed
 * through (such as /tmp); links checked again at their targets. kind says what the last
 * component must be: a file (regular, not group/other-writable), a folder that files are
 * read from (no sticky exception), or a folder passed through.
 */
static int
policy_trusted_path(const char *path, int kind, int depth, char *why, size_t whylen)
{
	char pre[PATH_MAX];
	size_t len;
	int rc;

	if (path == NULL || path[0] != '/' || (len = strlen(path)) >= sizeof(pre))
		return err_set(why, whylen, ERR_INVAL, "%s: not an absolute path",
			       path != NULL ? path : "(none)");
	if (depth > POLICY_LINKS_MAX)
		return err_set(why, whylen, ERR_INVAL, "%s: too many links", path);
	if ((rc = policy_trusted_one("/", len == 1 ? kind : POLICY_DIR_PASS, depth, why, whylen)) !=
	    0)
		return rc;
	for (size_t i = 1; i < len; i++) {
		size_t end = i, rest;

		if (path[i] == '/')
			continue;
		while (end < len && path[end] != '/')
			end++;
		for (rest = end; rest < len && path[rest] == '/'; rest++)
			;
		memcpy(pre, path, end);
		pre[end] = '\0';
		if ((rc = policy_trusted_one(pre, rest == len ? kind : POLICY_DIR_PASS, depth, why,
					     whylen)) != 0)
			return rc;
		i = end;
	}
	return 0;
}

struct policy_nginx_walk {
	char prefix[PATH_MAX];	    /* nginx -p, with a trailing '/' */
	char conf_prefix[PATH_MAX]; /* the main configuration's folder, with a trailing '/' */
	char main[PATH_MAX];
	size_t nfiles;
	int collect; /* 1: go on after a violation (to list folders); 0: stop at the first */
	int rc;	     /* the first violation */
	char *why;
	size_t whylen;
	size_t ndirs;
	char dirs[POLICY_NGINX_DIRS_MAX][PATH_MAX]; /* folders configuration is read from */
};

static void
policy_nginx_add_dir(struct policy_nginx_walk *nw, const char *path)
{
	char d[PATH_MAX], *slash;

	snprintf(d, sizeof(d), "%s", path);
	if ((slash = strrchr(d, '/')) == NULL)
		return;
	*(slash == d ? slash + 1 : slash) = '\0';
	for (size_t i = 0; i < nw->ndirs; i++)
		if (strcmp(nw->dirs[i], d) == 0)
			return;
	if (nw->ndirs < POLICY_NGINX_DIRS_MAX)
		memcpy(nw->dirs[nw->ndirs++], d, strlen(d) + 1);
}

/* Records a violation (the first one's text); returns non-zero when the walk must stop. */
static int policy_nginx_violation(struct policy_nginx_walk *nw, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
policy_nginx_violation(struct policy_nginx_walk *nw, int rc, const char *fmt, ...)
{
	va_list ap;

	if (nw->rc == 0) {
		nw->rc = rc;
		va_start(ap, fmt);
		vsnprintf(nw->why, nw->whylen, fmt, ap);
		va_end(ap);
	}
	return !nw->collect;
}

static int policy_nginx_file(struct policy_nginx_walk *nw, const char *path, int depth);

/* The path a directive names: absolute, or relative to base. */
static int
policy_nginx_full(const char *base, const char *arg, char *out, size_t outlen)
{
	if (snprintf(out, outlen, "%s%s", arg[0] == '/' ? "" : base, arg) >= (int)outlen)
		return -1;
	return 0;
}

/* include ARG: every file it names (a glob too), and the folder a glob reads. */
static int
policy_nginx_include(struct policy_nginx_walk *nw, const char *from, const char *arg, int depth)
{
	char full[PATH_MAX], stable[PATH_MAX], why[768];
	const char *glob_at;
	glob_t g;
	int rc;

	if (policy_nginx_full(nw->conf_prefix, arg, full, sizeof(full)) != 0)
		return policy_nginx_violation(nw, ERR_INVAL, "%s: include %s: too long", from, arg);
	if ((glob_at = strpbrk(full, "*?[")) == NULL)
		return policy_nginx_file(nw, full, depth + 1);
	/* The folder a glob lists must be root's: no one else may add a file to it. */
	memcpy(stable, full, (size_t)(glob_at - full));
	stable[glob_at - full] = '\0';
	if (strrchr(stable, '/') != NULL)
		*(strrchr(stable, '/') == stable ? stable + 1 : strrchr(stable, '/')) = '\0';
	if ((rc = policy_trusted_path(stable, POLICY_DIR_STRICT, 0, why, sizeof(why))) != 0 &&
	    policy_nginx_violation(nw, rc, "nginx configuration %s: include %s", from, why))
		return 1;
	memset(&g, 0, sizeof(g));
	rc = glob(full, 0, NULL, &g);
	if (rc != 0 && rc != GLOB_NOMATCH) {
		globfree(&g);
		return policy_nginx_violation(nw, ERR_IO, "%s: include %s: cannot list it", from,
					      arg);
	}
	for (size_t i = 0; rc == 0 && i < g.gl_pathc; i++)
		if (policy_nginx_file(nw, g.gl_pathv[i], depth + 1) != 0) {
			globfree(&g);
			return 1;
		}
	globfree(&g);
	return 0;
}

/* load_module ARG: the shared object nginx loads as root. */
static int
policy_nginx_module(struct policy_nginx_walk *nw, const char *from, const char *arg)
{
	char full[PATH_MAX], dir[PATH_MAX], why[768];
	int rc;

	if (policy_nginx_full(nw->prefix, arg, full, sizeof(full)) != 0)
		return policy_nginx_violation(nw, ERR_INVAL, "%s: load_module %s: too long", from,
					      arg);
	snprintf(dir, sizeof(dir), "%s", full);
	*(strrchr(dir, '/') == dir ? dir + 1 : strrchr(dir, '/')) = '\0';
	if ((rc = policy_trusted_path(dir, POLICY_DIR_STRICT, 0, why, sizeof(why))) != 0 ||
	    (rc = policy_trusted_path(full, POLICY_FILE, 0, why, sizeof(why))) != 0)
		return policy_nginx_violation(nw, rc, "nginx configuration %s: load_module %s",
					      from, why);
	return 0;
}

/* One directive's first two words: include and load_module are looked at. */
static int
policy_nginx_directive(struct policy_nginx_walk *nw, const char *from, char words[2][PATH_MAX],
		       size_t nwords, int depth)
{
	if (nwords == 2 && strcmp(words[0], "include") == 0)
		return policy_nginx_include(nw, from, words[1], depth);
	if (nwords == 2 && strcmp(words[0], "load_module") == 0)
		return policy_nginx_module(nw, from, words[1]);
	return 0;
}

/* nginx's tokens: words, "quoted" or 'quoted' with backslash escapes, # comments, ; { }. */
static int
policy_nginx_parse(struct policy_nginx_walk *nw, const char *from, const char *text, int depth)
{
	char words[2][PATH_MAX];
	size_t nwords = 0;
	const char *p = text;

	while (*p != '\0') {
		char quote = 0;
		size_t n = 0;

		if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
			p++;
			continue;
		}
		if (*p == '#') {
			while (*p != '\0' && *p != '\n')
				p++;
			continue;
		}
		if (*p == ';' || *p == '{' || *p == '}') {
			if (*p != '}' && nwords > 0 &&
			    policy_nginx_directive(nw, from, words, nwords, depth) != 0)
				return 1;
			nwords = 0;
			p++;
			continue;
		}
		if (*p == '"' || *p == '\'')
			quote = *p++;
		for (; *p != '\0'; p++) {
			char c = *p;

			if (quote ? c == quote
				  : (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ';' ||
				     c == '{' || c == '}'))
				break;
			if (c == '\\' && p[1] != '\0') {
				c = *++p;
				c = c == 't' ? '\t' : c == 'n' ? '\n' : c == 'r' ? '\r' : c;
			}
			if (nwords < 2 && n + 1 < PATH_MAX)
				words[nwords][n++] = c;
		}
		if (quote && *p == quote)
			p++;
		if (nwords < 2)
			words[nwords][n] = '\0';
		nwords++;
	}
	return 0;
}

/* One configuration file: root's alone, then its directives. */
static int
policy_nginx_file(struct policy_nginx_walk *nw, const char *path, int depth)
{
	char dir[PATH_MAX], real[PATH_MAX], why[768], *text = NULL;
	struct stat st;
	size_t len = 0;
	ssize_t r;
	int fd, rc;

	if (depth > POLICY_NGINX_DEPTH_MAX || ++nw->nfiles > POLICY_NGINX_FILES_MAX)
		return policy_nginx_violation(
		    nw, ERR_TOOBIG, "%s: includes nested too deep or too many files", path);
	policy_nginx_add_dir(nw, path);
	if (realpath(path, real) != NULL)
		policy_nginx_add_dir(nw, real);
	snprintf(dir, sizeof(dir), "%s", path);
	*(strrchr(dir, '/') == dir ? dir + 1 : strrchr(dir, '/')) = '\0';
	if ((rc = policy_trusted_path(dir, POLICY_DIR_STRICT, 0, why, sizeof(why))) != 0 ||
	    (rc = policy_trusted_path(path, POLICY_FILE, 0, why, sizeof(why))) != 0) {
		if (policy_nginx_violation(nw, rc, "nginx configuration %s", why) != 0)
			return 1;
	}
	/* Never blocks on a FIFO; reads only a regular file. */
	if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) == -1)
		return policy_nginx_violation(nw, ERR_IO, "nginx configuration %s: %s", path,
					      strerror(errno));
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) || st.st_size > POLICY_NGINX_FILE_MAX ||
	    (text = malloc((size_t)st.st_size + 1)) == NULL) {
		close(fd);
		return policy_nginx_violation(
		    nw, ERR_IO,
		    "nginx configuration %s: not a regular file of at most "
		    "1 MiB",
		    path);
	}
	while (
	    len < (size_t)st.st_size &&
	    ((r = read(fd, text + len, (size_t)st.st_size - len)) > 0 || (r < 0 && errno == EINTR)))
		len += r > 0 ? (size_t)r : 0;
	close(fd);
	text[len] = '\0';
	rc = policy_nginx_parse(nw, path, text, depth);
	free(text);
	return rc;
}

/* The prefix and main configuration nginx uses with the agent's settings. */
static int
policy_nginx_init(struct policy_nginx_walk *nw, const struct agent_config *cfg, int collect,
		  char *why, size_t whylen)
{
	const char *prefix = cfg->nginx_prefix != NULL && cfg->nginx_prefix[0] != '\0'
				 ? cfg->nginx_prefix
				 : POLICY_NGINX_PREFIX;
	const char *conf =
	    cfg->nginx_conf != NULL && cfg->nginx_conf[0] != '\0' ? cfg->nginx_conf : NULL;
	char *slash;

	memset(nw, 0, offsetof(struct policy_nginx_walk, dirs));
	nw->collect = collect;
	nw->why = why;
	nw->whylen = whylen;
	if (snprintf(nw->prefix, sizeof(nw->prefix), "%s%s", prefix,
		     prefix[strlen(prefix) - 1] == '/' ? "" : "/") >= (int)sizeof(nw->prefix) ||
	    snprintf(nw->main, sizeof(nw->main), "%s%s",
		     conf == NULL || conf[0] == '/' ? "" : nw->prefix,
		     conf != NULL ? conf : POLICY_NGINX_CONF) >= (int)sizeof(nw->main))
		return err_set(why, whylen, ERR_INVAL, "nginx configuration path too long");
	policy_normalise(nw->main);
	snprintf(nw->conf_prefix, sizeof(nw->conf_prefix), "%s", nw->main);
	slash = strrchr(nw->conf_prefix, '/');
	slash[1] = '\0';
	return 0;
}

int
policy_nginx_check(const struct agent_config *cfg, char *why, size_t whylen)
{
	struct policy_nginx_walk *nw = malloc(sizeof(*nw));
	int rc;

	if (nw == NULL)
		return err_set(why, whylen, ERR_NOMEM, "out of memory");
	if ((rc = policy_nginx_init(nw, cfg, 0, why, whylen)) == 0) {
		policy_nginx_file(nw, nw->main, 0);
		rc = nw->rc;
	}
	free(nw);
	return rc;
}

int
policy_nginx_tree(const struct agent_config *cfg, const char *path)
{
	const char *sites[2] = {cfg->nginx_sites_available, cfg->nginx_sites_enabled};
	struct policy_nginx_walk *nw = malloc(sizeof(*nw));
	char why[256], real[PATH_MAX];
	int in = 0;

	if (nw == NULL)
		return 1; /* cannot tell: treat it as inside */
	if (policy_nginx_init(nw, cfg, 1, why, sizeof(why)) != 0) {
		free(nw);
		return 1;
	}
	policy_nginx_add_dir(nw, nw->main);
	if (realpath(nw->main, real) != NULL)
		policy_nginx_add_dir(nw, real);
	policy_nginx_file(nw, nw->main, 0);
	for (size_t i = 0; !in && i < nw->ndirs; i++)
		in = policy_under(path, nw->dirs[i]);
	for (size_t i = 0; !in && i < 2; i++)
		in = sites[i] != NULL &&
		     (policy_under(path, sites[i]) ||
		      (realpath(sites[i], real) != NULL && policy_under(path, real)));
	free(nw);
	return in;
}
