"""Prints MAJOR.MINOR.PATCH from include/moevk.h, so that meson takes the version from the header."""
import re
import sys

text = open(sys.argv[1]).read()
parts = [re.search(r"#define MOEVK_VERSION_%s (\d+)" % p, text).group(1) for p in ("MAJOR", "MINOR", "PATCH")]
print(".".join(parts))
