"""The tokenizer parity corpus: strings chosen to hit each stage of CLIP's pipeline, and batch cases for `__call__`.

Deterministic (no randomness beyond a seeded generator), so the committed fixture can check the corpus is unchanged.
"""

from __future__ import annotations

import random

CAPTIONS = [
    "a photo of a cat", "a photo of a dog", "a person riding a horse on the beach",
    "two dogs playing in the snow", "a red car parked next to a building", "a bowl of fruit on a wooden table",
    "an aerial view of a city at night", "a plate of spaghetti with meatballs", "a man holding an umbrella",
    "a group of people standing around a kitchen", "the sky is blue and the grass is green",
    "a black and white photo of a train station", "a close-up of a flower with a bee on it",
    "a small boat on a calm lake surrounded by mountains", "children playing football in a park",
    "a laptop computer sitting on top of a desk", "a giraffe standing next to a tree",
    "a bathroom with a toilet and a sink", "a stop sign on the corner of a street", "a cup of coffee",
    "background", "sky", "tree", "person", "a photo of a bird.", "a photo of the ocean, at sunset",
    "lowest newer wider", "supercalifragilisticexpialidocious", "antidisestablishmentarianism",
    "pneumonoultramicroscopicsilicovolcanoconiosis", "a b c d e f g", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "the the the the the", "photography photographs photographer photographic", "unbelievably",
]  # fmt: skip

CAPITALS = [
    "A Photo Of A Cat", "A PHOTO OF A CAT", "ThIs Is MiXeD cAsE", "NASA launched a ROCKET", "iPhone vs. Android",
    "McDonald's", "ÉCOLE NORMALE SUPÉRIEURE", "İstanbul", "STRASSE und Straße", "ΣΊΣΥΦΟΣ", "ǅemal", "Ⅻ o'clock",
    "ﬁne ﬂour", "ＡＢＣ ｆｕｌｌｗｉｄｔｈ", "KELVIN 5\u212a",
]  # fmt: skip

PUNCTUATION = [
    "!!!", "???", "...", "?!?!", "hello!!! world???", "wait... what?!", "--", "---->", "<<<>>>", "(a) [b] {c}",
    "a/b\\c", "#hashtag @mention", "$100.00", "50% off!", "a+b=c", "x^2 * y_1", "~tilde~", "`code`", '"quoted"',
    "'single'", "«guillemets»", "„German“", "“curly”", "—em dash—", "–en dash–", "…", "•bullet", "©®™", "§¶†‡",
    "¿qué?", "¡hola!", "a,b;c:d", "|pipe|", "<|>", "<|", "|>", "::", "@@@@", "***", "___", "&&", "#1", "!a!b!c!",
]  # fmt: skip

CONTRACTIONS = [
    "it's", "don't", "we're", "i've", "i'm", "you'll", "he'd", "it\u2019s", "don\u2019t", "we\u2019re", "I\u2019M",
    "IT'S", "DON'T", "YOU'LL", "rock 'n' roll", "'s", "'t 're 've 'm 'll 'd", "''", "'''quoted'''", "o'clock",
    "ma'am", "y'all'd've", "the dog's ball", "the dogs' balls", "\u2018single curly\u2019", "it`s", "it\u00b4s",
    "it\u02bcs", "'ſ and 'K", "'S", "'LL", "can't won't shan't",
]  # fmt: skip

DIGITS = [
    "0", "7", "42", "1234567890", "3.14159", "1,000,000", "-5", "+33 1 23 45 67 89", "2024-01-15", "12:30pm",
    "1st 2nd 3rd 4th", "v1.2.3", "a1b2c3", "0x1F", "1e-10", "٣٤٥", "१२३", "①②③", "½ ¾", "²³", "一二三", "Ⅳ", "１２３",
]  # fmt: skip

WHITESPACE = [
    "", " ", "  ", "\t", "\n", "\r\n", "a\tb", "a\nb", "a\r\nb", "a\rb", "  leading", "trailing  ", "a    b",
    "a\u00a0b", "a\u00a0\u00a0b", "\u00a0", "a\u200bb", "\u200b", "a\u200cb", "a\u200db", "a\ufeffb", "\ufeffbom",
    "a\u2028b", "a\u2029b", "a\u3000b", "a\u2003b", "a\u202fb", "a\x0bb", "a\x0cb", "a\x1cb", "a\x1fb", "a\x85b",
    "a\u00adb", "a\x00b", "a\x07b", "a\x7fb", "\x1b[31mred\x1b[0m", "a \t \n b", "\n\n\nparagraph\n\n\n",
    "a\u2060b", "a\u180eb", "a\u0085b", "\u3000\u3000",
]  # fmt: skip

