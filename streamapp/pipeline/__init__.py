"""The data path: a comment in (decode, validate), through the model in batches, out (results,
dead letters, counts to the tables). Agents, the batch intake, batches in flight, offsets.
May import streamapp.records, settings, serving; never web or edges."""
