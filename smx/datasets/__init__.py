"""Built-in datasets, user file formats, and the split/standardize step."""
