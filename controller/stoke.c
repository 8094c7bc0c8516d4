/*
 * stoke.c: main of `stoke`, the command-line client of the REST API: global options,
 * configuration (flags, then STOKE_URL / STOKE_TOKEN, then ~/.config/stoke/config), the
 * table of command families, their argument parsing, `stoke help` and `stoke --version`.
 * The commands themselves live in cli_<family>.c; it never talks HTTP itself.
 */
#include "cli.h"
#include "err.h"
#include "http_client.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef STOKE_VERSION
#define STOKE_VERSION "0"
#endif

#define STOKE_CONFIG_MAX (64 * 1024)
#define STOKE_CONFIG_HINT "~/.config/stoke/config"

/* The dispatch table: every command family, in the order help lists them. */
static const struct cli_family *const stoke_families[] = {
    &cli_server_family, &cli_job_family, &cli_token_family, &cli_site_family,
    &cli_deploy_family, &cli_key_family, &cli_run_family,   &cli_batch_family,
};
#define STOKE_NFAMILIES (sizeof(stoke_families) / sizeof(stoke_families[0]))

/* Global options: taken before the command and by every command. */
struct stoke_opts {
	const char *url;
	const char *token;
	int json;
	int help;
};

/* "deploy list", or "deploy" for the family's default command (named ""). */
static const char *
stoke_cmd_name(const struct cli_family *fam, const struct cli_cmd *cmd, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s%s%s", fam->name, cmd->name[0] != '\0' ? " " : "", cmd->name);
	return out;
}

/* "  usage   help", the help on a line of its own below a long usage. */
static void
stoke_usage_row(FILE *f, const char *usage, const char *help)
{
	if (strlen(usage) > 38)
		fprintf(f, "  %s\n  %-38s %s\n", usage, "", help);
	else
		fprintf(f, "  %-38s %s\n", usage, help);
}

static void
stoke_usage(FILE *f)
{
	size_t i, j;
	char line[256], name[64];

	fprintf(f, "usage: stoke [--url URL] [--token TOKEN] [--json] COMMAND [ARGS]\n\n"
		   "Commands:\n");
	for (i = 0; i < STOKE_NFAMILIES; i++) {
		const struct cli_family *fam = stoke_families[i];

		for (j = 0; j < fam->ncmds; j++) {
			snprintf(line, sizeof(line), "%s %s",
				 stoke_cmd_name(fam, &fam->cmds[j], name, sizeof(name)),
				 fam->cmds[j].usage);
			stoke_usage_row(f, line, fam->cmds[j].help);
		}
	}
	fprintf(f, "  %-38s %s\n", "help [COMMAND]", "this help, or a command's");
	fprintf(f, "  %-38s %s\n", "version", "the client's version");
	fprintf(
	    f,
	    "\nOptions (before or after the command):\n"
	    "  --url URL       the API, e.g. http://127.0.0.1:8080 (else STOKE_URL, else url in "
	    "%s)\n"
	    "  --token TOKEN   the API token (else STOKE_TOKEN, else token in %s)\n"
	    "  --json          print the API's JSON instead of tables\n"
	    "  --help          help; --version: the client's version\n"
	    "\nExit status: 0 done, 1 the API or the operation failed, 2 usage or "
	    "configuration error.\n",
	    STOKE_CONFIG_HINT, STOKE_CONFIG_HINT);
}

static void
stoke_family_usage(const struct cli_family *fam, FILE *f)
{
	size_t j;
	char line[256], name[64];

	fprintf(f, "usage: stoke %s COMMAND [ARGS] (%s)\n\nCommands:\n", fam->name, fam->help);
	for (j = 0; j < fam->ncmds; j++) {
		snprintf(line, sizeof(line), "%s %s",
			 stoke_cmd_name(fam, &fam->cmds[j], name, sizeof(name)),
			 fam->cmds[j].usage);
		stoke_usage_row(f, line, fam->cmds[j].help);
	}
	fprintf(f, "\nEvery command also takes --json, --url URL and --token TOKEN.\n");
}

static void
stoke_cmd_usage(const struct cli_family *fam, const struct cli_cmd *cmd, FILE *f)
{
	char name[64];

	fprintf(f, "usage: stoke %s %s\n  %s\n", stoke_cmd_name(fam, cmd, name, sizeof(name)),
		cmd->usage, cmd->help);
}

static const struct cli_family *
stoke_find_family(const char *name)
{
	size_t i;

	for (i = 0; i < STOKE_NFAMILIES; i++)
		if (strcmp(stoke_families[i]->name, name) == 0)
			return stoke_families[i];
	return NULL;
}

