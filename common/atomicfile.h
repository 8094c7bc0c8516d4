/*
 * atomicfile.h: write a whole file atomically: temp file in the same folder,
 * write, fchown/fchmod, fsync, rename over the target, fsync the folder.
 * On failure the temp file is removed and the target is unchanged. Blocks on disk I/O.
 */
#ifndef STOKE_ATOMICFILE_H
#define STOKE_ATOMICFILE_H

#include <stddef.h>
#include <sys/types.h>

/* uid/gid (uid_t)-1 / (gid_t)-1 leave ownership as created. */
int atomicfile_write(const char *path, const void *data, size_t len, mode_t mode, uid_t uid,
		     gid_t gid, char *err, size_t errlen);
/* Reads a whole file of at most max bytes into *out (NUL-terminated, caller frees). */
int atomicfile_read(const char *path, size_t max, char **out, size_t *outlen, char *err,
		    size_t errlen);

#endif
