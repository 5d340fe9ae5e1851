/* Running the command line from a test the same way on POSIX (sh) and on Windows (cmd.exe under
 * Wine): a command's exit status, a fresh work folder and its removal, environment changes the
 * commands inherit. */
#ifndef MOEVK_TESTS_CLI_SHELL_H
#define MOEVK_TESTS_CLI_SHELL_H

#include <stddef.h>

/* Runs a command line (redirections `>F`, `2>F`, `2>&1` mean the same in both shells); its exit
 * status, or -1 where it did not exit. */
int shell_run(const char *command);

/* Makes a new empty folder under the system's temporary folder, named from `name`; 0 on
 * success. */
int make_work_folder(char *path, size_t size, const char *name);

/* Removes a folder made by make_work_folder with everything in it; 0 on success. */
int remove_work_folder(const char *path);

/* Makes one folder; 0 on success or where it is there already. */
int make_one_folder(const char *path);

/* 1 where a file can be opened for reading. */
int file_exists(const char *path);

/* 1 in a Windows program that Wine runs (ntdll exports wine_get_version there). */
int running_under_wine(void);

/* Sets (value not NULL) or removes an environment variable for the commands run after. */
int set_environment(const char *name, const char *value);

#endif
