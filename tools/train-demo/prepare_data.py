"""Build the demo corpus: King James Bible (bible-kjv) + fortunes (fortunes), cleaned,
with a deterministic held-out split.

Outputs (in WORK):
  corpus.json     {"train_docs": [...], "heldout_docs": [...], "verses": [...], "fortunes_train": [...], "stats": {...}}
  spm_input.txt   training lines for SentencePiece (train split only, one line per verse / fortune line)

Split (deterministic, no randomness involved):
  * Bible: chapters numbered 0..1188 in canonical order; chapter c is held out iff c % 20 == 10.
  * Fortunes: after cleaning and exact de-duplication, in sorted-file order; fortune f is held out iff f % 20 == 10.
Documents: a Bible chapter is its verses (reference prefixes stripped) one per line; a fortune is its
cleaned lines. Streams are documents joined by a blank line, in a fixed seeded shuffle.
"""
import json
import os
import random
import re
import subprocess
import sys
import unicodedata

WORK = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "work")
os.makedirs(WORK, exist_ok=True)

BOOKS = [
    "Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua", "Judges", "Ruth",
    "1 Samuel", "2 Samuel", "1 Kings", "2 Kings", "1 Chronicles", "2 Chronicles", "Ezra",
    "Nehemiah", "Esther", "Job", "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon", "Isaiah",
    "Jeremiah", "Lamentations", "Ezekiel", "Daniel", "Hosea", "Joel", "Amos", "Obadiah", "Jonah",
    "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai", "Zechariah", "Malachi",
    "Matthew", "Mark", "Luke", "John", "Acts", "Romans", "1 Corinthians", "2 Corinthians",
    "Galatians", "Ephesians", "Philippians", "Colossians", "1 Thessalonians", "2 Thessalonians",
    "1 Timothy", "2 Timothy", "Titus", "Philemon", "Hebrews", "James", "1 Peter", "2 Peter",
    "1 John", "2 John", "3 John", "Jude", "Revelation",
]

FORTUNE_DIR = "/usr/share/games/fortunes"
FORTUNE_EXCLUDE = {"ascii-art"}  # pictures, not text
HOLDOUT_MOD, HOLDOUT_REM = 20, 10
SHUFFLE_SEED = 1234


def clean_line(s):
    s = unicodedata.normalize("NFC", s)
    s = re.sub(r"[ \t\u00a0]+", " ", s)
    return s.strip()


