"""Measurements of models and artifacts: sizes, MACs, build and run times, and the comparison tables."""
from convforge.bench.models import model_row, model_table

__all__ = ["model_row", "model_table"]
