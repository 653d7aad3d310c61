"""Generate the request_to_json example dataset (stdlib only, deterministic).

Task: turn a short natural-language shopping / reminder / smart-home / music request
into one line of JSON with a fixed key order:

    {"intent": ..., "item": ..., "quantity": ..., "when": ...}

- intent:   add_to_cart | remove_from_cart | set_reminder | turn_on | turn_off | play_music
- item:     a lower-case value from the closed vocabularies below
- quantity: integer; the number of items for the cart intents, 0 for every other intent
- when:     today | tomorrow | monday ... sunday | none

Train and eval hold disjoint (intent, item, quantity, when) combinations, so no eval
answer - and hence no eval request - occurs in train. Run:

    python assets/datasets/make_request_to_json.py
"""
import json
import random
import zlib
from pathlib import Path

SEED = 1357
OUT_DIR = Path(__file__).resolve().parent
# rows per intent in each split
QUOTAS = {
    "train": {"add_to_cart": 100, "remove_from_cart": 60, "set_reminder": 80,
              "turn_on": 60, "turn_off": 60, "play_music": 40},
    "eval": {"add_to_cart": 25, "remove_from_cart": 15, "set_reminder": 20,
             "turn_on": 15, "turn_off": 15, "play_music": 10},
}

# canonical item -> surface forms (singular, plural)
GOODS = {
    "apple": [("apple", "apples")], "banana": [("banana", "bananas")],
    "egg": [("egg", "eggs")], "orange": [("orange", "oranges")],
    "onion": [("onion", "onions")], "lemon": [("lemon", "lemons")],
    "avocado": [("avocado", "avocados")], "potato": [("potato", "potatoes")],
    "tomato": [("tomato", "tomatoes")], "battery": [("battery", "batteries"), ("AA battery", "AA batteries")],
    "towel": [("towel", "towels"), ("bath towel", "bath towels")], "candle": [("candle", "candles")],
    "notebook": [("notebook", "notebooks")], "light bulb": [("light bulb", "light bulbs"), ("lightbulb", "lightbulbs")],
    "bagel": [("bagel", "bagels")],
    "milk": [("bottle of milk", "bottles of milk"), ("carton of milk", "cartons of milk")],
    "bread": [("loaf of bread", "loaves of bread")],
    "rice": [("bag of rice", "bags of rice")],
    "coffee": [("bag of coffee", "bags of coffee"), ("pack of coffee", "packs of coffee")],
    "soap": [("bar of soap", "bars of soap")],
}
TASKS = {
    "call mom": ["call mom", "call my mom", "phone my mother"],
    "pay rent": ["pay rent", "pay the rent"],
    "water plants": ["water the plants", "water my plants"],
    "take out trash": ["take out the trash", "take the trash out", "put the garbage out"],
    "walk dog": ["walk the dog", "take the dog for a walk"],
    "renew passport": ["renew my passport", "renew the passport"],
    "book dentist": ["book the dentist", "book a dentist appointment"],
    "pick up laundry": ["pick up the laundry", "collect my laundry"],
    "buy gift": ["buy a gift", "get a present"],
    "send report": ["send the report", "email the report"],
    "feed cat": ["feed the cat", "give the cat its dinner"],
    "charge phone": ["charge my phone", "plug in my phone"],
}
DEVICES = {
    "lights": ["lights", "light"], "fan": ["fan", "ceiling fan"],
    "heater": ["heater", "space heater"], "tv": ["tv", "TV", "television"],
    "air conditioner": ["air conditioner", "AC", "air conditioning"],
    "coffee maker": ["coffee maker", "coffee machine"], "radio": ["radio"],
    "dishwasher": ["dishwasher"], "porch light": ["porch light", "front porch light"],
}
GENRES = {
    "jazz": ["jazz"], "rock": ["rock"], "classical": ["classical"], "pop": ["pop"],
    "hip hop": ["hip hop", "hip-hop"], "country": ["country"], "lo-fi": ["lo-fi", "lofi"],
    "blues": ["blues"], "reggae": ["reggae"], "metal": ["metal", "heavy metal"],
}
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven",
                "eight", "nine", "ten", "eleven", "twelve"]

