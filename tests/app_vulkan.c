#include "app_vulkan.h"

#include <stdio.h>
#include <string.h>

#include "copy.spv.h"

static VKAPI_ATTR VkBool32 VKAPI_CALL on_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                 VkDebugUtilsMessageTypeFlagsEXT types,
                                                 const VkDebugUtilsMessengerCallbackDataEXT *data,
                                                 void *user) {
    (void)severity;
    (void)types;
    app_vulkan *app = user;
    app->messages++;
    printf("  application's validation: %s\n", data->pMessage);
    return VK_FALSE;
}

static int create_instance(app_vulkan *app, int validation) {
    VkApplicationInfo ai = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                            .apiVersion = VK_API_VERSION_1_2};
    VkValidationFeatureEnableEXT enables[] = {
        VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT};
    VkValidationFeaturesEXT features = {.sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
                                        .enabledValidationFeatureCount = 1,
                                        .pEnabledValidationFeatures = enables};
    VkDebugUtilsMessengerCreateInfoEXT messenger = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = on_message,
        .pUserData = app};
    const char *layers[] = {"VK_LAYER_KHRONOS_validation"};
    const char *extensions[] = {VK_EXT_DEBUG_UTILS_EXTENSION_NAME};
    VkInstanceCreateInfo ici = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                .pNext = validation ? &features : NULL,
                                .pApplicationInfo = &ai,
                                .enabledLayerCount = validation ? 1 : 0,
                                .ppEnabledLayerNames = layers,
                                .enabledExtensionCount = validation ? 1 : 0,
                                .ppEnabledExtensionNames = extensions};
    if (vkCreateInstance(&ici, NULL, &app->instance) != VK_SUCCESS) return 0;
    volkLoadInstance(app->instance);
    if (!validation) return 1;
    return vkCreateDebugUtilsMessengerEXT(app->instance, &messenger, NULL, &app->messenger) ==
           VK_SUCCESS;
}

static int create_copy_pipeline(app_vulkan *app) {
    VkDescriptorSetLayoutBinding bindings[2] = {
        {0, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, NULL},
        {1, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, NULL}};
    VkDescriptorSetLayoutCreateInfo set_info = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .bindingCount = 2,
        .pBindings = bindings};
    if (vkCreateDescriptorSetLayout(app->device, &set_info, NULL, &app->copy_set_layout)) return 0;
    VkPushConstantRange push = {VK_SHADER_STAGE_COMPUTE_BIT, 0, 4};
    VkPipelineLayoutCreateInfo layout_info = {.sType =
                                                  VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                              .setLayoutCount = 1,
                                              .pSetLayouts = &app->copy_set_layout,
                                              .pushConstantRangeCount = 1,
                                              .pPushConstantRanges = &push};
    if (vkCreatePipelineLayout(app->device, &layout_info, NULL, &app->copy_layout)) return 0;
    VkShaderModuleCreateInfo module_info = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                            .codeSize = sizeof copy_spv,
                                            .pCode = copy_spv};
    VkShaderModule module;
    if (vkCreateShaderModule(app->device, &module_info, NULL, &module)) return 0;
    VkComputePipelineCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = module,
                  .pName = "main"},
        .layout = app->copy_layout};
    VkResult vr =
        vkCreateComputePipelines(app->device, VK_NULL_HANDLE, 1, &info, NULL, &app->copy_pipeline);
    vkDestroyShaderModule(app->device, module, NULL);
    VkDescriptorPoolSize size = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 64};
    VkDescriptorPoolCreateInfo pool_info = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                            .flags =
                                                VK_DESCRIPTOR_POOL_CREATE_FREE_DESCRIPTOR_SET_BIT,
                                            .maxSets = 32,
                                            .poolSizeCount = 1,
                                            .pPoolSizes = &size};
    return vr == VK_SUCCESS && vkCreateDescriptorPool(app->device, &pool_info, NULL,
                                                      &app->descriptor_pool) == VK_SUCCESS;
}

static int has_device_extension(VkPhysicalDevice physical, const char *name) {
    VkExtensionProperties extensions[512];
    uint32_t count = 512;
    VkResult vr = vkEnumerateDeviceExtensionProperties(physical, NULL, &count, extensions);
    for (uint32_t i = 0; (vr == VK_SUCCESS || vr == VK_INCOMPLETE) && i < count; ++i)
        if (!strcmp(extensions[i].extensionName, name)) return 1;
    return 0;
}

