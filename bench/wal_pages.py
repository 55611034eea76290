#!/usr/bin/env python3
"""Which B-trees the commits in a SQLite WAL wrote, per commit.

Why: a logged call's commit cost is mostly per page (each page is a WAL frame to write,
checksum and sync), so the question "why is a commit this big" is "which tables and indexes
did it touch". This reads the frames of the WAL's current generation, groups them into
commits, and names each frame's page through SQLite's `dbstat` table.

Usage, on a copy taken while calls were being logged (a clean shutdown empties the WAL):

    cargo run --release --bin bench -- --keep-db /tmp/b.db --only logging --seconds 30 &
    sleep 20; kill -9 "$(pgrep -f 'switchboard serve.*b.db')"
    cp /tmp/b.db /tmp/copy.db; cp /tmp/b.db-wal /tmp/copy.db-wal
    python3 bench/wal_pages.py /tmp/copy.db

Needs a Python whose sqlite3 has dbstat (Debian's has). Opening the copy applies its WAL.
"""

import collections
import sqlite3
import struct
import sys


def commits(wal: bytes):
    """Page numbers of each commit in the WAL's current generation (frames whose salts match
    the header's), in order."""
    _magic, _version, page_size, _ckpt, salt1, salt2, _c1, _c2 = struct.unpack(">8I", wal[:32])
    frame = 24 + page_size
    current, out = [], []
    for off in range(32, len(wal) - frame + 1, frame):
        page, commit_size, s1, s2 = struct.unpack(">4I", wal[off : off + 16])
        if (s1, s2) != (salt1, salt2):
            break
        current.append(page)
        if commit_size:
            out.append(current)
            current = []
    return out


def main(db: str) -> None:
    with open(db + "-wal", "rb") as f:
        wal = f.read()
    done = commits(wal)
    if not done:
        sys.exit("no committed frames in the WAL's current generation")
    names = {
        page: f"{name} {kind}"
        for name, page, kind in sqlite3.connect(db).execute(
            "SELECT name, pageno, pagetype FROM dbstat"
        )
    }
    per = collections.Counter(names.get(p, "(free or new)") for c in done for p in c)
    frames = sum(len(c) for c in done)
    print(f"{len(done)} commits, {frames / len(done):.1f} pages per commit")
    for what, n in per.most_common():
        print(f"{n / len(done):6.2f}  {what}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else sys.exit(__doc__))
