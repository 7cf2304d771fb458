"""Handlers written to the seed's serving contract (contract: initialize / preprocess /
process): builtin (the BERT pair classifier), null (no work, for measuring the pipeline). A
team's own handler is any class of that shape, named by STREAMAPP_HANDLER."""
