"""streamapp: SKU-match predictions for grocery reviews, streamed with Faust.

`faust -A streamapp worker` looks up `streamapp.app`; it is built on first access so that the
CLI's other commands (broker, demo-model) never need the worker's settings or Faust.
"""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "app":
        from streamapp.application import app_from_env

        app = app_from_env()
        globals()["app"] = app
        return app
    raise AttributeError(f"module 'streamapp' has no attribute {name!r}")
