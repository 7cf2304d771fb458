"""Model formats behind the handlers: a Hugging Face directory, a TorchScript file."""
