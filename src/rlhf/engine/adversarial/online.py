"""Online adversarial training: worst-of-k label-preserving variants on every batch.

Offline rounds (`training.py`) attack a sample once and fine-tune on the flips they
found, which fixes the swaps seen but leaves the rest of each word's substitution set
open to a fresh attack. Here the inner maximisation of the min-max objective

    min_theta  E_(x, y) [ CE(f(x), y) + adv_weight * max_(x' in S(x)) CE(f(x'), y) ]

is approximated on EVERY training batch, with the attack's own substitution sets S(x)
(its `variants`: the same label-preserving lexicon filters, the same edit budget):

1. one forward/backward pass on the clean batch gives the gradient of the loss with
   respect to each input embedding; `(E[candidate] - E[word]) . grad` is a first-order
   estimate of how much each allowed substitution raises the loss (HotFlip / A2T style);
2. k variants per example: the greedy first-order combination (1..max_edits swaps on the
   most promising positions), variants sampled in proportion to the estimates, and
   uniformly random swaps (so the whole neighbourhood keeps being visited);
3. all k are scored with the current model without gradients; the one with the highest
   true-label loss that passes the attack's similarity threshold is the adversarial
   example (worst-of-k);
4. loss = CE(clean) + adv_weight * CE(worst) + kl_weight * KL(p_clean || p_worst)
   (the KL term is the TRADES-style consistency between clean and perturbed predictions,
   with gradients through both sides as in TRADES: it flattens the model around x).

The clean term replays every training text, which protects clean accuracy. Candidate
lists are cached per (unit, label), so building variants costs no model queries.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlhf.engine.adversarial.base import AdversarialInputError
from rlhf.engine.adversarial.search import GreedyAttack
from rlhf.engine.data import LabeledText

log = logging.getLogger(__name__)


@dataclass
class OnlineAdversarialConfig:
    """Worst-of-k online adversarial fine-tuning of a `TextClassifier`."""

    variants_per_example: int = 8  # k: perturbed variants scored per training example
    max_edits: int | None = None  # substitutions per variant (None = the attack's budget)
    random_variants: int = 2  # of the k, this many are uniformly random swaps (no gradient)
    top_positions: int = 8  # sampled variants pick among this many most promising units
    temperature: float = 1.0  # softmax temperature over first-order gains when sampling;
    # gains are loss changes, small (SST-2 MiniLM: std ~0.002), so 1.0 is ~uniform
    adv_weight: float = 1.0  # weight of the worst variant's cross-entropy
    kl_weight: float = 0.0  # weight of KL(p_clean || p_worst) (TRADES-style consistency)
    kl_detach_clean: bool = False  # p_clean a fixed target: the KL moves only the perturbed
    # side (measured on SST-2: better clean accuracy, much weaker hardening)
    check_similarity: bool = True  # worst variant must pass the attack's min_similarity
    similarity_checks: int = 3  # similarity computed for this many highest-loss variants
    replay_per_batch: int = 0  # extra clean texts from `replay` per batch (clean accuracy)
    # fine-tuning (the shared loop of rlhf.engine.classifier)
    learning_rate: float = 3e-5
    epochs: float = 2.0
    batch_size: int = 32
    max_length: int = 64
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    freeze_embeddings: bool = True  # also keeps the attack's embedding neighbours fixed
    autocast: bool = False  # bf16 autocast
    time_limit_s: float | None = None  # wall-clock budget for the fine-tuning
    seed: int = 0

    def __post_init__(self) -> None:
        if self.variants_per_example < 1:
            raise AdversarialInputError("variants_per_example must be >= 1")
        if not 0 <= self.random_variants <= self.variants_per_example:
            raise AdversarialInputError("random_variants must be in 0..variants_per_example")
        if self.max_edits is not None and self.max_edits < 1:
            raise AdversarialInputError(f"max_edits must be >= 1, got {self.max_edits}")
        if self.temperature <= 0:
            raise AdversarialInputError("temperature must be > 0")
        if self.replay_per_batch < 0:
            raise AdversarialInputError("replay_per_batch must be >= 0")
        if self.adv_weight < 0 or self.kl_weight < 0:
            raise AdversarialInputError("adv_weight and kl_weight must be >= 0")
        if self.epochs <= 0 or self.batch_size < 1:
            raise AdversarialInputError("epochs must be > 0 and batch_size >= 1")


@dataclass
class OnlineTrainingResult:
    """The hardened classifier, the loop's metrics and what the inner maximisation did."""

    classifier: Any
    metrics: dict[str, Any]
    stats: dict[str, float] = field(default_factory=dict)


