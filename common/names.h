/*
 * names.h: strict grammars for names that come from users or the network.
 * Used at the API edge and again on the agent. Each returns 0 when valid, or
 * ERR_INVAL with a message saying what is wrong (the message does not repeat
 * the field name; callers prefix it, e.g. "name: must start with a letter").
 */
#ifndef STOKE_NAMES_H
#define STOKE_NAMES_H

#include <stddef.h>

/* Server name: 1-63 chars, [a-z0-9-], starts with a letter or digit, no trailing '-' (a DNS label).
 */
int names_server(const char *s, char *err, size_t errlen);
/* Domain: lower-case DNS name, 1-253 chars, at least two labels, labels 1-63 [a-z0-9-] not
 * starting/ending with '-', last label alphabetic; a leading "*." wildcard is allowed only when
 * allow_wildcard is non-zero. */
int names_domain(const char *s, int allow_wildcard, char *err, size_t errlen);
/* Git branch: the rules of git check-ref-format for a branch name, at most 200 chars,
 * no leading '-'. */
int names_branch(const char *s, char *err, size_t errlen);
/* Unix user name: [a-z_][a-z0-9_-]{0,31}, not ending in '-'. */
int names_user(const char *s, char *err, size_t errlen);
/* Tag: 1-63 chars [a-z0-9_.-], starts with a letter or digit. */
int names_tag(const char *s, char *err, size_t errlen);
/* Repository URL: https://host/path, ssh://[user@]host[:port]/path, user@host:path (scp form),
 * or an absolute file path (/...). No spaces, no control characters, no leading '-', <= 1024. */
int names_repo_url(const char *s, char *err, size_t errlen);
/* 1 when the n bytes at t name a public key type Stoke accepts (ssh-ed25519, ssh-rsa,
 * ecdsa-sha2-nistp256/384/521, sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@...). */
int names_ssh_key_type(const char *t, size_t n);
/* known_hosts text for an SSH repository, as ssh-keyscan prints it: lines of
 * "[@marker] HOSTS KEYTYPE BASE64 [comment]", comments and blank lines; printable ASCII,
 * at least one key, at most NAMES_KNOWN_HOSTS_MAX bytes. */
#define NAMES_KNOWN_HOSTS_MAX (64 * 1024)
int names_known_hosts(const char *s, char *err, size_t errlen);
/* Generic label for display names (keys, tokens): 1-100 printable chars, no control chars. */
int names_label(const char *s, char *err, size_t errlen);

#endif
