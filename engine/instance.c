/* The Vulkan instance of a context that makes its own, validation messages, and the choice of
 * physical device (by selector, MOEVK_DEVICE, or kind: discrete, integrated, virtual, CPU). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char VALIDATION_LAYER[] = "VK_LAYER_KHRONOS_validation";

static VKAPI_ATTR VkBool32 VKAPI_CALL on_validation_message(
    VkDebugUtilsMessageSeverityFlagBitsEXT severity, VkDebugUtilsMessageTypeFlagsEXT types,
    const VkDebugUtilsMessengerCallbackDataEXT *data, void *user) {
    (void)types;
    moevk_context *context = user;
    atomic_fetch_add(&context->validation_messages, 1u);
    if (context->message_fn)
        context->message_fn(context->message_user,
                            (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) != 0,
                            data && data->pMessage ? data->pMessage : "");
    return VK_FALSE;
}

int instance_has_extension(const instance_functions *vki, VkPhysicalDevice device,
                           const char *name) {
    uint32_t count = 0;
    VkResult vr = device ? vki->vkEnumerateDeviceExtensionProperties(device, NULL, &count, NULL)
                         : vki->vkEnumerateInstanceExtensionProperties(NULL, &count, NULL);
    if (vr != VK_SUCCESS || count == 0) return 0;
    VkExtensionProperties *list = calloc(count, sizeof *list);
    if (!list) return 0;
    vr = device ? vki->vkEnumerateDeviceExtensionProperties(device, NULL, &count, list)
                : vki->vkEnumerateInstanceExtensionProperties(NULL, &count, list);
    int found = 0;
    for (uint32_t i = 0; (vr == VK_SUCCESS || vr == VK_INCOMPLETE) && i < count && !found; ++i)
        found = strcmp(list[i].extensionName, name) == 0;
    free(list);
    return found;
}

static int has_validation_layer(moevk_context *context) {
    const instance_functions *vki = &context->vki;
    const VkAllocationCallbacks *alloc = context->allocator;
    uint32_t count = 0;
    if (vki->vkEnumerateInstanceLayerProperties(&count, NULL) != VK_SUCCESS || count == 0) return 0;
    VkLayerProperties *layers = context_calloc(context, count, sizeof *layers);
    if (!layers) return 0;
    int found = 0;
    if (vki->vkEnumerateInstanceLayerProperties(&count, layers) == VK_SUCCESS)
        for (uint32_t i = 0; i < count && !found; ++i)
            found = strcmp(layers[i].layerName, VALIDATION_LAYER) == 0;
    host_free(alloc, layers);
    return found;
}

moevk_result instance_create(moevk_context *context, const moevk_context_info *info) {
    instance_functions *vki = &context->vki;
    uint32_t loader_version = VK_API_VERSION_1_0;
    if (vki->vkEnumerateInstanceVersion) vki->vkEnumerateInstanceVersion(&loader_version);
    if (loader_version < VK_API_VERSION_1_2)
        return context_fail(context, MOEVK_ERROR_NO_VULKAN,
                            "the Vulkan loader supports only API %u.%u; moevk needs 1.2",
                            VK_API_VERSION_MAJOR(loader_version),
                            VK_API_VERSION_MINOR(loader_version));

    int validation = info && info->validation;
    if (validation && !has_validation_layer(context))
        return context_fail(context, MOEVK_ERROR_UNSUPPORTED,
                            "validation asked for, but %s is not installed", VALIDATION_LAYER);

    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .pApplicationName = "moevk",
                             .pEngineName = "moevk",
                             .engineVersion = MOEVK_VERSION_NUMBER,
                             .apiVersion = VK_API_VERSION_1_2};
    VkValidationFeatureEnableEXT enables[] = {
        VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT};
    VkValidationFeaturesEXT features = {.sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
                                        .enabledValidationFeatureCount = 1,
                                        .pEnabledValidationFeatures = enables};
    VkDebugUtilsMessengerCreateInfoEXT messenger_info = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .pNext = &features,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = on_validation_message,
        .pUserData = context};
    const char *layers[] = {VALIDATION_LAYER};
    const char *extensions[2];
    uint32_t extension_count = 0;
    if (validation) extensions[extension_count++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    /* MoltenVK's devices are listed only to an instance that asks for portability ones. */
    context->portability_enumeration =
        instance_has_extension(vki, VK_NULL_HANDLE, VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME);
    if (context->portability_enumeration)
        extensions[extension_count++] = VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME;
    VkInstanceCreateInfo create = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                   .pNext = validation ? &messenger_info : NULL,
                                   .flags = context->portability_enumeration
                                                ? VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR
                                                : 0,
                                   .pApplicationInfo = &app,
                                   .enabledLayerCount = validation ? 1 : 0,
                                   .ppEnabledLayerNames = layers,
                                   .enabledExtensionCount = extension_count,
                                   .ppEnabledExtensionNames = extensions};
    VkResult vr = vki->vkCreateInstance(&create, context->allocator, &context->instance);
    if (vr == VK_ERROR_INCOMPATIBLE_DRIVER)
        return context_fail(context, MOEVK_ERROR_NO_DEVICE, "no Vulkan driver is installed");
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkCreateInstance");
    context->owns_instance = 1;
    loader_load_instance(vki, context->instance);
    if (validation) {
        messenger_info.pNext = NULL;
        vr = vki->vkCreateDebugUtilsMessengerEXT(context->instance, &messenger_info,
                                                 context->allocator, &context->messenger);
        if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkCreateDebugUtilsMessengerEXT");
    }
    return MOEVK_SUCCESS;
}

