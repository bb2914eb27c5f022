"""Built-in backends, one module each; every library is imported only when used."""
