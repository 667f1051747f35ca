import random

import torch

from rlhf.engine.checkpoint import seed_everything
from rlhf.runtime.bus.core import new_event_id


def test_event_ids_do_not_repeat_after_training_code_seeds_random():
    # Regression: ids came from the global `random`, which every seeded training run
    # resets, so the event after a run repeated an earlier id and was dropped as a
    # duplicate by the consumers' dedupe record.
    seed_everything(0)
    first = [new_event_id() for _ in range(3)]
    seed_everything(0)
    random.seed(0)
    torch.manual_seed(0)
    second = [new_event_id() for _ in range(3)]
    assert not set(first) & set(second)
    assert len(set(first)) == 3
