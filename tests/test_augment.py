"""theta_ai.augment: determinism, protected spans, each operation's exact effect, config errors."""

from __future__ import annotations

import json
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from theta_ai.augment import (
    AugmentConfig, AugmentConfigError, Augmenter, Lexicon, load_lexicon, preview, protected_spans, tokenize,
)
from theta_ai.config import ConfigError
from theta_ai.data.formats import Example
from theta_ai.config.samples import sample_path

SAMPLE = sample_path("theta_sample_train.json")
ALL_ON = {name: 1.0 for name in AugmentConfig.keys() if name != "answer_side"}


@pytest.fixture(scope="module")
def sample_examples() -> list[Example]:
    records = json.loads(SAMPLE.read_text(encoding="utf-8"))
    return [Example.from_qa(r["question"], r["answer"], r.get("domain", "general")) for r in records]


def only(op: str, text: str, seed: int = 0, epoch: int = 0, index: int = 0, **overrides) -> str:
    return Augmenter(AugmentConfig.only(op, **overrides), seed=seed).augment_text(text, epoch, index)


# ---------------------------------------------------------------------------- determinism


def test_same_seed_epoch_index_gives_identical_output(sample_examples):
    a, b = Augmenter(AugmentConfig(), seed=7), Augmenter(AugmentConfig(), seed=7)
    first = [a.augment(ex, 3, i) for i, ex in enumerate(sample_examples[:60])]
    # a fresh object (a resumed run) in reverse order (another worker/shuffle) sees the same views
    second = [b.augment(ex, 3, i) for i, ex in reversed(list(enumerate(sample_examples[:60])))][::-1]
    assert [e.messages for e in first] == [e.messages for e in second]


def test_epochs_and_seeds_give_different_views(sample_examples):
    aug = Augmenter(AugmentConfig(), seed=0)
    questions = sample_examples[:100]
    differ = sum(aug.augment(ex, 0, i).question != aug.augment(ex, 1, i).question for i, ex in enumerate(questions))
    assert differ >= 70
    other_seed = Augmenter(AugmentConfig(), seed=1)
    differ = sum(aug.augment(ex, 0, i).question != other_seed.augment(ex, 0, i).question
                 for i, ex in enumerate(questions))
    assert differ >= 70
    # over 20 epochs a question is seen in many phrasings
    views = {aug.augment(questions[0], epoch, 0).question for epoch in range(20)}
    assert len(views) >= 8


def test_default_mix_changes_most_questions(sample_examples):
    aug = Augmenter(AugmentConfig(), seed=0)
    changed = sum(aug.augment(ex, 0, i).question != ex.question for i, ex in enumerate(sample_examples[:100]))
    assert changed >= 50


