"""`FailureBoard`: where a failed integrity recheck is recorded, readable by every worker process.

The board is a page of anonymous shared memory (`mmap(-1, ...)`, MAP_SHARED), created with
the model before `modeldeploy serve` forks its workers, so what the one process that
rechecks (worker 0) posts, every worker reads: a failed recheck fails readiness in all of
them. It is written once (a failure is never cleared) and read on every readiness check:
the payload first, then its length, which readers test; a reader decodes it once.
"""

from __future__ import annotations

import json
import mmap
import struct

from modeldeploy.params.errors import VerificationError

_SIZE = 64 * 1024
_HEADER = struct.Struct("<I")  # the payload's length; 0 while nothing is posted


class FailureBoard:
    """The first failed recheck, shared across `fork()`."""

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, _SIZE)
        self._seen: VerificationError | None = None

    def post(self, failure: VerificationError) -> None:
        """Record `failure` (the first one stays; the file list is cut to fit the page)."""
        if self.read() is not None:
            return
        files = list(failure.files)
        while True:
            payload = json.dumps({"reason": failure.reason, "message": failure.args[0], "files": files}).encode()
            if len(payload) <= _SIZE - _HEADER.size or not files:
                break
            files = files[: len(files) // 2]
        payload = payload[: _SIZE - _HEADER.size]
        self._page[_HEADER.size : _HEADER.size + len(payload)] = payload
        self._page[: _HEADER.size] = _HEADER.pack(len(payload))

    def read(self) -> VerificationError | None:
        """The posted failure, or None."""
        if self._seen is None:
            (length,) = _HEADER.unpack_from(self._page)
            if length:
                document = json.loads(self._page[_HEADER.size : _HEADER.size + length])
                self._seen = VerificationError(document["reason"], document["message"], document["files"])
        return self._seen
