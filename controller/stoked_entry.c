/* stoked_entry.c: the stoked executable: stoked_main() with the built-in job types. */
#include "stoked.h"

int
main(int argc, char **argv)
{
	return stoked_main(argc, argv);
}
