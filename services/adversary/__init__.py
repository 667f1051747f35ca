"""Adversarial generator service: attacks, red-teaming, robustness reports."""
