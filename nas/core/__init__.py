"""Errors, the registry, atomic files, sizes, memory layout: what every stage uses."""