SCRIPTS = [
    "café", "naïve", "résumé", "Zoë", "jalapeño", "crème brûlée", "cafe\u0301", "e\u0301e\u0301", "Ångström",
    "Øresund", "Łódź", "Ñandú", "ça va", "Dvořák", "αβγ", "Ελληνικά", "καλημέρα κόσμε", "ς σ Σ", "Привет мир",
    "кошка на диване", "Ёлка", "Україна", "こんにちは", "カタカナ", "東京", "日本語のテキスト", "中文文本",
    "你好，世界！", "한국어", "안녕하세요", "مرحبا بالعالم", "العربية", "שלום", "नमस्ते", "हिन्दी भाषा",
    "ภาษาไทย", "ქართული", "Հայերեն", "ትግርኛ", "தமிழ்", "বাংলা", "𝕳𝖊𝖑𝖑𝖔", "𝓗𝓮𝓵𝓵𝓸", "ᚠᛇᚻ", "𐍈", "🄰🄱🄲", "ﷺ",
    "Z\u0324\u0354\u0367\u0311a\u0308\u0356\u032dl\u036e\u0312\u036b",  # "zalgo" stacked combining marks
    "ⓐⓑⓒ", "Ⓐ", "\u0345", "ᾳ",  # U+0345 is a combining mark whose case fold is a letter (IGNORECASE matters)
]  # fmt: skip

ZWJ, VS16 = "\u200d", "\ufe0f"  # zero-width joiner, emoji presentation selector
EMOJI = [
    "😀", "👍", "👍🏽", "❤" + VS16, "❤", "🇫🇷", "🇺🇸🇯🇵", ZWJ.join("👨👩👧👦"), "🏳" + VS16 + ZWJ + "🌈",
    "🧑🏿" + ZWJ + "🚀", "1" + VS16 + "\u20e3", "#" + VS16 + "\u20e3", "a 🐱 and a 🐶", "🐱🐶", "I ❤ NY", "😂😂😂",
    "🤷" + ZWJ + "♂" + VS16, "☃", "⭐" + VS16, "🫠", ZWJ.join(["👩", "❤" + VS16, "💋", "👨"]),
    "🏴" + "".join(chr(0xE0000 + ord(c)) for c in "gbsct") + "\U000e007f",  # Scotland: a tag sequence
    "emoji:)", ":-) ;-) :D <3", "¯\\_(ツ)_/¯", "(╯°□°)╯︵ ┻━┻",
]  # fmt: skip

HTML = [
    "&amp;", "&lt;b&gt;bold&lt;/b&gt;", "&quot;quoted&quot;", "&#39;apostrophe&#39;", "&eacute;t&eacute;",
    "&nbsp;", "a&nbsp;b", "&AMP;", "&amp;amp;", "&#x263A;", "&#9731;", "<b>bold</b> &amp; more", "fish &amp; chips",
    "&copy; 2024", "&hellip;", "&unknownentity;", "&", "AT&T", "<p>paragraph</p>", "<br/>", "1 &lt; 2",
]  # fmt: skip

MOJIBAKE = [
    "cafÃ©", "Ã¼ber", "naÃ¯ve", "â€œquotedâ€\x9d", "donâ€™t", "The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.",
    "Ð¿Ñ€Ð¸Ð²ÐµÑ‚", "æ–‡å—åŒ–ã‘", "Ã\xa0 la carte", "ÃƒÂ©", "â€”", "â€¦", "Ã©tÃ©", "\x80\x81\x9f", "ï»¿bom",
    "l’humanitÃ©", "schÃ¶n", "Ãƒ", "ðŸ˜€", "Ã",
]  # fmt: skip

URLS = [
    "https://www.example.com/path?query=1&x=y#frag", "http://example.org", "www.google.com",
    "user@example.com", "ftp://files.example.net/a_b-c.txt", "https://en.wikipedia.org/wiki/Caf%C3%A9",
    "C:\\Users\\me\\file.txt", "/usr/local/bin", "@user #tag https://t.co/abc123", "example.com/😀",
]  # fmt: skip

SPECIAL_IN_TEXT = [
    "<|startoftext|>", "<|endoftext|>", "a <|endoftext|> b", "a<|endoftext|>b", "<|ENDOFTEXT|>", "<|EndOfText|>",
    "<|STARTOFTEXT|> hi", "!!<|endoftext|>!!", "!!<|ENDOFTEXT|>!!", "<|<|endoftext|>", "<|endoftext|>|>",
    "<|endoftext|><|startoftext|>", "<|startoftext|>hello<|endoftext|>", "<|endoftext", "endoftext|>",
    "<| endoftext |>", "<|endoftext |>", "x<|startoftext|>y", "’<|endoftext|>", "<|endoftext|>'s",
    "<|endoftext|>   <|endoftext|>", "<|endoftext|>\n", "a photo <|endoftext|> of a cat",
    "<|startoftext|><|endoftext|>", "<|endoftext|>café&amp;",
    "cafÃ©<|endoftext|>cafÃ©", "<|unk|>", "<|pad|>", "&lt;|endoftext|&gt;",
    "<|endoftext|>".join(["a", "b", "c"]), "it<|endoftext|>'s",
]  # fmt: skip

