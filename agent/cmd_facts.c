/*
 * cmd_facts.c: the facts command: hostname, OS, kernel, CPUs, memory, disk of /, load and
 * uptime, as a Stoke__Facts in the result. It changes nothing; the channel also calls it
 * for the facts sent with the first poll.
 */
#include "cmd.h"
#include "err.h"
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

/* PRETTY_NAME from an os-release file, unquoted; malloc'd, or NULL. */
static char *
cmd_facts_os(const char *path)
{
	char line[512], *v = NULL, *p;
	FILE *f;

	if ((f = fopen(path, "re")) == NULL)
		return NULL;
	while (fgets(line, sizeof(line), f) != NULL) {
		size_t n;

		if (strncmp(line, "PRETTY_NAME=", 12) != 0)
			continue;
		p = line + 12;
		n = strcspn(p, "\r\n");
		p[n] = '\0';
		if (n >= 2 && (p[0] == '"' || p[0] == '\'') && p[n - 1] == p[0]) {
			p[n - 1] = '\0';
			p++;
		}
		v = strdup(p);
		break;
	}
	fclose(f);
	return v;
}

void
cmd_facts(struct cmd_ctx *ctx, const Stoke__Command *cmd, struct cmd_result *res)
{
	Stoke__Facts *f;
	struct utsname un;
	struct sysinfo si;
	struct statvfs vfs;
	char host[256];
	long cpus;

	/* The channel also calls it with ctx and cmd NULL for the facts of its hello. The
	 * policy allows it always (read-only); asked all the same, as every handler does. */
	if (ctx != NULL && cmd != NULL &&
	    policy_check(ctx->cfg, cmd, res->error, sizeof(res->error)) != 0)
		return;
	if ((f = malloc(sizeof(*f))) == NULL) {
		err_set(res->error, sizeof(res->error), ERR_NOMEM, "facts: out of memory");
		return;
	}
	stoke__facts__init(f);
	if (gethostname(host, sizeof(host)) == 0) {
		host[sizeof(host) - 1] = '\0';
		f->hostname = strdup(host);
	}
	if ((f->os = cmd_facts_os("/etc/os-release")) == NULL)
		f->os = cmd_facts_os("/usr/lib/os-release");
	if (uname(&un) == 0) {
		char k[sizeof(un.sysname) + sizeof(un.release) + sizeof(un.machine) + 4];

		snprintf(k, sizeof(k), "%s %s %s", un.sysname, un.release, un.machine);
		f->kernel = strdup(k);
	}
	cpus = sysconf(_SC_NPROCESSORS_ONLN);
	f->cpus = cpus > 0 ? (uint32_t)cpus : 0;
	if (sysinfo(&si) == 0) {
		f->memory_bytes = (uint64_t)si.totalram * si.mem_unit;
		f->load1 = (double)si.loads[0] / (double)(1 << SI_LOAD_SHIFT);
		f->uptime_s = si.uptime > 0 ? (uint64_t)si.uptime : 0;
	}
	if (statvfs("/", &vfs) == 0) {
		f->disk_bytes = (uint64_t)vfs.f_blocks * vfs.f_frsize;
		f->disk_free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	}
	/* A failed strdup leaves NULL; the message wants the empty default. */
	if (f->hostname == NULL)
		f->hostname = (char *)protobuf_c_empty_string;
	if (f->os == NULL)
		f->os = (char *)protobuf_c_empty_string;
	if (f->kernel == NULL)
		f->kernel = (char *)protobuf_c_empty_string;
	if (res->facts != NULL)
		stoke__facts__free_unpacked(res->facts, NULL);
	res->facts = f;
	res->exit_code = 0;
}
