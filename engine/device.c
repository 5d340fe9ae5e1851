/* The logical device and compute queue: created by moevk, or adopted from the application. */
#include "internal.h"

static moevk_result find_compute_family(moevk_context *context, uint32_t *family) {
    const instance_functions *vki = &context->vki;
    uint32_t count = 0;
    vki->vkGetPhysicalDeviceQueueFamilyProperties(context->physical_device, &count, NULL);
    VkQueueFamilyProperties list[32];
    if (count > 32) count = 32;
    vki->vkGetPhysicalDeviceQueueFamilyProperties(context->physical_device, &count, list);
    for (uint32_t f = 0; f < count; ++f)
        if (list[f].queueFlags & VK_QUEUE_COMPUTE_BIT) {
            *family = f;
            return MOEVK_SUCCESS;
        }
    return context_fail(context, MOEVK_ERROR_NO_DEVICE, "the device has no compute queue");
}

/* Device memory is mapped directly where the device shares memory with the host (lavapipe,
 * integrated GPUs), or where the caller asks for it: no staging copies there. */
static int maps_device_memory(const moevk_context *context, moevk_memory_mode mode) {
    VkPhysicalDeviceType type = context->info.type;
    if (mode == MOEVK_MEMORY_STAGING) return 0;
    if (mode != MOEVK_MEMORY_MAPPED && type != VK_PHYSICAL_DEVICE_TYPE_CPU &&
        type != VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU)
        return 0;
    const VkMemoryPropertyFlags wanted = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT |
                                         VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                         VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    for (uint32_t i = 0; i < context->memory.memoryTypeCount; ++i)
        if ((context->memory.memoryTypes[i].propertyFlags & wanted) == wanted) return 1;
    return 0;
}

moevk_result device_create(moevk_context *context, moevk_memory_mode memory_mode,
                           int adopted_addresses, int adopted_size_control) {
    const instance_functions *vki = &context->vki;
    instance_fill_device_info(vki, context->physical_device, &context->info);
    vki->vkGetPhysicalDeviceMemoryProperties(context->physical_device, &context->memory);
    VkPhysicalDeviceProperties properties;
    vki->vkGetPhysicalDeviceProperties(context->physical_device, &properties);
    context->limits = properties.limits;
    context->info.host_visible_device_memory = maps_device_memory(context, memory_mode);
    context->info.buffer_device_address = adopted_addresses;
    context->info.portability_enumeration = context->portability_enumeration;
    /* An adopted device's enabled features are the application's, which says whether subgroup
     * size control is among them; without it moevk runs the per-token kernels there. */
    if (context->device != VK_NULL_HANDLE && !adopted_size_control)
        context->info.selection_lanes = 0;

    /* A kernel binds only its own buffers (at most MAX_KERNEL_BUFFERS, engine/stage.c checks
     * each), whatever their binding numbers. */
    if (context->limits.maxPerStageDescriptorStorageBuffers < MAX_KERNEL_BUFFERS)
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                            "the device allows %u storage buffers per stage; moevk needs %d",
                            context->limits.maxPerStageDescriptorStorageBuffers,
                            MAX_KERNEL_BUFFERS);
    if (context->limits.maxComputeWorkGroupSize[0] < WORKGROUP_SIZE ||
        context->limits.maxComputeSharedMemorySize < 16384)
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                            "the device's compute limits are below what moevk needs");

    PFN_vkGetDeviceProcAddr gdpa = vki->vkGetDeviceProcAddr;
    if (!gdpa) return context_fail(context, MOEVK_ERROR_NO_VULKAN, "vkGetDeviceProcAddr missing");
    if (context->device == VK_NULL_HANDLE) {
        moevk_result r = find_compute_family(context, &context->queue_family);
        if (r != MOEVK_SUCCESS) return r;
        VkPhysicalDeviceVulkan12Features supported12 = {
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
        VkPhysicalDeviceFeatures2 supported = {
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &supported12};
        vki->vkGetPhysicalDeviceFeatures2(context->physical_device, &supported);
        /* The subgroup kernels' required size and full subgroups, where offered. */
        VkPhysicalDeviceSubgroupSizeControlFeaturesEXT size_control = {
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES_EXT,
            .subgroupSizeControl = VK_TRUE,
            .computeFullSubgroups = VK_TRUE};
        int subgroups = context->info.selection_lanes > 0;
        VkPhysicalDeviceVulkan12Features enabled12 = {
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
            .pNext = subgroups ? &size_control : NULL,
            .bufferDeviceAddress = supported12.bufferDeviceAddress};
        context->info.buffer_device_address = supported12.bufferDeviceAddress == VK_TRUE;
        float priority = 1.0f;
        VkDeviceQueueCreateInfo queue = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                         .queueFamilyIndex = context->queue_family,
                                         .queueCount = 1,
                                         .pQueuePriorities = &priority};
        /* A portability-subset device must have the extension enabled (Vulkan's rule). */
        const char *extensions[2];
        uint32_t extension_count = 0;
        if (context->info.portability_subset)
            extensions[extension_count++] = PORTABILITY_SUBSET_EXTENSION;
        if (subgroups) extensions[extension_count++] = SUBGROUP_SIZE_CONTROL_EXTENSION;
        VkDeviceCreateInfo create = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                                     .pNext = &enabled12,
                                     .queueCreateInfoCount = 1,
                                     .pQueueCreateInfos = &queue,
                                     .enabledExtensionCount = extension_count,
                                     .ppEnabledExtensionNames = extensions};
        VkResult vr = vki->vkCreateDevice(context->physical_device, &create, context->allocator,
                                          &context->device);
        if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkCreateDevice");
        context->owns_device = 1;
    }
    uint32_t family_count = 0;
    VkQueueFamilyProperties families[32];
    vki->vkGetPhysicalDeviceQueueFamilyProperties(context->physical_device, &family_count, NULL);
    if (family_count > 32) family_count = 32;
    vki->vkGetPhysicalDeviceQueueFamilyProperties(context->physical_device, &family_count,
                                                  families);
    if (context->queue_family >= family_count ||
        !(families[context->queue_family].queueFlags & VK_QUEUE_COMPUTE_BIT))
        return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT,
                            "queue family %u is not a compute queue family", context->queue_family);
    context->timestamp_valid_bits = families[context->queue_family].timestampValidBits;
    loader_load_device(&context->vk, context->device, gdpa);
    context->vk.vkGetDeviceQueue(context->device, context->queue_family, context->queue_index,
                                 &context->queue);
    return MOEVK_SUCCESS;
}