MIXED = [
    "A cat 🐱 sat on the mat (literally!) at 3:45pm — naïve, isn't it?",
    "Ünïcödé & ASCII & \u00a0NBSP\u200b zero-width",
    "The Eiffel Tower (Paris, France) is 330 m tall; it was built in 1889.",
    "在公园里遛狗的人 a person walking a dog in the park",
    "Москва — столица России; Moscow is the capital.",
    "ПРИВЕТ Hello ΓΕΙΑ שלום مرحبا नमस्ते 你好",
    "tab\tseparated\tvalues\nand\nnew\nlines",
    "emoji 👨\u200d👩\u200d👧 with ZWJ and text after",
    "price: €9.99 / £8 / ¥1000 / ₹500",
    "mixed\u00a0nbsp\u2003em-space\u3000ideographic",
]  # fmt: skip


def _long_text(n_words: int, seed: int) -> str:
    """n_words drawn (seeded) from the words of the other categories: far past 77 tokens."""
    words = sorted(
        {w for group in (CAPTIONS, CAPITALS, SCRIPTS, CONTRACTIONS, DIGITS) for s in group for w in s.split()}
    )
    rng = random.Random(seed)
    return " ".join(rng.choice(words) for _ in range(n_words))


def corpus() -> dict[str, list[str]]:
    """The parity corpus by category (over 300 strings in all)."""
    long = [_long_text(1000, seed=0), _long_text(80, seed=1), _long_text(75, seed=2), _long_text(200, seed=3)]
    # Captions whose length sits around the 77-token limit, to exercise truncation at the edge.
    edges = [" ".join(["cat"] * n) for n in (74, 75, 76, 77, 78)]
    return {
        "captions": CAPTIONS, "capitals": CAPITALS, "punctuation": PUNCTUATION, "contractions": CONTRACTIONS,
        "digits": DIGITS, "whitespace": WHITESPACE, "scripts": SCRIPTS, "emoji": EMOJI, "html": HTML,
        "mojibake": MOJIBAKE, "urls": URLS, "special_in_text": SPECIAL_IN_TEXT, "mixed": MIXED,
        "long": long + edges,
    }  # fmt: skip


def all_texts() -> list[str]:
    return [text for group in corpus().values() for text in group]


def batch_cases() -> list[tuple[list[str], dict]]:
    """(texts, __call__ kwargs) for every padding/truncation mode, with max_length below and above the texts."""
    long = corpus()["long"]
    short = ["a photo of a cat", "a dog", "", "two dogs playing in the snow", "<|endoftext|>"]
    mixed = ["a photo of a cat", long[3], "a cat", long[1], long[4]]  # 200, 80 words and a 74-token caption
    cases = [(short, {}), (mixed, {})]
    for batch in (short, mixed):
        for padding in (False, True, "longest", "max_length"):
            for truncation in (None, False, True):
                for max_length in (None, 3, 5, 10, 77, 100):
                    cases.append((batch, {"padding": padding, "truncation": truncation, "max_length": max_length}))
    cases += [([long[0], "a cat"], {"padding": True}), ([long[0], "a cat"], {"padding": True, "truncation": True})]
    cases += [(["x"], {"max_length": 2, "truncation": True}), (["x y z"], {"max_length": 1, "truncation": True})]
    cases += [(["a cat", "a dog"], {"add_special_tokens": False, "padding": True})]
    return cases


def fuzz_texts(n: int, seed: int = 0) -> list[str]:
    """Seeded random strings over an alphabet of troublemakers, for live comparisons beyond the fixed corpus."""
    pool = "aZé ß'’`\"<|>!?.,-_&;#@$%0123456789\t\n\r\x0b\x0c\x00\x1b\x7f\x85\xa0\xad\u200b\u200d\ufeff\u3000"
    pool += "ÃÂ©€™ſKİıαΣςжЖ東京한こア\u0301\u0345🐱👍🏽\ufe0f\U000e0067"
    words = ["<|endoftext|>", "<|startoftext|>", "<|ENDOFTEXT|>", "&amp;", "&lt;", "'s", "'LL", "cafÃ©", "photo"]
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        parts = [rng.choice(words) if rng.random() < 0.15 else rng.choice(pool) for _ in range(rng.randrange(1, 40))]
        texts.append("".join(parts))
    return texts
