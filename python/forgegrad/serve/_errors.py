"""The one exception type the serving code raises for a request it cannot answer.

Every route turns a ServeError into ``{"error": message}`` with its status code (4xx for the
client's mistakes, 503 for back-pressure), so a bad request never reaches the generic 500 path."""
from __future__ import annotations

from typing import Dict, Optional


class ServeError(Exception):
    def __init__(self, status: int, message: str, headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.headers = dict(headers or {})