int app_create(app_vulkan *app, const char *device_name, int validation) {
    return app_create_with_size_control(app, device_name, validation, NULL);
}

int app_create_with_size_control(app_vulkan *app, const char *device_name, int validation,
                                 int *enabled) {
    memset(app, 0, sizeof *app);
    if (enabled) *enabled = 0;
    if (volkInitialize() != VK_SUCCESS || !create_instance(app, validation)) return 0;
    VkPhysicalDevice devices[16];
    uint32_t count = 16;
    vkEnumeratePhysicalDevices(app->instance, &count, devices);
    for (uint32_t i = 0; i < count && !app->physical; ++i) {
        VkPhysicalDeviceProperties p;
        vkGetPhysicalDeviceProperties(devices[i], &p);
        if (!device_name || strcmp(p.deviceName, device_name) == 0) app->physical = devices[i];
    }
    if (!app->physical) return 0;
    VkQueueFamilyProperties families[16];
    uint32_t family_count = 16;
    vkGetPhysicalDeviceQueueFamilyProperties(app->physical, &family_count, families);
    for (app->family = 0; app->family < family_count; ++app->family)
        if (families[app->family].queueFlags & VK_QUEUE_COMPUTE_BIT) break;
    float priority = 1.0f;
    VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                   .queueFamilyIndex = app->family,
                                   .queueCount = 1,
                                   .pQueuePriorities = &priority};
    const char *size_control_name = "VK_EXT_subgroup_size_control";
    VkPhysicalDeviceSubgroupSizeControlFeaturesEXT size_control = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES_EXT};
    if (enabled && has_device_extension(app->physical, size_control_name)) {
        VkPhysicalDeviceFeatures2 features = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                              .pNext = &size_control};
        vkGetPhysicalDeviceFeatures2(app->physical, &features);
        *enabled = size_control.subgroupSizeControl && size_control.computeFullSubgroups;
    }
    VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                              .pNext = enabled && *enabled ? &size_control : NULL,
                              .queueCreateInfoCount = 1,
                              .pQueueCreateInfos = &qci,
                              .enabledExtensionCount = enabled && *enabled ? 1 : 0,
                              .ppEnabledExtensionNames = &size_control_name};
    if (vkCreateDevice(app->physical, &dci, NULL, &app->device) != VK_SUCCESS) return 0;
    volkLoadDevice(app->device);
    vkGetDeviceQueue(app->device, app->family, 0, &app->queue);
    VkCommandPoolCreateInfo pool_info = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                         .queueFamilyIndex = app->family};
    VkFenceCreateInfo fence_info = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    return vkCreateCommandPool(app->device, &pool_info, NULL, &app->pool) == VK_SUCCESS &&
           vkCreateFence(app->device, &fence_info, NULL, &app->fence) == VK_SUCCESS &&
           create_copy_pipeline(app);
}

void app_destroy(app_vulkan *app) {
    if (app->device) {
        vkDeviceWaitIdle(app->device);
        vkDestroyDescriptorPool(app->device, app->descriptor_pool, NULL);
        vkDestroyPipeline(app->device, app->copy_pipeline, NULL);
        vkDestroyPipelineLayout(app->device, app->copy_layout, NULL);
        vkDestroyDescriptorSetLayout(app->device, app->copy_set_layout, NULL);
        vkDestroyFence(app->device, app->fence, NULL);
        vkDestroyCommandPool(app->device, app->pool, NULL);
        vkDestroyDevice(app->device, NULL);
    }
    if (app->messenger) vkDestroyDebugUtilsMessengerEXT(app->instance, app->messenger, NULL);
    if (app->instance) vkDestroyInstance(app->instance, NULL);
}

