/* Contexts: create (own device or the application's), destroy, describe; device listing. */
#include <string.h>

#include "internal.h"

static int adopts_device(const moevk_context_info *info) {
    return info && (info->instance || info->physical_device || info->device_handle);
}

static moevk_result open_loader(moevk_context *context, PFN_vkGetInstanceProcAddr given) {
    PFN_vkGetInstanceProcAddr gipa = given;
    if (!gipa) gipa = loader_open(&context->loader_library);
    if (!gipa)
        return context_fail(context, MOEVK_ERROR_NO_VULKAN,
                            "no Vulkan loader (libvulkan.so.1) could be opened");
    loader_load_global(&context->vki, gipa);
    return MOEVK_SUCCESS;
}

static moevk_result build_context(moevk_context *context, const moevk_context_info *info) {
    moevk_result r = open_loader(context, info ? info->get_instance_proc_addr : NULL);
    if (r != MOEVK_SUCCESS) return r;
    if (adopts_device(info)) {
        if (!info->instance || !info->physical_device || !info->device_handle)
            return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT,
                                "adopting needs instance, physical_device and device_handle");
        if (info->validation)
            return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT,
                                "validation is the application's choice on an adopted instance");
        context->instance = info->instance;
        context->physical_device = info->physical_device;
        context->device = info->device_handle;
        context->queue_family = info->queue_family_index;
        context->queue_index = info->queue_index;
        loader_load_instance(&context->vki, context->instance);
    } else {
        r = instance_create(context, info);
        if (r != MOEVK_SUCCESS) return r;
        r = instance_choose_device(context, info ? info->device : NULL);
        if (r != MOEVK_SUCCESS) return r;
    }
    if (info && (unsigned)info->memory_mode > MOEVK_MEMORY_MAPPED)
        return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT,
                            "memory_mode is not a moevk_memory_mode");
    if (info && info->reserved_0_7 != 0)
        return context_fail(context, MOEVK_ERROR_INVALID_ARGUMENT, "reserved_0_7 must be zero");
    r = device_create(context, info ? info->memory_mode : MOEVK_MEMORY_AUTO,
                      adopts_device(info) && info->buffer_device_address,
                      adopts_device(info) && info->subgroup_size_control);
    if (r != MOEVK_SUCCESS) return r;
    r = context_commands_create(context);
    if (r != MOEVK_SUCCESS) return r;
    return pipelines_create_cache(context, info);
}

moevk_result moevk_context_create(const moevk_context_info *caller_info, moevk_context **out) {
    if (!out) return MOEVK_ERROR_INVALID_ARGUMENT;
    *out = NULL;
    /* This library's struct, its defaults past the caller's struct_size (no context yet to say
     * why a struct is refused: the result alone tells). */
    moevk_context_info full;
    moevk_context_info_init(&full);
    if (caller_info) {
        moevk_result r = SIZED_READ(NULL, moevk_context_info, caller_info, &full);
        if (r != MOEVK_SUCCESS) return r;
    }
    const moevk_context_info *info = caller_info ? &full : NULL;
    const VkAllocationCallbacks *allocator = info ? info->allocator : NULL;
    const moevk_test_hooks *hooks = info ? info->test_hooks : NULL;
    if (hooks && hooks->fail_host_allocation == 1) return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    moevk_context *context = host_calloc(allocator, 1, sizeof *context);
    if (!context) return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    context->allocator = allocator;
    atomic_init(&context->validation_messages, 0u);
    atomic_init(&context->host_allocations, 1u); /* the context itself */
    if (platform_lock_init(&context->lock) != 0) {
        host_free(allocator, context);
        return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    }
    if (info) {
        context->message_fn = info->message_fn;
        context->message_user = info->message_user;
        if (info->test_hooks) context->hooks = *info->test_hooks;
    }
    moevk_result r = build_context(context, info);
    if (r != MOEVK_SUCCESS) {
        moevk_context_destroy(context);
        return r;
    }
    *out = context;
    return MOEVK_SUCCESS;
}

void moevk_context_destroy(moevk_context *context) {
    if (!context) return;
    const VkAllocationCallbacks *allocator = context->allocator;
    if (context->device && context->vk.vkDeviceWaitIdle) {
        context->vk.vkDeviceWaitIdle(context->device);
        pipeline_cache_save(context);
        pipelines_destroy_cache(context);
        context_commands_destroy(context);
        if (context->owns_device) context->vk.vkDestroyDevice(context->device, allocator);
    }
    if (context->messenger)
        context->vki.vkDestroyDebugUtilsMessengerEXT(context->instance, context->messenger,
                                                     allocator);
    if (context->owns_instance) context->vki.vkDestroyInstance(context->instance, allocator);
    host_free(allocator, context->pipeline_cache_path);
    loader_close(context->loader_library);
    platform_lock_destroy(&context->lock);
    host_free(allocator, context);
}

void moevk_context_device_info(const moevk_context *context, moevk_device_info *info) {
    if (!context || !info) return;
    SIZED_WRITE(moevk_device_info, info, &context->info);
}

moevk_result moevk_devices_enumerate(uint32_t *count, moevk_device_info *infos) {
    if (!count) return MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_context scratch;
    memset(&scratch, 0, sizeof scratch);
    PFN_vkGetInstanceProcAddr gipa = loader_open(&scratch.loader_library);
    if (!gipa) return MOEVK_ERROR_NO_VULKAN;
    loader_load_global(&scratch.vki, gipa);
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .apiVersion = VK_API_VERSION_1_2};
    /* Portability devices (MoltenVK) are listed too, where the loader can. */
    int portability = instance_has_extension(&scratch.vki, VK_NULL_HANDLE,
                                             VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME);
    const char *extensions[] = {VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME};
    VkInstanceCreateInfo create = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .flags = portability ? VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR : 0,
        .pApplicationInfo = &app,
        .enabledExtensionCount = portability ? 1 : 0,
        .ppEnabledExtensionNames = extensions};
    VkResult vr = scratch.vki.vkCreateInstance(&create, NULL, &scratch.instance);
    if (vr != VK_SUCCESS) {
        loader_close(scratch.loader_library);
        return vr == VK_ERROR_INCOMPATIBLE_DRIVER ? MOEVK_ERROR_NO_DEVICE : MOEVK_ERROR_VULKAN;
    }
    loader_load_instance(&scratch.vki, scratch.instance);
    VkPhysicalDevice devices[64];
    uint32_t found = 64;
    vr = scratch.vki.vkEnumeratePhysicalDevices(scratch.instance, &found, devices);
    moevk_result result = MOEVK_SUCCESS;
    if (vr != VK_SUCCESS && vr != VK_INCOMPLETE) {
        result = MOEVK_ERROR_VULKAN;
    } else if (!infos) {
        *count = found;
    } else {
        uint32_t written = found < *count ? found : *count;
        /* The caller's entries are struct_size apart (the first entry says for all). */
        size_t stride = CALLER_SIZE(moevk_device_info, infos);
        for (uint32_t i = 0; i < written; ++i) {
            moevk_device_info full;
            moevk_device_info_init(&full);
            instance_fill_device_info(&scratch.vki, devices[i], &full);
            full.portability_enumeration = portability;
            moevk_device_info *entry = (moevk_device_info *)((char *)infos + i * stride);
            entry->struct_size = infos->struct_size;
            SIZED_WRITE(moevk_device_info, entry, &full);
        }
        *count = written;
    }
    scratch.vki.vkDestroyInstance(scratch.instance, NULL);
    loader_close(scratch.loader_library);
    return result;
}
