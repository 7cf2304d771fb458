"""The demo: synthetic comments, the demo models built without a hub, and `make run`."""
