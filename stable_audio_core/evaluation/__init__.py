"""Evaluation: the paper's timing experiment, CLAP-based prompt adherence, reconstruction metrics."""
