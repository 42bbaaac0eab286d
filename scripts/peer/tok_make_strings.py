#!/usr/bin/env python3
"""Builds the tokenizer peer-check string set (deterministic; Python 3 standard library).

Writes one JSON object a line: {"text": "..."} for synthetic strings (or {"hex": "..."} for
the few that hold U+0000, which our test harness's JSON reader cannot carry in a string),
and {"hh": [line, "chosen"]} for HH-RLHF dialogues, which are not copied: the test re-reads
them from ../shared/data/hh-rlhf/harmless-base-test.jsonl.gz.

The synthetic strings cover what a byte-level BPE port gets wrong: text needing NFC
(decomposed accents, reordering of combining marks, Hangul jamo, singletons), CJK, emoji
with joiners and modifiers, right-to-left scripts, digits of many scripts, code, runs of
spaces/tabs/newlines, \\r\\n, Unicode spaces (U+0085, U+00A0, U+180E, U+2028, U+3000, ...),
contractions in any case (and 'ſ, which folds to 's), special tokens inside text, trailing
spaces, control characters, long runs, and random mixtures of all of these.

Usage: tok_make_strings.py OUT.jsonl [--hh-lines N]
"""
import json
import random
import sys
import unicodedata

SEED = 20240611

NFC_CASES = [
    "cafe\u0301", "Cafe\u0301 au lait", "re\u0301sume\u0301", "nai\u0308ve", "A\u030Angstro\u0308m",
    "\u212Bngstr\u00F6m", "\u2126 ohm", "\u1E9B\u0323", "a\u0323\u0302", "a\u0302\u0323",
    "e\u0301\u0301", "o\u0328\u0304", "\u1100\u1161\u11A8", "\u1100\u1161", "\u110B\u1175\u11AB\u1100\u1173\u11AF",
    "\u0958\u0959", "\u0915\u093C", "\u00C5\u0301", "\u0041\u030A\u0301", "Zu\u0308rich Mu\u0308nchen",
    "Ph\u01B0\u0300\u01A1ng", "Vie\u0323\u0302t Nam", "Tie\u0302\u0301ng Vie\u0323\u0302t", "\u0627\u0653",
    "\u05D1\u05BC\u05B8", "\u05E9\u05C1\u05B8\u05DC\u05D5\u05B9\u05DD", "\u1EA0\u0306", "\u0392\u0301",
    "x\u0301y\u0302z\u0303", "\u00E9\u0301", "\uFB01ne \uFB02ow", "\u2460\u2461 \u00BD \u00B2", "\u3300",
    "\u0301 leading mark", "word\u0301 next", " \u0301", "\u200D\u0301", "\u0F73\u0F75\u0F81",
    "\u0B47\u0B3E", "\u0BC6\u0BBE", "\u1025\u102E", "\u3099\u304B\u3099", "\u304B\u3099\u304D\u3099",
    "\u30D5\u309A", "I\u0307stanbul", "DZ\u030C", "\u01C4\u01C5\u01C6",
]

CJK = [
    "\u4F60\u597D\uFF0C\u4E16\u754C\uFF01", "\u6211\u7231\u5317\u4EAC\u5929\u5B89\u95E8",
    "\u65E5\u672C\u8A9E\u306E\u30C6\u30AD\u30B9\u30C8\u3067\u3059\u3002",
    "\u30AB\u30BF\u30AB\u30CA\u3068\u3072\u3089\u304C\u306A", "\uD55C\uAD6D\uC5B4 \uBB38\uC7A5\uC785\uB2C8\uB2E4.",
    "\u4E2D\u6587English\u6DF7\u5408123", "\u300C\u5F15\u7528\u300D\u3010\u62EC\u5F27\u3011",
    "\uFF21\uFF22\uFF23\uFF11\uFF12\uFF13", "\u7E41\u9AD4\u4E2D\u6587\u8207\u7C21\u4F53\u4E2D\u6587",
    "\u3042\u3044\u3046\u3048\u304A", "\u6F22\u5B57\u2026\u2026\u3002", "\U00020000\U0002A6D6",
    "\u4E00\u4E8C\u4E09\u56DB\u4E94\u516D\u4E03\u516B\u4E5D\u5341",
]

