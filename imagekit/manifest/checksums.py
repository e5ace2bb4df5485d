"""sha256 of the local COTS archives, remembered by path, size and mtime.

Validation hashes every local archive so a wrong `cots[].sha256` is refused before any build; the
cache makes a repeated validate of a large archive instant. It is the only file validation
writes, kept in imagekit's data directory; like all local state it is a cache: an entry that does
not match the file any more, or a cache that cannot be read, only costs a new hash. Rendering
hashes the archive again while repacking it into the build context, so a file changed behind the
cache cannot reach a build.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from imagekit.errors import ToolError

CACHE_NAME = "checksums.json"


class ChecksumCache:
    """sha256 by (resolved path, device, inode, size, mtime); `save` writes what was new."""

    def __init__(self, data_dir: Path) -> None:
        self.file = data_dir / CACHE_NAME
        self._entries: dict[str, dict[str, object]] | None = None
        self._changed = False

    def sha256(self, path: Path) -> str:
        """The file's sha256; raises OSError when it cannot be read."""
        path = path.resolve()
        info = path.stat()
        stamp = {"dev": info.st_dev, "ino": info.st_ino, "size": info.st_size, "mtime_ns": info.st_mtime_ns}
        entries = self._load()
        cached = entries.get(str(path))
        if cached is not None and {k: cached.get(k) for k in stamp} == stamp:
            return str(cached["sha256"])
        with path.open("rb") as stream:
            digest = hashlib.file_digest(stream, "sha256").hexdigest()
        entries[str(path)] = {**stamp, "sha256": digest}
        self._changed = True
        return digest

    def save(self) -> None:
        """Write the cache atomically, without entries whose file is gone."""
        if not self._changed or self._entries is None:
            return
        kept = {name: entry for name, entry in self._entries.items() if os.path.isfile(name)}
        temporary = ""
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.file.parent, prefix=f".{CACHE_NAME}.")
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(kept, stream, sort_keys=True)
            os.replace(temporary, self.file)
        except OSError as exc:
            if temporary:
                Path(temporary).unlink(missing_ok=True)
            raise ToolError(
                f"{self.file}: cannot write the checksum cache: {exc.strerror or exc} "
                "(set paths.data_dir or IMAGEKIT_PATHS_DATA_DIR to a writable directory)"
            ) from None
        self._changed = False

    def _load(self) -> dict[str, dict[str, object]]:
        if self._entries is None:
            try:
                raw = json.loads(self.file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raw = {}
            self._entries = (
                {k: v for k, v in raw.items() if isinstance(v, dict)} if isinstance(raw, dict) else {}
            )
        return self._entries
