"""The Ray executor's start-up check, run on a Ray node: ``python -m appliance.worker.probe FILE``.

Reads FILE (written by the worker in the shared data directory) and writes its
content back to ``FILE.seen``; the worker then finds that file on its side. A
missing FILE means the node does not mount the data directory at that path.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path


def main(path: Path) -> int:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"{socket.gethostname()}: can not read {path}: {exc}", flush=True)
        return 1
    seen = path.with_name(path.name + ".seen")
    tmp = path.with_name(path.name + ".seen.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, seen)
    print(f"{socket.gethostname()}: read {path} and wrote {seen}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
