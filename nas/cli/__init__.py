"""The `nas` command: `nas.cli.app` (the app, shared options, the commands on one teacher or
student) and `nas.cli.study` (search, export, report, dashboard), registered on import."""

from nas.cli import study as _study  # noqa: F401  (registers search, export, report, dashboard)
from nas.cli.app import app, main

__all__ = ["app", "main"]
