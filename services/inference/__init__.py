"""The inference service (rlhf.services.inference): serves policy and classifier models
on Triton and records feedback. Entry point: `rlhf.services.inference.server.main`."""
