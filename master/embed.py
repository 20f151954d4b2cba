"""Embed a file as a C array: embed.py INPUT OUTPUT NAME.

Writes `const char NAME[]` (the bytes, NUL-terminated) and
`const size_t NAME_len` (without the NUL). Used for the monitor page.
"""
import sys

src, dst, name = sys.argv[1:4]
with open(src, "rb") as f:
    data = f.read()
with open(dst, "w") as o:
    o.write("#include <stddef.h>\n")
    o.write("const char %s[] = {\n" % name)
    for i in range(0, len(data), 20):
        o.write(",".join(str(b) for b in data[i:i + 20]) + ",\n")
    o.write("0};\n")
    o.write("const size_t %s_len = %d;\n" % (name, len(data)))
