"""Generate the ticket_label example dataset (stdlib only, deterministic): the second bundled task, of another shape
than request_to_json — a short-label classification.

Task: a customer-support message → one label, the whole answer:

    billing | delivery | refund | login | bug | cancel

The user turn names the labels and gives the ticket, so a model that was never trained on the task can still
answer it. Each message is a template filled with a product, a detail and a politeness frame; train and eval use
disjoint (template, product) pairs (a template without a product belongs to one split), so no eval message
occurs in train. 420 train / 120 eval rows, 70 / 20 per label.

    python assets/datasets/make_ticket_label.py
"""
import json
import random
from pathlib import Path

SEED = 2468
OUT_DIR = Path(__file__).resolve().parent
PER_LABEL = {"train": 70, "eval": 20}
LABELS = ["billing", "delivery", "refund", "login", "bug", "cancel"]
INSTRUCTION = "Label this support ticket as one of: " + ", ".join(LABELS) + ". Answer with the label only."

PRODUCTS = ["headphones", "coffee grinder", "phone case", "desk lamp", "backpack", "yoga mat", "blender",
            "keyboard", "water bottle", "smart watch", "rain jacket", "router", "air fryer", "monitor stand"]
TEMPLATES = {
    "billing": [
        "I was charged twice for my {p} order.", "Why does my invoice for the {p} show a higher price?",
        "My card was billed {a} but the {p} cost less.", "There is a charge of {a} on my statement I don't recognise.",
        "The discount code wasn't applied when I paid for the {p}.", "Can I get a VAT invoice for the {p}?",
        "You took payment for the {p} but the order says unpaid.", "I was billed {a} for shipping the {p}, why?",
    ],
    "delivery": [
        "My {p} still hasn't arrived, it's been {d} days.", "The tracking for my {p} hasn't moved in {d} days.",
        "Where is my {p}? It was due {w}.", "The courier says the {p} was delivered but I never got it.",
        "Can you change the delivery address for my {p}?", "My {p} was left at the wrong house.",
        "The {p} parcel is stuck at customs.", "Delivery of the {p} was promised {w} and nothing came.",
    ],
    "refund": [
        "I returned the {p} {d} days ago and still have no refund.", "Please refund me for the broken {p}.",
        "I want my money back for the {p}.", "The refund for my {p} was only {a}, it should be more.",
        "You accepted my return of the {p}; when will the refund arrive?",
        "The {p} arrived damaged, I'd like a refund, not a replacement.",
        "How long does a refund take for the {p} I sent back?", "My refund for the {p} went to an old card.",
    ],
    "login": [
        "I can't log in to check my {p} order.", "The password reset email never arrives.",
        "My account is locked after too many attempts.", "The two-factor code is not accepted when I sign in.",
        "I forgot the email I used to buy the {p}.", "The app logs me out every time I open my {p} order.",
        "It says my password is wrong but I just reset it.", "I can't sign in since I changed my phone number.",
    ],
    "bug": [
        "The app crashes when I open the {p} page.", "The checkout button does nothing when I buy the {p}.",
        "Product photos of the {p} don't load.", "The website shows an error 500 on the {p} listing.",
        "Search returns nothing when I type {p}.", "The size chart for the {p} is blank.",
        "Adding the {p} to the basket freezes the page.", "The review form for the {p} won't submit.",
    ],
    "cancel": [
        "Please cancel my order for the {p}.", "I want to cancel the {p} before it ships.",
        "Cancel my subscription, I don't need it anymore.", "I ordered the {p} by mistake, please cancel it.",
        "Stop my monthly {p} delivery plan.", "How do I cancel the {p} order I placed {w}?",
        "Cancel the second {p}, I only wanted one.", "I'd like to end my membership today.",
    ],
}
OPENERS = ["", "", "Hi, ", "Hello, ", "Hey there. ", "Good morning, "]
CLOSERS = ["", "", " Thanks.", " Thank you!", " Please help.", " This is urgent."]
WHEN = ["yesterday", "last week", "on Monday", "on Friday", "two days ago"]


def split_of(label: str, n: int, product: str | None) -> str:
    """Every fourth (template, product) pair of a label goes to eval; a template without a product goes whole."""
    key = n * len(PRODUCTS) + PRODUCTS.index(product) if product else n
    return "eval" if (key + LABELS.index(label)) % 4 == 0 else "train"


def make_split(split: str, rng: random.Random) -> list[dict]:
    rows = []
    for label in LABELS:
        pairs = [(t, p) for n, t in enumerate(TEMPLATES[label])
                 for p in (PRODUCTS if "{p}" in t else [None]) if split_of(label, n, p) == split]
        seen = set()
        while len(seen) < PER_LABEL[split]:
            template, product = rng.choice(pairs)
            text = template.format(p=product, a=f"${rng.randint(5, 300)}.{rng.randint(0, 99):02d}",
                                   d=rng.randint(3, 21), w=rng.choice(WHEN))
            opener = rng.choice(OPENERS)
            if opener.endswith(", ") and not text.startswith(("I ", "I'")):
                text = text[0].lower() + text[1:]
            ticket = opener + text + rng.choice(CLOSERS)
            if ticket in seen:
                continue
            seen.add(ticket)
            rows.append({"messages": [{"role": "user", "content": f"{INSTRUCTION}\nTicket: {ticket}"},
                                      {"role": "assistant", "content": label}]})
    rng.shuffle(rows)
    return rows


def main() -> None:
    rng = random.Random(SEED)
    for split in ("train", "eval"):
        rows = make_split(split, rng)
        path = OUT_DIR / f"ticket_label.{split}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        print(f"{path.name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
