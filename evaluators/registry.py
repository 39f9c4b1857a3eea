"""The evaluator registry (the toolkit's one registry type)."""

from nas.registry import Registry

EVALUATORS = Registry("evaluator")