def test_augment_returns_a_new_example_and_keeps_the_rest():
    ex = Example([{"role": "system", "content": "Be brief. What is DNS?"},
                  {"role": "user", "content": "What is DNS?"},
                  {"role": "assistant", "content": "The phone book of the internet."},
                  {"role": "user", "content": "What is a default gateway?"},
                  {"role": "assistant", "content": "The router a host sends off-subnet traffic to."}],
                 domain="networking", source="f.json, record index 0", meta={"id": 1})
    before = json.dumps(ex.messages)
    out = Augmenter(AugmentConfig.only("rephrase"), seed=0).augment(ex, 0, 0)
    assert json.dumps(ex.messages) == before  # the input is not modified
    assert out is not ex and out.meta == {"id": 1} and out.meta is not ex.meta
    assert (out.domain, out.source) == ("networking", "f.json, record index 0")
    assert [m["role"] for m in out.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert out.messages[0] == ex.messages[0]  # system turns are never changed
    assert out.messages[1]["content"] != "What is DNS?" and out.messages[3]["content"] != "What is a default gateway?"
    assert [out.messages[i] for i in (2, 4)] == [ex.messages[i] for i in (2, 4)]


def test_augmenter_pickles_for_dataloader_workers(sample_examples):
    aug = Augmenter(AugmentConfig(), seed=5)
    clone = pickle.loads(pickle.dumps(aug))
    assert [clone.augment(ex, 2, i).question for i, ex in enumerate(sample_examples[:20])] == \
           [aug.augment(ex, 2, i).question for i, ex in enumerate(sample_examples[:20])]


# ---------------------------------------------------------------------------- structure is never damaged

STRUCTURED = (
    "What is the difference between Python 3.11 and 3.12 when I run setup.py from ~/.ssh/id_rsa or "
    "C:\\Windows\\System32 on 192.168.1.1:8080?\n"
    "Here is my code, it is not working:\n"
    "```python\ndef foo(x):\n    return x  # what is this\n```\n"
    "    indented_line = load(path)\n"
    "\tanother_line()\n"
    "and `inline code here` plus https://example.com/a?b=c, the /etc/hosts file, os.path.join, getUserName, "
    "my_var, Wi-Fi, --dry-run, .gitignore, port 443, src\\main.c (see docs/guide.md).\n\n"
    "Why doesn't it work? I really need help quickly"
)
STRUCTURED_SPANS = [
    "3.11", "3.12", "setup.py", "~/.ssh/id_rsa", "C:\\Windows\\System32", "192.168.1.1:8080",
    "```python\ndef foo(x):\n    return x  # what is this\n```", "    indented_line = load(path)", "\tanother_line()",
    "`inline code here`", "https://example.com/a?b=c", "/etc/hosts", "os.path.join", "getUserName", "my_var",
    "Wi-Fi", "--dry-run", ".gitignore", "443", "src\\main.c", "docs/guide.md",
]


def test_tokenize_finds_the_protected_spans():
    assert protected_spans(STRUCTURED) == STRUCTURED_SPANS
    assert "".join(t for _, t in tokenize(STRUCTURED)) == STRUCTURED


def assert_spans_in_order(text: str, spans: list[str]) -> None:
    pos = 0
    for span in spans:
        found = text.find(span, pos)
        assert found >= 0, f"{span!r} lost or reordered in {text!r}"
        pos = found + len(span)


@pytest.mark.parametrize("epoch", range(8))
def test_protected_spans_and_newlines_survive_every_operation(epoch):
    aug = Augmenter(AugmentConfig(**ALL_ON), seed=epoch)
    out = aug.augment_text(STRUCTURED, epoch, 0)
    assert out != STRUCTURED
    assert_spans_in_order(out, STRUCTURED_SPANS)
    assert protected_spans(out) == STRUCTURED_SPANS
    assert out.count("\n") == STRUCTURED.count("\n")
    # every line holding code is byte-identical
    code_lines = {line for line in STRUCTURED.split("\n")[2:7]}
    assert code_lines <= set(out.split("\n"))


def test_answer_code_survives_answer_side_synonyms(sample_examples):
    aug = Augmenter(AugmentConfig.off(answer_side=True, answer_synonym=1.0, answer_synonym_rate=1.0), seed=0)
    changed = 0
    for i, ex in enumerate(sample_examples):
        out = aug.augment(ex, 0, i).answer
        changed += out != ex.answer
        assert protected_spans(out) == protected_spans(ex.answer)
        assert out.count("\n") == ex.answer.count("\n")
    assert changed > len(sample_examples) // 2


PROTECTED_CHUNKS = [
    "3.11", "192.168.1.1", "10.0.0.0/8", "8080", "/etc/hosts", "~/.ssh/id_rsa", "C:\\Windows\\System32",
    "setup.py", "requirements.txt", "__init__", "os.path.join", "getUserName", "my_var", "https://example.com/x?y=1",
    "www.python.org", "user@example.com", "`pip install -U pip`", "``a ` b``", "--dry-run", ".gitignore",
    "Wi-Fi", "IPv6", "HTTP/2", "x86", "C++", "$HOME", "a=b", "`self`",
]
BLOCKS = ["```python\nprint('hi')  # what is it\n```", "~~~\nls -la\n~~~", "    x = run(the_thing)", "\tgo to the shell"]
WORDS = ["what", "is", "the", "a", "difference", "between", "fast", "big", "how", "do", "I", "find", "out", "not",
         "never", "Python", "explain", "problem", "can't", "doesn't", "it", "is", "usually", "computer", "Why", "help"]


@st.composite
def structured_text(draw):
    parts, spans = [], []
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["word", "word", "word", "chunk", "block", "number"]))
        if kind == "word":
            parts.append(draw(st.sampled_from(WORDS) | st.from_regex(r"[a-zA-Z]{1,9}", fullmatch=True)))
        elif kind == "number":
            version = ".".join(str(n) for n in draw(st.lists(st.integers(0, 999), min_size=1, max_size=4)))
            parts.append(version)
            spans.append(version)
        elif kind == "chunk":
            chunk = draw(st.sampled_from(PROTECTED_CHUNKS))
            parts.append(chunk + draw(st.sampled_from(["", "", "?", ".", ","])))
            spans.append(chunk)
        else:  # a block stands on its own lines
            block = draw(st.sampled_from(BLOCKS))
            parts.append("\n" + block + "\n")
            spans.append(block)
    seps = draw(st.lists(st.sampled_from([" ", " ", "  ", "\n", "\n\n", " \n"]),
                         min_size=len(parts), max_size=len(parts)))
    text = "".join(p + s for p, s in zip(parts, seps))
    return draw(st.sampled_from(["", "What is ", "How do I "])) + text, spans


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(structured_text(), st.integers(0, 10**6), st.integers(0, 100))
def test_property_protected_spans_survive_in_order(case, seed, epoch):
    text, spans = case
    out = Augmenter(AugmentConfig(**ALL_ON), seed=seed).augment_text(text, epoch, 0)
    assert_spans_in_order(out, spans)
    assert protected_spans(out) == protected_spans(text)  # nothing lost, nothing new glued together
    assert out.count("\n") == text.count("\n")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_property_tokenize_round_trips_any_text(text):
    assert "".join(t for _, t in tokenize(text)) == text
    out = Augmenter(AugmentConfig(**ALL_ON), seed=0).augment_text(text, 0, 0)
    assert out.count("\n") == text.count("\n")
    assert protected_spans(out) == protected_spans(text)