class SubstitutionSpace:
    """A text's attackable units and their label-preserving variants, from an attack.

    `positions[j]` is a unit index, `options[j]` the attack's variants for that unit
    under the true label; only units with at least one variant are kept.
    """

    def __init__(self, attack: GreedyAttack, text: str, label: int, cache: dict) -> None:
        attack.prepare(text)  # e.g. the character attack's language
        self.units = attack.segment(text)
        self.label = label
        self.positions: list[int] = []
        self.options: list[list[str]] = []
        for i, unit in enumerate(self.units):
            if not attack.attackable(unit):
                continue
            key = (unit, label, getattr(attack, "_language", None))
            if key not in cache:
                cache[key] = list(dict.fromkeys(attack.variants(unit, label)))
            if cache[key]:
                self.positions.append(i)
                self.options.append(cache[key])

    def apply(self, attack: GreedyAttack, choice: dict[int, int]) -> str:
        """The text with unit positions[j] replaced by options[j][choice[j]]."""
        units = list(self.units)
        for j, v in choice.items():
            units[self.positions[j]] = self.options[j][v]
        return attack.join(units)


def sample_choices(
    space: SubstitutionSpace,
    gains: list[np.ndarray] | None,
    k: int,
    random_k: int,
    max_edits: int,
    top_positions: int,
    temperature: float,
    rng: random.Random,
) -> list[dict[int, int]]:
    """Up to k distinct substitution sets ({position j: variant v}), each <= max_edits.

    With first-order `gains` (one array per position, one gain per variant): the greedy
    sets (best variant on the 1, 2, .. max_edits most promising positions), then sets
    sampled by softmax(gain / temperature) among the top positions; `random_k` sets are
    uniform over positions and variants. Without gains every set is uniform.
    """
    n = len(space.positions)
    if n == 0:
        return []
    out: list[dict[int, int]] = []
    seen: set[tuple] = set()

    def add(choice: dict[int, int]) -> None:
        key = tuple(sorted(choice.items()))
        if choice and key not in seen:
            seen.add(key)
            out.append(choice)

    guided = k - random_k if gains is not None else 0
    if guided > 0:
        best_v = [int(np.argmax(g)) for g in gains]
        best_gain = np.array([float(g[v]) for g, v in zip(gains, best_v, strict=True)])
        ranked = list(np.argsort(-best_gain, kind="stable"))
        for m in range(1, min(max_edits, n) + 1):
            if len(out) >= guided:
                break
            add({int(j): best_v[j] for j in ranked[:m]})
        top = ranked[: max(top_positions, 1)]
        weights = np.exp((best_gain[top] - best_gain[top].max()) / temperature)
        for _ in range(4 * guided):
            if len(out) >= guided:
                break
            m = rng.randint(1, min(max_edits, len(top)))
            picks = rng.choices(range(len(top)), weights=weights.tolist(), k=4 * m)
            chosen = list(dict.fromkeys(int(top[p]) for p in picks))[:m]
            choice = {}
            for j in chosen:
                g = gains[j]
                w = np.exp((g - g.max()) / temperature)
                choice[j] = rng.choices(range(len(g)), weights=w.tolist(), k=1)[0]
            add(choice)
    for _ in range(4 * k):
        if len(out) >= k:
            break
        m = rng.randint(1, min(max_edits, n))
        choice = {j: rng.randrange(len(space.options[j])) for j in rng.sample(range(n), m)}
        add(choice)
    return out[:k]


