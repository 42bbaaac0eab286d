#!/usr/bin/env python3
"""Makes variants of a trained tokenizer.json that exercise what Qwen's file does not
(standard library only). Writes into OUTDIR:

  flags.json        the added tokens below appended;
  gpt2style.json    no normalizer; the ByteLevel pre-tokenizer alone, with its built-in
                    GPT-2 regex (use_regex) and add_prefix_space;
  llama3style.json  no normalizer; Llama-3's split regex (\p{N}{1,3}); ignore_merges.

flags.json appends added tokens that exercise what Qwen's file leaves at false: lstrip, rstrip,
single_word, normalized=true (content compared after NFC), a token already in the model
vocabulary, non-ASCII contents (decoded through the ByteLevel decoder), and a second entry
for <|im_end|> with other flags (the later definition's flags apply). Ids are assigned as
Hugging Face assigns them on load (a vocabulary token keeps its id, others take the next).

Usage: tok_make_variants.py IN.json OUTDIR
"""
import json
import os
import sys

EXTRA = [
    dict(content="<mask>", lstrip=True, rstrip=True),
    dict(content="<sw>", single_word=True),
    dict(content="[SEP]", lstrip=True, special=True),
    dict(content="caf\u00e9", normalized=True),
    dict(content="e\u0301x", normalized=True),
    dict(content="the", normalized=True),
    dict(content="\u2605"),
    dict(content="\u00e9"),
    dict(content="<L>", lstrip=True),
    dict(content="<R>", rstrip=True),
    dict(content="<|im_end|>", rstrip=True, special=True),
]

LLAMA3 = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
          "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


def dump(doc, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=2)
        f.write("\n")


def flags(doc):
    vocab = doc["model"]["vocab"]
    added = doc["added_tokens"]
    by_content = {a["content"]: a["id"] for a in added}
    next_id = max([a["id"] for a in added] + [len(vocab) - 1]) + 1
    for x in EXTRA:
        tok = dict(id=None, content=x["content"], single_word=x.get("single_word", False),
                   lstrip=x.get("lstrip", False), rstrip=x.get("rstrip", False),
                   normalized=x.get("normalized", False), special=x.get("special", False))
        if tok["content"] in by_content:
            tok["id"] = by_content[tok["content"]]
        elif tok["content"] in vocab:
            tok["id"] = vocab[tok["content"]]
        else:
            tok["id"] = next_id
            next_id += 1
        by_content[tok["content"]] = tok["id"]
        added.append(tok)
    return doc


def gpt2style(doc):
    doc["normalizer"] = None
    doc["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                            "use_regex": True}
    return doc


def llama3style(doc):
    doc["normalizer"] = None
    doc["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {"Regex": LLAMA3}
    doc["model"]["ignore_merges"] = True
    return doc


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    text = open(sys.argv[1], encoding="utf-8").read()
    for name, fn in (("flags", flags), ("gpt2style", gpt2style), ("llama3style", llama3style)):
        dump(fn(json.loads(text)), os.path.join(sys.argv[2], name + ".json"))


if __name__ == "__main__":
    main()
