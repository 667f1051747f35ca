"""Data sets shipped inside the package, named in pipeline specs as `package:<path>`
(e.g. `package:reviews_en/reviews.jsonl`); see `rlhf.workflows.datasets.read_source`."""