# ---------------------------------------------------------------------------- each operation, alone


def test_rephrase_templates():
    assert only("rephrase", "What is a default gateway?") == "Can you explain a default gateway?"
    assert only("rephrase", "What is a default gateway?", epoch=1) == "Describe a default gateway."
    assert only("rephrase", "What is a default gateway?", seed=1) == "What's a default gateway?"
    assert only("rephrase", "What are GPIO pins?") == "Tell me about GPIO pins."
    assert only("rephrase", "What does DHCP do?") == "What is the purpose of DHCP?"
    assert only("rephrase", "How do I flush the DNS cache?") == "How would I flush the DNS cache?"
    assert only("rephrase", "Explain the TCP three-way handshake.") == "Describe the TCP three-way handshake."
    assert only("rephrase", "  what is `__init__`?\n") == "  Can you explain `__init__`?\n"
    views = {only("rephrase", "What is DNS?", epoch=e) for e in range(30)}
    assert views == {"What's DNS?", "Can you explain DNS?", "Tell me about DNS.", "Explain DNS.", "Describe DNS."}


@pytest.mark.parametrize("question", [
    "Explain how a linked list works.",                          # X is a clause, not a noun phrase
    "What is Docker used for in software development?",
    "What is your name?",
    "What is a queue, and how do I implement one in Python?",
    "What is it?",
    "What is the output of\n```\nprint(1)\n```",
    "Why are GPUs used for training neural networks?",           # no recognised pattern
    "Hello!",
])
def test_rephrase_leaves_unrecognised_questions_alone(question):
    assert {only("rephrase", question, epoch=e) for e in range(10)} == {question}


