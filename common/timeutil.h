/* timeutil.h: wall-clock and monotonic milliseconds, ISO 8601 formatting. */
#ifndef STOKE_TIMEUTIL_H
#define STOKE_TIMEUTIL_H

#include <stdint.h>
#include <time.h>

int64_t time_now_ms(void);  /* CLOCK_REALTIME, epoch ms */
int64_t time_mono_ms(void); /* CLOCK_MONOTONIC ms */
void time_sleep_ms(long ms);
/* *ts = now on clock (CLOCK_REALTIME, CLOCK_MONOTONIC) + ms: a deadline for
 * pthread_cond_timedwait (whose condition variable uses that clock). */
void time_deadline(clockid_t clock, long ms, struct timespec *ts);
/* "2026-11-22T18:40:00.123Z" into out (>= 32 bytes). */
void time_iso(int64_t epoch_ms, char out[32]);

#endif
