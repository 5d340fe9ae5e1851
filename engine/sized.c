/* The structs that grow (moevk.h, "Structs that grow"): a caller's struct is read, or filled, up
 * to its struct_size, which 0 makes the first layout's. */
#include <string.h>

#include "internal.h"

static size_t caller_size(const void *given, size_t first) {
    uint32_t size;
    memcpy(&size, given, sizeof size);
    return size ? size : first;
}

moevk_result sized_read(moevk_context *context, const char *name, const void *given, size_t known,
                        size_t first, void *full) {
    size_t size = caller_size(given, first);
    if (size < first)
        return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT,
                            "%s.struct_size is %zu, less than its first layout's %zu: set it "
                            "with the struct's _init function",
                            name, size, first);
    for (size_t i = known; i < size; ++i)
        if (((const unsigned char *)given)[i] != 0)
            return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                                "%s has fields this library does not know (struct_size %zu, "
                                "this library's %zu) and they are not zero: a newer moevk is "
                                "needed",
                                name, size, known);
    memcpy(full, given, size < known ? size : known);
    uint32_t own = (uint32_t)known;
    memcpy(full, &own, sizeof own);
    return MOEVK_SUCCESS;
}

void sized_write(void *given, const void *full, size_t known, size_t first) {
    size_t size = caller_size(given, first);
    size_t copied = size < known ? size : known;
    if (copied > sizeof(uint32_t))
        memcpy((char *)given + sizeof(uint32_t), (const char *)full + sizeof(uint32_t),
               copied - sizeof(uint32_t));
}