def test_synonym_replacement():
    assert only("synonym", "What is the difference between a fast and a big SSD?") == \
        "What is the difference between a quick and a big SSD?"
    assert only("synonym", "What is the difference between a fast and a big SSD?", epoch=1) == \
        "What is the distinction between a fast and a big SSD?"
    assert only("synonym", "How do I find out which ports are open?") == "How do I determine which ports are open?"
    # every replaceable word at once, with a/an fixed and the capital kept
    assert only("synonym", "Explain an issue with a huge file.", synonym_rate=1.0) == \
        "Describe a problem with an enormous file."
    # names and acronyms are not replaced; an inverted contraction is not expanded
    assert only("synonym", "Is Big Sur fast on a BIG disk?", synonym_rate=1.0) == "Is Big Sur quick on a BIG disk?"
    assert {only("synonym", "Why doesn't Python find my module?", epoch=e, synonym_rate=1.0) for e in range(10)} \
        == {"Why doesn't Python locate my module?"}


def test_word_dropout_drops_function_words_only():
    assert only("word_dropout", "What is the difference between TCP and UDP?") == \
        "What the difference between TCP and UDP?"
    assert only("word_dropout", "Why is my laptop not charging at all?", epoch=1) == \
        "Why is laptop not charging at all?"
    text = "Why is my laptop not charging and why is it never showing the battery?"
    for epoch in range(20):
        out = only("word_dropout", text, epoch=epoch, word_dropout_rate=1.0)
        words = out.rstrip("?").split()
        # negations, question words and content words stay, in order
        assert [w for w in words if w in ("Why", "why", "laptop", "not", "charging", "never", "showing", "battery")] \
            == ["Why", "laptop", "not", "charging", "why", "never", "showing", "battery"]
    assert only("word_dropout", text, word_dropout_rate=1.0) == "Why laptop not charging why never showing battery?"
    assert only("word_dropout", "Hello there!", word_dropout_rate=1.0) == "Hello there!"  # too short


def test_word_swap_swaps_one_adjacent_pair():
    assert only("word_swap", "Why should I use a password manager?") == "Why should I a use password manager?"
    assert only("word_swap", "Why should I use a password manager?", epoch=1) == \
        "Why should I use password a manager?"
    # exactly one adjacent pair changes places; it holds a function word and no negation
    text = "Why is the hash table not resizing on my big server?"
    seen = set()
    for epoch in range(30):
        before, after = text.split(), only("word_swap", text, epoch=epoch).split()
        moved = [i for i, (x, y) in enumerate(zip(before, after)) if x != y]
        assert len(moved) == 2 and moved[1] == moved[0] + 1
        i, j = moved
        assert (after[i], after[j]) == (before[j], before[i])
        assert {before[i], before[j]} & {"is", "the", "on", "my"} and "not" not in (before[i], before[j])
        assert i > 0  # never the first word of the sentence
        seen.add(i)
    assert len(seen) >= 3


def test_typo_noise():
    assert only("typo", "What is the difference between hashing and encryption?") == \
        "What is the difference between hashng and encryption?"
    assert only("typo", "What is the difference between hashing and encryption?", epoch=1) == \
        "What is the difference between hashong and encryption?"
    out = only("typo", "Configure the firewall rules on Ubuntu TCP", typo_rate=1.0)
    assert out == "Configuee the firewalll ruels on Uhuntu TCP"
    for epoch in range(30):
        out = only("typo", "Configure the firewall rules on Ubuntu TCP", epoch=epoch, typo_rate=1.0)
        before, after = "Configure the firewall rules on Ubuntu TCP".split(), out.split()
        assert after[1] == "the" and after[4] == "on" and after[6] == "TCP"  # short words and acronyms stay
        for b, a in zip(before, after):
            assert a[0] == b[0] and abs(len(a) - len(b)) <= 1
        assert all(a != b for b, a in zip(before, after) if len(b) >= 4 and not b.isupper())


