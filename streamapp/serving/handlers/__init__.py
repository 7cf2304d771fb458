"""Model handlers written to the seed's serving contract: initialize / preprocess / process."""
