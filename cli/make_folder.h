/* The commands' output folders, on POSIX and Windows. */
#ifndef MOEVK_CLI_MAKE_FOLDER_H
#define MOEVK_CLI_MAKE_FOLDER_H

#include <sys/stat.h>
#ifdef _WIN32
#include <direct.h>
#endif

/* 1 when path is a folder now (made here if it was missing); 0 when it cannot be. */
static inline int make_folder(const char *path) {
    struct stat st;
    if (stat(path, &st) == 0) return S_ISDIR(st.st_mode);
#ifdef _WIN32
    return _mkdir(path) == 0;
#else
    return mkdir(path, 0777) == 0;
#endif
}

#endif