def test_casing():
    assert only("casing", "What is the GIL in Python?") == "what is the gil in python?"
    assert only("casing", "What is the GIL in Python?", seed=1) == "what is the GIL in Python?"
    assert only("casing", "how do i install pip?") == "How do i install pip?"
    assert only("casing", "TCP or UDP?", seed=1) == "tcp or udp?"  # an acronym is never half-lowercased
    assert only("casing", "Is `Foo.Bar` CamelCase?") == "is `Foo.Bar` CamelCase?"
    assert only("casing", "ßa") == "ßa"  # "SSa" would be a new acronym-like protected span (found by hypothesis)


def test_punctuation():
    assert only("punctuation", "What is DNS?") == "What is DNS"
    assert only("punctuation", "Explain DNS.") == "Explain DNS"
    assert only("punctuation", "what is dns") == "what is dns?"
    assert only("punctuation", "tell me about dns") == "tell me about dns."
    assert only("punctuation", "What does `ls`?") == "What does `ls`"
    assert only("punctuation", "Is this right?\n```\nx = 1\n```") == "Is this right?\n```\nx = 1\n```"
    assert only("punctuation", "Open /etc/hosts") == "Open /etc/hosts"  # nothing is glued to a path


def test_operations_are_independent_streams():
    # turning another operation on does not change what the typo operation does
    text = "What is the difference between hashing and encryption in practice?"
    typo_alone = only("typo", text)
    both = Augmenter(AugmentConfig.only("typo", "punctuation"), seed=0).augment_text(text, 0, 0)
    assert both == typo_alone.rstrip("?")


# ---------------------------------------------------------------------------- answers


def test_answers_untouched_by_default(sample_examples):
    aug = Augmenter(AugmentConfig(**{**ALL_ON, "answer_side": False}), seed=0)
    for i, ex in enumerate(sample_examples):
        out = aug.augment(ex, 0, i)
        assert out.answer == ex.answer
    assert sum(aug.augment(ex, 0, i).question != ex.question for i, ex in enumerate(sample_examples)) \
        == len(sample_examples)


def test_answer_side_uses_lexicon_synonyms_only():
    answer = ("TCP is reliable and slow, so use it when data must not be lost. Run `ss -tlnp` to see it. "
              "It is usually faster to retry. You cannot skip the handshake.")
    aug = Augmenter(AugmentConfig.off(answer_side=True, answer_synonym=1.0, answer_synonym_rate=1.0), seed=0)
    ex = Example.from_qa("What is TCP?", answer)
    out = aug.augment(ex, 0, 0)
    assert out.question == "What is TCP?"
    # question-only entries (reliable, slow, run) are not used on answers; no typos, drops, swaps or casing
    assert out.answer == ("TCP is reliable and slow, so use it when data must not be lost. Run `ss -tlnp` to see it. "
                          "It's typically quicker to retry. You can not skip the handshake.")


# ---------------------------------------------------------------------------- config


def test_config_defaults_and_helpers():
    cfg = AugmentConfig()
    assert (cfg.rephrase, cfg.synonym, cfg.word_dropout, cfg.word_swap, cfg.typo, cfg.casing, cfg.punctuation) == \
        (0.25, 0.3, 0.1, 0.05, 0.1, 0.15, 0.2)
    assert cfg.answer_side is False
    assert "rephrase 0.25" in cfg.describe() and "answer side: off" in cfg.describe()
    assert AugmentConfig.only("typo").typo == 1.0 and AugmentConfig.only("typo").synonym == 0.0
    with pytest.raises(AugmentConfigError, match="did you mean 'typo'"):
        AugmentConfig.only("typos")


