"""Optuna studies over the search: trials, results, run folders."""
