"""Adversarial generator engine: attacks, red-teaming, adversarial training, metrics.

    from rlhf.engine.adversarial import (
        HFClassifier, MiniLMSimilarity, EmbeddingNeighbours, WordSubstitutionAttack,
        WordAttackConfig, robustness_report,
    )
    clf = HFClassifier.from_pretrained("path/to/classifier")
    attack = WordSubstitutionAttack(clf, EmbeddingNeighbours.from_model(clf.model,
                                    clf.tokenizer), MiniLMSimilarity(), WordAttackConfig())
    report = robustness_report(attack.attack_many(texts, labels))

Attacks talk to the target only through a `Classifier` callable (texts -> class
probabilities), so a gRPC `Classify`/`Score` stub works as well as a local model.
See docs/adversarial.md.
"""

from rlhf.engine.adversarial.base import (
    AdversarialInputError,
    AttackResult,
    Classifier,
    CountingClassifier,
    HFClassifier,
    ScoreFn,
    SimilarityModel,
    check_texts,
    classifier_from_scores,
)
from rlhf.engine.adversarial.blackbox import blackbox_attack, surrogate_neighbours
from rlhf.engine.adversarial.char import CharAttack, CharAttackConfig, homophone_table
from rlhf.engine.adversarial.metrics import (
    RobustnessReport,
    report_to_event,
    report_to_proto,
    robustness_report,
)
from rlhf.engine.adversarial.online import (
    OnlineAdversarialConfig,
    OnlineTrainingResult,
    online_adversarial_training,
)
from rlhf.engine.adversarial.redteam import (
    RedTeamConfig,
    RedTeamReport,
    RedTeamSample,
    compare_policies,
    red_team,
)
from rlhf.engine.adversarial.search import GreedyAttack, SearchConfig
from rlhf.engine.adversarial.similarity import CharNgramSimilarity, MiniLMSimilarity
from rlhf.engine.adversarial.training import (
    AdversarialTrainingConfig,
    AdversarialTrainingResult,
    adversarial_examples,
    adversarial_preference_pairs,
    adversarial_training,
    finetune_text_classifier,
)
from rlhf.engine.adversarial.word import (
    EmbeddingNeighbours,
    WordAttackConfig,
    WordSubstitutionAttack,
)

__all__ = [
    "AdversarialInputError",
    "AdversarialTrainingConfig",
    "AdversarialTrainingResult",
    "AttackResult",
    "CharAttack",
    "CharAttackConfig",
    "CharNgramSimilarity",
    "Classifier",
    "CountingClassifier",
    "EmbeddingNeighbours",
    "GreedyAttack",
    "HFClassifier",
    "MiniLMSimilarity",
    "OnlineAdversarialConfig",
    "OnlineTrainingResult",
    "RedTeamConfig",
    "RedTeamReport",
    "RedTeamSample",
    "RobustnessReport",
    "ScoreFn",
    "SearchConfig",
    "SimilarityModel",
    "WordAttackConfig",
    "WordSubstitutionAttack",
    "adversarial_examples",
    "adversarial_preference_pairs",
    "adversarial_training",
    "blackbox_attack",
    "check_texts",
    "classifier_from_scores",
    "compare_policies",
    "finetune_text_classifier",
    "homophone_table",
    "online_adversarial_training",
    "red_team",
    "report_to_event",
    "report_to_proto",
    "robustness_report",
    "surrogate_neighbours",
]
