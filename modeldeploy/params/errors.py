"""The parameters tooling's errors: why parameters must not be loaded, with a contract reason code.

```
ParametersError(Exception)        reason + files + one-line message (the termination record's)
├── VerificationError             the bytes or their signature failed a check
└── TransportError                they could not be read: not found, download failed, deadline
```
"""

from __future__ import annotations

from collections.abc import Iterable


class ParametersError(Exception):
    """Parameters that must not be loaded; `reason` (see `modeldeploy.contract.reasons`) says why, `files` which."""

    def __init__(self, reason: str, message: str, files: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.reason = reason
        self.files = sorted(files)

    def __str__(self) -> str:
        return f"{self.reason}: {self.args[0]}"


class VerificationError(ParametersError):
    """The parameters, their signature or the key failed a check: retrying will not help."""


class TransportError(ParametersError):
    """The parameters or their signature could not be read (a retry may help)."""
