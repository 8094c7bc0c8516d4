/*
 * bench_jobs.c: jobs per second through the durable engine on a real SQLite file:
 * enqueue N jobs of one trivial step, run them with W workers until all are done;
 * also one job's enqueue-to-done latency on an idle engine. Prints figures.
 * Usage: bench_jobs [N] [WORKERS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jobs.h"
#include "log.h"
#include "store.h"
#include "timeutil.h"

static int
bench_noop(struct job_ctx *ctx, char *err, size_t errlen)
{
	(void)ctx;
	(void)err;
	(void)errlen;
	return 0;
}

static const struct job_step bench_steps[] = {{"noop", bench_noop, NULL, 0}};
static const struct job_type bench_type = {.name = "bench.noop", .steps = bench_steps, .nsteps = 1};

static int64_t
bench_count_done(struct store *s)
{
	return store_int(s, -1, "SELECT count(*) FROM jobs WHERE state = 'done'", "");
}

int
main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 2000;
	int workers = argc > 2 ? atoi(argv[2]) : 4;
	char dir[] = "/tmp/stoke-bench-jobs-XXXXXX", path[300], err[256], cmd[400];
	struct jobs_engine_opts o = {0};
	struct jobs_engine *e;
	struct store *s;
	int64_t t0, t1, t2, id, lat_sum = 0;
	int i;

	log_init("bench_jobs", LOG_LEVEL_ERROR);
	jobs_register(&bench_type);
	if (mkdtemp(dir) == NULL)
		return 1;
	snprintf(path, sizeof(path), "%s/stoke.db", dir);
	if (store_global_init(path, err, sizeof(err)) != 0) {
		fprintf(stderr, "bench_jobs: %s\n", err);
		return 1;
	}
	s = store_thread();

	t0 = time_mono_ms();
	store_begin(s);
	for (i = 0; i < n; i++)
		if (jobs_enqueue(s, "bench.noop", NULL, NULL, &id, err, sizeof(err)) != 0) {
			fprintf(stderr, "bench_jobs: %s\n", err);
			return 1;
		}
	store_commit(s);
	t1 = time_mono_ms();

	o.db_path = path;
	o.workers = workers;
	o.poll_ms = 20;
	if (jobs_start(&o, &e, err, sizeof(err)) != 0) {
		fprintf(stderr, "bench_jobs: %s\n", err);
		return 1;
	}
	while (bench_count_done(s) < n)
		time_sleep_ms(5);
	t2 = time_mono_ms();

	/* Latency of single jobs on an idle engine. */
	for (i = 0; i < 20; i++) {
		int64_t a = time_mono_ms(), target = n + i + 1;

		jobs_enqueue(s, "bench.noop", NULL, NULL, &id, err, sizeof(err));
		while (bench_count_done(s) < target)
			time_sleep_ms(1);
		lat_sum += time_mono_ms() - a;
	}
	jobs_stop(e);

	printf("bench_jobs: %d jobs, %d workers, SQLite WAL on %s\n", n, workers, dir);
	printf("  enqueue (one transaction): %8.0f jobs/s\n", n * 1000.0 / (t1 - t0 ? t1 - t0 : 1));
	printf("  claim+run+finish:          %8.0f jobs/s  (%lld ms for all)\n",
	       n * 1000.0 / (t2 - t1 ? t2 - t1 : 1), (long long)(t2 - t1));
	printf("  idle enqueue->done:        %8.1f ms mean over 20 (poll and wake-up included)\n",
	       lat_sum / 20.0);
	store_global_fini();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : 1;
}
