"""Write the SentencePiece model as Hugging Face tokenizer files, by hand (no transformers/tokenizers).

  tokenizer.json          BPE model (vocab, merges, byte_fallback, fuse_unk), Gemma pipeline
  tokenizer_config.json   add_bos_token, special tokens, chat_template (Gemma 3 style)
  special_tokens_map.json
  tokenizer.model         the SentencePiece proto itself (as Gemma repos ship it)
  work/tokenizer_tests.json  cases for check_tokenizer.mjs (ids from sentencepiece)

Merges follow the HF SentencePieceExtractor recipe: for every vocab piece (in id order), every
split into two pieces that are both in the vocab is a merge (sorted locally by the ids of the
left then right piece); then all merges are stably sorted by the score of the merged piece,
highest first (SentencePiece BPE scores are -rank, so this is the learned merge order).
"""
import json
import os
import random
import shutil
import sys

import sentencepiece as spm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chat_format import CHAT_TEMPLATE, render_chat  # noqa: E402

WORK = sys.argv[1]
OUT = sys.argv[2]
WITH_HELDOUT = "--with-heldout" in sys.argv[3:]  # tests only: add the shipped held-out files as cases
MAX_LEN = int(os.environ.get("MODEL_MAX_LENGTH", "1024"))
os.makedirs(OUT, exist_ok=True)

sp = spm.SentencePieceProcessor(model_file=os.path.join(WORK, "tokenizer.model"))
N = sp.get_piece_size()
pieces = [sp.id_to_piece(i) for i in range(N)]
scores = [sp.get_score(i) for i in range(N)]
vocab = {p: i for i, p in enumerate(pieces)}
assert len(vocab) == N

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
for i, s in enumerate(SPECIALS):
    assert pieces[i] == s, (i, pieces[i])

# ---- merges (HF SentencePieceExtractor semantics) ----
merges = []
for i, piece in enumerate(pieces):
    if sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or i < len(SPECIALS):
        continue  # never the result of a merge
    local = []
    for k in range(1, len(piece)):
        l, r = piece[:k], piece[k:]
        if l in vocab and r in vocab:
            local.append((l, r, scores[i]))
    local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
    merges.extend(local)
merges.sort(key=lambda x: x[2], reverse=True)  # stable
for l, r, _ in merges:
    for p in (l, r):
        j = vocab[p]
        assert not (sp.is_control(j) or sp.is_byte(j) or j < len(SPECIALS)), (l, r)


def added(i, content):
    return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


def write_files():
    tokenizer_json = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added(i, s) for i, s in enumerate(SPECIALS)],
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": False},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<bos>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}},
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
        ]},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": "<unk>",
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [[l, r] for l, r, _ in merges],
        },
    }
    with open(os.path.join(OUT, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json, f, ensure_ascii=False, indent=2)
        f.write("\n")


    def tok_entry(s):
        return {"content": s, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}


    tokenizer_config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {str(i): tok_entry(s) for i, s in enumerate(SPECIALS)},
        "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"],
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MAX_LEN,
        "padding_side": "left",
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "GemmaTokenizer",
        "use_default_system_prompt": False,
    }
    json.dump(tokenizer_config, open(os.path.join(OUT, "tokenizer_config.json"), "w"), indent=2)

    special_map = {
        "additional_special_tokens": [tok_entry("<start_of_turn>"), tok_entry("<end_of_turn>")],
        "bos_token": tok_entry("<bos>"),
        "eos_token": tok_entry("<eos>"),
        "pad_token": tok_entry("<pad>"),
        "unk_token": tok_entry("<unk>"),
    }
    for v in special_map.values():
        for e in (v if isinstance(v, list) else [v]):
            del e["special"]
    json.dump(special_map, open(os.path.join(OUT, "special_tokens_map.json"), "w"), indent=2)
    shutil.copyfile(os.path.join(WORK, "tokenizer.model"), os.path.join(OUT, "tokenizer.model"))



if not WITH_HELDOUT:
    write_files()

# ---- test cases for check_tokenizer.mjs ----
corpus = json.load(open(os.path.join(WORK, "corpus.json")))
lines = []
for d in corpus["heldout_docs"]:
    lines.extend(l for l in d.split("\n") if l)
rng = random.Random(7)
cases = [{"text": t, "ids": sp.encode(t)} for t in lines]  # every held-out line
# whole held-out documents (multi-line, so newlines go through byte fallback)
for d in corpus["heldout_docs"][:300]:
    cases.append({"text": d, "ids": sp.encode(d)})
extra = [
    "In the beginning God created the heaven and the earth.",
    "  leading spaces, trailing spaces   ",
    "tabs\tand\nnewlines\n\nand  double  spaces",
    "Digits: 0 1 12 123 2024-06-01 3.14159 1,000,000",
    "Non-ASCII: café naïve über Ærøskøbing ß £5 € ½ “quotes” ‘single’ — dash … ellipsis",
    "CJK and emoji: 日本語のテキスト 中文 한국어 😀👍🏽 🇩🇪",
    "Greek/Cyrillic: Ἐν ἀρχῇ ἦν ὁ λόγος / В начале было Слово",
    "<start_of_turn>user\nWhat does Genesis 1:3 say?<end_of_turn>\n<start_of_turn>model\n",
    "text<start_of_turn>glued<end_of_turn>tokens<end_of_turn><start_of_turn>",
    "<start_of_turn> spaced <end_of_turn> \n",
    "almost specials: <start_of_turn <end_of_turn> <start_of_turnX> </end_of_turn>",
    "\u2581 literal lower one eighth block \u2581\u2581 and spaces",
    "zero width\u200bspace and control \x01\x7f chars",
    "",
    " ",
    "\n",
    "a",
]
for t in extra:
    cases.append({"text": t, "ids": sp.encode(t)})
# random splices of held-out text with special tokens and odd characters
odd = ["<start_of_turn>", "<end_of_turn>", "\n", "  ", "é", "😀", "7", "42", "\t", "ü"]
if WITH_HELDOUT:
    for name in ("heldout-sample.txt", "heldout-full.txt"):
        t = open(os.path.join(OUT, name), encoding="utf-8", newline="").read()
        cases.append({"text": t, "ids": sp.encode(t)})
for _ in range(500):
    a = rng.choice(lines)
    b = rng.choice(lines)
    i = rng.randrange(len(a) + 1)
    t = a[:i] + rng.choice(odd) + b[: rng.randrange(len(b) + 1)]
    cases.append({"text": t, "ids": sp.encode(t)})

chats = [
    {"messages": [{"role": "user", "content": "Tell me a fortune."}], "add_generation_prompt": True},
    {"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "  Hello  "}],
     "add_generation_prompt": True},
    {"messages": [{"role": "user", "content": "What does Genesis 1:3 say?"},
                  {"role": "assistant", "content": "And God said, Let there be light: and there was light.\n"},
                  {"role": "user", "content": "Continue: And God saw the light,"}], "add_generation_prompt": True},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
     "add_generation_prompt": False},
]
for c in chats:
    text = render_chat(c["messages"], c["add_generation_prompt"])
    c["expected"] = text
    assert text.startswith("<bos>")
    c["ids"] = [2] + sp.encode(text[len("<bos>"):])  # SentencePiece does not parse control symbols in text
json.dump({"cases": cases, "chats": chats,
           "bad_chats": [[{"role": "assistant", "content": "x"}],
                         [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]]},
          open(os.path.join(WORK, "tokenizer_tests.json"), "w"), ensure_ascii=False)
print(f"tokenizer.json: {N} vocab, {len(merges)} merges; {len(cases)} test cases, {len(chats)} chats")