# templates: "imp" start with a verb and may take "please" / "could you"; "free" may not
TEMPLATES = {
    "add_to_cart": {
        "imp": ["add {q} to my cart", "put {q} in my basket", "add {q} to the shopping cart",
                "order {q}", "buy {q}", "throw {q} into my cart", "grab {q} for me", "get me {q}"],
        "free": ["I need {q}", "I'd like to order {q}", "my cart needs {q}", "{q}, add that to my cart",
                 "we're out, so add {q} to the cart"],
    },
    "remove_from_cart": {
        "imp": ["remove {q} from my cart", "take {q} out of my basket", "delete {q} from the cart",
                "drop {q} from my order", "take {q} off my shopping list"],
        "free": ["I don't need {q} anymore, take that out of the cart", "my cart has {q} too many",
                 "cancel {q} in my cart", "I changed my mind about {q}, remove that from the cart"],
    },
    "set_reminder": {
        "imp": ["remind me to {t} {w}", "set a reminder to {t} {w}", "remind me {w} to {t}",
                "create a reminder {w} to {t}", "make sure I {t} {w}"],
        "free": ["don't let me forget to {t} {w}", "{W}, remind me to {t}", "I need a reminder {w}: {t}",
                 "I have to {t} {w}, remind me", "{W} I must {t}, set a reminder"],
    },
    "turn_on": {
        "imp": ["turn on the {d}", "switch on the {d}", "turn the {d} on", "power on the {d}",
                "switch the {d} on", "put the {d} on", "start the {d}"],
        "free": ["I want the {d} on", "the {d} should be on", "it's time for the {d} to be on"],
    },
    "turn_off": {
        "imp": ["turn off the {d}", "switch off the {d}", "turn the {d} off", "shut off the {d}",
                "power down the {d}", "kill the {d}", "switch the {d} off"],
        "free": ["I want the {d} off", "the {d} should be off", "no more {d}, shut it off"],
    },
    "play_music": {
        "imp": ["play some {g}", "put on some {g} music", "play {g}", "start a {g} playlist",
                "queue up some {g}", "play me {g} music"],
        "free": ["I'm in the mood for {g}", "let's hear some {g}", "some {g} would be nice",
                 "I feel like listening to {g}"],
    },
}
QUESTION_PREFIXES = ["could you ", "can you ", "would you "]
FREE_PREFIXES = ["", "", "", "hey, ", "ok, ", "hi, "]
OTHER_PREFIXES = FREE_PREFIXES + ["please ", "please "]
SUFFIXES = ["", "", "", ", thanks", " please", ", thank you"]


def when_phrase(rng, when):
    """An adverbial phrase for a `when` value (never called with "none")."""
    if when == "today":
        return rng.choice(["today", "later today", "tonight", "this evening", "this afternoon"])
    if when == "tomorrow":
        return rng.choice(["tomorrow", "tomorrow morning", "first thing tomorrow", "tomorrow night"])
    day = when.capitalize()
    return rng.choice([f"on {day}", day, f"this {day}", f"next {day}", f"{day} morning", f"on {day} evening"])


def quantity_phrase(rng, n, forms):
    one, many = rng.choice(forms)
    if n == 1:
        article = "an" if one[0] in "aeiouAE" else "a"
        return rng.choice([f"{article} {one}", f"one {one}", f"1 {one}", f"a single {one}"])
    special = {2: "a couple of", 6: "half a dozen", 12: "a dozen"}
    if n in special and rng.random() < 0.35:
        return f"{special[n]} {many}"
    return f"{rng.choice([NUMBER_WORDS[n], str(n)])} {many}"


