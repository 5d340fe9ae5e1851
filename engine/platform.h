/* What differs between the systems moevk builds for (POSIX and Windows), behind small names: the
 * lock each context holds, and opening the Vulkan loader (engine/platform.c). */
#ifndef MOEVK_PLATFORM_H
#define MOEVK_PLATFORM_H

#ifdef _WIN32
/* An SRWLOCK (one pointer), without <windows.h> in every file. */
typedef struct platform_lock {
    void *opaque;
} platform_lock;
#else
#include <pthread.h>
typedef struct platform_lock {
    pthread_mutex_t mutex;
} platform_lock;
#endif

/* printf-style checking: MinGW builds use its C99 printf (__USE_MINGW_ANSI_STDIO, meson.build),
 * GCC's gnu_printf there. */
#ifdef __MINGW32__
#define PRINTF_LIKE(format_index, first) __attribute__((format(gnu_printf, format_index, first)))
#else
#define PRINTF_LIKE(format_index, first) __attribute__((format(printf, format_index, first)))
#endif

int platform_lock_init(platform_lock *lock); /* 0 on success */
void platform_lock_destroy(platform_lock *lock);
void platform_lock_acquire(platform_lock *lock);
void platform_lock_release(platform_lock *lock);

/* The system's Vulkan loader (libvulkan.so.1, vulkan-1.dll, libvulkan.1.dylib) and a symbol of
 * it; NULL when absent. */
void *platform_library_open(void);
void *platform_library_symbol(void *library, const char *name);
void platform_library_close(void *library);

#endif
