/*
 * fuzz_names.c: libFuzzer target for the name grammars every API field goes through
 * (servers, domains, branches, users, tags, repository URLs, labels): each must decide
 * without reading past the string, whatever the bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s, err[512];

	if (size > 8192 || (s = malloc(size + 1)) == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	(void)names_server(s, err, sizeof(err));
	(void)names_domain(s, 0, err, sizeof(err));
	(void)names_domain(s, 1, err, sizeof(err));
	(void)names_branch(s, err, sizeof(err));
	(void)names_user(s, err, sizeof(err));
	(void)names_tag(s, err, sizeof(err));
	(void)names_repo_url(s, err, sizeof(err));
	(void)names_label(s, err, sizeof(err));
	(void)names_ssh_key_type(s, size);
	free(s);
	return 0;
}
