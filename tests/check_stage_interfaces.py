#!/usr/bin/env python3
"""Each kernel binds only the buffers it uses and pushes only the parameters it reads.

A kernel's header lists its buffers (<KERNEL>_BUFFERS) and push constants (<KERNEL>_PARAMS);
its shader declares exactly those, so a missing entry does not compile. This check covers the
other direction: with any one entry of a kernel's own lists taken out, the shader must fail to
compile in some variant it is built in (shaders/meson.build), or the entry is unused and the
stage binds or pushes more than it needs. Prints "N passed, N failed" (one test per kernel)."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

SHADERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'shaders')
VARIANT_DEFINES = {'addresses': ['-DMOEVK_ADDRESSES'], 'rte': ['-DMOEVK_RTE'],
                   'matvec': ['-DFFN_MATVEC'], 'shared': ['-DSHARED_FFN'],
                   'subgroups': ['-DMOEVK_SUBGROUPS']}


def built_variants():
    """kernel -> the extra variants shaders/meson.build builds it in."""
    text = open(os.path.join(SHADERS, 'meson.build')).read()
    text = text[text.index('stages = {'):]
    text = text[:text.index('\n}')]
    return {kernel: re.findall(r"'(\w+)'", extras)
            for kernel, extras in re.findall(r"'(\w+)': \[([^\]]*)\]", text)}


def kernel_lists(comp):
    """The header and list name a kernel's shader takes its interface from."""
    header = re.search(r'#include "(\w+\.h)"', comp).group(1)
    name = re.search(r'#define STAGE_BUFFERS (\w+)_BUFFERS', comp).group(1)
    return header, name


def compiles(folder, kernel, variants):
    for variant in [[]] + [VARIANT_DEFINES[v] for v in variants]:
        result = subprocess.run(['glslangValidator', '--target-env', 'vulkan1.2', '--quiet'] +
                                variant + ['-I' + folder, os.path.join(folder, kernel + '.comp'),
                                           '-o', os.path.join(folder, 'out.spv')],
                                capture_output=True)
        if result.returncode != 0:
            return False
    return True


def list_entries(header_text, name, suffix, pattern):
    match = re.search(r'#define %s_%s\([^)]*\)((?:[^\n]*\\\n)*[^\n]*)' % (name, suffix),
                      header_text)
    return match, re.findall(pattern, match.group(1))


def main():
    variants = built_variants()
    passed = failed = 0
    with tempfile.TemporaryDirectory() as folder:
        for entry in os.listdir(SHADERS):
            shutil.copy(os.path.join(SHADERS, entry), folder)
        for kernel in sorted(variants):
            comp = open(os.path.join(SHADERS, kernel + '.comp')).read()
            header, name = kernel_lists(comp)
            path = os.path.join(folder, header)
            original = open(path).read()
            unused = []
            for suffix, pattern in (('BUFFERS', r'X\((\w+)\)'), ('PARAMS', r'[UFA]\((\w+)\)')):
                match, entries = list_entries(original, name, suffix, pattern)
                for item in entries:
                    without = re.sub(r'\b[XUFA]\(%s\)' % item, '', match.group(0), count=1)
                    open(path, 'w').write(original.replace(match.group(0), without))
                    if compiles(folder, kernel, variants[kernel]):
                        unused.append(item)
            open(path, 'w').write(original)
            if unused:
                failed += 1
                print('not ok %s: lists %s but never uses them' % (kernel, ', '.join(unused)))
            else:
                passed += 1
                print('ok   %s' % kernel)
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