static const struct cli_cmd *
stoke_find_cmd(const struct cli_family *fam, const char *name)
{
	size_t j;

	for (j = 0; j < fam->ncmds; j++)
		if (strcmp(fam->cmds[j].name, name) == 0)
			return &fam->cmds[j];
	return NULL;
}

const char *
cli_args_get(const struct cli_args *a, const char *name)
{
	int i;

	for (i = a->nopt - 1; i >= 0; i--)
		if (strcmp(a->opt_name[i], name) == 0)
			return a->opt_val[i];
	return NULL;
}

/*
 * Looks name (n bytes) up in a spec "tag= state= wait". Returns 1 for an option taking a
 * value, 0 for a flag, -1 when it is not there; *canon points at the name in the spec.
 */
static int
stoke_spec_find(const char *spec, const char *name, size_t n, const char **canon)
{
	const char *p = spec;

	while (p != NULL && *p != '\0') {
		size_t len = strcspn(p, " ");
		size_t nlen = len > 0 && p[len - 1] == '=' ? len - 1 : len;

		if (nlen == n && strncmp(p, name, n) == 0) {
			*canon = p;
			return nlen != len;
		}
		p += len;
		p += strspn(p, " ");
	}
	return -1;
}

/*
 * One option at argv[*i] ("--name", "--name=value" or "--name value"). Global options go
 * into g; the command's (spec) into a. Returns 0 or CLI_EXIT_USAGE.
 */
static int
stoke_parse_opt(int argc, char **argv, int *i, const char *spec, struct stoke_opts *g,
		struct cli_args *a, char *names, size_t nameslen)
{
	const char *arg = argv[*i], *name, *eq, *val = NULL, *canon;
	size_t n;
	int takes;

	if (strcmp(arg, "-h") == 0) {
		g->help = 1;
		return 0;
	}
	if (strncmp(arg, "--", 2) != 0)
		return cli_usage_error("unknown option '%s'", arg);
	name = arg + 2;
	eq = strchr(name, '=');
	n = eq != NULL ? (size_t)(eq - name) : strlen(name);
	if (eq != NULL)
		val = eq + 1;
	if (n == 4 && strncmp(name, "json", 4) == 0) {
		if (val != NULL)
			return cli_usage_error("option '--json' takes no value");
		g->json = 1;
		return 0;
	}
	if (n == 4 && strncmp(name, "help", 4) == 0) {
		g->help = 1;
		return 0;
	}
	if ((n == 3 && strncmp(name, "url", 3) == 0) ||
	    (n == 5 && strncmp(name, "token", 5) == 0)) {
		if (val == NULL) {
			if (*i + 1 >= argc)
				return cli_usage_error("option '--%.*s' needs a value", (int)n,
						       name);
			val = argv[++*i];
		}
		if (n == 3)
			g->url = val;
		else
			g->token = val;
		return 0;
	}
	takes = spec != NULL ? stoke_spec_find(spec, name, n, &canon) : -1;
	if (takes < 0)
		return cli_usage_error("unknown option '--%.*s'", (int)n, name);
	if (takes == 0 && val != NULL)
		return cli_usage_error("option '--%.*s' takes no value", (int)n, name);
	if (takes == 1 && val == NULL) {
		if (*i + 1 >= argc)
			return cli_usage_error("option '--%.*s' needs a value", (int)n, name);
		val = argv[++*i];
	}
	if (a->nopt >= CLI_MAX_ARGS || n + 1 > nameslen)
		return cli_usage_error("too many options");
	/* Keep a NUL-terminated copy of the name (the spec's is not terminated). */
	memcpy(names, canon, n);
	names[n] = '\0';
	a->opt_name[a->nopt] = names;
	a->opt_val[a->nopt] = val != NULL ? val : "";
	a->nopt++;
	return 0;
}

/* "stoke: <message>" for a configuration problem. Returns CLI_EXIT_USAGE. */
static int __attribute__((format(printf, 1, 2))) stoke_config_error(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cli_error("%s", msg);
	return CLI_EXIT_USAGE;
}

/* Strips surrounding blanks (in place) and returns the start. */
static char *
stoke_trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

/*
 * Reads url and token from the config file into *url / *token (malloc'd) where they are
 * still NULL. A missing file is no error; one that group or others may read is refused,
 * since it holds a token. Returns 0 or CLI_EXIT_USAGE.
 */