def pick_worst(
    owner: Sequence[int],
    losses: np.ndarray,
    originals: Sequence[str],
    candidates: Sequence[str],
    similarity: Any,
    min_similarity: float,
    checks: int = 3,
) -> tuple[dict[int, int], int]:
    """Worst-of-k: per row, the highest-loss candidate that passes the similarity check.

    `owner[c]` is the row (example) candidate c belongs to, `losses[c]` its true-label
    loss. Up to `checks` highest-loss candidates of each row are tried in loss order:
    one batched similarity call per level, only for the rows still without a passing
    candidate (the choice is the same as checking all of them at once, with fewer
    sentence-embedding calls); a row whose checked candidates all fail gets none.
    Returns ({row: candidate index}, number of similarity rejections).
    """
    by_row: dict[int, list[int]] = {}
    for c, r in enumerate(owner):
        by_row.setdefault(r, []).append(c)
    for cs in by_row.values():
        cs.sort(key=lambda c: -losses[c])
    chosen: dict[int, int] = {}
    rejected = 0
    for level in range(max(1, checks)):
        pairs = [(r, cs[level]) for r, cs in by_row.items() if r not in chosen and level < len(cs)]
        if not pairs:
            break
        if min_similarity > 0:
            sims = np.asarray(similarity([originals[r] for r, _ in pairs],
                                         [candidates[c] for _, c in pairs]))  # fmt: skip
        else:
            sims = np.ones(len(pairs))
        for (r, c), sim in zip(pairs, sims, strict=True):
            if sim >= min_similarity:
                chosen[r] = c
            else:
                rejected += 1
    return chosen, rejected


