"""Compressed versions served by the real tritonserver from a self-contained repository
entry (the loader travels beside model.py): int8 and pruned classifiers, a weight-only
int8 policy. About a minute: one Triton for the module."""

from __future__ import annotations

import pytest

from rlhf.engine.classifier import tiny_classifier
from rlhf.engine.compression import classifiers as K
from rlhf.engine.compression.policy import load_policy, save_compressed_policy
from rlhf.engine.models import load_tokenizer
from rlhf.serving.backend import ClassifierEngine, PolicyEngine, Sampling

pytestmark = pytest.mark.triton

TEXTS = ["a great movie", "a terrible film", "wonderful acting", "boring and dull"]


@pytest.fixture(scope="module")
def compressed(tiny_serving_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("compressed")
    classifier = tiny_classifier(hidden_size=32, num_layers=2, num_heads=4, seed=3)
    prune = K.PruneConfig(head_fraction=0.5, ffn_fraction=0.5, batch_size=4)
    policy = tiny_serving_models.policy_v1
    return {
        "int8": K.int8_classifier(classifier, root / "int8"),
        "pruned": K.prune_classifier(classifier, root / "pruned", prune, None, TEXTS, [None] * 4)[
            0
        ],
        "policy": save_compressed_policy(
            load_policy(policy), load_tokenizer(policy), root / "w8", "weight_int8"
        ),
    }


def test_triton_serves_compressed_versions_from_a_published_repository(compressed, tmp_path):
    from rlhf.serving import EngineConfig, LocalTritonConfig, LocalTritonServer, ServingEngine
    from rlhf.serving.repository import write_model_version

    repository = tmp_path / "published"
    names = {
        key: write_model_version(
            repository,
            f"{key}-v1",
            "policy" if key == "policy" else "classifier",
            path,
            copy_weights=True,
        )
        for key, path in compressed.items()
    }
    for name in names.values():
        assert (repository / name / "1" / "rlhf_compression.py").is_file()
    with LocalTritonServer(LocalTritonConfig(repository)) as triton:
        config = EngineConfig(
            triton_url=triton.grpc_url, model_repository=repository, write_repository=False
        )
        with ServingEngine(config) as engine:
            for key in ("int8", "pruned"):
                hf = str(repository / names[key] / "1" / "hf")
                engine.versions.deploy(key, f"{key}-v1", "classifier", hf)
                outputs, _ = engine.client.classify(names[key], TEXTS)
                expected, _, _ = ClassifierEngine(hf).score(TEXTS)
                assert [o.label for o in outputs] == expected
            hf = str(repository / names["policy"] / "1" / "hf")
            engine.versions.deploy("policy", "policy-v1", "policy", hf)
            greedy = Sampling(max_new_tokens=4, temperature=0)
            local = PolicyEngine(hf).generate(["hello"], [greedy])
            served, _ = engine.client.generate(names["policy"], ["hello"], greedy)
            assert served == local
