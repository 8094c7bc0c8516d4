/*
 * fuzz_config.c: libFuzzer target for configuration files: the input is a stoked.conf and
 * an agent.conf at once (a file in memory, read through its /proc path as the daemons read
 * theirs), parsed against each daemon's table of options.
 */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "agent_config.h"
#include "config.h"
#include "stoked_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct stoked_config sc;
	struct agent_config ac;
	char path[64], err[512];
	int fd;

	if (size > 65536 || (fd = memfd_create("fuzz.conf", 0)) < 0)
		return 0;
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return 0;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	memset(&sc, 0, sizeof(sc));
	if (config_defaults(stoked_config_opts, stoked_config_nopts, &sc, err, sizeof(err)) == 0)
		(void)config_parse_file(stoked_config_opts, stoked_config_nopts, &sc, path, err,
					sizeof(err));
	config_free(stoked_config_opts, stoked_config_nopts, &sc);
	memset(&ac, 0, sizeof(ac));
	if (config_defaults(agent_config_opts, agent_config_nopts, &ac, err, sizeof(err)) == 0)
		(void)config_parse_file(agent_config_opts, agent_config_nopts, &ac, path, err,
					sizeof(err));
	config_free(agent_config_opts, agent_config_nopts, &ac);
	close(fd);
	return 0;
}
