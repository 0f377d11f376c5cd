"""Domain labellers for Phase 1 detection: an instruct-model judge, a local word classifier, or any callable."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

DEFAULT_DOMAINS = ("law", "medicine", "finance", "science", "code", "other")
JUDGE_TOPIC_NAMES = {"medicine": "medical & health care"}
"""How the judge prompt names a domain when it differs from the domain name (the paper's wording)."""
SYNONYMS = {
    "law": ["law", "legal", "laws", "jurisprudence", "legislation"],
    "medicine": ["medicine", "medical", "health", "healthcare", "health care", "clinical", "medicinal"],
    "finance": ["finance", "financial", "economics", "economy", "business", "accounting", "banking"],
    "science": ["science", "scientific", "physics", "chemistry", "biology", "mathematics", "math"],
    "code": ["code", "coding", "programming", "software", "computer science", "source code"],
    "other": ["other", "others", "none of the above", "general", "miscellaneous"],
}
MAX_NAMED_TOPICS = 2
NEGATIONS = ("not", "no", "isn't", "is not", "rather than", "instead of", "neither", "nor", "never")

Labels = list[str | None]
Probabilities = list[dict[str, float]] | None


@dataclass
class Labelled:
    """Labels for a batch of texts: a domain or `None` (unparseable), optional probabilities, raw judge answers."""

    labels: Labels
    probabilities: Probabilities = None
    answers: list[str] | None = None


def judge_prompt(text: str, domains: Sequence[str]) -> str:
    """The topic-annotation question of the paper, for the given domains."""
    topics = ", ".join(JUDGE_TOPIC_NAMES.get(domain, domain) for domain in domains)
    return (
        f"You are a data topic annotation expert. The topics are: {topics}. Which topic does this text belong to? "
        f"Answer with the topic name only.\n\nText:\n{text}"
    )


def parse_topic(answer: str, domains: Sequence[str]) -> str | None:
    """The domain a free-form judge answer names, or `None` when it names none or just repeats the topic list.

    Case, punctuation, synonyms ("legal", "healthcare", "programming") and extra words are tolerated. When several
    topics are named, negated mentions ("law, not medicine") are skipped and the first remaining one wins, unless
    more than `MAX_NAMED_TOPICS` distinct topics remain (the answer listed the topics instead of choosing).
    """
    lowered = " " + re.sub(r"[^a-z&' ]+", " ", answer.lower()) + " "
    mentions = []
    for domain in domains:
        for phrase in [domain, *SYNONYMS.get(domain, []), JUDGE_TOPIC_NAMES.get(domain, domain)]:
            for match in re.finditer(rf"(?<=[ ]){re.escape(phrase.lower())}(?=[ ])", lowered):
                mentions.append((match.start(), domain))
    kept = []
    for start, domain in sorted(mentions):
        before = lowered[max(0, start - 14) : start]
        if not any(re.search(rf"\b{negation}\s*$", before) for negation in NEGATIONS):
            kept.append(domain)
    if not kept or len(set(kept)) > MAX_NAMED_TOPICS:
        return None
    return kept[0]


ANSWER_PREFIX = "Topic:"
"""The judge's answer is primed with this, so that the next tokens name the topic (small models otherwise tend to
echo the text); the topic probabilities are read at the first token after it."""


def topic_first_token_ids(tokenizer, name: str) -> list[int]:
    """The token ids that can start topic `name` in a judge's answer: any capitalisation, with or without a leading
    space (used to read a judge's topic probabilities)."""
    variants = {name, name.capitalize(), " " + name, " " + name.capitalize()}
    return sorted({tokenizer(v, add_special_tokens=False)["input_ids"][0] for v in variants})


class JudgeLabeller:
    """Labels texts by asking an instruct model the topic question through its chat template (greedy decoding).

    With `probabilities=True` it also scores each topic by the model's probability of the first token of the
    topic's name (any capitalisation, with or without a leading space) right after `ANSWER_PREFIX`, normalised over
    the topics (the paper's soft labels).
    """

    def __init__(
        self,
        model,
        tokenizer,
        domains: Sequence[str] = DEFAULT_DOMAINS,
        batch_size: int = 8,
        max_new_tokens: int = 16,
        probabilities: bool = False,
    ) -> None:
        self.model, self.tokenizer, self.domains = model.eval(), tokenizer, list(domains)
        self.batch_size, self.max_new_tokens, self.probabilities = batch_size, max_new_tokens, probabilities
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._first_tokens = [topic_first_token_ids(self.tokenizer, JUDGE_TOPIC_NAMES.get(d, d)) for d in self.domains]

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> Labelled:
        labels, answers, probabilities = [], [], []
        for start in tqdm(range(0, len(texts), self.batch_size), desc="Judging topics", leave=False):
            prompts = [
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": judge_prompt(text, self.domains)}],
                    tokenize=False,
                    add_generation_prompt=True,
                )
                + ANSWER_PREFIX
                for text in texts[start : start + self.batch_size]
            ]
            batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            batch = batch.to(self.model.device)
            output = self.model.generate(
                **batch,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            new_tokens = output.sequences[:, batch["input_ids"].shape[1] :]
            for answer in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True):
                answers.append(answer.strip())
                labels.append(parse_topic(answer, self.domains))
            if self.probabilities:
                next_token = torch.softmax(output.scores[0].float(), dim=-1)
                first = torch.stack([next_token[:, ids].sum(dim=-1) for ids in self._first_tokens], dim=-1)
                first = first / first.sum(dim=-1, keepdim=True)
                probabilities += [dict(zip(self.domains, row.tolist())) for row in first]
        return Labelled(labels, probabilities if self.probabilities else None, answers)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]{2,}", text.lower())