def token_swaps(
    attack: GreedyAttack,
    space: SubstitutionSpace,
    tokenizer: Any,
    max_length: int,
    pieces: dict[str, list[int]] | None = None,
) -> np.ndarray:
    """(token index, old id, new id) of the one token each variant changes, one row each.

    Rows follow positions then variants (`space.options` order). Fast path: the unit's
    tokens in context (by character offsets) equal its tokens alone (WordPiece), so a
    variant's own tokens say which id changes (`pieces` caches them across texts).
    Otherwise (e.g. byte-level BPE, where a token carries the leading space) the text is
    tokenised with each substitution and compared with the original ids. A variant that
    changes the token count or several tokens (or only the truncated tail) gets
    (-1, 0, 0): no first-order estimate, gain 0.
    """
    pieces = {} if pieces is None else pieces

    def alone(unit: str) -> list[int]:
        if unit not in pieces:
            pieces[unit] = tokenizer(unit, add_special_tokens=False)["input_ids"]
        return pieces[unit]

    def one_change(base: list[int], ids: list[int], where: list[int]) -> tuple[int, int, int]:
        if len(ids) != len(base):
            return (-1, 0, 0)
        diff = [i for i, (x, y) in enumerate(zip(base, ids, strict=True)) if x != y]
        return (where[diff[0]], base[diff[0]], ids[diff[0]]) if len(diff) == 1 else (-1, 0, 0)

    text = attack.join(space.units)
    enc = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    starts, cursor = [], 0
    for unit in space.units:
        starts.append(cursor)
        cursor += len(unit)
    rows: list[tuple[int, int, int]] = []
    for j, pos in enumerate(space.positions):
        a, b = starts[pos], starts[pos] + len(space.units[pos])
        span = [t for t, (s, e) in enumerate(offsets) if e > s and s >= a and e <= b]
        old = alone(space.units[pos])
        if span and len(span) == len(old) and [ids[t] for t in span] == old:
            rows.extend(one_change(old, alone(v), span) for v in space.options[j])
        else:
            singles = [space.apply(attack, {j: v}) for v in range(len(space.options[j]))]
            encoded = tokenizer(singles, truncation=True, max_length=max_length)["input_ids"]
            everywhere = list(range(len(ids)))
            rows.extend(one_change(ids, e, everywhere) for e in encoded)
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def online_adversarial_training(
    classifier: Any,
    train: Sequence[LabeledText],
    attack: GreedyAttack,
    config: OnlineAdversarialConfig | None = None,
    replay: Sequence[LabeledText] | None = None,
) -> OnlineTrainingResult:
    """Fine-tune `classifier` (a TextClassifier) with worst-of-k variants on every batch.

    `attack` supplies the substitution sets and the similarity constraint (its
    `segment`/`attackable`/`variants`/`join`, `similarity` and `config.min_similarity`,
    `config.max_edits`); it is never asked to query a model. Build it on `classifier`
    (e.g. the word attack with the model's own embedding neighbours) so training and
    the fresh attack share one candidate space. With `replay` and
    `config.replay_per_batch`, each batch also fits that many random clean texts from
    `replay` (cheap: no variants), which protects clean accuracy.
    """
    import torch
    from torch import nn

    from rlhf.engine.checkpoint import seed_everything
    from rlhf.engine.classifier import check_labeled
    from rlhf.engine.finetune import TrainLoopConfig, run_training_loop

    config = config or OnlineAdversarialConfig()
    labels = tuple(classifier.labels)
    check_labeled(train, labels, "train")
    if config.replay_per_batch and not replay:
        raise AdversarialInputError("replay_per_batch > 0 needs a non-empty replay set")
    if replay:
        check_labeled(replay, labels, "replay")
    if attack.join(attack.segment(train[0].text)) != train[0].text:
        raise AdversarialInputError("attack.join(attack.segment(text)) must give the text back")
    seed_everything(config.seed)
    rng = random.Random(config.seed)
    label_ids = {name: i for i, name in enumerate(labels)}
    max_edits = config.max_edits or attack.config.max_edits
    min_similarity = attack.config.min_similarity if config.check_similarity else 0.0
    classifier.max_length = config.max_length
    model, device, tokenizer = classifier.model, classifier.device, classifier.tokenizer
    embedding = model.get_input_embeddings()
    variant_cache: dict = {}
    spaces: dict[int, SubstitutionSpace] = {}
    swaps: dict[int, np.ndarray] = {}  # per example: token_swaps rows, cached
    pieces: dict[str, list[int]] = {}  # unit -> its tokens alone, cached
    stats = {"batches": 0, "examples": 0, "with_variants": 0, "variants": 0,
             "adversarial_flips": 0, "similarity_rejected": 0, "clean_errors": 0,
             "worst_loss_sum": 0.0, "clean_loss_sum": 0.0, "seconds_gradient": 0.0,
             "seconds_variants": 0.0, "seconds_scoring": 0.0, "seconds_similarity": 0.0,
             "seconds_update": 0.0}  # fmt: skip

    def space_of(i: int) -> SubstitutionSpace:
        if i not in spaces:
            r = train[i]
            spaces[i] = SubstitutionSpace(attack, r.text, label_ids[r.label], variant_cache)
        return spaces[i]

    def encode(texts: list[str]) -> dict[str, Any]:
        return tokenizer(texts, padding=True, truncation=True, max_length=config.max_length,
                         return_tensors="pt")  # fmt: skip

    def model_inputs(enc: dict[str, Any]) -> dict[str, Any]:
        keep = ("input_ids", "attention_mask", "token_type_ids")
        return {k: v.to(device) for k, v in enc.items() if k in keep}

    @torch.no_grad()
    def true_label_loss(texts: list[str], targets: list[int]) -> np.ndarray:
        model.eval()
        losses = []
        for s in range(0, len(texts), 128):
            logits = model(**model_inputs(encode(texts[s : s + 128]))).logits.float()
            y = torch.tensor(targets[s : s + 128], device=logits.device)
            losses.append(nn.functional.cross_entropy(logits, y, reduction="none").cpu())
        model.train()
        return torch.cat(losses).numpy()

    def batch_loss(indices: list[int]) -> torch.Tensor:
        tick = time.perf_counter()
        texts = [train[i].text for i in indices]
        y = torch.tensor([label_ids[train[i].label] for i in indices], device=device)
        inputs = model_inputs(encode(texts))
        # 1. clean forward; the gradient w.r.t. the input embeddings ranks substitutions
        embeds = embedding(inputs.pop("input_ids"))
        if not embeds.requires_grad:
            embeds.requires_grad_(True)
        clean_logits = model(inputs_embeds=embeds, **inputs).logits.float()
        clean_loss = nn.functional.cross_entropy(clean_logits, y)
        grads = torch.autograd.grad(clean_loss, embeds, retain_graph=True)[0].float()
        table = embedding.weight.detach().float()
        stats["seconds_gradient"] += time.perf_counter() - tick
        tick = time.perf_counter()
        # 2. k variants per example
        candidates: list[str] = []
        owner: list[int] = []
        for row, i in enumerate(indices):
            space = space_of(i)
            if not space.positions:
                continue
            if i not in swaps:
                swaps[i] = token_swaps(attack, space, tokenizer, config.max_length, pieces)
            tok, old, new = torch.from_numpy(swaps[i]).to(grads.device).unbind(1)
            gain = ((table[new] - table[old]) * grads[row, tok.clamp(min=0)]).sum(-1)
            gain = torch.where(tok >= 0, gain, torch.zeros_like(gain)).cpu().numpy()
            sizes = np.cumsum([len(o) for o in space.options])[:-1]
            gains = np.split(gain, sizes)
            choices = sample_choices(space, gains, config.variants_per_example,
                                     config.random_variants, max_edits, config.top_positions,
                                     config.temperature, rng)  # fmt: skip
            for choice in choices:
                candidates.append(space.apply(attack, choice))
                owner.append(row)
        # 3. worst-of-k under the current model (no gradient), then the similarity check
        adversarial = list(texts)
        stats["seconds_variants"] += time.perf_counter() - tick
        if candidates:
            tick = time.perf_counter()
            targets = [int(y[r]) for r in owner]
            losses = true_label_loss(candidates, targets)
            stats["seconds_scoring"] += time.perf_counter() - tick
            tick = time.perf_counter()
            chosen, rejected = pick_worst(owner, losses, texts, candidates, attack.similarity,
                                          min_similarity, config.similarity_checks)  # fmt: skip
            stats["similarity_rejected"] += rejected
            stats["seconds_similarity"] += time.perf_counter() - tick
            for r, c in chosen.items():
                adversarial[r] = candidates[c]
                stats["worst_loss_sum"] += float(losses[c])
                stats["adversarial_flips"] += int(losses[c] > math.log(2))
            stats["with_variants"] += len(set(owner))
            stats["variants"] += len(candidates)
        # 4. clean + worst-case (+ consistency) loss, plus clean replay
        tick = time.perf_counter()
        adv_logits = model(**model_inputs(encode(adversarial))).logits.float()
        loss = clean_loss + config.adv_weight * nn.functional.cross_entropy(adv_logits, y)
        if config.kl_weight:
            kl = nn.functional.kl_div(
                nn.functional.log_softmax(adv_logits, -1),
                nn.functional.log_softmax(
                    clean_logits.detach() if config.kl_detach_clean else clean_logits, -1
                ),
                log_target=True,
                reduction="batchmean",
            )
            loss = loss + config.kl_weight * kl
        if config.replay_per_batch:
            picks = [rng.randrange(len(replay)) for _ in range(config.replay_per_batch)]
            replay_logits = model(**model_inputs(encode([replay[p].text for p in picks]))).logits
            replay_y = torch.tensor([label_ids[replay[p].label] for p in picks], device=device)
            loss = loss + nn.functional.cross_entropy(replay_logits.float(), replay_y)
        stats["seconds_update"] += time.perf_counter() - tick  # forward only; backward is
        # in the shared loop
        stats["batches"] += 1
        stats["examples"] += len(indices)
        stats["clean_loss_sum"] += float(clean_loss.detach()) * len(indices)
        stats["clean_errors"] += int((clean_logits.argmax(-1) != y).sum())
        return loss

    loop = TrainLoopConfig(
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_ratio=config.warmup_ratio,
        batch_size=config.batch_size,
        max_length=config.max_length,
        epochs=config.epochs,
        time_limit_s=config.time_limit_s,
        freeze_embeddings=config.freeze_embeddings,
        autocast=config.autocast,
        seed=config.seed,
        device=str(device),
        checkpoint_every=0,
        resume=False,
    )
    encoded = tokenizer([r.text for r in train], truncation=True, max_length=config.max_length)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    started = time.monotonic()
    metrics, _ = run_training_loop(loop, model, lengths, batch_loss, name="online-adversarial")
    seen = max(1, stats["examples"])
    summary = {
        "minutes": (time.monotonic() - started) / 60,
        "batches": stats["batches"],
        "examples": stats["examples"],
        "share_with_variants": stats["with_variants"] / seen,
        "variants_per_example": stats["variants"] / max(1, stats["with_variants"]),
        "worst_flip_rate": stats["adversarial_flips"] / max(1, stats["with_variants"]),
        "mean_worst_loss": stats["worst_loss_sum"] / max(1, stats["with_variants"]),
        "mean_clean_loss": stats["clean_loss_sum"] / seen,
        "clean_train_error": stats["clean_errors"] / seen,
        "similarity_rejected": stats["similarity_rejected"],
        **{k: round(v, 1) for k, v in stats.items() if k.startswith("seconds_")},
    }
    log.info("online adversarial training: %s", summary)
    model.eval()
    return OnlineTrainingResult(classifier, metrics, summary)
