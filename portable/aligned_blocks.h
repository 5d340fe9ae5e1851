/* Aligned host blocks from plain malloc, the same on every C library (Windows has no aligned
 * realloc): what moevk's programs hand out through VkAllocationCallbacks to count or fail the
 * driver's allocations. The block's start and size sit just before the aligned address, since
 * a reallocation must know how much to copy. Header only. */
#ifndef MOEVK_PORTABLE_ALIGNED_BLOCKS_H
#define MOEVK_PORTABLE_ALIGNED_BLOCKS_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct aligned_block_header {
    void *start;
    size_t size;
} aligned_block_header;

/* size bytes (at least 1) at a multiple of alignment (a power of two); NULL when out of memory. */
static inline void *aligned_block(size_t size, size_t alignment) {
    if (size == 0) size = 1;
    if (alignment < sizeof(void *)) alignment = sizeof(void *);
    char *start = malloc(size + alignment + sizeof(aligned_block_header));
    if (!start) return NULL;
    uintptr_t first = (uintptr_t)(start + sizeof(aligned_block_header));
    char *block = (char *)((first + alignment - 1) / alignment * alignment);
    aligned_block_header header = {start, size};
    memcpy(block - sizeof header, &header, sizeof header);
    return block;
}

static inline size_t aligned_block_size(const void *block) {
    aligned_block_header header;
    memcpy(&header, (const char *)block - sizeof header, sizeof header);
    return header.size;
}

static inline void aligned_block_free(void *block) {
    if (!block) return;
    aligned_block_header header;
    memcpy(&header, (char *)block - sizeof header, sizeof header);
    free(header.start);
}

#endif
