"""Generate the seed prompts for teacher -> student distillation (stdlib only, deterministic).

Six task types a small chat model can answer in one to three sentences. A seeded shuffle puts some slot values of
each task (questions, sentences, products, words, objects, ...) aside for the held-out file, so held-out prompts use
other slot values, names and places than the training prompts. Run:  python assets/prompts/make_seed_prompts.py
"""
import json
import random
from pathlib import Path

SEED = 4242
OUT_DIR = Path(__file__).resolve().parent
TASKS = ["factual_qa", "rewrite", "summarize", "sentiment", "definition", "arithmetic"]
PER_TASK = {"train": 56, "heldout": 12}
MAX_WORDS = 60


def bag(text):
    """Items separated by "|" or line breaks."""
    return [x.strip() for x in text.replace("\n", "|").split("|")]


NAMES = "Anna Ben Carlos Dana Emma Farid Grace Hiro Isla Jack Lena Mia Noah Omar Priya Sam Tom Zoe".split()
PLACES = bag("""Millbrook|Riverton|Oakdale|Pine Hill|Lakeside|Cedar Falls|Brookfield|Greenvale|Stonebridge|Maple Grove
Fairview|Westport|Ashford|Hillcrest|Elmwood|Bayview""")
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()

CAPITALS = bag("France|Japan|Italy|Spain|Germany|Canada|Egypt|the United Kingdom|Russia|China|Greece|Australia|India"
               "|Mexico|Portugal|Ireland")
CAPITAL_FORMS = ["What is the capital of {c}?", "Which city is the capital of {c}?", "Name the capital city of {c}."]
QUESTIONS = bag("""What planet do we live on?|What is the closest star to Earth?
What gas do plants take in from the air?|What do bees make?
At what temperature in degrees Celsius does water freeze?|At what temperature does water boil in Celsius?
What is the largest planet in our solar system?|Which planet is known as the Red Planet?
What is the largest ocean on Earth?|What is the tallest mountain in the world?|What is the longest river in Africa?
What is the large desert in northern Africa called?|What causes day and night on Earth?
Why do we see lightning before we hear thunder?|What is water made of?|How many continents are there?
What is the largest animal on Earth?|What do caterpillars turn into?|What gas do humans need to breathe?
Why are most leaves green?|How long does it take Earth to travel around the Sun?
Which organ pumps blood around the body?|What do we call animals that eat only plants?
What is the hardest natural material?|What force keeps us on the ground?|On which continent is Brazil?
On which continent is Kenya?|Which ocean lies between Europe and North America?
What language is mainly spoken in Mexico?|In which country are the pyramids of Giza?
What is the largest country in the world by area?|What is a volcano?|Why is sea water salty?
What are clouds made of?|How does a rainbow form?|What do plants need to grow?|What is the Sun?
How many hours are in a day?|What are the three states of matter?|Why do people need to drink water?
What is the coldest continent?|What do you call a baby cat?|How many legs does a spider have?
How many legs does an insect have?|What is it called when liquid water turns into vapor?
Which planet has large rings around it?|What does a thermometer measure?|What is the chemical formula for water?
What kind of metal do magnets attract?|Which season comes after winter?|Where does rain come from?
Why does the Moon seem to change shape during the month?|What is the main job of the roots of a plant?
Which animal is the tallest in the world?|What do we call a frozen drop of rain that falls as a ball of ice?
Why do birds fly south in autumn?|What is the Earth's natural satellite called?|How many sides does a triangle have?
Which sense do we use our ears for?|What happens to ice when it gets warm?""")
QA_FORMS = ["{q}", "{q} Answer in one sentence.", "Quick question: {q}", "{q} Please keep your answer short.",
            "Answer briefly: {q}", "I was wondering: {q}"]

