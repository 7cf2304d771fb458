"""The model side: the model thread and batch bisection (engine), the version being served and
hot reload (manager, repository), the seed's handler contract (handlers/), model formats
(formats/), outputs read as probabilities (scores). Knows nothing of Kafka or Faust."""
