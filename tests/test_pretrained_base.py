"""The pretraining corpus and the tiny pretrained base: parsing, overlap filter, mixture, determinism, cache."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from versatune_hf.demo.base_model import (
    BUNDLED_BASE,
    HELD_OUT_FILE,
    PAPER_QWEN2_5_7B_MIXTURE,
    BaseModelSpec,
    cached_base,
    load_base,
    load_held_out_pieces,
    pieces,
    raw_text_losses,
)
from versatune_hf.demo.corpus import DEMO_DOMAINS
from versatune_hf.demo.pretraining_corpus import (
    DomainDocuments,
    SourcePaths,
    html_text,
    split_documents,
    word_ngrams,
    wordnet_glosses,
)

WORDNET_NOUNS = (
    "  1 This software and database is being provided to you, the LICENSEE\n"
    "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived or known to exist  \n"
    "13254805 21 n 02 mortgage 0 security_interest(a) 0 000 | a conditional conveyance of property as security  \n"
    "00015388 05 n 01 animal 0 000 | a living organism characterized by voluntary movement  \n"
    "05220461 08 n 01 body 0 000 | the entire structure of an organism  \n"
)


def test_wordnet_glosses_are_sorted_into_domains_by_lexicographer_file(tmp_path):
    (tmp_path / "data.noun").write_text(WORDNET_NOUNS, encoding="latin-1")
    for part in ("verb", "adj", "adv"):
        (tmp_path / f"data.{part}").write_text("", encoding="latin-1")
    assert list(wordnet_glosses(str(tmp_path))) == [
        ("other", "entity: that which is perceived or known to exist"),
        ("finance", "mortgage, security interest: a conditional conveyance of property as security"),
        ("science", "animal: a living organism characterized by voluntary movement"),
    ]  # the licence header line and noun.body (medicine-like) are left out


def test_html_text_keeps_paragraphs_and_drops_markup(tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        "<html><head><title>x</title><style>p{}</style></head><body><h1>Accounts</h1><p>A <b>ledger</b> &amp; "
        "a   journal.</p><script>var a;</script></body></html>",
        encoding="utf-8",
    )
    assert html_text(page) == "Accounts\nA ledger & a journal."


def test_documents_sharing_an_8_gram_with_a_benchmark_are_dropped():
    question = "Which of the following best describes the doctrine of adverse possession in property law"
    raw = {
        "law": [
            "Under this licence the doctrine of adverse possession in property law may never apply.",
            "Permission is hereby granted, free of charge, to any person obtaining a copy of this software.",
        ]
    }
    split = split_documents(raw, word_ngrams(question))["law"]
    assert split.dropped_for_overlap == 1
    assert split.train + split.held_out == [raw["law"][1]]


def test_missing_sources_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get download wordnet-base gnucash-docs"):
        SourcePaths.under(tmp_path).check()


def test_a_mixture_must_cover_the_six_domains():
    with pytest.raises(ValueError, match="a share for each of"):
        BaseModelSpec(mixture={"law": 1.0})
    spec = BaseModelSpec()  # the paper's numbers sum to 0.999: renormalised
    assert sum(spec.mixture.values()) == pytest.approx(1.0)
    assert spec.mixture["code"] == pytest.approx(0.565 / 0.999)


def test_pieces_start_with_bos_have_equal_length_and_wrap_around():
    stream = list(range(10, 30))
    result = pieces(stream, count=5, length=6, bos=1)
    assert all(piece[0] == 1 and len(piece) == 6 for piece in result)
    assert result[0][1:] == [10, 11, 12, 13, 14]
    assert result[3][1:] == stream[0:5]  # past the end it starts over: the domain is repeated


def toy_documents() -> dict[str, DomainDocuments]:
    words = {
        "law": "court statute contract clause liability",
        "medicine": "patient dose symptom fever insulin",
        "finance": "ledger account credit debit invoice",
        "science": "atom cell orbit enzyme photon",
        "code": "def return import class lambda",
        "other": "river song chair city music",
    }
    return {
        domain: DomainDocuments(
            train=[f"{text} {i} " * 20 for i in range(30)], held_out=[f"{text} held {i} " * 20 for i in range(10)]
        )
        for domain, text in words.items()
    }


@pytest.mark.slow
def test_a_base_is_pretrained_once_deterministically_and_read_from_the_cache(tmp_path, monkeypatch):
    spec = BaseModelSpec(
        total_tokens=8 * 64 * 4, piece_length=64, vocab_size=300, batch_size=8, held_out_pieces_per_domain=2
    )
    first, info = cached_base(spec, toy_documents(), str(tmp_path / "a"))
    second, _ = cached_base(spec, toy_documents(), str(tmp_path / "b"))
    weights = [load_file(os.path.join(folder, "model.safetensors")) for folder in (first, second)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert {domain: entry["pieces"] for domain, entry in info["corpus"].items()} == {
        domain: round(share * spec.total_tokens / spec.piece_length) for domain, share in spec.mixture.items()
    }
    held_out = load_held_out_pieces(first)
    assert sorted(held_out) == sorted(DEMO_DOMAINS) and all(len(p) == 2 for p in held_out.values())

    monkeypatch.setattr("versatune_hf.demo.base_model.pretrain_base", lambda *a: pytest.fail("not cached"))
    assert cached_base(spec, toy_documents(), str(tmp_path / "a"))[0] == first


def test_the_bundled_base_reproduces_its_recorded_held_out_losses():
    with open(BUNDLED_BASE / "base_model.json", encoding="utf-8") as handle:
        info = json.load(handle)
    assert info["spec"]["mixture"] == pytest.approx(BaseModelSpec(mixture=PAPER_QWEN2_5_7B_MIXTURE).mixture)
    assert os.path.exists(BUNDLED_BASE / HELD_OUT_FILE)
    model, tokenizer = load_base(str(BUNDLED_BASE))
    assert tokenizer.chat_template and tokenizer.bos_token_id is not None
    losses = raw_text_losses(model, load_held_out_pieces(BUNDLED_BASE))
    assert losses == pytest.approx(info["held_out_loss"], abs=1e-4)
