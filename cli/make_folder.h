/* The commands' output folders and the system's temporary folder, on POSIX and Windows. */
#ifndef MOEVK_CLI_MAKE_FOLDER_H
#define MOEVK_CLI_MAKE_FOLDER_H

#include <stdlib.h>
#include <sys/stat.h>
#ifdef _WIN32
#include <direct.h>
#endif

/* 1 when path is a folder now (made here if it was missing); 0 when it cannot be. Another
 * process may make it between the look and the mkdir (the ranks of `mpirun moevk layer` all
 * make the same folder), so a failed mkdir looks again. */
static inline int make_folder(const char *path) {
    struct stat st;
    if (stat(path, &st) == 0) return S_ISDIR(st.st_mode);
#ifdef _WIN32
    if (_mkdir(path) == 0) return 1;
#else
    if (mkdir(path, 0777) == 0) return 1;
#endif
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* TMPDIR on POSIX (else /tmp); TEMP, then TMP, on Windows (else the current folder). */
static inline const char *temporary_folder(void) {
#ifdef _WIN32
    const char *names[2] = {"TEMP", "TMP"}, *fallback = ".";
#else
    const char *names[1] = {"TMPDIR"}, *fallback = "/tmp";
#endif
    for (size_t i = 0; i < sizeof names / sizeof names[0]; ++i) {
        const char *value = getenv(names[i]);
        if (value && value[0]) return value;
    }
    return fallback;
}

#endif