BLUNT = bag("""Give me the report now.|Move your car.|Be quiet.|Send me the file today.|Stop being late to meetings.
Fix this bug right now.|Call me back.|Clean up your desk.|I need your answer by noon.|Don't touch my things.
Turn the music down.|You forgot to reply to my email.|Bring me a glass of water.|Finish the slides before lunch.
Tell me what time the store closes.|Hurry up with the coffee.|Close the window.|We are not giving refunds.
Answer the phone.|Read the instructions before asking.|You are sitting in my seat.|Wait outside.""")
WORDY = bag("""The meeting was postponed due to unforeseen events.
Please ensure all windows are fastened before leaving.|We regret to inform you that you were not selected.
Use of public transport is strongly encouraged.|Individuals wishing to participate must register first.
The library is closed for the duration of the holidays.|It is imperative that you submit the form on time.
Weather conditions are expected to deteriorate tonight.|Consumption of food is prohibited in this area.
The firm endeavors to enhance customer satisfaction.|Kindly refrain from using phones during the show.
Our records indicate your payment has not arrived.|The physician advised an increase in water intake.
Residents should remain indoors until further notice.|The train will arrive approximately ten minutes late.
Pupils must bring their own writing implements.|This medication should be taken subsequent to a meal.
The park commences operation at eight each morning.|In case of fire, utilize the stairs, not the elevator.
The new policy takes effect at the commencement of May.|Participants must familiarize themselves with the rules.
Due to high demand, the item is temporarily unavailable.""")
REWRITE_FORMS = {
    "polite": ["Rewrite this sentence to sound more polite: \"{s}\"", "Make this more polite: {s}",
               "How could I say this more politely? \"{s}\"", "Rephrase the following in a friendly, polite way: {s}"],
    "simple": ["Rewrite this sentence in simpler words: \"{s}\"", "Make this sentence easier to understand: {s}",
               "Say this more simply: \"{s}\"", "Rewrite this for a young reader: {s}"]}

# summarize: (frame, values of its main slot); {place}, {day}, {name} come from the split's pools
FRAMES = [
    ("The town of {place} opened a new {0} on {day}. It has {1}, and entry is free for children. "
     "Local families say they plan to visit often.",
     [("library", "thousands of books and a quiet reading room"), ("park", "a playground and a small pond"),
      ("swimming pool", "three lanes and a warm pool for kids"), ("museum", "displays about the history of the area"),
      ("sports center", "courts for basketball and tennis")]),
    ("{0} hit {place} on {day}. Several roads were closed for a few hours, and buses ran late. "
     "By evening, things were back to normal.", [(x,) for x in bag("Heavy rain|Heavy snow|A strong storm|Thick fog")]),
    ("A small cafe in {place} began selling {0} last month. The owner bakes them fresh every morning. "
     "By noon, they are usually sold out.",
     [(x,) for x in bag("homemade muffins|fresh bagels|apple pies|cinnamon rolls|croissants|banana bread")]),
    ("Students at the school in {place} held a {0} on {day}. They showed projects about {1}. "
     "Parents and teachers said it was the best one so far.",
     [("science fair", "saving water"), ("art show", "the seasons"), ("science fair", "the solar system"),
      ("maker fair", "recycling"), ("art show", "local birds")]),
    ("{name} started growing {0} in pots on a small balcony this spring. The pots get sun all afternoon and "
     "are watered every morning. After two months, the first {0} were ready to pick.",
     [(x,) for x in bag("tomatoes|strawberries|peppers|herbs|beans|radishes")]),
    ("Regular {0} can help people sleep better and feel less stressed. Experts suggest about thirty minutes "
     "on most days. Even a little {0} each week is better than none.",
     [(x,) for x in bag("walking|swimming|cycling|stretching|dancing|gardening")]),
]
PASSAGES = bag("""Honeybees live in large groups called colonies. Worker bees collect nectar from flowers and turn it
into honey. A strong colony can make far more honey than it needs for the winter.|The water cycle moves water around
the Earth. The Sun warms water so it rises as vapor and forms clouds. Later the water falls back as rain or snow.|
Recycling turns used paper, glass and cans into new products. It saves raw materials and energy. It also means less
rubbish ends up in landfills.|The Moon does not make its own light. We see it because it reflects light from the Sun.
As it moves around the Earth, we see different parts of its lit side.|Octopuses are clever sea animals with eight
arms. They can change color to hide from danger. Some have even been seen opening jars to reach food.|Drinking enough
water helps the body work well. It keeps us cool and helps carry nutrients. Most people should drink more when the
weather is hot.|Many cities now have bike lanes separated from cars. They make cycling safer and more popular. Fewer
cars on the road can also mean cleaner air.|Owls hunt mostly at night. Their large eyes and sharp hearing help them
find small animals in the dark. Soft feathers let them fly almost silently.""".replace("\n", " "))
SUMMARY_FORMS = ["Summarize this in one sentence: {p}", "Give a one-sentence summary of the following passage. {p}",
                 "Read this and sum it up in a single sentence: {p}",
                 "{p}\n\nSummarize the text above in one sentence."]

