"""The final model: training recipes (full, LP-FT, LoRA, bottleneck), PLASM, export
and training jobs."""