class LocalClassifier:
    """A multinomial naive Bayes classifier over words, trained in seconds on labelled SFT text; gives probabilities.

    Train it on the bundled demo corpus (`from_demo_corpus`) or on your own train set with a domain column.
    """

    def __init__(
        self, texts: Sequence[str], labels: Sequence[str], vocabulary_size: int = 20000, smoothing: float = 0.5
    ) -> None:
        self.domains = sorted(set(labels))
        counts = Counter(word for text in texts for word in words(text))
        self.vocabulary = {word: i for i, (word, _) in enumerate(counts.most_common(vocabulary_size))}
        word_counts = np.full((len(self.domains), len(self.vocabulary)), smoothing)
        documents = np.zeros(len(self.domains))
        for text, label in zip(texts, labels):
            row = self.domains.index(label)
            documents[row] += 1
            for word in words(text):
                if word in self.vocabulary:
                    word_counts[row, self.vocabulary[word]] += 1
        self.log_prior = np.log(documents / documents.sum())
        self.log_likelihood = np.log(word_counts / word_counts.sum(axis=1, keepdims=True))

    @classmethod
    def from_demo_corpus(cls) -> LocalClassifier:
        """Trained on the bundled six-domain corpus's train split."""
        from ..demo.corpus import load_demo_corpus

        train, _ = load_demo_corpus()
        return cls([conversation_text(m) for m in train["messages"]], list(train["domain"]))

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), domains) posterior probabilities."""
        scores = np.tile(self.log_prior, (len(texts), 1))
        for i, text in enumerate(texts):
            indices = [self.vocabulary[w] for w in words(text) if w in self.vocabulary]
            if indices:
                scores[i] += self.log_likelihood[:, indices].sum(axis=1)
        scores -= scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        return exp / exp.sum(axis=1, keepdims=True)

    def __call__(self, texts: Sequence[str]) -> Labelled:
        probabilities = self.probabilities(texts)
        labels = [self.domains[int(row.argmax())] for row in probabilities]
        return Labelled(labels, [dict(zip(self.domains, map(float, row))) for row in probabilities])

    def accuracy(self, texts: Sequence[str], labels: Sequence[str]) -> float:
        predicted = self(texts).labels
        return sum(p == t for p, t in zip(predicted, labels)) / len(labels)


def conversation_text(messages: Sequence[dict]) -> str:
    return "\n".join(message["content"] for message in messages)


def as_labeller(function: Callable[[Sequence[str]], Sequence[str | None]]) -> Callable[[Sequence[str]], Labelled]:
    """Wrap a plain `texts -> labels` callable (None = unparseable) as a labeller."""
    return lambda texts: Labelled(list(function(texts)))


def shares(labelled: Labelled, domains: Sequence[str], soft: bool, smoothing: float = 0.0) -> dict[str, float]:
    """Per-domain shares: counts of hard labels (the reference code) or averaged probabilities (the paper's figure);
    `smoothing` adds that many pseudo-counts to every domain so that none starts at 0."""
    if soft:
        if labelled.probabilities is None:
            raise ValueError("Soft shares need a labeller that gives probabilities (the local classifier does).")
        totals = {d: sum(p.get(d, 0.0) for p in labelled.probabilities) for d in domains}
    else:
        totals = {d: float(sum(label == d for label in labelled.labels)) for d in domains}
    totals = {d: value + smoothing for d, value in totals.items()}
    total = sum(totals.values())
    if total <= 0 or not math.isfinite(total):
        raise ValueError("No text could be labelled, so there are no shares; check the labeller's answers.")
    return {d: value / total for d, value in totals.items()}
