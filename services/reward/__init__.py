"""Reward model service: classifiers and reward models; training and batched scoring."""
