/*
 * buf.h: bounded growable byte buffers. Every buffer has a maximum; appends past
 * it fail with ERR_TOOBIG and leave the buffer unchanged. Data is always kept
 * NUL-terminated (the NUL is not counted in len) so text can be used directly.
 */
#ifndef STOKE_BUF_H
#define STOKE_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char *data; /* NULL until the first append */
	size_t len;
	size_t cap;
	size_t max; /* maximum len; 0 means BUF_DEFAULT_MAX */
};

#define BUF_DEFAULT_MAX (16u * 1024 * 1024)

void buf_init(struct buf *b, size_t max);
void buf_fini(struct buf *b);
void buf_reset(struct buf *b); /* len = 0, keeps memory */
int buf_append(struct buf *b, const void *data, size_t len);
int buf_puts(struct buf *b, const char *s);
int buf_putc(struct buf *b, char c);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Moves the data out (caller frees); the buffer is left empty. Never NULL on success. */
char *buf_take(struct buf *b);

#endif
