/*
 * stoked.h: the controller daemon's entry point, as a function so that test builds
 * (tests/stoked_testjobs.c) can register extra job types and reuse everything else.
 */
#ifndef STOKE_STOKED_H
#define STOKE_STOKED_H

/* Parses the command line, runs `stoked [...]` or a subcommand, returns the exit code. */
int stoked_main(int argc, char **argv);

/* Resolves the data dir the way stoked does (flag, then -c file, then ./var) and opens its
 * store, migrated. For subcommands and test tools. Returns 0 or non-zero after printing. */
int stoked_open_store(int argc, char **argv, char **data_dir);

#endif
