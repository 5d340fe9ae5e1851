/* Result names, the version, and each context's last-error message. */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

#define MOEVK_STRINGIFY_(x) #x
#define MOEVK_VERSION_TEXT_(a, b, c)                                                               \
    MOEVK_STRINGIFY_(a) "." MOEVK_STRINGIFY_(b) "." MOEVK_STRINGIFY_(c)

unsigned moevk_version_number(void) { return MOEVK_VERSION_NUMBER; }

const char *moevk_version_string(void) {
    return MOEVK_VERSION_TEXT_(MOEVK_VERSION_MAJOR, MOEVK_VERSION_MINOR, MOEVK_VERSION_PATCH);
}

const char *moevk_result_string(moevk_result result) {
    switch (result) {
#define MOEVK_RESULT_CASE_(name, value, text)                                                      \
    case name: return #name ": " text;
        MOEVK_RESULT_LIST(MOEVK_RESULT_CASE_)
#undef MOEVK_RESULT_CASE_
    }
    return "unknown moevk_result";
}

moevk_result context_fail(moevk_context *context, moevk_result result, const char *format, ...) {
    if (!context) return result;
    va_list args;
    va_start(args, format);
    platform_lock_acquire(&context->lock);
    vsnprintf(context->last_error, sizeof context->last_error, format, args);
    platform_lock_release(&context->lock);
    va_end(args);
    return result;
}

moevk_result context_check_alive(moevk_context *context) {
    if (!context || !atomic_load(&context->lost)) return MOEVK_SUCCESS;
    return context_fail(context, MOEVK_ERROR_DEVICE_LOST,
                        "the Vulkan device was lost; destroy this context and create another");
}

VkResult context_submit(moevk_context *context, const VkSubmitInfo *submit, VkFence fence) {
    unsigned n = atomic_fetch_add(&context->submissions, 1u) + 1u;
    if (context->hooks.lose_device_at_submit && n == context->hooks.lose_device_at_submit)
        return VK_ERROR_DEVICE_LOST;
    return context->vk.vkQueueSubmit(context->queue, 1, submit, fence);
}

moevk_result context_fail_vk(moevk_context *context, VkResult vk_result, const char *call) {
    moevk_result result = MOEVK_ERROR_VULKAN;
    if (vk_result == VK_ERROR_DEVICE_LOST && context) atomic_store(&context->lost, 1);
    switch (vk_result) {
    case VK_ERROR_OUT_OF_HOST_MEMORY: result = MOEVK_ERROR_OUT_OF_HOST_MEMORY; break;
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: result = MOEVK_ERROR_OUT_OF_DEVICE_MEMORY; break;
    case VK_ERROR_DEVICE_LOST: result = MOEVK_ERROR_DEVICE_LOST; break;
    default: break;
    }
    return context_fail(context, result, "%s failed with VkResult %d", call, (int)vk_result);
}

const char *moevk_context_last_error(const moevk_context *context) {
    return context ? context->last_error : "no context";
}

uint64_t moevk_context_host_allocations(const moevk_context *context) {
    return context ? atomic_load(&((moevk_context *)context)->host_allocations) : 0;
}

uint64_t moevk_context_device_allocations(const moevk_context *context) {
    return context ? atomic_load(&((moevk_context *)context)->device_allocations) : 0;
}

uint32_t moevk_context_validation_messages(const moevk_context *context) {
    return context ? atomic_load(&context->validation_messages) : 0;
}