void instance_fill_device_info(const instance_functions *vki, VkPhysicalDevice device,
                               moevk_device_info *info) {
    VkPhysicalDeviceFloatControlsProperties float_controls = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FLOAT_CONTROLS_PROPERTIES};
    VkPhysicalDeviceDriverProperties driver = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES, .pNext = &float_controls};
    VkPhysicalDeviceSubgroupProperties subgroup = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES, .pNext = &driver};
    VkPhysicalDeviceProperties2 properties = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &subgroup};
    vki->vkGetPhysicalDeviceProperties2(device, &properties);
    const VkPhysicalDeviceProperties *p = &properties.properties;
    moevk_device_info_init(info);
    snprintf(info->name, sizeof info->name, "%s", p->deviceName);
    snprintf(info->driver_name, sizeof info->driver_name, "%s", driver.driverName);
    snprintf(info->driver_info, sizeof info->driver_info, "%s", driver.driverInfo);
    info->vendor_id = p->vendorID;
    info->device_id = p->deviceID;
    info->api_version = p->apiVersion;
    info->driver_version = p->driverVersion;
    info->type = p->deviceType;
    info->subgroup_size = subgroup.subgroupSize;
    info->max_workgroup_count_x = p->limits.maxComputeWorkGroupCount[0];
    info->max_storage_buffer_range = p->limits.maxStorageBufferRange;
    info->rounding_mode_rte = float_controls.shaderRoundingModeRTEFloat32 == VK_TRUE;
    info->portability_subset = instance_has_extension(vki, device, PORTABILITY_SUBSET_EXTENSION);
    info->selection_lanes = subgroup_lanes_offered(vki, device);

    VkPhysicalDeviceMemoryProperties memory;
    vki->vkGetPhysicalDeviceMemoryProperties(device, &memory);
    for (uint32_t h = 0; h < memory.memoryHeapCount; ++h)
        if ((memory.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) &&
            memory.memoryHeaps[h].size > info->device_local_bytes)
            info->device_local_bytes = memory.memoryHeaps[h].size;

    uint32_t families = 0;
    vki->vkGetPhysicalDeviceQueueFamilyProperties(device, &families, NULL);
    VkQueueFamilyProperties list[16];
    if (families > 16) families = 16;
    vki->vkGetPhysicalDeviceQueueFamilyProperties(device, &families, list);
    for (uint32_t f = 0; f < families; ++f)
        if ((list[f].queueFlags & VK_QUEUE_COMPUTE_BIT) && list[f].timestampValidBits > 0) {
            info->timestamp_period_ns = p->limits.timestampPeriod;
            break;
        }
}

static int kind_rank(VkPhysicalDeviceType type) {
    switch (type) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 0;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 1;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return 3;
    default: return 4;
    }
}

static int is_decimal(const char *text) {
    if (!*text) return 0;
    for (; *text; ++text)
        if (!isdigit((unsigned char)*text)) return 0;
    return 1;
}

moevk_result instance_choose_device(moevk_context *context, const char *selector) {
    const instance_functions *vki = &context->vki;
    uint32_t count = 0;
    VkResult vr = vki->vkEnumeratePhysicalDevices(context->instance, &count, NULL);
    if (vr != VK_SUCCESS) return context_fail_vk(context, vr, "vkEnumeratePhysicalDevices");
    if (count == 0) return context_fail(context, MOEVK_ERROR_NO_DEVICE, "no Vulkan device found");
    VkPhysicalDevice *devices = context_calloc(context, count, sizeof *devices);
    if (!devices) return context_fail(context, MOEVK_ERROR_OUT_OF_HOST_MEMORY, "listing devices");
    vr = vki->vkEnumeratePhysicalDevices(context->instance, &count, devices);
    if (vr != VK_SUCCESS && vr != VK_INCOMPLETE) {
        host_free(context->allocator, devices);
        return context_fail_vk(context, vr, "vkEnumeratePhysicalDevices");
    }
    if (!selector || !*selector) selector = getenv("MOEVK_DEVICE");

    int chosen = -1, best_rank = 99;
    for (uint32_t i = 0; i < count; ++i) {
        VkPhysicalDeviceProperties p;
        vki->vkGetPhysicalDeviceProperties(devices[i], &p);
        if (p.apiVersion < VK_API_VERSION_1_2) continue;
        if (selector && *selector) {
            int match = is_decimal(selector) ? (uint32_t)atoi(selector) == i
                                             : strstr(p.deviceName, selector) != NULL;
            if (match) {
                chosen = (int)i;
                break;
            }
        } else if (kind_rank(p.deviceType) < best_rank) {
            best_rank = kind_rank(p.deviceType);
            chosen = (int)i;
        }
    }
    if (chosen >= 0) context->physical_device = devices[chosen];
    host_free(context->allocator, devices);
    if (chosen < 0)
        return selector && *selector
                   ? context_fail(context, MOEVK_ERROR_NO_DEVICE,
                                  "no Vulkan 1.2 device matches \"%s\" (an index or a name part)",
                                  selector)
                   : context_fail(context, MOEVK_ERROR_NO_DEVICE, "no Vulkan 1.2 device found");
    return MOEVK_SUCCESS;
}
