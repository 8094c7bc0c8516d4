/*
 * config.h: table-driven config file parser. A file is lines of "key value"
 * (or "key = value"); '#' starts a comment; values may be double-quoted.
 * Each program describes its options as rows (name, type, default, offset,
 * validator). Unknown keys and bad values are errors naming file:line.
 */
#ifndef STOKE_CONFIG_H
#define STOKE_CONFIG_H

#include <stddef.h>

enum config_type {
	CONFIG_STRING,	 /* char * (malloc'd, freed by config_free) */
	CONFIG_INT,	 /* long; min/max enforced */
	CONFIG_BOOL,	 /* int: yes/no/true/false/on/off/1/0 */
	CONFIG_HOSTPORT, /* char * "host:port" with port 0..65535 */
	CONFIG_DURATION, /* long milliseconds: "30s", "5m", "250ms", "2h", bare number = seconds */
};

struct config_opt {
	const char *name;
	enum config_type type;
	size_t offset;	 /* offsetof() into the caller's struct */
	const char *def; /* default as text, parsed like a file value; NULL = none */
	long min, max;	 /* CONFIG_INT / CONFIG_DURATION bounds (ignored when min == max) */
	/* Optional extra check; returns 0 or fills err. */
	int (*validate)(const char *value, char *err, size_t errlen);
	const char *help; /* one line for docs */
};

/* Sets every option to its default. */
int config_defaults(const struct config_opt *opts, size_t nopts, void *base, char *err,
		    size_t errlen);
/* Parses a file over the current values. Error text: "FILE:LINE: message". */
int config_parse_file(const struct config_opt *opts, size_t nopts, void *base, const char *path,
		      char *err, size_t errlen);
/* Sets one option from text (used for command-line overrides); origin names it in errors. */
int config_set(const struct config_opt *opts, size_t nopts, void *base, const char *name,
	       const char *value, const char *origin, char *err, size_t errlen);
/* Frees the strings the parser allocated. */
void config_free(const struct config_opt *opts, size_t nopts, void *base);

#endif
