/*
 * policy.h: the agent's root policy, in one place. Every command handler asks it before it
 * acts, and a privilege-separated root parent will ask the same functions: given a decoded
 * command and the configuration, allow or deny with a readable reason. docs/security.md
 * ("The agent's root policy") states the rules these functions enforce.
 */
#ifndef STOKE_AGENT_POLICY_H
#define STOKE_AGENT_POLICY_H

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

#include "stoke.pb-c.h"

struct agent_config;

/*
 * The verdict on a decoded command: 0 allowed; otherwise an ERR_* code (ERR_AUTH: a rule
 * refuses it; ERR_INVAL: a field is malformed; ERR_NOTFOUND: a user or group does not
 * exist; ERR_IO: a file the rule must look at cannot be read) and why says which rule, in
 * words a user can act on. Looks users and groups up; for nginx_site and service nginx it
 * also walks nginx's configuration (policy_nginx_check). What depends on the files a write
 * meets on its way is decided by policy_write_open, when the write happens. Blocks briefly
 * on the file system only.
 */
int policy_check(const struct agent_config *cfg, const Stoke__Command *cmd, char *why,
		 size_t whylen);

/* write_file, once allowed: the folder, pinned, and who the file is written as. */
struct policy_write {
	int dfd;	     /* the file's folder, opened without following another's link */
	char real[PATH_MAX]; /* that folder's real path */
	const char *base;    /* the file's name in it (points into the command's path) */
	uid_t uid;	     /* the file's owner: the write runs as this user */
	gid_t gid;	     /* the file's group */
	mode_t mode;	     /* the file's mode (never set-id unless allow_setuid) */
	int exists;	     /* the file exists (a regular file) and is replaced */
};

/*
 * Walks to the folder of wf->path from "/" one component at a time: each folder must be
 * owned by root or by the file's owner and writable by no one else (a root-owned folder
 * with the sticky bit, such as /tmp, may be passed through); a link is followed only when
 * root or the file's owner made it, and the walk then starts again at its target. The
 * folder's real path must lie under write_roots and outside nginx's configuration tree.
 * Decides the owner (named, else the existing file's, else the first non-root folder's on
 * the way, else root), group and mode, and refuses root-owned and set-id results as
 * policy_check does. On success w->dfd is open (policy_write_fini closes it); on failure it
 * is -1 and why says why. Call policy_check first.
 */
int policy_write_open(const struct agent_config *cfg, const Stoke__WriteFileCommand *wf,
		      struct policy_write *w, char *why, size_t whylen);
void policy_write_fini(struct policy_write *w);

/*
 * Acting on files as a user, on the calling thread only: its file-system uid and gid and
 * its supplementary groups become the user's (the kernel then checks what the user may
 * do), and policy_fs_leave puts the agent's back. An agent that is not root can act only
 * as itself. name is the user's name (for the group list), or NULL for none.
 */
struct policy_fs {
	int switched;
	int ngroups;
	gid_t groups[64]; /* the agent's own supplementary groups, put back on leave */
};
int policy_fs_enter(struct policy_fs *s, uid_t uid, gid_t gid, const char *name, char *why,
		    size_t whylen);
void policy_fs_leave(struct policy_fs *s);

/*
 * nginx runs as root (nginx -t, -s reload): everything its configuration makes it read as
 * code or configuration must be root's alone. Walks the main configuration (nginx_prefix,
 * nginx_conf) and every file its include directives name, recursively: each file and every
 * folder above it must be owned by root (or by the agent's own user when the agent is not
 * root) and writable by no one else; the same for the file of every load_module line.
 * 0 when so; otherwise ERR_AUTH (or ERR_IO) and why names the file and the rule.
 */
int policy_nginx_check(const struct agent_config *cfg, char *why, size_t whylen);

/*
 * 1 when path lies in nginx's configuration tree: the folder of the main configuration,
 * the sites folders, and the folders of the files it includes. Only nginx_site writes
 * there.
 */
int policy_nginx_tree(const struct agent_config *cfg, const char *path);

#endif
