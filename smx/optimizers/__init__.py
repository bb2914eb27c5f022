"""Built-in optimizers: each an (init, update) pair written against the Array API."""
