"""One module per command: a config dataclass, a TensorFlow-free `validate(config)` and `run(config)`; recipes/
only turn flags into the config."""