static int
stoke_read_config(char **url, char **token)
{
	const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	char path[4096], *text = NULL, *line, *next, *key, *val;
	struct stat st;
	ssize_t n;
	size_t len = 0;
	int fd = -1, lineno = 0, ret;

	if (xdg != NULL && xdg[0] == '/')
		snprintf(path, sizeof(path), "%s/stoke/config", xdg);
	else if (home != NULL && home[0] != '\0')
		snprintf(path, sizeof(path), "%s/.config/stoke/config", home);
	else
		return 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		return stoke_config_error("%s: %s", path, strerror(errno));
	}
	if (fstat(fd, &st) == -1) {
		ret = stoke_config_error("%s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = stoke_config_error("%s: not a regular file", path);
		goto out;
	}
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
		ret = stoke_config_error(
		    "%s holds a token but group or others may read it (mode %04o); "
		    "refusing to use it: run chmod 600 %s",
		    path, (unsigned)(st.st_mode & 07777), path);
		goto out;
	}
	if (st.st_size > STOKE_CONFIG_MAX) {
		ret = stoke_config_error("%s: over %d bytes", path, STOKE_CONFIG_MAX);
		goto out;
	}
	if ((text = malloc((size_t)st.st_size + 1)) == NULL) {
		ret = cli_error("out of memory");
		goto out;
	}
	while (len < (size_t)st.st_size &&
	       (n = read(fd, text + len, (size_t)st.st_size - len)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = stoke_config_error("%s: %s", path, strerror(errno));
			goto out;
		}
		len += (size_t)n;
	}
	text[len] = '\0';
	for (line = text; line != NULL; line = next) {
		char **dst;

		lineno++;
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		line = stoke_trim(line);
		if (line[0] == '\0' || line[0] == '#')
			continue;
		key = line;
		val = line + strcspn(line, " \t=");
		if (*val == '\0') {
			ret = stoke_config_error("%s:%d: expected 'key = value'", path, lineno);
			goto out;
		}
		*val++ = '\0';
		val = stoke_trim(val);
		if (*val == '=')
			val = stoke_trim(val + 1);
		len = strlen(val);
		if (len >= 2 && (val[0] == '"' || val[0] == '\'') && val[len - 1] == val[0]) {
			val[len - 1] = '\0';
			val++;
		}
		if (strcmp(key, "url") == 0) {
			dst = url;
		} else if (strcmp(key, "token") == 0) {
			dst = token;
		} else {
			ret = stoke_config_error("%s:%d: unknown key '%s' (known: url, token)",
						 path, lineno, key);
			goto out;
		}
		if (val[0] == '\0') {
			ret = stoke_config_error("%s:%d: %s has no value", path, lineno, key);
			goto out;
		}
		if (*dst == NULL && (*dst = strdup(val)) == NULL) {
			ret = cli_error("out of memory");
			goto out;
		}
	}
	ret = 0;
out:
	if (text != NULL) {
		explicit_bzero(text, (size_t)st.st_size);
		free(text);
	}
	if (fd != -1)
		close(fd);
	return ret;
}

/* Takes a string from a flag or the environment (NULL or "" is none). */
static int
stoke_take(char **dst, const char *src)
{
	if (*dst != NULL || src == NULL || src[0] == '\0')
		return 0;
	return (*dst = strdup(src)) == NULL ? -1 : 0;
}

/* The URL without a trailing '/' or "/api/v1" (paths add it). */
static void
stoke_normalize_url(char *url)
{
	size_t n = strlen(url);

	while (n > 0 && url[n - 1] == '/')
		url[--n] = '\0';
	if (n >= 7 && strcmp(url + n - 7, "/api/v1") == 0)
		url[n -= 7] = '\0';
	while (n > 0 && url[n - 1] == '/')
		url[--n] = '\0';
}

static int
stoke_connect(const struct stoke_opts *g, struct cli *cli)
{
	struct http_client_opts ho = {0};
	char *url = NULL, *token = NULL, err[512];
	int ret;

	if (stoke_take(&url, g->url) != 0 || stoke_take(&token, g->token) != 0 ||
	    stoke_take(&url, getenv("STOKE_URL")) != 0 ||
	    stoke_take(&token, getenv("STOKE_TOKEN")) != 0) {
		ret = cli_error("out of memory");
		goto out;
	}
	if ((url == NULL || token == NULL) && (ret = stoke_read_config(&url, &token)) != 0)
		goto out;
	if (url == NULL) {
		ret = stoke_config_error("no API URL: set STOKE_URL or url in " STOKE_CONFIG_HINT);
		goto out;
	}
	if (token == NULL) {
		ret = stoke_config_error(
		    "no API token: set STOKE_TOKEN or token in " STOKE_CONFIG_HINT);
		goto out;
	}
	stoke_normalize_url(url);
	ho.base_url = url;
	ho.token = token;
	if (http_client_new(&ho, &cli->http, err, sizeof(err)) != 0) {
		ret = stoke_config_error("%s", err);
		goto out;
	}
	ret = 0;
out:
	free(url);
	if (token != NULL) {
		explicit_bzero(token, strlen(token));
		free(token);
	}
	return ret;
}

