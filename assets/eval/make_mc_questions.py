"""Writes mc_questions.jsonl: a multiple-choice set written for SLMOps Studio's benchmark job.

Seeded and stdlib-only: `python assets/eval/make_mc_questions.py` rewrites the file byte for byte. Facts and
templates below were written for this project (no external benchmark data). Each question has four short options,
scored by the log-likelihood of " <option>" after "Question: <question>\\nAnswer:"; the correct option sits at each
of the four positions equally often.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 20261123
OUT = Path(__file__).resolve().parent / "mc_questions.jsonl"

# (question, correct answer, three wrong answers)
SCIENCE = [
    ("What gas do plants take in from the air to make food?", "carbon dioxide", ["helium", "neon", "argon"]),
    ("What do bees make from nectar?", "honey", ["milk", "silk", "wax paper"]),
    ("Which planet is closest to the Sun?", "Mercury", ["Neptune", "Saturn", "Uranus"]),
    ("What is frozen water called?", "ice", ["steam", "sand", "smoke"]),
    ("Which organ pumps blood through the body?", "the heart", ["the lungs", "the skin", "the stomach"]),
    ("What force pulls objects toward the ground?", "gravity", ["magnetism", "friction", "wind"]),
    ("What do we call an animal that eats only plants?", "a herbivore", ["a carnivore", "a predator",
                                                                        "a scavenger"]),
    ("Which star gives Earth its daylight?", "the Sun", ["the Moon", "Sirius", "the North Star"]),
    ("What part of a plant grows underground and takes in water?", "the roots", ["the petals", "the flowers",
                                                                                 "the fruit"]),
    ("What is the boiling point of water at sea level in Celsius?", "100 degrees", ["10 degrees", "50 degrees",
                                                                                    "500 degrees"]),
    ("Which sense do we use our ears for?", "hearing", ["smell", "taste", "sight"]),
    ("What do caterpillars turn into?", "butterflies", ["spiders", "beetles", "snails"]),
    ("What do we breathe in to stay alive?", "oxygen", ["gold", "salt", "iron"]),
    ("Which body part do we use to see?", "the eyes", ["the knees", "the elbows", "the toes"]),
    ("What is the large natural satellite that orbits Earth?", "the Moon", ["Mars", "Venus", "the Sun"]),
    ("What is the hardest natural material?", "diamond", ["chalk", "butter", "clay"]),
    ("What do fish use to breathe under water?", "gills", ["wings", "feathers", "horns"]),
    ("What kind of animal is a frog?", "an amphibian", ["a bird", "a mammal", "an insect"]),
    ("What is the color of a clear daytime sky?", "blue", ["purple", "black", "brown"]),
    ("Which metal is attracted by a magnet?", "iron", ["glass", "wood", "plastic"]),
]
GEOGRAPHY = [
    ("What is the capital of France?", "Paris", ["Berlin", "Madrid", "Rome"]),
    ("What is the capital of Japan?", "Tokyo", ["Beijing", "Seoul", "Bangkok"]),
    ("What is the capital of Italy?", "Rome", ["Paris", "Vienna", "Lisbon"]),
    ("What is the capital of Germany?", "Berlin", ["Munich", "Zurich", "Prague"]),
    ("What is the capital of Spain?", "Madrid", ["Lisbon", "Athens", "Dublin"]),
    ("What is the capital of the United Kingdom?", "London", ["Edinburgh", "Dublin", "Oslo"]),
    ("What is the capital of Canada?", "Ottawa", ["Toronto", "Chicago", "Boston"]),
    ("What is the capital of Egypt?", "Cairo", ["Nairobi", "Lagos", "Tunis"]),
    ("What is the capital of Russia?", "Moscow", ["Warsaw", "Kyiv", "Riga"]),
    ("What is the capital of China?", "Beijing", ["Tokyo", "Hanoi", "Manila"]),
    ("On which continent is Brazil?", "South America", ["Europe", "Asia", "Africa"]),
    ("On which continent is Kenya?", "Africa", ["Europe", "Australia", "South America"]),
    ("Which ocean lies between Europe and North America?", "the Atlantic Ocean", ["the Indian Ocean",
                                                                                  "the Arctic Ocean",
                                                                                  "the Southern Ocean"]),
    ("What is the largest ocean on Earth?", "the Pacific Ocean", ["the Atlantic Ocean", "the Indian Ocean",
                                                                  "the Arctic Ocean"]),
    ("Which country is famous for the pyramids of Giza?", "Egypt", ["Norway", "Canada", "Chile"]),
    ("In which country is the city of Sydney?", "Australia", ["Austria", "Argentina", "India"]),
    ("Which river flows through London?", "the Thames", ["the Nile", "the Amazon", "the Danube"]),
    ("What is the capital of Greece?", "Athens", ["Sparta", "Sofia", "Belgrade"]),
    ("In which country is the Eiffel Tower?", "France", ["Italy", "Belgium", "Spain"]),
    ("What is the largest desert in Africa?", "the Sahara", ["the Gobi", "the Atacama", "the Mojave"]),
]
UNITS = [
    ("How many centimeters are in one meter?", "100", ["10", "1000", "12"]),
    ("How many grams are in one kilogram?", "1000", ["100", "10", "60"]),
    ("How many minutes are in one hour?", "60", ["100", "24", "30"]),
    ("How many seconds are in one minute?", "60", ["100", "12", "24"]),
    ("How many hours are in one day?", "24", ["12", "60", "100"]),
    ("How many days are in one week?", "7", ["5", "10", "12"]),
    ("How many months are in one year?", "12", ["10", "7", "52"]),
    ("How many meters are in one kilometer?", "1000", ["100", "10", "60"]),
    ("How many millimeters are in one centimeter?", "10", ["100", "1000", "60"]),
    ("How many milliliters are in one liter?", "1000", ["100", "10", "12"]),
    ("Which unit measures temperature?", "degrees Celsius", ["kilograms", "meters", "liters"]),
    ("Which unit measures the weight of a bag of flour?", "kilograms", ["meters", "seconds", "degrees"]),
    ("Which unit measures the length of a road?", "kilometers", ["liters", "grams", "hours"]),
    ("Which unit measures the volume of milk in a bottle?", "liters", ["meters", "grams", "volts"]),
    ("Which unit measures how long a movie lasts?", "minutes", ["kilograms", "meters", "liters"]),
    ("How many days are in a leap year?", "366", ["365", "360", "400"]),
    ("How many weeks are in one year, roughly?", "52", ["12", "100", "365"]),
    ("How many sides does a triangle have?", "3", ["4", "5", "6"]),
    ("How many sides does a square have?", "4", ["3", "5", "8"]),
    ("How many legs does a spider have?", "8", ["6", "4", "10"]),
]
WORDS = [
    ("What is the opposite of hot?", "cold", ["warm", "spicy", "bright"]),
    ("What is the opposite of up?", "down", ["left", "over", "high"]),
    ("What is the opposite of happy?", "sad", ["glad", "funny", "calm"]),
    ("What is the opposite of early?", "late", ["soon", "quick", "first"]),
    ("What is the opposite of big?", "small", ["huge", "tall", "wide"]),
    ("What is a word that means the same as big?", "large", ["tiny", "thin", "short"]),
    ("What is a word that means the same as fast?", "quick", ["slow", "heavy", "quiet"]),
    ("What is a word that means the same as begin?", "start", ["finish", "stop", "forget"]),
    ("What is a word that means the same as difficult?", "hard", ["easy", "soft", "simple"]),
    ("What is a word that means the same as shut?", "close", ["open", "throw", "lift"]),
    ("What do you call a baby dog?", "a puppy", ["a kitten", "a calf", "a chick"]),
    ("What do you call a baby cat?", "a kitten", ["a puppy", "a foal", "a lamb"]),
    ("What do you call a person who writes books?", "an author", ["a pilot", "a baker", "a plumber"]),
    ("What do you call a person who flies airplanes?", "a pilot", ["a farmer", "a dentist", "a tailor"]),
    ("What do you call a person who treats sick animals?", "a veterinarian", ["a librarian", "an architect",
                                                                              "a cashier"]),
    ("What is the plural of mouse?", "mice", ["mouses", "meese", "mousen"]),
    ("What is the plural of child?", "children", ["childs", "childes", "childern"]),
    ("What is the past tense of go?", "went", ["goed", "gone", "going"]),
    ("What is the past tense of eat?", "ate", ["eated", "eaten", "eating"]),
    ("Which word is a color?", "green", ["table", "run", "seven"]),
]
COMMON_SENSE = [
    ("If you drop a glass on a stone floor, what usually happens?", "it breaks", ["it floats", "it grows",
                                                                                  "it sings"]),
    ("What do people usually use to cut paper?", "scissors", ["a spoon", "a pillow", "a sponge"]),
    ("Where do people usually keep milk cold at home?", "in the fridge", ["in the oven", "in the closet",
                                                                          "under the bed"]),
    ("What should you take when it is raining outside?", "an umbrella", ["sunglasses", "a candle",
                                                                         "a shovel"]),
    ("What do you use to unlock a door?", "a key", ["a fork", "a coin", "a ruler"]),
    ("If a plant gets no water for weeks, what happens?", "it dries out", ["it grows faster", "it turns blue",
                                                                           "it starts to sing"]),
    ("Why do people wear coats in winter?", "to stay warm", ["to stay wet", "to run faster",
                                                             "to see better"]),
    ("What do you do with a toothbrush?", "brush your teeth", ["comb your hair", "paint a wall",
                                                               "wash the car"]),
    ("Where do you go to borrow books?", "a library", ["a bakery", "a garage", "a stadium"]),
    ("What happens to ice cream left in the sun?", "it melts", ["it freezes", "it grows", "it hardens"]),
    ("What do people use to see in the dark?", "a flashlight", ["a blanket", "a sandwich", "a radio"]),
    ("What do you need to send a letter by post?", "a stamp", ["a ladder", "a helmet", "a candle"]),
    ("Where do airplanes take off and land?", "at an airport", ["at a farm", "at a library", "at a pool"]),
    ("What do you wear on your feet?", "shoes", ["gloves", "hats", "scarves"]),
    ("What do people use to pay in a shop?", "money", ["leaves", "stones", "feathers"]),
    ("What do you do when you are tired at night?", "go to sleep", ["go swimming", "start cooking",
                                                                    "paint the house"]),
    ("Where do fish live?", "in water", ["in trees", "in the desert", "in the clouds"]),
    ("What do you use to write on a blackboard?", "chalk", ["soap", "butter", "glue"]),
    ("What do firefighters put out?", "fires", ["lights", "books", "flowers"]),
    ("What do people plant to grow a tree?", "a seed", ["a coin", "a rock", "a spoon"]),
]
COMPUTING = [
    ("What device is used to type letters into a computer?", "a keyboard", ["a speaker", "a monitor",
                                                                            "a printer"]),
    ("What device shows pictures from a computer?", "a monitor", ["a keyboard", "a mouse", "a microphone"]),
    ("What do you use to move the pointer on a computer screen?", "a mouse", ["a printer", "a speaker",
                                                                              "a scanner"]),
    ("What does a printer do?", "puts text on paper", ["plays music", "records video", "cools the computer"]),
    ("How many bits are in one byte?", "8", ["2", "16", "10"]),
    ("Which number system uses only 0 and 1?", "binary", ["decimal", "roman", "hexadecimal"]),
    ("What is a password used for?", "keeping an account private", ["making the screen brighter",
                                                                     "printing faster",
                                                                     "charging the battery"]),
    ("What does the internet connect?", "computers around the world", ["rivers and lakes", "trains and buses",
                                                                       "plants and animals"]),
    ("What is a web browser used for?", "viewing websites", ["cooking food", "washing clothes",
                                                             "fixing cars"]),
    ("What is email used for?", "sending messages", ["cutting paper", "boiling water", "measuring rain"]),
    ("Which key makes a space between words?", "the space bar", ["the escape key", "the delete key",
                                                                 "the shift key"]),
    ("What does saving a file do?", "keeps it for later", ["deletes it", "prints it", "hides the screen"]),
    ("What is a large collection of organized data called?", "a database", ["a keyboard", "a cable",
                                                                            "a speaker"]),
    ("What is a list of steps to solve a problem called?", "an algorithm", ["a monitor", "a battery",
                                                                            "a cable"]),
    ("Which language is widely used to write programs?", "Python", ["Latin", "Morse", "Braille"]),
    ("What is the brain of a computer called?", "the processor", ["the mouse pad", "the screen",
                                                                  "the power cable"]),
    ("What does RAM in a computer hold while it runs?", "working memory", ["paper", "ink", "water"]),
    ("What do you call a mistake in a computer program?", "a bug", ["a leaf", "a brick", "a wave"]),
    ("What does Wi-Fi let a laptop do?", "connect without cables", ["fly", "print money", "cook meals"]),
    ("What is a file that holds a photo called?", "an image file", ["a sound file", "a font", "a battery"]),
]


def arithmetic(rng: random.Random, n: int) -> list[tuple]:
    """Small word problems with whole-number answers; distractors are near misses."""
    items, names = [], ["Ana", "Ben", "Chloe", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun"]
    things = ["apples", "pencils", "stickers", "marbles", "cookies", "books", "stamps", "shells"]
    seen = set()
    while len(items) < n:
        kind = len(items) % 4
        name, thing = rng.choice(names), rng.choice(things)
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        if kind == 0:
            q, ans = f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?", a + b
        elif kind == 1:
            a += b
            q, ans = f"{name} has {a} {thing} and gives away {b}. How many {thing} are left?", a - b
        elif kind == 2:
            q, ans = f"There are {a} boxes with {b} {thing} in each box. How many {thing} are there in all?", a * b
        else:
            total = a * b
            q, ans = f"{name} shares {total} {thing} equally among {a} friends. How many does each friend get?", b
        if q in seen:
            continue
        seen.add(q)
        wrong = sorted({ans + 1, ans - 1, ans + 2, ans + 10} - {ans})
        rng.shuffle(wrong)
        items.append((q, str(ans), [str(w) for w in wrong[:3]]))
    return items


def calendar(rng: random.Random, n: int) -> list[tuple]:
    days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December"]
    items, seen = [], set()
    while len(items) < n:
        kind = len(items) % 4
        if kind == 0:
            i = rng.randrange(7)
            q, ans = f"If today is {days[i]}, what day is tomorrow?", days[(i + 1) % 7]
            pool = days
        elif kind == 1:
            i = rng.randrange(7)
            q, ans = f"If today is {days[i]}, what day was yesterday?", days[(i - 1) % 7]
            pool = days
        elif kind == 2:
            i = rng.randrange(12)
            q, ans = f"Which month comes right after {months[i]}?", months[(i + 1) % 12]
            pool = months
        else:
            i = rng.randrange(12)
            q, ans = f"Which month comes right before {months[i]}?", months[(i - 1) % 12]
            pool = months
        if q in seen:
            continue
        seen.add(q)
        wrong = [x for x in pool if x != ans and x not in q]
        items.append((q, ans, rng.sample(wrong, 3)))
    return items


def main() -> None:
    rng = random.Random(SEED)
    groups = {"science": SCIENCE, "geography": GEOGRAPHY, "units": UNITS, "words": WORDS,
              "common_sense": COMMON_SENSE, "computing": COMPUTING, "arithmetic": arithmetic(rng, 20),
              "calendar": calendar(rng, 20)}
    total = sum(len(v) for v in groups.values())
    positions = [i % 4 for i in range(total)]  # each answer position equally often
    rng.shuffle(positions)
    lines, k = [], 0
    for category, items in groups.items():
        for n, (question, right, wrong) in enumerate(items, 1):
            assert len(set([right, *wrong])) == 4, question
            choices = list(wrong)
            rng.shuffle(choices)
            choices.insert(positions[k], right)
            lines.append(json.dumps({"id": f"{category}-{n}", "category": category, "question": question,
                                     "choices": choices, "answer": positions[k]}, ensure_ascii=False))
            k += 1
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} questions to {OUT}")


if __name__ == "__main__":
    main()
