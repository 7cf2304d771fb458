"""Model formats the handlers load: a Hugging Face directory (huggingface), a TorchScript file
(torchscript). Each loads and runs one kind of model and knows nothing of batches in flight,
Kafka or Faust."""
