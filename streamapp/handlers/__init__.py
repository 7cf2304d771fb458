"""Old home of the handlers, kept so that `STREAMAPP_HANDLER` values written before the move
(`streamapp.handlers.builtin:SkuMatchInfer`, `streamapp.handlers.null:ConstantInfer`) still
load. The handlers live in `streamapp.serving.handlers`."""

import importlib
import sys

for _name in ("builtin", "contract", "null"):
    sys.modules[f"{__name__}.{_name}"] = importlib.import_module(
        f"streamapp.serving.handlers.{_name}")
