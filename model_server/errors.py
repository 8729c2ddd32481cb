"""The model server's exceptions and the one table that maps them to HTTP responses.

```
ServerError                 500  (base; anything unexpected in the data plane)
├── ModelNotReady           503  the model is loading, failed to load, or the server is draining
├── ModelNotFound           404  no model of that name is served here
├── InvalidInput            400  the body is not JSON, or fails the model's input schema
├── PayloadTooLarge         413  the body exceeds maxRequestBytes
├── PolicyRejected          422  a `reject` policy matched (names the policy; `index` in a batch)
├── PolicyFailed            422  a policy could not be evaluated on this input, or ran out of
│                                policyTimeoutSeconds (names the policy and the row `index`)
└── PredictionFailed        500  the model raised on validated input
```

The data plane and the routes raise these; only `model_server.routes.errors.register()`
turns them into HTTP responses. This module imports no web framework.
"""

from __future__ import annotations

from typing import Any


class ServerError(Exception):
    """Base of the model server's errors; `status_code` is its one HTTP mapping."""

    status_code = 500

    def __init__(self, *messages: str, **details: Any) -> None:
        super().__init__(*messages)
        self.messages = list(messages)
        self.details = details


class ModelNotReady(ServerError):
    status_code = 503


class ModelNotFound(ServerError):
    status_code = 404


class InvalidInput(ServerError):
    status_code = 400


class PayloadTooLarge(ServerError):
    status_code = 413


class PolicyRejected(ServerError):
    status_code = 422


class PredictionFailed(ServerError):
    status_code = 500


class PolicyFailed(ServerError):
    status_code = 422