EMOJI = [
    "\U0001F600", "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466",
    "\U0001F44D\U0001F3FD", "\U0001F3F3\uFE0F\u200D\U0001F308", "\U0001F1FA\U0001F1F8\U0001F1EF\U0001F1F5",
    "1\uFE0F\u20E3", "\u2764\uFE0F", "\U0001F9D1\U0001F3FB\u200D\U0001F4BB", "\U0001F469\u200D\u2764\uFE0F\u200D\U0001F48B\u200D\U0001F468",
    "\u263A", "\U0001F4A9\U0001F4A9\U0001F4A9", "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F",
    "\U0001F926\U0001F3FC\u200D\u2642\uFE0F", "text\U0001F600text", " \U0001F600 ", "\u00A9\u00AE\u2122",
]

RTL = [
    "\u0645\u0631\u062D\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u0627\u0644\u0633\u0651\u064E\u0644\u0627\u0645\u064F \u0639\u064E\u0644\u064E\u064A\u0652\u0643\u064F\u0645",
    "\u05E9\u05DC\u05D5\u05DD \u05E2\u05D5\u05DC\u05DD", "\u05D1\u05BC\u05B0\u05E8\u05B5\u05D0\u05E9\u05C1\u05B4\u05D9\u05EA",
    "\u0633\u0644\u0627\u0645 \u062F\u0646\u06CC\u0627", "\u200F\u0645\u0631\u062D\u0628\u0627\u200E abc",
    "\u0661\u0662\u0663 \u06F4\u06F5\u06F6", "\u202Eevil\u202C", "\u0627\u0644\u0639\u0631\u0628\u064A\u0629 123 English",
    "\u0679\u06BE\u06CC\u06A9 \u06C1\u06D2", "\u0710\u0712\u0713",
]

DIGITS = [
    "1234567890", "3.14159265358979", "1,000,000", "+1 (555) 123-4567", "2024-06-11T12:34:56Z",
    "\u0966\u0967\u0968\u0969", "\uFF11\uFF12\uFF13", "x\u00B2 + y\u00B3", "\u00BD \u00BC \u00BE", "\u2167 \u216B",
    "\u0E51\u0E52\u0E53", "\u1040\u1041", "0x1F 0b1010 1e-9", "99.9% of 100", "$12.50 \u20AC3,99",
    "v1.2.3-rc.4", "\u2070\u00B9\u2082\u2083", "\U0001D7CE\U0001D7CF", "\u3007\u4E00\u4E8C",
    "12345678901234567890123456789012345678901234567890",
]

CODE = [
    "def f(x):\n    return x ** 2\n",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "for (let i = 0; i < n; i++) { sum += a[i]; }",
    "if __name__ == \"__main__\":\n    main()\n",
    "SELECT * FROM users WHERE id = 1;",
    "    x = [1, 2, 3]\n    y = {\"a\": 1}\n",
    "#include <stdio.h>\n#define MAX(a,b) ((a)>(b)?(a):(b))\n",
    "fn main() { println!(\"hi\"); }",
    "<div class=\"x\">&nbsp;</div>",
    "a->b && c || !d; x <<= 2; y >>= 3; z != w",
    "// comment\n/* block */\n# hash\n-- sql",
    "\tindented\twith\ttabs",
    "https://example.com/path?q=1&r=two#frag",
    "user@example.com",
    "$ echo \"$HOME\" | grep -v '^#'",
    "\\begin{equation} E = mc^2 \\end{equation}",
    "json = {\"key\": [1, 2.5, null, true]}",
    "    \n    \n\n",
]

