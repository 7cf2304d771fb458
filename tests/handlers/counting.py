"""The built-in handler, writing a line to a file on every `initialize` (and logging one), to
count how often a worker loads its model."""

from __future__ import annotations

import os
from typing import Any

from streamapp.serving.handlers.builtin import SkuMatchInfer

# Where the lines go: set by the test that starts the worker.
COUNT_FILE = "COUNTING_HANDLER_FILE"


class CountingInfer(SkuMatchInfer):
    def initialize(self, configDict: dict[str, Any]) -> None:
        [path] = configDict["modelNameToPath"].values()
        with open(os.environ[COUNT_FILE], "a") as out:
            out.write(f"{os.getpid()} initialize {path}\n")
        configDict["logger"].info("counting handler: initialize on %s", path)
        super().initialize(configDict)