PRODUCTS = bag("""blender|backpack|desk lamp|kettle|umbrella|phone case|water bottle|desk chair|toaster|alarm clock
pair of headphones|pair of running shoes|coffee maker|rain jacket|board game|yoga mat|frying pan|wall clock
laptop stand|tent|hair dryer|lunch box|bike light|keyboard|pillow|suitcase""")
REVIEW = {  # polarity: (review frames, details)
    "positive": (bag("I love this {p}. It {d}.|Great {p}! It {d}.|Best {p} I have ever bought. It {d}."
                     "|Really happy with this {p}; it {d}."),
                 bag("works perfectly|does exactly what I wanted|looks even better than the photos"
                     "|was worth every penny|arrived quickly and works great|is well made and sturdy")),
    "negative": (bag("This {p} {d}. Very disappointed.|Do not buy this {p}. It {d}.|I regret buying this {p}. It {d}."
                     "|Terrible {p}. It {d}."),
                 bag("broke after two days|started falling apart after a week|feels cheap and flimsy"
                     "|was a waste of money|arrived damaged|is much smaller than described"))}
SENTIMENT_FORMS = ["Is this review positive or negative? \"{r}\"",
                   "Classify the sentiment of this review as positive or negative: {r}",
                   "Review: \"{r}\" Is the sentiment positive or negative?",
                   "What is the sentiment of this product review, positive or negative? {r}"]

WORDS = """happy brave kitchen library honest journey ocean patient curious generous umbrella harvest neighbor whisper
recipe calendar forest island polite tidy gentle invent borrow celebrate explore ancient fragile bridge shadow season
habit rescue signal puzzle village ladder tradition volunteer orchard compass glacier desert planet melody breakfast
friendship silence healthy delicious lazy clever hobby garden weekend mirror thunder cozy promise recycle migrate
predict measure muscle skeleton climate vehicle journal teamwork""".split()
DEFINITION_FORMS = ["What does the word \"{w}\" mean?", "Define \"{w}\" in one sentence.",
                    "Give a short definition of the word \"{w}\".", "What is the meaning of \"{w}\"?",
                    "Explain what \"{w}\" means in simple words."]

OBJECTS = bag("apples|pencils|stickers|marbles|cookies|books|eggs|balloons|cards|shells|oranges|toy cars")
ARITH = [  # (template, range of a, range of b); {ab} is a * b, {c} is 1..3
    ("{n} has {a} {o} and gets {b} more. How many {o} does {n} have now?", (2, 12), (2, 9)),
    ("{n} had {a} {o} and gave {b} of them to a friend. How many {o} are left?", (7, 15), (2, 6)),
    ("There are {a} bags with {b} {o} in each bag. How many {o} are there in total?", (2, 6), (2, 8)),
    ("{n} shares {ab} {o} equally among {b} friends. How many {o} does each friend get?", (2, 6), (2, 5)),
    ("A pack of {o} costs {a} dollars. How much do {b} packs cost?", (2, 9), (2, 5)),
    ("{n} has {a} {o}, buys {b} more, and then loses {c}. How many {o} does {n} have now?", (4, 10), (2, 6)),
]
ARITH_FORMS = ["{x}", "{x} Answer in one sentence.", "Solve this word problem: {x}", "Math question: {x}"]


def split(rng, items, k):
    """Seeded shuffle, then the first k items go to held-out, the rest to train."""
    items = list(items)
    rng.shuffle(items)
    return {"train": items[k:], "heldout": items[:k]}


