"""The evaluator registry (the toolkit's one registry type)."""

from nas.core.registry import Registry

EVALUATORS = Registry("evaluator")
