/* file_map.h through POSIX mmap, or on Windows CreateFileMapping. */
#include "file_map.h"

#include "fail.h"

#ifdef _WIN32
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

int file_map(const char *path, void **mapping, size_t *size, char *error, size_t error_size) {
    HANDLE file = CreateFileA(path, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING,
                              FILE_ATTRIBUTE_NORMAL, NULL);
    if (file == INVALID_HANDLE_VALUE) return fail(error, error_size, "%s: cannot open it", path);
    LARGE_INTEGER bytes;
    void *mapped = NULL;
    if (GetFileSizeEx(file, &bytes) && bytes.QuadPart > 0) {
        HANDLE section = CreateFileMappingA(file, NULL, PAGE_READONLY, 0, 0, NULL);
        if (section) {
            mapped = MapViewOfFile(section, FILE_MAP_READ, 0, 0, 0);
            CloseHandle(section); /* the view keeps the section */
        }
    }
    CloseHandle(file);
    if (!mapped) return fail(error, error_size, "%s: cannot map it (empty or unreadable)", path);
    *mapping = mapped;
    *size = (size_t)bytes.QuadPart;
    return 1;
}

void file_unmap(void *mapping, size_t size) {
    (void)size;
    if (mapping) UnmapViewOfFile(mapping);
}

#else
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int file_map(const char *path, void **mapping, size_t *size, char *error, size_t error_size) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return fail(error, error_size, "%s: cannot open it", path);
    struct stat st;
    void *mapped = MAP_FAILED;
    if (fstat(fd, &st) == 0 && st.st_size > 0)
        mapped = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (mapped == MAP_FAILED)
        return fail(error, error_size, "%s: cannot map it (empty or unreadable)", path);
    *mapping = mapped;
    *size = (size_t)st.st_size;
    return 1;
}

void file_unmap(void *mapping, size_t size) {
    if (mapping) munmap(mapping, size);
}
#endif