def task_items(rng):
    """For each task: the slot values of each split and a render(item, rng, pools) -> prompt function."""
    qa = [f.format(c=c) for c, f in zip(CAPITALS, CAPITAL_FORMS * 6)] + QUESTIONS
    rewrite = {k: split(rng, [(kind, s) for s in src], 4) for k, (kind, src) in
               enumerate([("polite", BLUNT), ("simple", WORDY)])}
    summ = [(i, v) for i, (_, vals) in enumerate(FRAMES) for v in vals] + [(None, p) for p in PASSAGES]
    senti = split(rng, PRODUCTS, 6)
    arith = split(rng, OBJECTS, 3)

    def r_summary(item, r, pools):
        frame, v = item
        text = v if frame is None else FRAMES[frame][0].format(
            *v, place=r.choice(pools["places"]), day=r.choice(DAYS), name=r.choice(pools["names"]))
        return r.choice(SUMMARY_FORMS).format(p=text)

    def r_review(item, r, pools):
        product, polarity = item
        frames, details = REVIEW[polarity]
        return r.choice(SENTIMENT_FORMS).format(r=r.choice(frames).format(p=product, d=r.choice(details)))

    def r_arith(item, r, pools):
        (template, ra, rb), obj = ARITH[item[0]], item[1]
        a, b = r.randint(*ra), r.randint(*rb)
        x = template.format(n=r.choice(pools["names"]), o=obj, a=a, b=b, ab=a * b, c=r.randint(1, 3))
        return r.choice(ARITH_FORMS).format(x=x)

    return {
        "factual_qa": (split(rng, qa, 12), lambda q, r, p: r.choice(QA_FORMS).format(q=q)),
        "rewrite": ({s: rewrite[0][s] + rewrite[1][s] for s in PER_TASK},
                    lambda it, r, p: r.choice(REWRITE_FORMS[it[0]]).format(s=it[1])),
        "summarize": (split(rng, summ, 9), r_summary),
        "sentiment": ({s: [(p, pol) for p in senti[s] for pol in REVIEW] for s in PER_TASK}, r_review),
        "definition": (split(rng, WORDS, 14), lambda w, r, p: r.choice(DEFINITION_FORMS).format(w=w)),
        "arithmetic": ({s: [(i, o) for i in range(len(ARITH)) for o in arith[s]] for s in PER_TASK}, r_arith),
    }


def pick(rng, items, render, pools, n, seen):
    """Round-robin over the slot values (each is used once before any is used again), skipping repeats."""
    out, tries = [], 0
    while len(out) < n:
        order = list(items)
        rng.shuffle(order)
        for item in order:
            prompt = render(item, rng, pools)
            tries += 1
            assert tries < 50 * n, "not enough distinct prompts"
            if prompt in seen:
                continue
            assert len(prompt.split()) <= MAX_WORDS, prompt
            seen.add(prompt)
            out.append(prompt)
            if len(out) == n:
                break
    return out


def build():
    rng = random.Random(SEED)
    names, places = split(rng, NAMES, 5), split(rng, PLACES, 4)
    tasks = task_items(rng)
    seen, rows = set(), {}
    for side in ("train", "heldout"):  # train first; held-out prompts must not repeat any train prompt
        pools = {"names": names[side], "places": places[side]}
        per_task = {t: pick(random.Random(f"{SEED}-{side}-{t}"), tasks[t][0][side], tasks[t][1], pools,
                            PER_TASK[side], seen) for t in TASKS}
        offset = 0 if side == "train" else PER_TASK["train"]  # ids stay unique across both files
        rows[side] = [{"id": f"{t}-{offset + k + 1}", "task": t, "prompt": per_task[t][k]}
                      for k in range(PER_TASK[side]) for t in TASKS]  # interleaved: any prefix is balanced
    return rows


def main():
    rows = build()
    for side, name in (("train", "seed_prompts.jsonl"), ("heldout", "seed_prompts.heldout.jsonl")):
        with open(OUT_DIR / name, "w", encoding="utf-8", newline="\n") as f:
            for row in rows[side]:
                f.write(json.dumps(row, ensure_ascii=True) + "\n")
        print(f"wrote {len(rows[side])} prompts to {OUT_DIR / name}")


if __name__ == "__main__":
    main()
