/* The bench's own Vulkan instance and device, through volk's global function pointers the way
 * an application using volk does; moevk adopts them, and the two coexist in one process. */
#include <stdio.h>
#include <string.h>

#include "bench.h"

static int volk_ready(void) {
    static int ready = -1; /* the bench is an application: a process-wide loader is its choice */
    if (ready < 0) ready = volkInitialize() == VK_SUCCESS;
    return ready;
}

static VkInstance create_instance(void) {
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .pApplicationName = "moevk-bench",
                             .apiVersion = VK_API_VERSION_1_2};
    VkInstanceCreateInfo info = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                 .pApplicationInfo = &app};
    VkInstance instance = VK_NULL_HANDLE;
    if (vkCreateInstance(&info, NULL, &instance) != VK_SUCCESS) return VK_NULL_HANDLE;
    volkLoadInstanceOnly(instance);
    return instance;
}

uint32_t bench_device_count(void) {
    if (!volk_ready()) return 0;
    VkInstance instance = create_instance();
    if (!instance) return 0;
    uint32_t count = 0;
    vkEnumeratePhysicalDevices(instance, &count, NULL);
    vkDestroyInstance(instance, NULL);
    return count;
}

static int has_device_extension(VkPhysicalDevice physical, const char *name) {
    VkExtensionProperties extensions[512];
    uint32_t count = 512;
    VkResult vr = vkEnumerateDeviceExtensionProperties(physical, NULL, &count, extensions);
    for (uint32_t i = 0; (vr == VK_SUCCESS || vr == VK_INCOMPLETE) && i < count; ++i)
        if (!strcmp(extensions[i].extensionName, name)) return 1;
    return 0;
}

int bench_device_open(uint32_t index, bench_device *out, char *error, size_t error_size) {
    memset(out, 0, sizeof *out);
    if (!volk_ready()) {
        snprintf(error, error_size, "no Vulkan loader");
        return 0;
    }
    out->instance = create_instance();
    if (!out->instance) {
        snprintf(error, error_size, "vkCreateInstance failed");
        return 0;
    }
    VkPhysicalDevice devices[16];
    uint32_t count = 16;
    vkEnumeratePhysicalDevices(out->instance, &count, devices);
    if (index >= count) {
        snprintf(error, error_size, "no device %u (there are %u)", index, count);
        return 0;
    }
    out->physical = devices[index];
    VkPhysicalDeviceDriverProperties driver = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
    VkPhysicalDeviceSubgroupProperties subgroup = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES, .pNext = &driver};
    VkPhysicalDeviceProperties2 properties = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &subgroup};
    vkGetPhysicalDeviceProperties2(out->physical, &properties);
    out->properties = properties.properties;
    snprintf(out->driver_name, sizeof out->driver_name, "%s", driver.driverName);
    snprintf(out->driver_info, sizeof out->driver_info, "%s", driver.driverInfo);
    out->subgroup_size = subgroup.subgroupSize;
    out->timestamp_period = out->properties.limits.timestampPeriod;

    VkQueueFamilyProperties families[16];
    uint32_t family_count = 16;
    vkGetPhysicalDeviceQueueFamilyProperties(out->physical, &family_count, families);
    out->family = UINT32_MAX;
    for (uint32_t f = 0; f < family_count && out->family == UINT32_MAX; ++f)
        if (families[f].queueFlags & VK_QUEUE_COMPUTE_BIT) out->family = f;
    if (out->family == UINT32_MAX) {
        snprintf(error, error_size, "no compute queue");
        return 0;
    }
    out->timestamp_bits = families[out->family].timestampValidBits;
    int has_size_control = has_device_extension(out->physical, "VK_EXT_subgroup_size_control");
    VkPhysicalDeviceSubgroupSizeControlFeaturesEXT size_control = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES_EXT};
    VkPhysicalDeviceVulkan12Features supported12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
        .pNext = has_size_control ? &size_control : NULL};
    VkPhysicalDeviceFeatures2 supported = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                           .pNext = &supported12};
    vkGetPhysicalDeviceFeatures2(out->physical, &supported);
    /* moevk reaches buffers past maxStorageBufferRange through device addresses, and runs
     * scores and top-k a subgroup per token with subgroup size control, as a device of its own
     * would. */
    out->subgroup_size_control =
        has_size_control && size_control.subgroupSizeControl && size_control.computeFullSubgroups;
    size_control.pNext = NULL;
    VkPhysicalDeviceVulkan12Features enabled12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
        .pNext = out->subgroup_size_control ? &size_control : NULL,
        .bufferDeviceAddress = supported12.bufferDeviceAddress};
    out->buffer_device_address = supported12.bufferDeviceAddress == VK_TRUE;
    const char *size_control_name = "VK_EXT_subgroup_size_control";
    float priority = 1.0f;
    VkDeviceQueueCreateInfo queue = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                     .queueFamilyIndex = out->family,
                                     .queueCount = 1,
                                     .pQueuePriorities = &priority};
    VkDeviceCreateInfo device_info = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                                      .pNext = &enabled12,
                                      .queueCreateInfoCount = 1,
                                      .pQueueCreateInfos = &queue,
                                      .enabledExtensionCount = out->subgroup_size_control ? 1 : 0,
                                      .ppEnabledExtensionNames = &size_control_name};
    if (vkCreateDevice(out->physical, &device_info, NULL, &out->device) != VK_SUCCESS) {
        snprintf(error, error_size, "vkCreateDevice failed");
        return 0;
    }
    volkLoadDevice(out->device);
    vkGetDeviceQueue(out->device, out->family, 0, &out->queue);
    return 1;
}

void bench_device_close(bench_device *device) {
    if (device->device) vkDestroyDevice(device->device, NULL);
    if (device->instance) vkDestroyInstance(device->instance, NULL);
    memset(device, 0, sizeof *device);
}
