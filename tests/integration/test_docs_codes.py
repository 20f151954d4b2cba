"""Every close code and error code docs/protocol.md lists is one herald
sends (issue 17 item 7): a code in the tables must be used by a .c file,
as the HD_ constant of common/hd_codes.h that has its value or as the bare
number. Rows that say "never sent" are exempt. No herald is started."""

import glob
import os
import re

from harness import REPO_ROOT


def table_codes(md, heading):
    """The first-column numbers of the table under heading."""
    part = md.split(heading, 1)[1]
    codes = []
    for line in part.splitlines()[1:]:
        if line.startswith("#"):
            break
        m = re.match(r"^\| (\d{3,4}) \|(.*)$", line)
        if m and "never sent" not in m.group(2):
            codes.append(int(m.group(1)))
    return codes


def test_documented_codes_are_sent():
    with open(os.path.join(REPO_ROOT, "docs", "protocol.md")) as f:
        md = f.read()
    with open(os.path.join(REPO_ROOT, "common", "hd_codes.h")) as f:
        consts = {}
        for name, val in re.findall(r"#define (HD_(?:CLOSE|ERR)_\w+)\s+(\d+)", f.read()):
            consts.setdefault(int(val), []).append(name)
    # Close codes: any worker/master/common source. Error codes: not the
    # HTTP API's files (its statuses are api.md's). shm/hd_metrics.c is a
    # table of the codes it counts, not a sender.
    def sources(skip):
        text = ""
        for d in ("worker", "master", "common"):
            for p in glob.glob(os.path.join(REPO_ROOT, d, "*.c")):
                if os.path.basename(p) not in skip:
                    with open(p) as f:
                        text += f.read()
        return text
    close = table_codes(md, "## Close codes")
    errors = table_codes(md, "## Error codes")
    assert close and errors
    unsent = []
    for codes, src in ((close, sources(())), (errors, sources(("hd_api.c", "hd_capi.c")))):
        for code in codes:
            names = consts.get(code, [])
            if not any(re.search(r"\b%s\b" % n, src) for n in names) \
                    and not re.search(r"\b%d\b" % code, src):
                unsent.append(code)
    assert not unsent, "documented but never sent: %r" % unsent
