"""Per-folder line coverage from a gcovr --json-summary file (dev.sh test).

    python3 deploy/coverage_folders.py build/meson-logs/coverage-summary.json
"""
import json
import sys

FOLDERS = ("common", "conf", "shm", "worker", "master")


def main(path):
    with open(path) as f:
        files = json.load(f)["files"]
    per = {}
    for entry in files:
        top = entry["filename"].split("/")[0]
        covered, total = per.get(top, (0, 0))
        per[top] = (covered + entry["line_covered"],
                    total + entry["line_total"])
    all_c = all_t = 0
    for top in FOLDERS:
        covered, total = per.get(top, (0, 0))
        if total:
            all_c += covered
            all_t += total
            print("%-8s %5.1f %%  (%d of %d lines)"
                  % (top + "/", 100.0 * covered / total, covered, total))
    if all_t:
        print("%-8s %5.1f %%  (%d of %d lines)"
              % ("all", 100.0 * all_c / all_t, all_c, all_t))


if __name__ == "__main__":
    main(sys.argv[1])