def load_bible():
    out = subprocess.run(["bible", "-f", "Genesis 1:1 - Revelation 22:21"], check=True,
                         capture_output=True).stdout.decode("utf-8")
    chapters = []  # list of (book, chapter, [verse texts])
    verses = []
    abbrev_to_book = {}
    key = None
    for line in out.splitlines():
        if not line.strip():
            continue
        m = re.match(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$", line)
        if not m:
            raise SystemExit(f"unparsed bible line: {line!r}")
        ab, c, v, text = m.group(1), int(m.group(2)), int(m.group(3)), clean_line(m.group(4))
        if ab not in abbrev_to_book:
            abbrev_to_book[ab] = BOOKS[len(abbrev_to_book)]
        book = abbrev_to_book[ab]
        if (book, c) != key:
            key = (book, c)
            chapters.append((book, c, []))
        chapters[-1][2].append(text)
        verses.append({"book": book, "chapter": c, "verse": v, "text": text, "chapter_index": len(chapters) - 1})
    assert len(abbrev_to_book) == 66, len(abbrev_to_book)
    assert len(verses) == 31102, len(verses)
    assert len(chapters) == 1189, len(chapters)
    return chapters, verses


def fix_mojibake(s):
    # Some fortunes contain UTF-8 that was decoded as Latin-1 and re-encoded (once or twice).
    for _ in range(3):
        if not re.search(r"[\u0080-\u00ff]", s):
            break
        try:
            t = s.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            break
        s = t
    return s


def clean_fortune(raw):
    s = raw
    while True:  # overstrike sequences "X\b" (underline / bold) -> drop the struck char
        t = re.sub(r"[^\x08\n]\x08", "", s)
        if t == s:
            break
        s = t
    s = s.replace("^H", "")
    s = "\n".join(fix_mojibake(l) for l in s.split("\n"))
    s = re.sub(r"[\x00-\x08\x0b-\x1f\x7f\u0080-\u009f]", "", s)
    lines = [clean_line(l) for l in s.split("\n")]
    out = []
    for l in lines:
        if l == "" and (not out or out[-1] == ""):
            continue
        out.append(l)
    while out and out[-1] == "":
        out.pop()
    text = "\n".join(out)
    if not text:
        return None
    letters = sum(ch.isalpha() for ch in text)
    if letters < 0.5 * len(text.replace(" ", "").replace("\n", "")):
        return None  # mostly symbols: ascii art, tables
    if len(text) > 2000:
        return None
    return text


def load_fortunes():
    names = sorted(n for n in os.listdir(FORTUNE_DIR)
                   if "." not in n and n not in FORTUNE_EXCLUDE and os.path.isfile(os.path.join(FORTUNE_DIR, n)))
    seen = set()
    fortunes = []
    per_file = {}
    for n in names:
        raw = open(os.path.join(FORTUNE_DIR, n), "rb").read().decode("utf-8", errors="replace")
        parts = re.split(r"^%\n", raw.replace("\r\n", "\n"), flags=re.M)
        cnt = 0
        for p in parts:
            t = clean_fortune(p)
            if t is None or t in seen:
                continue
            seen.add(t)
            fortunes.append(t)
            cnt += 1
        per_file[n] = cnt
    return fortunes, per_file


def main():
    chapters, verses = load_bible()
    fortunes, per_file = load_fortunes()

    train_docs, heldout_docs = [], []
    for ci, (book, c, vs) in enumerate(chapters):
        doc = "\n".join(vs)
        (heldout_docs if ci % HOLDOUT_MOD == HOLDOUT_REM else train_docs).append(doc)
    fortunes_train = []
    for fi, f in enumerate(fortunes):
        if fi % HOLDOUT_MOD == HOLDOUT_REM:
            heldout_docs.append(f)
        else:
            train_docs.append(f)
            fortunes_train.append(f)
    rng = random.Random(SHUFFLE_SEED)
    rng.shuffle(train_docs)
    rng.shuffle(heldout_docs)
    train_verses = [v for v in verses if v["chapter_index"] % HOLDOUT_MOD != HOLDOUT_REM]

    stats = {
        "bible_chapters": len(chapters), "bible_verses": len(verses),
        "bible_heldout_chapters": sum(1 for ci in range(len(chapters)) if ci % HOLDOUT_MOD == HOLDOUT_REM),
        "fortunes": len(fortunes), "fortune_files": per_file,
        "fortunes_heldout": sum(1 for fi in range(len(fortunes)) if fi % HOLDOUT_MOD == HOLDOUT_REM),
        "train_docs": len(train_docs), "heldout_docs": len(heldout_docs),
        "train_chars": sum(len(d) + 2 for d in train_docs), "heldout_chars": sum(len(d) + 2 for d in heldout_docs),
    }
    json.dump({"train_docs": train_docs, "heldout_docs": heldout_docs, "verses": train_verses,
               "fortunes_train": fortunes_train, "stats": stats},
              open(os.path.join(WORK, "corpus.json"), "w"), ensure_ascii=False)
    with open(os.path.join(WORK, "spm_input.txt"), "w", encoding="utf-8") as f:
        for d in train_docs:
            for l in d.split("\n"):
                if l:
                    f.write(l + "\n")
    print(json.dumps({k: v for k, v in stats.items() if k != "fortune_files"}))


if __name__ == "__main__":
    main()
