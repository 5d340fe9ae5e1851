# A CMake toolchain file for Windows (x86_64) with Debian's MinGW-w64, beside the meson cross
# file: cmake -DCMAKE_TOOLCHAIN_FILE=cross/x86_64-w64-mingw32.cmake ... (tests/check_windows_consumers.sh
# builds a CMake project against the installed Windows build with it).
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(CMAKE_C_COMPILER x86_64-w64-mingw32-gcc)
set(CMAKE_CXX_COMPILER x86_64-w64-mingw32-g++)
set(CMAKE_RC_COMPILER x86_64-w64-mingw32-windres)
set(CMAKE_CROSSCOMPILING_EMULATOR /usr/lib/wine/wine64)
