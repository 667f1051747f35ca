"""Trainer service: pre-training, SFT, PPO/GRPO/RLOO, DPO; promotion gates."""