def sample_answer(rng, intent):
    """Pick the structured answer (fixed key order) for one example."""
    when_pool = ["none"] * 5 + ["today", "tomorrow"] + DAYS  # about a third 'none'
    if intent in ("add_to_cart", "remove_from_cart"):
        item = rng.choice(list(GOODS))
        qty = rng.choice([1, 1, 2, 2, 3, 3, 4, 5, 6, 7, 8, 9, 10, 12])
        when = rng.choice(when_pool) if intent == "add_to_cart" else "none"
    elif intent == "set_reminder":
        item, qty, when = rng.choice(list(TASKS)), 0, rng.choice(["today", "tomorrow"] + DAYS)
    elif intent in ("turn_on", "turn_off"):
        item, qty, when = rng.choice(list(DEVICES)), 0, rng.choice(when_pool)
    else:
        item, qty = rng.choice(list(GENRES)), 0
        when = rng.choice(["none"] * 9 + ["today", "tomorrow"] + DAYS)
    return {"intent": intent, "item": item, "quantity": qty, "when": when}


def render(rng, ans):
    """Write a natural-language request whose meaning is exactly `ans`."""
    intent, item, when = ans["intent"], ans["item"], ans["when"]
    kind = rng.choice(["imp", "imp", "free"])
    text = rng.choice(TEMPLATES[intent][kind])
    w = when_phrase(rng, when) if when != "none" else ""
    slots = {"w": w, "W": w[:1].upper() + w[1:], "t": "", "d": "", "g": "", "q": ""}
    if intent in ("add_to_cart", "remove_from_cart"):
        slots["q"] = quantity_phrase(rng, ans["quantity"], GOODS[item])
    elif intent == "set_reminder":
        slots["t"] = rng.choice(TASKS[item])
    elif intent in ("turn_on", "turn_off"):
        slots["d"] = rng.choice(DEVICES[item])
    else:
        slots["g"] = rng.choice(GENRES[item])
    text = text.format(**slots)
    if w and intent != "set_reminder":  # the when phrase goes at the end or the front
        text = f"{text} {w}" if rng.random() < 0.7 else f"{slots['W']}, {text}"
    question = False
    if kind == "imp" and not text[0].isupper():
        prefix = rng.choice(QUESTION_PREFIXES + OTHER_PREFIXES)
        question = prefix in QUESTION_PREFIXES
        text = prefix + text
    else:
        text = rng.choice(FREE_PREFIXES) + text if not text[0].isupper() else text
    text += rng.choice(["", "", " please"] if question else SUFFIXES)
    text += rng.choice(["?", "?", ""]) if question else rng.choice(["", ".", ".", "!"])
    if rng.random() < 0.75:
        text = text[0].upper() + text[1:]
    return " ".join(text.split())


def split_of(answer_json):
    """Stable combination-level split: ~1 in 5 answer combinations is held out for eval."""
    return "eval" if zlib.crc32(answer_json.encode()) % 5 == 0 else "train"


def build(seed=SEED):
    rng = random.Random(seed)
    rows = {"train": [], "eval": []}
    need = {s: dict(q) for s, q in QUOTAS.items()}
    seen = set()
    intents = list(QUOTAS["train"])
    for _ in range(200_000):
        if not any(n for q in need.values() for n in q.values()):
            break
        intent = rng.choice(intents)
        ans = sample_answer(rng, intent)
        answer = json.dumps(ans)
        split = split_of(answer)
        text = render(rng, ans)
        if need[split][intent] == 0 or text.lower() in seen:
            continue
        seen.add(text.lower())
        need[split][intent] -= 1
        rows[split].append({"messages": [{"role": "user", "content": text},
                                         {"role": "assistant", "content": answer}]})
    else:
        raise RuntimeError(f"could not fill quotas: {need}")
    for split in ("train", "eval"):
        rng.shuffle(rows[split])
    return rows


def check(prediction: str, reference: str) -> bool:
    """Exact match of the parsed JSON objects; False if the prediction does not parse."""
    try:
        pred = json.loads(prediction.strip())
    except (ValueError, AttributeError):
        return False
    return isinstance(pred, dict) and pred == json.loads(reference)


def main():
    rows = build()
    for split, items in rows.items():
        path = OUT_DIR / f"request_to_json.{split}.jsonl"
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            for row in items:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"wrote {len(items)} rows to {path}")


if __name__ == "__main__":
    main()