SPACES = [
    " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", "\r", " \n", "\n ",
    " \n ", "a  b", "a   b", "a\tb", "a \tb", "a\t b", "a\nb", "a\n\nb", "a \n b", "a\r\nb",
    "hello ", "hello  ", "hello   ", "hello\n", "hello \n", "hello\n ", "hello\t", " hello",
    "  hello", "\thello", "\nhello", "a\u00A0b", "a\u3000b", "a\u2028b", "a\u2029b", "a\u0085b",
    "a\u180Eb", "a\u200Bb", "a\uFEFFb", "a\u2060b", "a\u1680b", "a\u2000\u2001\u2002b", "a\u202Fb",
    "a\u205Fb", "a\u000Bb", "a\u000Cb", "a \u00A0 b", " \u3000 ", "\u0085", "\u180E", "x\u180E ",
    "end.   ", "end.\t\t", "x  \n  y", "x \r\n y", "  \r\n  ", "\n \n \n", "a\x1cb\x1dc\x1ed\x1fe",
]

CONTRACTIONS = [
    "DON'T", "I'M", "WE'LL", "THEY'RE", "YOU'VE", "SHE'D", "IT'S", "don't", "Don'T", "I'm", "you're",
    "we'll", "they've", "he'd", "it's", "It'S", "o'clock", "rock'n'roll", "'s", "'S", "'t", "'ll",
    "'LL", "'Ll", "'re", "'RE", "'ve", "'VE", "'m", "'M", "'d", "'D", "it\u2019s", "DON\u2019T",
    "'\u017F", "IT'\u017F", "'\u212A", "x'sy", "''s", "' s", "l'amour", "L'HOMME", "'", "''", "'s'",
    "ain't", "Y'ALL'D'VE", "Jones's", "1's", "'90s", "\u00E9'll", "\u00C9'LL",
]

SPECIAL_TEXT = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|im_start|>user\nHi<|im_end|>\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
    "abc<|endoftext|>def", "abc <|endoftext|> def", "<|endoftext|><|endoftext|>", "<|im_end|><|im_start|>",
    "<<|im_end|>>", "<|im_start", "im_start|>", "<|im_start|", "<| im_start |>", "<|IM_START|>",
    "<think>reasoning</think>answer", " <think> ", "<tool_call>{\"a\":1}</tool_call>", "<|fim_prefix|>x<|fim_suffix|>",
    "<|vision_start|><|image_pad|><|vision_end|>", "text<|im_end|>\n\n", "\n<|im_end|>", " <|im_end|> ",
    "<|endoftext|>caf\u00E9", "e\u0301<|endoftext|>\u0301", "<|im_start|>\u0301", "<|box_start|>(1,2)<|box_end|>",
    "</think>", "<|repo_name|>x<|file_sep|>y", "<|<|im_end|>|>", "<|endoftext|> " * 3,
]

# For the added-token flags variant (tok_make_flags.py): lstrip/rstrip/single_word/normalized.
FLAGS = [
    "a <mask> b", "a<mask>b", "x\t<mask>\t<mask>\u2000", "<mask>", " <mask>", "<mask> ", "  <mask>  x",
    "<sw> word<sw>x <sw>", "<sw>", "a <sw> b", "\u00E9<sw>", "<sw>_", "x <sw>.", "\u0301<sw>",
    "caf\u00E9 cafe\u0301 CAFE\u0301", "cafe\u0301s", "e\u0301x ex \u00E9x", "The the THE", "the",
    "\u2605\u00E9 \u2605", "<L>  <L> x<L>", "<R>  <R> <R>x", "[SEP] [SEP]  [SEP]", "x [SEP]",
    "<|im_end|>  <|im_end|>\n", "<mask><sw><L><R>", "<R>\u3000\u3000y",
]

