/*
 * sshkey.h: OpenSSH public keys as users paste them: one line "type base64 [comment]",
 * checked strictly (type allowed, blob well formed and of the same type, RSA at least 2048
 * bits, a sane comment) and fingerprinted as `ssh-keygen -lf` prints it. Pure: no I/O.
 */
#ifndef STOKE_SSHKEY_H
#define STOKE_SSHKEY_H

#include <stddef.h>

#define SSHKEY_INPUT_MAX 16384
#define SSHKEY_COMMENT_MAX 256
#define SSHKEY_RSA_MIN_BITS 2048
#define SSHKEY_RSA_MAX_BITS 16384
/* "SHA256:" + 43 base64 characters + NUL */
#define SSHKEY_FP_LEN 51

struct sshkey {
	char type[48];			 /* "ssh-ed25519", "ecdsa-sha2-nistp256", ... */
	const char *label;		 /* what ssh-keygen -l shows in brackets: "ED25519" */
	int bits;			 /* as ssh-keygen -l: 256, 384, 521, RSA modulus bits */
	char fingerprint[SSHKEY_FP_LEN]; /* "SHA256:..." without padding */
	char *comment;			 /* "" when none */
	char *line;			 /* normalised "type base64[ comment]" */
};

/*
 * Parses text (what a user pasted or a .pub file: one key, one trailing newline allowed)
 * into *out (free with sshkey_free). On refusal returns ERR_INVAL with the reason in err
 * ("DSA keys are refused: ...", "this is a private key: ...", ...); nothing is allocated.
 */
int sshkey_parse(const char *text, struct sshkey **out, char *err, size_t errlen);
void sshkey_free(struct sshkey *k);

#endif