int app_buffer_create(app_vulkan *app, VkDeviceSize size, app_buffer *out) {
    memset(out, 0, sizeof *out);
    VkBufferCreateInfo info = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                               .size = size,
                               .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                                        VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                        VK_BUFFER_USAGE_TRANSFER_DST_BIT};
    if (vkCreateBuffer(app->device, &info, NULL, &out->buffer) != VK_SUCCESS) return 0;
    VkMemoryRequirements needs;
    vkGetBufferMemoryRequirements(app->device, out->buffer, &needs);
    VkPhysicalDeviceMemoryProperties memory;
    vkGetPhysicalDeviceMemoryProperties(app->physical, &memory);
    VkMemoryPropertyFlags want =
        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    uint32_t type = UINT32_MAX;
    for (uint32_t i = 0; i < memory.memoryTypeCount && type == UINT32_MAX; ++i)
        if ((needs.memoryTypeBits & (1u << i)) &&
            (memory.memoryTypes[i].propertyFlags & want) == want)
            type = i;
    VkMemoryAllocateInfo allocate = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                     .allocationSize = needs.size,
                                     .memoryTypeIndex = type};
    if (type == UINT32_MAX || vkAllocateMemory(app->device, &allocate, NULL, &out->memory))
        return 0;
    out->size = size;
    return vkBindBufferMemory(app->device, out->buffer, out->memory, 0) == VK_SUCCESS &&
           vkMapMemory(app->device, out->memory, 0, VK_WHOLE_SIZE, 0, &out->mapped) == VK_SUCCESS;
}

void app_buffer_destroy(app_vulkan *app, app_buffer *buffer) {
    if (buffer->buffer) vkDestroyBuffer(app->device, buffer->buffer, NULL);
    if (buffer->memory) vkFreeMemory(app->device, buffer->memory, NULL);
    memset(buffer, 0, sizeof *buffer);
}

VkCommandBuffer app_begin(app_vulkan *app) {
    VkCommandBufferAllocateInfo info = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                        .commandPool = app->pool,
                                        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                        .commandBufferCount = 1};
    VkCommandBuffer cmd = VK_NULL_HANDLE;
    vkAllocateCommandBuffers(app->device, &info, &cmd);
    VkCommandBufferBeginInfo begin = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                      .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    vkBeginCommandBuffer(cmd, &begin);
    return cmd;
}

int app_submit_and_wait(app_vulkan *app, VkCommandBuffer cmd) {
    vkEndCommandBuffer(cmd);
    VkSubmitInfo submit = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &cmd};
    int ok = vkQueueSubmit(app->queue, 1, &submit, app->fence) == VK_SUCCESS &&
             vkWaitForFences(app->device, 1, &app->fence, VK_TRUE, UINT64_MAX) == VK_SUCCESS;
    vkResetFences(app->device, 1, &app->fence);
    vkFreeCommandBuffers(app->device, app->pool, 1, &cmd);
    vkResetDescriptorPool(app->device, app->descriptor_pool, 0);
    return ok;
}

void app_record_copy(app_vulkan *app, VkCommandBuffer cmd, VkBuffer from, VkBuffer to,
                     VkDeviceSize bytes) {
    VkDescriptorSetAllocateInfo alloc = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                         .descriptorPool = app->descriptor_pool,
                                         .descriptorSetCount = 1,
                                         .pSetLayouts = &app->copy_set_layout};
    VkDescriptorSet set;
    vkAllocateDescriptorSets(app->device, &alloc, &set);
    VkDescriptorBufferInfo infos[2] = {{from, 0, bytes}, {to, 0, bytes}};
    VkWriteDescriptorSet writes[2];
    for (int i = 0; i < 2; ++i)
        writes[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                           .dstSet = set,
                                           .dstBinding = (uint32_t)i,
                                           .descriptorCount = 1,
                                           .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                           .pBufferInfo = &infos[i]};
    vkUpdateDescriptorSets(app->device, 2, writes, 0, NULL);
    uint32_t units = (uint32_t)(bytes / 16);
    vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, app->copy_pipeline);
    vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, app->copy_layout, 0, 1, &set, 0,
                            NULL);
    vkCmdPushConstants(cmd, app->copy_layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, 4, &units);
    vkCmdDispatch(cmd, (units + 255) / 256 ? (units + 255) / 256 : 1, 1, 1);
}

void app_barrier(VkCommandBuffer cmd, VkPipelineStageFlags src, VkAccessFlags src_access,
                 VkPipelineStageFlags dst, VkAccessFlags dst_access) {
    VkMemoryBarrier barrier = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                               .srcAccessMask = src_access,
                               .dstAccessMask = dst_access};
    vkCmdPipelineBarrier(cmd, src, dst, 0, 1, &barrier, 0, NULL, 0, NULL);
}
