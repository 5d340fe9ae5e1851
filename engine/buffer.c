/* moevk_buffer: device memory that routes read and write on the device. Host reads and writes
 * go straight to mapped memory, or through a temporary staging buffer and the context's own
 * command buffer, under the context's lock. */
#include <string.h>

#include "internal.h"

moevk_result context_commands_create(moevk_context *context) {
    const struct VolkDeviceTable *vk = &context->vk;
    VkCommandPoolCreateInfo pool_info = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                         .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                         .queueFamilyIndex = context->queue_family};
    VkResult vr = vk->vkCreateCommandPool(context->device, &pool_info, context->allocator,
                                          &context->command_pool);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkCreateCommandPool");
    VkCommandBufferAllocateInfo buffer_info = {.sType =
                                                   VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                               .commandPool = context->command_pool,
                                               .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                               .commandBufferCount = 1};
    vr = vk->vkAllocateCommandBuffers(context->device, &buffer_info, &context->command_buffer);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkAllocateCommandBuffers");
    VkFenceCreateInfo fence_info = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    vr = vk->vkCreateFence(context->device, &fence_info, context->allocator, &context->fence);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkCreateFence");
    return MOEVK_SUCCESS;
}

void context_commands_destroy(moevk_context *context) {
    const struct VolkDeviceTable *vk = &context->vk;
    if (context->fence) vk->vkDestroyFence(context->device, context->fence, context->allocator);
    if (context->command_pool)
        vk->vkDestroyCommandPool(context->device, context->command_pool, context->allocator);
}

moevk_result moevk_buffer_create(moevk_context *context, uint64_t size, moevk_buffer **out) {
    if (!out) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (!context) return MOEVK_ERROR_INVALID_ARGUMENT;
    if (size == 0) return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, "buffer size is 0");
    moevk_result alive = context_check_alive(context);
    if (alive != MOEVK_SUCCESS) return alive;
    moevk_buffer *buffer = context_calloc(context, 1, sizeof *buffer);
    if (!buffer) return context_fail(context, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "buffer");
    buffer->context = context;
    buffer->size = size;
    buffer->serial = atomic_fetch_add(&context->buffers_made, 1) + 1;
    moevk_result r = gpu_buffer_create(context, size, BUFFER_DEVICE, 0, &buffer->gpu);
    if (r != MOEVK_SUCCESS) {
        host_free(context->allocator, buffer);
        return r;
    }
    *out = buffer;
    return MOEVK_SUCCESS;
}

void moevk_buffer_destroy(moevk_buffer *buffer) {
    if (!buffer) return;
    moevk_context *context = buffer->context;
    gpu_buffer_destroy(context, &buffer->gpu);
    host_free(context->allocator, buffer);
}

uint64_t moevk_buffer_size(const moevk_buffer *buffer) { return buffer ? buffer->size : 0; }

/* What one command records on the context's command buffer (one_shot). */
typedef struct transfer_command {
    const gpu_buffer *source, *destination; /* source NULL: fill the destination with zeros */
    uint64_t source_offset, destination_offset, size;
} transfer_command;

/* Runs copies and fills on the context's command buffer, submitted and waited for, between
 * barriers that order them after earlier device work and before host reads and later work. */
static moevk_result one_shot(moevk_context *context, const transfer_command *commands, int count) {
    const struct VolkDeviceTable *vk = &context->vk;
    VkCommandBuffer cmd = context->command_buffer;
    VkCommandBufferBeginInfo begin = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                      .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    VkMemoryBarrier before = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT};
    VkMemoryBarrier after = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                             .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
                             .dstAccessMask = VK_ACCESS_HOST_READ_BIT | VK_ACCESS_SHADER_READ_BIT |
                                              VK_ACCESS_SHADER_WRITE_BIT};
    platform_lock_acquire(&context->lock);
    VkResult vr = vk->vkResetCommandBuffer(cmd, 0);
    if (vr == VK_SUCCESS) vr = vk->vkBeginCommandBuffer(cmd, &begin);
    if (vr == VK_SUCCESS) {
        vk->vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT,
                                 VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &before, 0, NULL, 0, NULL);
        for (int i = 0; i < count; ++i) {
            const transfer_command *c = &commands[i];
            if (c->source) {
                VkBufferCopy region = {c->source_offset, c->destination_offset, c->size};
                vk->vkCmdCopyBuffer(cmd, c->source->buffer, c->destination->buffer, 1, &region);
            } else {
                vk->vkCmdFillBuffer(cmd, c->destination->buffer, c->destination_offset, c->size, 0);
            }
        }
        vk->vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT,
                                 VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                                 0, 1, &after, 0, NULL, 0, NULL);
        vr = vk->vkEndCommandBuffer(cmd);
    }
    VkSubmitInfo submit = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &cmd};
    if (vr == VK_SUCCESS) vr = context_submit(context, &submit, context->fence);
    if (vr == VK_SUCCESS) {
        vr = vk->vkWaitForFences(context->device, 1, &context->fence, VK_TRUE, UINT64_MAX);
        VkResult reset = vk->vkResetFences(context->device, 1, &context->fence);
        if (vr == VK_SUCCESS) vr = reset;
    }
    platform_lock_release(&context->lock);
    return vr == VK_SUCCESS ? MOEVK_SUCCESS : context_fail_vk(context, vr, "copying a buffer");
}

