/* One call's data movement: uploads before the stages, downloads after, and the submission.
 * Where device memory is mapped the data is copied straight in and out; elsewhere it goes
 * through the router's staging buffers with copies recorded in the same command buffer. */
#include <string.h>

#include "internal.h"

static VkDeviceSize align16(VkDeviceSize value) { return (value + 15) & ~(VkDeviceSize)15; }

static int mapped(const transfer_plan *plan) {
    return plan->router->context->info.host_visible_device_memory;
}

moevk_result transfer_begin(transfer_plan *plan, moevk_router *router) {
    return transfer_begin_on(plan, router, router->command_buffer, TRANSFER_ONCE);
}

moevk_result transfer_begin_on(transfer_plan *plan, moevk_router *router, VkCommandBuffer commands,
                               transfer_mode mode) {
    memset(plan, 0, sizeof *plan);
    plan->router = router;
    plan->commands = commands;
    plan->replay = mode == TRANSFER_REPLAY;
    router->recording = commands;
    router->recording_external = 0;
    router->bound_kernel = NO_KERNEL_BOUND;
    if (plan->replay) return MOEVK_SUCCESS;
    moevk_context *context = router->context;
    VkResult vr = context->vk.vkResetCommandBuffer(commands, 0);
    VkCommandBufferBeginInfo begin = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
        .flags = mode == TRANSFER_ONCE ? VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT : 0};
    if (vr == VK_SUCCESS) vr = context->vk.vkBeginCommandBuffer(commands, &begin);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkBeginCommandBuffer");
    /* Order this call after everything earlier on the queue (the previous call's reads). */
    record_barrier(router, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT,
                   VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                   VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                   VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT |
                       VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    return MOEVK_SUCCESS;
}

void transfer_upload(transfer_plan *plan, int binding, const void *source, VkDeviceSize bytes) {
    moevk_router *router = plan->router;
    if (bytes == 0) return;
    if (mapped(plan)) {
        memcpy(router->buffers[binding].mapped, source, bytes);
        return;
    }
    if (plan->upload_used + bytes > router->upload.size) { /* a bug of moevk's: refused */
        plan->staging_overflowed = 1;
        return;
    }
    memcpy((char *)router->upload.mapped + plan->upload_used, source, bytes);
    VkBufferCopy region = {plan->upload_used, 0, bytes};
    if (!plan->replay)
        router->context->vk.vkCmdCopyBuffer(plan->commands, router->upload.buffer,
                                            router->buffers[binding].buffer, 1, &region);
    plan->upload_used = align16(plan->upload_used + bytes);
}

void transfer_device_copy(transfer_plan *plan, int binding, VkDeviceSize binding_offset,
                          moevk_buffer *buffer, VkDeviceSize buffer_offset, VkDeviceSize bytes,
                          int to_binding) {
    if (bytes == 0 || plan->replay) return;
    moevk_router *router = plan->router;
    VkBuffer binding_buffer = router->buffers[binding].buffer;
    VkBufferCopy region = {to_binding ? buffer_offset : binding_offset,
                           to_binding ? binding_offset : buffer_offset, bytes};
    router->context->vk.vkCmdCopyBuffer(
        plan->commands, to_binding ? buffer->gpu.buffer : binding_buffer,
        to_binding ? binding_buffer : buffer->gpu.buffer, 1, &region);
}

void transfer_copy_out(transfer_plan *plan, int binding, VkDeviceSize binding_offset,
                       moevk_buffer *buffer, VkDeviceSize buffer_offset, VkDeviceSize bytes) {
    if (plan->replay) return;
    record_barrier(plan->router, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                   VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
    transfer_device_copy(plan, binding, binding_offset, buffer, buffer_offset, bytes, 0);
}

void transfer_uploads_done(transfer_plan *plan) {
    if (plan->replay) return;
    record_barrier(plan->router, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                   VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                   VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_SHADER_READ_BIT |
                       VK_ACCESS_SHADER_WRITE_BIT);
}

void transfer_download(transfer_plan *plan, int binding, void *destination, VkDeviceSize bytes) {
    if (bytes == 0) return;
    if (plan->readback_count == (int)(sizeof plan->readbacks / sizeof plan->readbacks[0])) {
        plan->readbacks_overflowed = 1;
        return;
    }
    if (!mapped(plan) && plan->readback_used + bytes > plan->router->readback.size) {
        plan->staging_overflowed = 1;
        return;
    }
    struct readback *r = &plan->readbacks[plan->readback_count++];
    r->binding = binding;
    r->bytes = bytes;
    r->destination = destination;
    r->staging_offset = plan->readback_used;
    plan->readback_used = align16(plan->readback_used + bytes);
}

static void record_downloads(transfer_plan *plan) {
    moevk_router *router = plan->router;
    const struct VolkDeviceTable *vk = &router->context->vk;
    if (plan->replay) return;
    if (mapped(plan)) {
        record_barrier(router, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                       VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
        return;
    }
    record_barrier(router, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                   VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
    for (int i = 0; i < plan->readback_count; ++i) {
        const struct readback *r = &plan->readbacks[i];
        VkBufferCopy region = {0, r->staging_offset, r->bytes};
        vk->vkCmdCopyBuffer(plan->commands, router->buffers[r->binding].buffer,
                            router->readback.buffer, 1, &region);
    }
    record_barrier(router, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                   VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
}

moevk_result transfer_submit(transfer_plan *plan) {
    moevk_router *router = plan->router;
    moevk_context *context = router->context;
    const struct VolkDeviceTable *vk = &context->vk;
    record_downloads(plan);
    VkResult vr = plan->replay ? VK_SUCCESS : vk->vkEndCommandBuffer(plan->commands);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkEndCommandBuffer");
    if (plan->readbacks_overflowed) /* a bug of moevk's: say so rather than lose a result */
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                            "internal: a call asked for more than %d downloads",
                            (int)(sizeof plan->readbacks / sizeof plan->readbacks[0]));
    if (plan->staging_overflowed)
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                            "internal: a call's transfers passed the router's staging buffers");
    VkSubmitInfo submit = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                           .commandBufferCount = 1,
                           .pCommandBuffers = &plan->commands};
    platform_lock_acquire(&context->lock);
    vr = context_submit(context, &submit, router->fence);
    platform_lock_release(&context->lock);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkQueueSubmit");
    return MOEVK_SUCCESS;
}

moevk_result transfer_complete(transfer_plan *plan, uint64_t timeout_ns) {
    moevk_router *router = plan->router;
    moevk_context *context = router->context;
    const struct VolkDeviceTable *vk = &context->vk;
    VkResult vr = vk->vkWaitForFences(context->device, 1, &router->fence, VK_TRUE, timeout_ns);
    if (vr == VK_TIMEOUT) return MOEVK_NOT_READY;
    VkResult reset = vk->vkResetFences(context->device, 1, &router->fence);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkWaitForFences");
    if (reset != VK_SUCCESS) return context_fail_vk(context, reset, "vkResetFences");
    for (int i = 0; i < plan->readback_count; ++i) {
        const struct readback *r = &plan->readbacks[i];
        if (r->destination) memcpy(r->destination, transfer_downloaded(plan, r->binding), r->bytes);
    }
    return MOEVK_SUCCESS;
}

const void *transfer_downloaded(const transfer_plan *plan, int binding) {
    const moevk_router *router = plan->router;
    if (mapped(plan)) return router->buffers[binding].mapped;
    for (int i = 0; i < plan->readback_count; ++i)
        if (plan->readbacks[i].binding == binding)
            return (const char *)router->readback.mapped + plan->readbacks[i].staging_offset;
    return NULL;
}
