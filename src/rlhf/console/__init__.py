"""The web console: people compare model versions, rate and label responses, and
operators promote and roll back versions (see docs/console.md).

It is a small WSGI application served by the standard library and talks to the
platform only through `rlhf.client.Client`.
"""

from rlhf.console.app import ConsoleApp
from rlhf.console.auth import Sessions, TokenStore, User
from rlhf.console.backend import Backend
from rlhf.console.server import ConsoleServer

__all__ = ["Backend", "ConsoleApp", "ConsoleServer", "Sessions", "TokenStore", "User"]