def test_from_yaml_reads_keys(tmp_path):
    path = tmp_path / "aug.yaml"
    path.write_text("# the default mix, with more typos\ntypo: 0.3\nword-dropout: 0\nanswer_side: true\n", encoding="utf-8")
    cfg = AugmentConfig.from_yaml(path)
    assert (cfg.typo, cfg.word_dropout, cfg.answer_side, cfg.rephrase) == (0.3, 0.0, True, 0.25)
    path.write_text("augment:\n  casing: 1\n", encoding="utf-8")
    assert AugmentConfig.from_yaml(path).casing == 1.0
    path.write_text("", encoding="utf-8")
    assert AugmentConfig.from_yaml(path) == AugmentConfig()


@pytest.mark.parametrize("content, message", [
    ("synonim: 0.5\n", r"unknown key 'synonim'; did you mean 'synonym'\?"),
    ("typo_rat: 0.5\n", r"unknown key 'typo_rat'; did you mean 'typo_rate'\?"),
    ("rephrase: 1.5\n", r"rephrase = 1.5 is a probability and must be between 0 and 1"),
    ("typo_rate: -0.1\n", r"typo_rate = -0.1 is a share of words and must be between 0 and 1"),
    ("casing: often\n", r"casing = 'often': expected a number between 0 and 1"),
    ("casing: true\n", r"casing = True: expected a number between 0 and 1"),
    ("answer_side: 1\n", r"answer_side = 1: expected true or false"),
    ("- typo\n", r"expected a mapping of key: value, got list"),
    ("typo: [0.5\n", r"line \d+, column \d+: invalid YAML"),
])
def test_from_yaml_errors_name_the_key(tmp_path, content, message):
    path = tmp_path / "aug.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(AugmentConfigError, match=message) as info:
        AugmentConfig.from_yaml(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ConfigError)  # the CLI reports it like any config error


def test_from_yaml_missing_file(tmp_path):
    with pytest.raises(AugmentConfigError, match="no such augmentation config file"):
        AugmentConfig.from_yaml(tmp_path / "nope.yaml")


# ---------------------------------------------------------------------------- lexicon, preview


def test_bundled_lexicon_is_sane():
    lex = load_lexicon()
    assert 300 <= lex.size <= 650
    code_words = {"return", "print", "class", "list", "set", "map", "open", "import", "yield", "break", "continue",
                  "pass", "raise", "true", "false", "none", "null", "string", "object", "function", "key", "value",
                  "table", "join", "commit", "push", "pull", "merge", "install", "port", "file", "bit", "byte", "hard"}
    for table in (lex.both, lex.question_only):
        for key, reps in table.items():
            assert key == tuple(" ".join(key).lower().split()) and reps
            assert not (set(key) & code_words) or len(key) > 1, key
            assert all(r.lower() != " ".join(key) for r in reps), key
    assert ("run",) in lex.question_only and ("run",) not in lex.both
    assert lex.both[("explain",)] == ("describe",)


def test_custom_lexicon():
    lex = Lexicon.from_json({"groups": [["router", "gateway"]]})
    aug = Augmenter(AugmentConfig.only("synonym"), seed=0, lexicon=lex)
    assert aug.augment_text("What does a router do?", 0, 0) == "What does a gateway do?"


def test_preview_pairs(sample_examples):
    aug = Augmenter(AugmentConfig(), seed=0)
    pairs = preview(sample_examples, aug, n=3)
    assert len(pairs) == 3
    for before, after in pairs:
        assert before != after
        index = next(i for i, ex in enumerate(sample_examples) if ex.question == before)
        assert aug.augment(sample_examples[index], 0, index).question == after
    assert preview(sample_examples, Augmenter(AugmentConfig.off(), seed=0), n=3) == []
    assert preview(sample_examples, aug, n=0) == []
