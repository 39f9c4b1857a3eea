"""The architecture search: the supernet, its inner search, export and the pipeline."""