static int
stoke_help(int argc, char **argv)
{
	const struct cli_family *fam;
	const struct cli_cmd *cmd;

	if (argc < 1) {
		stoke_usage(stdout);
		return CLI_EXIT_OK;
	}
	if ((fam = stoke_find_family(argv[0])) == NULL)
		return cli_usage_error("unknown command '%s'", argv[0]);
	if (argc < 2) {
		stoke_family_usage(fam, stdout);
		return CLI_EXIT_OK;
	}
	if ((cmd = stoke_find_cmd(fam, argv[1])) == NULL)
		return cli_usage_error("unknown command '%s %s'", fam->name, argv[1]);
	stoke_cmd_usage(fam, cmd, stdout);
	return CLI_EXIT_OK;
}

int
main(int argc, char **argv)
{
	struct stoke_opts g = {0};
	struct cli_args args;
	struct cli cli = {0};
	const struct cli_family *fam;
	const struct cli_cmd *cmd;
	char names[CLI_MAX_ARGS][64], cname[64];
	int i, ret, nopts_done = 0;

	memset(&args, 0, sizeof(args));
	/* Global options before the command. */
	for (i = 1; i < argc && argv[i][0] == '-' && argv[i][1] != '\0'; i++) {
		if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
			printf("stoke %s\n", STOKE_VERSION);
			return CLI_EXIT_OK;
		}
		if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		}
		if ((ret = stoke_parse_opt(argc, argv, &i, NULL, &g, &args, NULL, 0)) != 0)
			return ret;
	}
	if (i >= argc) {
		if (g.help) {
			stoke_usage(stdout);
			return CLI_EXIT_OK;
		}
		stoke_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (strcmp(argv[i], "help") == 0)
		return stoke_help(argc - i - 1, argv + i + 1);
	if (strcmp(argv[i], "version") == 0) {
		printf("stoke %s\n", STOKE_VERSION);
		return CLI_EXIT_OK;
	}
	if ((fam = stoke_find_family(argv[i])) == NULL)
		return cli_usage_error("unknown command '%s'", argv[i]);
	i++;
	/* The command; a family with a default command (named "") runs it when the next word
	 * is not one of its commands: `stoke deploy SITE`. */
	if (i >= argc || argv[i][0] == '-') {
		if (g.help ||
		    (i < argc && (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0))) {
			stoke_family_usage(fam, stdout);
			return CLI_EXIT_OK;
		}
		if (i >= argc || (cmd = stoke_find_cmd(fam, "")) == NULL) {
			stoke_family_usage(fam, stderr);
			return CLI_EXIT_USAGE;
		}
	} else if ((cmd = stoke_find_cmd(fam, argv[i])) != NULL && cmd->name[0] != '\0') {
		i++;
	} else if ((cmd = stoke_find_cmd(fam, "")) == NULL) {
		cli_usage_error("unknown command '%s %s'", fam->name, argv[i]);
		return CLI_EXIT_USAGE;
	}
	stoke_cmd_name(fam, cmd, cname, sizeof(cname));
	/* The command's arguments: options may come before, between or after positionals. */
	for (; i < argc; i++) {
		if (!nopts_done && strcmp(argv[i], "--") == 0) {
			nopts_done = 1;
			continue;
		}
		if (!nopts_done && argv[i][0] == '-' && argv[i][1] != '\0') {
			if ((ret = stoke_parse_opt(argc, argv, &i, cmd->opts, &g, &args,
						   names[args.nopt], sizeof(names[0]))) != 0)
				return ret;
			continue;
		}
		if (args.npos >= CLI_MAX_ARGS || args.npos >= cmd->max_pos) {
			cli_usage_error("stoke %s: unexpected argument '%s'", cname, argv[i]);
			fprintf(stderr, "usage: stoke %s %s\n", cname, cmd->usage);
			return CLI_EXIT_USAGE;
		}
		args.pos[args.npos++] = argv[i];
	}
	if (g.help) {
		stoke_cmd_usage(fam, cmd, stdout);
		return CLI_EXIT_OK;
	}
	if (args.npos < cmd->min_pos) {
		cli_usage_error("stoke %s: missing argument", cname);
		fprintf(stderr, "usage: stoke %s %s\n", cname, cmd->usage);
		return CLI_EXIT_USAGE;
	}
	cli.json = g.json;
	cli.tty = isatty(STDOUT_FILENO);
	if ((ret = stoke_connect(&g, &cli)) != 0)
		return ret;
	ret = cmd->exec(&cli, &args);
	http_client_free(cli.http);
	if (fflush(stdout) != 0 && ret == CLI_EXIT_OK)
		ret = cli_error("stdout: %s", strerror(errno));
	return ret;
}
