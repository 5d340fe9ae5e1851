/* The Vulkan loader and the function tables, per context. volk's volk.c is compiled here so
 * that its table generator can fill a VolkDeviceTable through a context's own
 * vkGetDeviceProcAddr; volk's global pointers are never initialised or written, so an
 * application that uses volk, or libvulkan directly, is never disturbed. */
#include <string.h>

#include "internal.h"

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wcast-function-type"
#endif
#include <volk.c>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

PFN_vkGetInstanceProcAddr loader_open(void **library) {
    *library = platform_library_open();
    if (!*library) return NULL;
    PFN_vkGetInstanceProcAddr gipa;
    /* An object pointer from dlsym or GetProcAddress; both systems let it convert back. */
    void *symbol = platform_library_symbol(*library, "vkGetInstanceProcAddr");
    memcpy(&gipa, &symbol, sizeof gipa);
    if (!gipa) {
        platform_library_close(*library);
        *library = NULL;
    }
    return gipa;
}

void loader_close(void *library) { platform_library_close(library); }

#define LOAD_INSTANCE_FN(fns, instance, name)                                                      \
    (fns)->name = (PFN_##name)(fns)->vkGetInstanceProcAddr(instance, #name)

void loader_load_global(instance_functions *fns, PFN_vkGetInstanceProcAddr gipa) {
    fns->vkGetInstanceProcAddr = gipa;
    LOAD_INSTANCE_FN(fns, VK_NULL_HANDLE, vkCreateInstance);
    LOAD_INSTANCE_FN(fns, VK_NULL_HANDLE, vkEnumerateInstanceLayerProperties);
    LOAD_INSTANCE_FN(fns, VK_NULL_HANDLE, vkEnumerateInstanceVersion);
    LOAD_INSTANCE_FN(fns, VK_NULL_HANDLE, vkEnumerateInstanceExtensionProperties);
}

void loader_load_instance(instance_functions *fns, VkInstance instance) {
    LOAD_INSTANCE_FN(fns, instance, vkDestroyInstance);
    LOAD_INSTANCE_FN(fns, instance, vkEnumeratePhysicalDevices);
    LOAD_INSTANCE_FN(fns, instance, vkEnumerateDeviceExtensionProperties);
    LOAD_INSTANCE_FN(fns, instance, vkGetPhysicalDeviceProperties);
    LOAD_INSTANCE_FN(fns, instance, vkGetPhysicalDeviceProperties2);
    LOAD_INSTANCE_FN(fns, instance, vkGetPhysicalDeviceFeatures2);
    LOAD_INSTANCE_FN(fns, instance, vkGetPhysicalDeviceQueueFamilyProperties);
    LOAD_INSTANCE_FN(fns, instance, vkGetPhysicalDeviceMemoryProperties);
    LOAD_INSTANCE_FN(fns, instance, vkCreateDevice);
    LOAD_INSTANCE_FN(fns, instance, vkGetDeviceProcAddr);
    LOAD_INSTANCE_FN(fns, instance, vkCreateDebugUtilsMessengerEXT);
    LOAD_INSTANCE_FN(fns, instance, vkDestroyDebugUtilsMessengerEXT);
}

typedef struct device_loader {
    VkDevice device;
    PFN_vkGetDeviceProcAddr gdpa;
} device_loader;

static PFN_vkVoidFunction load_device_function(void *context, const char *name) {
    const device_loader *loader = context;
    return loader->gdpa(loader->device, name);
}

void loader_load_device(struct VolkDeviceTable *table, VkDevice device,
                        PFN_vkGetDeviceProcAddr gdpa) {
    device_loader loader = {device, gdpa};
    volkGenLoadDeviceTable(table, &loader, load_device_function);
}
