"""The model process's program, `python -m streamapp.pipeline.model_process FD`: the model
(streamapp.serving.child) with the data path's work on each batch beside it
(streamapp.pipeline.batchwork)."""

from __future__ import annotations

PROGRAM = "streamapp.pipeline.model_process"

if __name__ == "__main__":
    from streamapp.pipeline.batchwork import answer_work
    from streamapp.serving.child import main

    main(answer_work)
