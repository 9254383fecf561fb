"""Synthetic chat conversations built from the TRAINING split only (verses and fortunes).

Every conversation is rendered with the Gemma 3 chat format (chat_format.render_chat), so the
model learns <start_of_turn>user ... <end_of_turn>\n<start_of_turn>model\n ... <end_of_turn>\n.
"""
import random

from chat_format import render_chat

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a wise old oracle.",
    "Answer briefly.",
    "You speak in the language of the King James Bible.",
]

FORTUNE_ASKS = [
    "Tell me a fortune.",
    "Tell me a fortune",
    "Give me a fortune cookie.",
    "Can you tell me my fortune?",
    "Say something wise.",
    "Tell me a joke.",
    "Give me a quote.",
    "I need some wisdom.",
]


class ChatMaker:
    def __init__(self, verses, fortunes):
        self.verses = verses
        self.by_ref = {}
        self.books = []
        self.by_book = {}
        for v in verses:
            self.by_book.setdefault(v["book"], []).append(v)
        self.books = list(self.by_book)
        self.fortunes = [f for f in fortunes if len(f) <= 400]

    def turn(self, rng):
        """One (question, answer) pair."""
        k = rng.random()
        if k < 0.30:
            v = rng.choice(self.verses)
            ref = f"{v['book']} {v['chapter']}:{v['verse']}"
            q = rng.choice([f"What does {ref} say?", f"Quote {ref}.", f"What is written in {ref}?", f"Recite {ref}."])
            return q, v["text"]
        if k < 0.55:
            return rng.choice(FORTUNE_ASKS), rng.choice(self.fortunes)
        if k < 0.80:
            v = rng.choice(self.verses)
            words = v["text"].split(" ")
            if len(words) < 4:
                return f"What does {v['book']} {v['chapter']}:{v['verse']} say?", v["text"]
            cut = max(1, len(words) // 2)
            return "Continue: " + " ".join(words[:cut]), " ".join(words[cut:])
        if k < 0.92:
            b = rng.choice(self.books)
            v = rng.choice(self.by_book[b])
            return rng.choice([f"Quote a verse from {b}.", f"Give me a verse from the book of {b}."]), v["text"]
        v = rng.choice(self.verses)
        return (f"Which book of the Bible says: \"{v['text']}\"",
                f"That is {v['book']} {v['chapter']}:{v['verse']}.")

    def conversation(self, rng, n_turns):
        msgs = []
        if rng.random() < 0.2:
            msgs.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        for _ in range(n_turns):
            q, a = self.turn(rng)
            msgs.append({"role": "user", "content": q})
            msgs.append({"role": "assistant", "content": a})
        return msgs

    def sequence(self, rng, sp, length):
        """<bos> + one multi-turn conversation, cut to exactly `length` + 1 ids.

        Exchanges are added until the rendered conversation is long enough, so every row has
        one <bos> at position 0 (as in a chat session) and the first exchange sits right after it."""
        msgs = []
        if rng.random() < 0.2:
            msgs.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        n = 0
        while n < length + 1:
            q, a = self.turn(rng)
            msgs.append({"role": "user", "content": q})
            msgs.append({"role": "assistant", "content": a})
            n += len(sp.encode(q + a)) + 12
        text = render_chat(msgs)
        assert text.startswith("<bos>")
        ids = [2] + sp.encode(text[len("<bos>"):])
        while len(ids) < length + 1:  # estimate was short: add one more exchange
            q, a = self.turn(rng)
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            ids = [2] + sp.encode(render_chat(msgs)[len("<bos>"):])
        return ids[: length + 1]

if __name__ == "__main__":
    import json
    import os
    import sys
    import sentencepiece as spm
    work = sys.argv[1]
    c = json.load(open(os.path.join(work, "corpus.json")))
    m = ChatMaker(c["verses"], c["fortunes_train"])
    rng = random.Random(0)
    print(render_chat(m.conversation(rng, 3)))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(work, "tokenizer.model"))
    print(sp.decode(m.sequence(rng, sp, 512)[:200]))