FRAGMENTS = (FLAGS + NFC_CASES + CJK + EMOJI + RTL + DIGITS + CODE + SPACES + CONTRACTIONS + SPECIAL_TEXT +
             ["Hello, world!", "The quick brown fox jumps over the lazy dog.", "e.g.", "U.S.A.", "...",
              "---", "!!!", "?!", "(parenthetical)", "[bracket]", "{brace}", "\"quoted\"", "\u201Ccurly\u201D",
              "\u2014em dash\u2014", "\u2013", "\u00BFQu\u00E9?", "\u00A1Hola!", "stra\u00DFe", "\u0130i\u0131I",
              "\u03A3\u03C3\u03C2", "\u0416\u0436", "\u0E2A\u0E27\u0E31\u0E2A\u0E14\u0E35", "\u0928\u092E\u0938\u094D\u0924\u0947",
              "\u10D2\u10D0\u10DB\u10D0\u10E0\u10EF\u10DD\u10D1\u10D0", "\u0540\u0561\u0575", "\u1200\u1208",
              "\u13A0\u13A1", "\u1780\u17D2\u179A", "\u0F00\u0F40", "\uA000\uA001"])


def random_codepoint_string(rng, n):
    """Characters from many blocks, assigned in this Python's Unicode, no surrogates/U+0000."""
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x52F), (0x590, 0x6FF),
              (0x900, 0xDFF), (0xE00, 0xEFF), (0x1100, 0x11FF), (0x1E00, 0x1FFF), (0x2000, 0x2BFF),
              (0x3000, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0xFB00, 0xFFFD),
              (0x1F300, 0x1F6FF), (0x1F900, 0x1F9FF), (0x1D400, 0x1D7FF)]
    out = []
    while len(out) < n:
        lo, hi = rng.choice(blocks)
        c = chr(rng.randint(lo, hi))
        cat = unicodedata.category(c)
        if cat in ("Cn", "Cs", "Co") or c == "\x00":
            continue
        out.append(c)
    return "".join(out)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out_path = sys.argv[1]
    hh_lines = 2312
    if "--hh-lines" in sys.argv:
        hh_lines = int(sys.argv[sys.argv.index("--hh-lines") + 1])
    rng = random.Random(SEED)
    items = []
    seen = set()

    def add(s):
        if s and s not in seen:
            seen.add(s)
            items.append(s)

    for s in FRAGMENTS:
        add(s)
        add(s.upper())
        add(" " + s)
        add(s + " ")
        add(s + "\n")
        add("x" + s + "y")
    # Pairs and triples of fragments, joined by varied separators.
    seps = ["", " ", "  ", "\n", "\t", "\r\n", " \n", "\n\n", "   \n", ""]
    while len(items) < 1800:
        k = rng.randint(2, 4)
        parts = [rng.choice(FRAGMENTS) for _ in range(k)]
        s = parts[0]
        for p in parts[1:]:
            s += rng.choice(seps) + p
        add(s)
    while len(items) < 2300:
        add(random_codepoint_string(rng, rng.randint(1, 40)))
    # Long runs: the merge loop and the cache limits.
    for s in ["a" * 1000, " " * 3000, "\n" * 500, "\t" * 300, "ab" * 700, "1" * 999, "\U0001F600" * 200,
              "x " * 800, "\u00E9" * 400, "e\u0301" * 300, "\u4E00" * 500, "!" * 600, "\u0301" * 100,
              " " * 300 + "x", "word " * 400 + "  ", "<|im_end|>" * 50]:
        add(s)
    # U+0000 and other C0 controls (carried as hex).
    nul = ["\x00", "a\x00b", "\x00\x00 \x00", "x\x00<|im_end|>\x00", "\x01\x02\x03\x1b[31mred\x1b[0m\x7f"]
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(json.dumps({"text": ""}) + "\n")
        for s in items:
            f.write(json.dumps({"text": s}, ensure_ascii=False) + "\n")
        for s in nul:
            f.write(json.dumps({"hex": s.encode("utf-8").hex()}) + "\n")
        for i in range(hh_lines):
            f.write(json.dumps({"hh": [i, "chosen"]}) + "\n")
    print(f"{out_path}: {1 + len(items) + len(nul)} synthetic strings, {hh_lines} HH-RLHF dialogues",
          file=sys.stderr)


if __name__ == "__main__":
    main()
