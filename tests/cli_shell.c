/* Portable pieces of the command-line tests (tests/cli_shell.h). */
#include "cli_shell.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <direct.h>
#include <process.h>
#include <windows.h>
#else
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

/* cmd.exe's "not recognized as an internal or external command". */
#define CMD_NOT_FOUND 9009

int shell_run(const char *command) {
    int status = system(command);
#ifdef _WIN32
    /* Under Wine, cmd.exe now and then fails to start a program it ran a moment before (CI,
     * seed 1796688414: moevk.exe "not recognized" between two runs of it): tried twice more,
     * so that only a program that is really missing reports 9009. */
    for (int retry = 0; retry < 2 && status == CMD_NOT_FOUND; ++retry) {
        Sleep(500);
        status = system(command);
    }
    return status; /* cmd.exe's exit status is the command's own */
#else
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
#endif
}

int make_one_folder(const char *path) {
#ifdef _WIN32
    int made = _mkdir(path);
#else
    int made = mkdir(path, 0777);
#endif
    return made == 0 || errno == EEXIST ? 0 : -1;
}

int make_work_folder(char *path, size_t size, const char *name) {
#ifdef _WIN32
    char temp[MAX_PATH + 1];
    DWORD length = GetTempPathA(sizeof temp, temp);
    if (length == 0 || length > MAX_PATH) return -1;
    /* The process id and a counter make the name; _mkdir fails where it exists already. */
    for (unsigned attempt = 0; attempt < 1000; ++attempt) {
        snprintf(path, size, "%s%s-%d-%u", temp, name, _getpid(), attempt);
        if (_mkdir(path) == 0) return 0;
        if (errno != EEXIST) return -1;
    }
    return -1;
#else
    snprintf(path, size, "/tmp/%s-XXXXXX", name);
    return mkdtemp(path) ? 0 : -1;
#endif
}

int remove_work_folder(const char *path) {
    char command[1024];
#ifdef _WIN32
    snprintf(command, sizeof command, "rmdir /s /q \"%s\"", path);
#else
    snprintf(command, sizeof command, "rm -rf '%s'", path);
#endif
    return shell_run(command) == 0 ? 0 : -1;
}

int file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

int running_under_wine(void) {
#ifdef _WIN32
    HMODULE ntdll = GetModuleHandleA("ntdll.dll");
    return ntdll && GetProcAddress(ntdll, "wine_get_version") != NULL;
#else
    return 0;
#endif
}

int set_environment(const char *name, const char *value) {
#ifdef _WIN32
    return _putenv_s(name, value ? value : "") == 0 ? 0 : -1;
#else
    return (value ? setenv(name, value, 1) : unsetenv(name)) == 0 ? 0 : -1;
#endif
}
