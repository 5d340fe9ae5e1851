/* Host allocations, through the application's VkAllocationCallbacks when it gave some. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Large enough for any type moevk allocates. */
#define HOST_ALIGNMENT 16

void *host_alloc(const VkAllocationCallbacks *allocator, size_t size) {
    if (size == 0) size = 1;
    if (!allocator) return malloc(size);
    return allocator->pfnAllocation(allocator->pUserData, size, HOST_ALIGNMENT,
                                    VK_SYSTEM_ALLOCATION_SCOPE_OBJECT);
}

void *host_calloc(const VkAllocationCallbacks *allocator, size_t count, size_t size) {
    if (size != 0 && count > SIZE_MAX / size) return NULL;
    void *pointer = host_alloc(allocator, count * size);
    size_t bytes = count * size;
    if (pointer) memset(pointer, 0, bytes > 0 ? bytes : 1);
    return pointer;
}

void host_free(const VkAllocationCallbacks *allocator, void *pointer) {
    if (!pointer) return;
    if (!allocator) {
        free(pointer);
        return;
    }
    allocator->pfnFree(allocator->pUserData, pointer);
}

/* Counts the allocation; NULL when the fail_host_allocation hook says this one fails. */
static int allocation_allowed(moevk_context *context) {
    unsigned long long n = atomic_fetch_add(&context->host_allocations, 1) + 1;
    return !(context->hooks.fail_host_allocation && n == context->hooks.fail_host_allocation);
}

void *context_alloc(moevk_context *context, size_t size) {
    return allocation_allowed(context) ? host_alloc(context->allocator, size) : NULL;
}

void *context_calloc(moevk_context *context, size_t count, size_t size) {
    return allocation_allowed(context) ? host_calloc(context->allocator, count, size) : NULL;
}
