/*
 * stoked_testjobs.c: stoked with test-only job types, for the crash/resume and CLI
 * tests; never installed. `stoked-testjobs enqueue [--data-dir DIR] TYPE [JSON]`
 * queues a job and prints its id; anything else runs stoked as usual.
 *
 * test.steps: five steps; payload {"dir": D, "sleep_ms": M, "fail_at": I, "fail_times": T,
 * "undo_fail_at": U}. Each run appends "run I attempt A" to D/runs.log and, once only,
 * "step I" to D/effects.log (idempotent); undo appends "undo I". fail_at fails step I on the
 * first T attempts (T = 0: always).
 * test.once: like test.steps with three steps, the second marked `once`.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "err.h"
#include "jobs.h"
#include "stoked.h"
#include "store.h"
#include "timeutil.h"

static int
testjobs_append(const char *dir, const char *file, const char *line)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	if ((f = fopen(path, "a")) == NULL)
		return -1;
	fprintf(f, "%s\n", line);
	fflush(f);
	fsync(fileno(f));
	fclose(f);
	return 0;
}

static int
testjobs_has(const char *dir, const char *file, const char *line)
{
	char path[4096], buf[256];
	FILE *f;
	int found = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	if ((f = fopen(path, "r")) == NULL)
		return 0;
	while (!found && fgets(buf, sizeof(buf), f)) {
		buf[strcspn(buf, "\n")] = '\0';
		found = strcmp(buf, line) == 0;
	}
	fclose(f);
	return found;
}

static int
testjobs_step(struct job_ctx *ctx, int idx, char *err, size_t errlen)
{
	json_t *p = json_loads(job_payload(ctx), 0, NULL);
	const char *dir = json_string_value(json_object_get(p, "dir"));
	long sleep_ms = (long)json_integer_value(json_object_get(p, "sleep_ms"));
	json_t *fa = json_object_get(p, "fail_at");
	int fail_times = (int)json_integer_value(json_object_get(p, "fail_times"));
	char line[64];
	long slept;
	int rc = 0;

	if (dir == NULL) {
		rc = err_set(err, errlen, ERR_INVAL, "payload needs dir");
		goto out;
	}
	snprintf(line, sizeof(line), "run %d attempt %d", idx, job_attempt(ctx));
	testjobs_append(dir, "runs.log", line);
	job_progress(ctx, idx * 20 + 10, "step %d working", idx);
	for (slept = 0; slept < sleep_ms; slept += 20) {
		if (job_cancelled(ctx)) {
			rc = err_set(err, errlen, ERR_CANCELLED, "cancelled in step %d", idx);
			goto out;
		}
		time_sleep_ms(20);
	}
	if (json_is_integer(fa) && json_integer_value(fa) == idx &&
	    (fail_times == 0 || job_attempt(ctx) <= fail_times)) {
		rc = err_set(err, errlen, ERR_IO, "step %d failed on purpose", idx);
		goto out;
	}
	snprintf(line, sizeof(line), "step %d", idx);
	if (!testjobs_has(dir, "effects.log", line))
		testjobs_append(dir, "effects.log", line);
out:
	json_decref(p);
	return rc;
}

static int
testjobs_undo(struct job_ctx *ctx, int idx, char *err, size_t errlen)
{
	json_t *p = json_loads(job_payload(ctx), 0, NULL);
	const char *dir = json_string_value(json_object_get(p, "dir"));
	json_t *uf = json_object_get(p, "undo_fail_at");
	char line[64];
	int rc = 0;

	if (dir) {
		snprintf(line, sizeof(line), "undo %d", idx);
		testjobs_append(dir, "runs.log", line);
	}
	if (json_is_integer(uf) && json_integer_value(uf) == idx)
		rc = err_set(err, errlen, ERR_IO, "undo %d failed on purpose", idx);
	json_decref(p);
	return rc;
}

#define TESTJOBS_STEP(n)                                                                           \
	static int testjobs_run##n(struct job_ctx *c, char *e, size_t l)                           \
	{                                                                                          \
		return testjobs_step(c, n, e, l);                                                  \
	}                                                                                          \
	static int testjobs_undo##n(struct job_ctx *c, char *e, size_t l)                          \
	{                                                                                          \
		return testjobs_undo(c, n, e, l);                                                  \
	}
TESTJOBS_STEP(0)
TESTJOBS_STEP(1)
TESTJOBS_STEP(2)
TESTJOBS_STEP(3)
TESTJOBS_STEP(4)

static const struct job_step testjobs_steps[] = {
    {"zero", testjobs_run0, testjobs_undo0, 0}, {"one", testjobs_run1, testjobs_undo1, 0},
    {"two", testjobs_run2, testjobs_undo2, 0},	{"three", testjobs_run3, testjobs_undo3, 0},
    {"four", testjobs_run4, testjobs_undo4, 0},
};
static const struct job_type testjobs_type_steps = {
    .name = "test.steps",
    .steps = testjobs_steps,
    .nsteps = 5,
    .timeout_ms = 60000,
    .max_attempts = 3,
    .backoff_ms = 200,
    .backoff_max_ms = 2000,
    .rollback = 1,
};

static const struct job_step testjobs_once_steps[] = {
    {"prepare", testjobs_run0, testjobs_undo0, 0},
    {"charge", testjobs_run1, testjobs_undo1, 1},
    {"finish", testjobs_run2, testjobs_undo2, 0},
};
static const struct job_type testjobs_type_once = {
    .name = "test.once",
    .steps = testjobs_once_steps,
    .nsteps = 3,
    .timeout_ms = 60000,
    .max_attempts = 3,
    .backoff_ms = 200,
    .rollback = 0,
};

static int
testjobs_enqueue(int argc, char **argv)
{
	char err[512];
	int64_t id;
	int i, n = 0;
	char *args[16], *type = NULL, *payload = NULL;

	/* Split positional arguments from the options stoked understands. */
	args[n++] = argv[0];
	for (i = 1; i < argc && n < 14; i++) {
		if (strncmp(argv[i], "--", 2) == 0 || strcmp(argv[i], "-c") == 0) {
			args[n++] = argv[i];
			if (strchr(argv[i], '=') == NULL && i + 1 < argc)
				args[n++] = argv[++i];
		} else if (type == NULL)
			type = argv[i];
		else if (payload == NULL)
			payload = argv[i];
	}
	args[n] = NULL;
	if (type == NULL) {
		fprintf(stderr, "usage: stoked-testjobs enqueue [--data-dir DIR] TYPE [JSON]\n");
		return 2;
	}
	if (stoked_open_store(n, args, NULL) != 0)
		return 1;
	if (jobs_enqueue(store_thread(), type, payload, NULL, &id, err, sizeof(err)) != 0) {
		fprintf(stderr, "stoked-testjobs: %s\n", err);
		return 1;
	}
	printf("%lld\n", (long long)id);
	store_global_fini();
	return 0;
}

int
main(int argc, char **argv)
{
	jobs_register(&testjobs_type_steps);
	jobs_register(&testjobs_type_once);
	if (argc > 1 && strcmp(argv[1], "enqueue") == 0)
		return testjobs_enqueue(argc - 1, argv + 1);
	return stoked_main(argc, argv);
}
