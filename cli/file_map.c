/* file_map.h through POSIX mmap. */
#include "file_map.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fail.h"

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
