/*
 * render_authorized_keys.h: authorized_keys text with its Stoke block set to exactly a list
 * of keys and every other line kept; key line checks and ssh-keygen style fingerprints.
 * Pure: touches no file (cmd_authorized_keys.c does).
 */
#ifndef STOKE_AGENT_RENDER_AUTHORIZED_KEYS_H
#define STOKE_AGENT_RENDER_AUTHORIZED_KEYS_H

#include <stddef.h>

#define RENDER_AUTHORIZED_KEYS_BEGIN "# BEGIN stoke managed keys"
#define RENDER_AUTHORIZED_KEYS_END "# END stoke managed keys"
#define RENDER_AUTHORIZED_KEYS_MAX_KEYS 1000
#define RENDER_AUTHORIZED_KEYS_LINE_MAX 16384
/* "SHA256:" + 43 base64 characters + NUL */
#define RENDER_AUTHORIZED_KEYS_FP_LEN 51

/* Checks one public key line: "type base64 [comment]" on a single line, a known type, no
 * options prefix, a key blob that decodes and names the same type. */
int render_authorized_keys_check(const char *line, char *err, size_t errlen);

/* "SHA256:<base64 without padding>" of the key blob, as ssh-keygen -l prints it. The line
 * must pass render_authorized_keys_check. out holds RENDER_AUTHORIZED_KEYS_FP_LEN bytes. */
int render_authorized_keys_fingerprint(const char *line, char out[RENDER_AUTHORIZED_KEYS_FP_LEN],
				       char *err, size_t errlen);

struct render_authorized_keys {
	char *text;	/* the new file text (malloc'd) */
	char **outside; /* lines outside the block that are not blank or comments, as found */
	size_t noutside;
};

/*
 * Renders the new text from the current one (NULL or "" when there is no file): the
 * block replaced by exactly keys (each checked; an empty list leaves an empty block),
 * or appended when absent. A current text with a broken block (BEGIN without END, END
 * first, two blocks) is refused rather than guessed at. On success the caller frees
 * out with render_authorized_keys_fini; on failure out holds nothing.
 */
int render_authorized_keys(const char *current, const char *const *keys, size_t nkeys,
			   struct render_authorized_keys *out, char *err, size_t errlen);
void render_authorized_keys_fini(struct render_authorized_keys *r);

/* What a file holds, for drift reports: the Stoke block's entries and the other key
 * lines, as found. A broken block is reported (broken != "") rather than refused. */
struct render_authorized_keys_scan {
	int block; /* 1 when a whole block was found */
	char broken[256];
	char **managed; /* entries inside the block */
	size_t nmanaged;
	char **outside; /* entries outside it (not blank, not comments) */
	size_t noutside;
};

int render_authorized_keys_scan(const char *current, struct render_authorized_keys_scan *out,
				char *err, size_t errlen);
void render_authorized_keys_scan_fini(struct render_authorized_keys_scan *sc);

#endif
