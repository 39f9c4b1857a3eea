"""What a model costs: multiply-adds, budgets, measured latency, cost tables, amortised cost."""
