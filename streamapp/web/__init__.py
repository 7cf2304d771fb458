"""The web view: /dashboard/ (static/), /api/stats and /api/cluster (views), /metrics
(Prometheus), /healthz and /readyz (health). Reads the pipeline's numbers; nothing in the data
path imports it."""
