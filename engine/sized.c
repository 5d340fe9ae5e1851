/* The structs that grow (moevk.h, "Structs that grow"): a caller's struct is read, or filled, to
 * the fields of the newest layout its struct_size reaches, which 0 makes the first layout's. */
#include <stddef.h>
#include <string.h>

#include "internal.h"

static size_t caller_size(const void *given, const struct_layout *layouts) {
    uint32_t size;
    memcpy(&size, given, sizeof size);
    return size ? size : layouts[0].size;
}

/* The bytes of the caller's struct that hold fields this library knows. */
static size_t known_bytes(size_t size, const struct_layout *layouts, size_t count) {
    if (size >= layouts[count - 1].size) return layouts[count - 1].size;
    size_t bytes = 0;
    for (size_t i = 0; i < count && layouts[i].size <= size; ++i) bytes = layouts[i].fields_end;
    return bytes;
}

moevk_result sized_read(moevk_context *context, const char *name, const void *given,
                        const struct_layout *layouts, size_t count, void *full) {
    size_t size = caller_size(given, layouts), newest = layouts[count - 1].size;
    if (size < layouts[0].size)
        return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT,
                            "%s.struct_size is %zu, less than its first layout's %zu: set it "
                            "with the struct's _init function",
                            name, size, layouts[0].size);
    for (size_t i = newest; i < size; ++i)
        if (((const unsigned char *)given)[i] != 0)
            return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                                "%s has fields this library does not know (struct_size %zu, "
                                "this library's %zu) and they are not zero: a newer moevk is "
                                "needed",
                                name, size, newest);
    memcpy(full, given, known_bytes(size, layouts, count));
    uint32_t own = (uint32_t)newest;
    memcpy(full, &own, sizeof own);
    return MOEVK_SUCCESS;
}

void sized_write(void *given, const void *full, const struct_layout *layouts, size_t count) {
    size_t bytes = known_bytes(caller_size(given, layouts), layouts, count);
    if (bytes > sizeof(uint32_t))
        memcpy((char *)given + sizeof(uint32_t), (const char *)full + sizeof(uint32_t),
               bytes - sizeof(uint32_t));
}

/* Each layout of this header ends without tail padding, so that struct_size tells them apart
 * (moevk 0.2's router info had some: its next layout names it padding_0_2). */
_Static_assert(offsetof(moevk_router_info, reserved_0_7) + 4 == sizeof(moevk_router_info),
               "moevk_router_info has tail padding");
_Static_assert(offsetof(moevk_context_info, reserved_0_7) + 8 == sizeof(moevk_context_info),
               "moevk_context_info has tail padding");
_Static_assert(offsetof(moevk_device_info, reserved_0_7) + 4 == sizeof(moevk_device_info),
               "moevk_device_info has tail padding");
_Static_assert(offsetof(moevk_route_input, router_weights) + sizeof(moevk_tensor) ==
                   sizeof(moevk_route_input),
               "moevk_route_input has tail padding");
_Static_assert(offsetof(moevk_layer_info, trainable) + 4 == sizeof(moevk_layer_info),
               "moevk_layer_info has tail padding");
_Static_assert(offsetof(moevk_layer_info, separate_down_type) % 8 == 0,
               "moevk_layer_info's 0.4 layout has tail padding");
_Static_assert(offsetof(moevk_layer_output, route) + sizeof(void *) == sizeof(moevk_layer_output),
               "moevk_layer_output has tail padding");
