#!/usr/bin/env python3
"""A module-definition file for vulkan-1.dll's core functions (Vulkan 1.0 to the header's
latest version), from vulkan_core.h: MinGW's dlltool turns it into the import library that the
Windows SDK would give (Debian's MinGW has none), for programs that link the loader themselves.

Usage: vulkan_import_def.py OUTPUT.def COMPILER [COMPILER ARGUMENTS...]
The compiler finds vulkan_core.h on its include path (-M lists the header it would read)."""
import re
import subprocess
import sys


def header_path(compiler):
    text = subprocess.run(compiler + ["-M", "-x", "c", "-"], input="#include <vulkan/vulkan_core.h>\n",
                          capture_output=True, text=True, check=True).stdout
    for word in text.replace("\\\n", " ").split():
        if word.endswith("vulkan_core.h"):
            return word
    sys.exit("vulkan_import_def.py: the compiler found no vulkan/vulkan_core.h")


def core_functions(path):
    feature, names = None, []
    for line in open(path, encoding="utf-8"):
        defined = re.match(r"#define (VK_\w+) 1\s*$", line)
        if defined:
            feature = defined.group(1)
            continue
        called = re.search(r"VKAPI_CALL (vk\w+)\(", line)
        if called and feature and re.fullmatch(r"VK_VERSION_\d+_\d+", feature):
            names.append(called.group(1))
    return names


def main():
    output, compiler = sys.argv[1], sys.argv[2:]
    names = core_functions(header_path(compiler))
    if len(names) < 100:
        sys.exit("vulkan_import_def.py: only %d core functions in the header" % len(names))
    with open(output, "w", encoding="utf-8") as f:
        f.write("LIBRARY vulkan-1.dll\nEXPORTS\n")
        for name in names:
            f.write("    %s\n" % name)


main()
