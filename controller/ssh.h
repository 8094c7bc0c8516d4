/*
 * ssh.h: the controller's SSH client for bootstrapping servers (over libssh2; ssh.c is the
 * only file that includes libssh2.h): Ed25519 key pairs, connecting with a pinned host key,
 * waiting for SSH to come up, running commands with streamed output, atomic uploads.
 * A connection belongs to one thread at a time; every call that talks to the server blocks
 * the calling thread, bounded by the timeouts below and by the cancel callback.
 */
#ifndef STOKE_SSH_H
#define STOKE_SSH_H

#include <stddef.h>

/* "SHA256:" + 43 base64 characters + NUL fits. */
#define SSH_FP_MAX 64
/* Lines longer than this reach the line callback in pieces of this many bytes. */
#define SSH_LINE_MAX (64u * 1024)
/* Longest command line ssh_exec sends (after quoting). */
#define SSH_CMD_MAX (256u * 1024)

enum ssh_stream { SSH_STDOUT = 1, SSH_STDERR = 2 };

/* libssh2_init once; call from main before starting threads. 0 or ERR_INTERNAL. */
int ssh_global_init(void);

/*
 * A fresh Ed25519 key pair. *private_pem: the private key in OpenSSH format
 * ("-----BEGIN OPENSSH PRIVATE KEY-----", unencrypted; libssh2 and `ssh -i` both read it).
 * *public_line: the authorized_keys line "ssh-ed25519 AAAA... comment" (no newline; comment
 * may be NULL or empty, and must not contain control characters). Both malloc'd, the
 * caller's on success (wipe the private key with explicit_bzero before freeing it).
 */
int ssh_keygen_ed25519(const char *comment, char **private_pem, char **public_line, char *err,
		       size_t errlen);

struct ssh_conn;

struct ssh_opts {
	const char *host; /* name or address; resolved with getaddrinfo (blocking) */
	int port;	  /* 0 = 22 */
	const char *user;
	const char *private_pem; /* Ed25519 or ECDSA, OpenSSH or PKCS#8 PEM, unencrypted */
	/* "SHA256:..." as `ssh-keygen -lf` prints it, or NULL to accept the key seen (trust on
	 * first use: the caller stores what comes back in seen_fp and pins it next time). */
	const char *pinned_sha256;
	long connect_timeout_ms; /* TCP connect + handshake + login, per attempt; 0 = 15000 */
	/* Dead-peer detection once logged in: keepalives go out every io_timeout/3 and a
	 * server that sends nothing for io_timeout_ms is given up on; 0 = 60000. */
	long io_timeout_ms;
	/* Polled about every 100 ms while a call blocks (NULL = never cancelled); non-zero
	 * makes the call stop with ERR_CANCELLED. A job step passes a two-line adapter that
	 * returns job_cancelled(ctx), which also covers the job's time limit. */
	int (*cancel_cb)(void *arg);
	void *cancel_arg;
};

/*
 * Connects, checks the host key and logs in with the private key. The host key negotiated
 * is Ed25519 when the server has one (then ECDSA, then RSA), so a fingerprint taken from
 * /etc/ssh/ssh_host_ed25519_key.pub matches. seen_fp (may be NULL) receives the SHA256
 * fingerprint of the key the server presented, filled as soon as it is known, also when
 * the call then fails. A pinned key that differs fails with ERR_AUTH and
 * "host key mismatch: expected SHA256:x, got SHA256:y". A refused key is ERR_AUTH too;
 * network trouble ERR_IO; the time limit ERR_TIMEOUT. *out is the caller's on success.
 */
int ssh_connect(const struct ssh_opts *o, struct ssh_conn **out, char *seen_fp, size_t seenlen,
		char *err, size_t errlen);

/* Told about each failed attempt of ssh_wait (1, 2, ...) with its error text. */
typedef void (*ssh_progress_cb)(void *arg, int attempt, const char *why);

/*
 * ssh_connect again and again, with backoff (250 ms doubling to 5 s), until it works or
 * wait_ms have passed. Refused logins are retried too (cloud-init may not have installed
 * the key yet); a host key mismatch, a bad private key, bad options and cancellation are
 * not. Without a pin, the key of the attempt that logs in is the one returned in seen_fp.
 * Gives up with ERR_TIMEOUT and "gave up after N attempts in S s: <last error>".
 */
int ssh_wait(const struct ssh_opts *o, long wait_ms, ssh_progress_cb progress, void *arg,
	     struct ssh_conn **out, char *seen_fp, size_t seenlen, char *err, size_t errlen);

/* One line of output, without its '\n' (text[len] is a NUL; text may hold other bytes). */
typedef void (*ssh_line_cb)(void *arg, enum ssh_stream stream, const char *text, size_t len);

/*
 * Runs argv[0] with its arguments on the server. sshd always hands a command to the login
 * shell, so every argument is single-quoted (ssh_quote_argv) and arrives literally; the
 * login shell must be a POSIX one (sh, bash, dash). The command runs under a small
 * constant `sh -c` wrapper, in its own session (setsid), with stdin from /dev/null. Output
 * is streamed to line (may be NULL) as it arrives, stdout and stderr separately, each in
 * order. Returns 0 when the command ran to its end, with *exit_status its exit code, or
 * 128 + the signal number when a signal ended it. timeout_ms (0 = none) bounds the whole
 * call: ERR_TIMEOUT; a cancel gives ERR_CANCELLED. In both cases the wrapper sends SIGTERM
 * to the command's process group (as it does when the connection dies), what it still
 * prints is delivered, and the connection stays usable; a command that outlives
 * SIGTERM by 5 s costs the connection (later calls fail; reconnect).
 */
int ssh_exec(struct ssh_conn *c, const char *const *argv, ssh_line_cb line, void *arg,
	     long timeout_ms, int *exit_status, char *err, size_t errlen);

/*
 * Writes len bytes to the absolute remote path, atomically: SFTP to "<path>.tmp-<random>"
 * in the same folder, then `chmod MODE` and `mv -f` over it with one command (SFTP rename
 * cannot replace an existing file). The folder must exist. The temporary file is removed
 * when anything fails. mode is exact (the server's umask does not apply).
 */
int ssh_upload(struct ssh_conn *c, const char *path, const void *data, size_t len, int mode,
	       char *err, size_t errlen);

/* Disconnects (politely when the connection still works) and frees. NULL is a no-op. */
void ssh_close(struct ssh_conn *c);

/* The command line ssh_exec sends: each argument in single quotes, ' written as '\''.
 * malloc'd; NULL when argv is empty, out of memory, or longer than SSH_CMD_MAX. */
char *ssh_quote_argv(const char *const *argv);

#endif
