"""Runs: task attempts and script sessions, their metrics, checkpoints, lineage and analysis."""
