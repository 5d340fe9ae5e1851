/* Buffers, each with its own memory: device-local for the stages' data, host-visible for
 * staging. Where the context maps device memory (lavapipe, integrated GPUs) device buffers are
 * mapped and need no staging. */
#include "internal.h"

static int find_memory_type(const moevk_context *context, uint32_t allowed,
                            VkMemoryPropertyFlags wanted, uint32_t *index) {
    for (uint32_t i = 0; i < context->memory.memoryTypeCount; ++i)
        if ((allowed & (1u << i)) &&
            (context->memory.memoryTypes[i].propertyFlags & wanted) == wanted) {
            *index = i;
            return 1;
        }
    return 0;
}

static int choose_memory_type(const moevk_context *context, uint32_t allowed, buffer_kind kind,
                              uint32_t *index) {
    const VkMemoryPropertyFlags host =
        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    switch (kind) {
    case BUFFER_DEVICE:
        if (context->info.host_visible_device_memory)
            return find_memory_type(context, allowed, host | VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT,
                                    index);
        return find_memory_type(context, allowed, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, index) ||
               find_memory_type(context, allowed, 0, index);
    case BUFFER_UPLOAD: return find_memory_type(context, allowed, host, index);
    case BUFFER_HOST_RESIDENT:
        /* System memory first: a host-visible type of a heap that is not device-local. */
        for (uint32_t i = 0; i < context->memory.memoryTypeCount; ++i) {
            const VkMemoryType *t = &context->memory.memoryTypes[i];
            if ((allowed & (1u << i)) && (t->propertyFlags & host) == host &&
                !(context->memory.memoryHeaps[t->heapIndex].flags &
                  VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)) {
                *index = i;
                return 1;
            }
        }
        return find_memory_type(context, allowed, host, index);
    case BUFFER_READBACK:
        return find_memory_type(context, allowed, host | VK_MEMORY_PROPERTY_HOST_CACHED_BIT,
                                index) ||
               find_memory_type(context, allowed, host, index);
    }
    return 0;
}

moevk_result gpu_buffer_create(moevk_context *context, VkDeviceSize size, buffer_kind kind,
                               int addressable, gpu_buffer *out) {
    const struct VolkDeviceTable *vk = &context->vk;
    *out = (gpu_buffer){0};
    if (size == 0) size = 16; /* Vulkan has no empty buffers */
    size = (size + 15) & ~(VkDeviceSize)15;
    VkBufferCreateInfo create = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = size,
        /* Indirect: stages that size later dispatches on the device (Sinkhorn's iterations). */
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                 VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_INDIRECT_BUFFER_BIT |
                 (addressable ? VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT : 0),
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    VkResult vr = vk->vkCreateBuffer(context->device, &create, context->allocator, &out->buffer);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkCreateBuffer");
    VkMemoryRequirements needs;
    vk->vkGetBufferMemoryRequirements(context->device, out->buffer, &needs);
    uint32_t type;
    if (!choose_memory_type(context, needs.memoryTypeBits, kind, &type)) {
        gpu_buffer_destroy(context, out);
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED, "no suitable memory type");
    }
    VkMemoryAllocateFlagsInfo address_flags = {.sType =
                                                   VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO,
                                               .flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT};
    VkMemoryAllocateInfo allocate = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                     .pNext = addressable ? &address_flags : NULL,
                                     .allocationSize = needs.size,
                                     .memoryTypeIndex = type};
    unsigned n = atomic_fetch_add(&context->device_allocations, 1u) + 1u;
    if (context->hooks.fail_device_allocation && n == context->hooks.fail_device_allocation)
        vr = VK_ERROR_OUT_OF_DEVICE_MEMORY; /* injected */
    else
        vr = vk->vkAllocateMemory(context->device, &allocate, context->allocator, &out->memory);
    if (vr == VK_SUCCESS) vr = vk->vkBindBufferMemory(context->device, out->buffer, out->memory, 0);
    if (vr == VK_SUCCESS &&
        (context->memory.memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT))
        vr = vk->vkMapMemory(context->device, out->memory, 0, VK_WHOLE_SIZE, 0, &out->mapped);
    if (vr != VK_SUCCESS) {
        gpu_buffer_destroy(context, out);
        return context_fail_vk(context, vr, "allocating buffer memory");
    }
    out->size = size;
    if (addressable) {
        VkBufferDeviceAddressInfo address_info = {
            .sType = VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO, .buffer = out->buffer};
        out->address = vk->vkGetBufferDeviceAddress(context->device, &address_info);
    }
    return MOEVK_SUCCESS;
}

void gpu_buffer_destroy(moevk_context *context, gpu_buffer *buffer) {
    if (buffer->buffer)
        context->vk.vkDestroyBuffer(context->device, buffer->buffer, context->allocator);
    if (buffer->memory)
        context->vk.vkFreeMemory(context->device, buffer->memory, context->allocator);
    *buffer = (gpu_buffer){0};
}
