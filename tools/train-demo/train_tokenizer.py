"""Train a Gemma-style SentencePiece BPE tokenizer on the training split.

Gemma conventions: <pad>=0 <eos>=1 <bos>=2 <unk>=3, then <start_of_turn>=4 <end_of_turn>=5
(user-defined symbols: matched verbatim in text), 256 byte-fallback pieces <0x00>..<0xFF> (ids 6..261),
then the learned merges. No dummy prefix, identity normalisation, whitespace kept as is, digits split.
"""
import os
import sys

import sentencepiece as spm

WORK = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "work")
VOCAB = int(os.environ.get("VOCAB", "8192"))

# Relative paths: the trainer options (including the input file name) are stored inside the model.
os.chdir(WORK)
spm.SentencePieceTrainer.train(
    input="spm_input.txt",
    model_prefix="tokenizer",
    model_type="bpe",
    vocab_size=VOCAB,
    character_coverage=0.9999,
    byte_fallback=True,
    split_digits=True,
    split_by_whitespace=True,
    allow_whitespace_only_pieces=False,
    add_dummy_prefix=False,
    remove_extra_whitespaces=False,
    normalization_rule_name="identity",
    pad_id=0, eos_id=1, bos_id=2, unk_id=3,
    pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
    user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
    max_sentencepiece_length=16,
    input_sentence_size=0,
    shuffle_input_sentence=False,
    num_threads=2,
    minloglevel=2,
)

sp = spm.SentencePieceProcessor(model_file="tokenizer.model")
assert sp.get_piece_size() == VOCAB
expect = {0: "<pad>", 1: "<eos>", 2: "<bos>", 3: "<unk>", 4: "<start_of_turn>", 5: "<end_of_turn>", 6: "<0x00>",
          6 + 10: "<0x0A>", 261: "<0xFF>"}
for i, p in expect.items():
    assert sp.id_to_piece(i) == p, (i, sp.id_to_piece(i), p)
# Every learned piece that contains U+2581 has it only in front (so merges never cross words).
bad = [sp.id_to_piece(i) for i in range(262, VOCAB) if "\u2581" in sp.id_to_piece(i)[1:]]
print(f"tokenizer: {VOCAB} pieces; pieces with an inner \u2581: {len(bad)} {bad[:10]}")
print("sample:", sp.encode("<start_of_turn>user\nIn the beginning God created 1234 things.<end_of_turn>\n", out_type=str))