/* One copy between a buffer and a staging buffer. */
static moevk_result staged_copy(moevk_context *context, const gpu_buffer *device,
                                gpu_buffer *staging, uint64_t offset, uint64_t size,
                                int to_buffer) {
    transfer_command copy = {to_buffer ? staging : device, to_buffer ? device : staging,
                             to_buffer ? 0 : offset, to_buffer ? offset : 0, size};
    return one_shot(context, &copy, 1);
}

moevk_result gpu_buffer_device_copy(moevk_context *context, const gpu_buffer *source,
                                    uint64_t source_offset, const gpu_buffer *destination,
                                    uint64_t destination_offset, uint64_t size) {
    if (size == 0) return MOEVK_SUCCESS;
    transfer_command copy = {source, destination, source_offset, destination_offset, size};
    return one_shot(context, &copy, 1);
}

moevk_result gpu_buffers_zero(moevk_context *context, const gpu_buffer *const *buffers, int count) {
    transfer_command fills[BINDING_COUNT];
    int used = 0;
    for (int i = 0; i < count && used < BINDING_COUNT; ++i)
        fills[used++] = (transfer_command){NULL, buffers[i], 0, 0, VK_WHOLE_SIZE};
    return used ? one_shot(context, fills, used) : MOEVK_SUCCESS;
}

moevk_result gpu_buffer_host_copy(moevk_context *context, const gpu_buffer *device, uint64_t offset,
                                  void *host, uint64_t size, int to_buffer) {
    if (size == 0) return MOEVK_SUCCESS;
    if (context->info.host_visible_device_memory && device->mapped) {
        char *mapped = (char *)device->mapped + offset;
        if (to_buffer)
            memcpy(mapped, host, size);
        else
            memcpy(host, mapped, size);
        return MOEVK_SUCCESS;
    }
    gpu_buffer staging;
    moevk_result r =
        gpu_buffer_create(context, size, to_buffer ? BUFFER_UPLOAD : BUFFER_READBACK, 0, &staging);
    if (r != MOEVK_SUCCESS) return r;
    if (to_buffer) memcpy(staging.mapped, host, size);
    r = staged_copy(context, device, &staging, offset, size, to_buffer);
    if (r == MOEVK_SUCCESS && !to_buffer) memcpy(host, staging.mapped, size);
    gpu_buffer_destroy(context, &staging);
    return r;
}

static moevk_result host_copy(moevk_buffer *buffer, uint64_t offset, void *host, uint64_t size,
                              int to_buffer) {
    if (!buffer) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context *context = buffer->context;
    if ((!host && size) || offset > buffer->size || size > buffer->size - offset)
        return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT,
                            "%llu bytes at offset %llu do not fit a buffer of %llu bytes",
                            (unsigned long long)size, (unsigned long long)offset,
                            (unsigned long long)buffer->size);
    moevk_result alive = context_check_alive(context);
    if (alive != MOEVK_SUCCESS) return alive;
    return gpu_buffer_host_copy(context, &buffer->gpu, offset, host, size, to_buffer);
}

moevk_result moevk_buffer_write(moevk_buffer *buffer, uint64_t offset, const void *data,
                                uint64_t size) {
    return host_copy(buffer, offset, (void *)data, size, 1);
}

moevk_result moevk_buffer_read(moevk_buffer *buffer, uint64_t offset, void *data, uint64_t size) {
    return host_copy(buffer, offset, data, size, 0);
}
