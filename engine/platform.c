/* platform.h on POSIX (pthreads, dlopen) and on Windows (SRW locks, LoadLibraryA). */
#include "platform.h"

#include <stddef.h>
#include <string.h>

#ifdef _WIN32
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

_Static_assert(sizeof(SRWLOCK) == sizeof(platform_lock), "an SRWLOCK is one pointer");

int platform_lock_init(platform_lock *lock) {
    InitializeSRWLock((PSRWLOCK)lock);
    return 0;
}
void platform_lock_destroy(platform_lock *lock) { (void)lock; /* SRW locks hold nothing */ }
void platform_lock_acquire(platform_lock *lock) { AcquireSRWLockExclusive((PSRWLOCK)lock); }
void platform_lock_release(platform_lock *lock) { ReleaseSRWLockExclusive((PSRWLOCK)lock); }

void *platform_library_open(void) { return (void *)LoadLibraryA("vulkan-1.dll"); }
void *platform_library_symbol(void *library, const char *name) {
    /* A FARPROC to an object pointer: the caller converts it back to its function type. */
    FARPROC symbol = GetProcAddress((HMODULE)library, name);
    void *pointer;
    _Static_assert(sizeof pointer == sizeof symbol, "function and object pointers differ");
    memcpy(&pointer, &symbol, sizeof pointer);
    return pointer;
}
void platform_library_close(void *library) {
    if (library) FreeLibrary((HMODULE)library);
}

#else
#include <dlfcn.h>

int platform_lock_init(platform_lock *lock) { return pthread_mutex_init(&lock->mutex, NULL); }
void platform_lock_destroy(platform_lock *lock) { pthread_mutex_destroy(&lock->mutex); }
void platform_lock_acquire(platform_lock *lock) { pthread_mutex_lock(&lock->mutex); }
void platform_lock_release(platform_lock *lock) { pthread_mutex_unlock(&lock->mutex); }

void *platform_library_open(void) {
#if defined(__APPLE__) /* the Vulkan SDK's loader (MoltenVK behind it): untested */
    static const char *const names[] = {"libvulkan.1.dylib", "libvulkan.dylib"};
#else
    static const char *const names[] = {"libvulkan.so.1", "libvulkan.so"};
#endif
    void *library = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !library; ++i)
        library = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    return library;
}
void *platform_library_symbol(void *library, const char *name) { return dlsym(library, name); }
void platform_library_close(void *library) {
    if (library) dlclose(library);
}
#endif
