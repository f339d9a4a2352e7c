"""Workflows that need models: train (stage 1 and 2), embed, teachers, evaluate, dry run, demo."""
