"""The demo, built with no model hub: synthetic comments (synthetic), the demo model trained on
them (model) and `make run` (quickstart: broker, worker and a feed of comments). May import
anything in streamapp; nothing in the worker's data path imports it but the demo model's
build on first use."""
