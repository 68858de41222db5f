"""Build corpus.txt for aligngym's tokenizer and tiny reference model.

Run with:  python envs/data/build_corpus.py

Standard library only and fully deterministic (fixed seed, no iteration over
sets). All vocabulary and templates below were written for aligngym. The
script also folds in the *train* split of the task files that sit next to it
(sentiment, keywords, similarity, preference prompts and pairs); test rows
are never read into the corpus.

Sections: review continuations (positive, negative, mixed), everyday
sentences built from common concept words, plain statements with
paraphrases, one-line "Q: ... A: ..." answers, and simple color and number
words. Lines are de-duplicated and shuffled with the same fixed seed.

It then splits the corpus by document (see ``document_split``) and writes
``corpus_split.json``: the held-out documents that the reference LM never
trains on and is evaluated on (``agents/pretrain_reference.py``).
"""

import hashlib
import json
import os
import random
import re

SEED = 1234
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus.txt")
SPLIT_OUT = os.path.join(HERE, "corpus_split.json")
#: seed and share of lines of the document split (held-out documents are drawn until this share of lines)
SPLIT_SEED = 20261130
EVAL_FRACTION = 0.05

# Number of generated lines per section (task-file lines are added on top).
TARGETS = {
    "reviews": 2700,
    "prompt_continuations": 700,
    "concepts": 1700,
    "paraphrases": 800,
    "qa": 900,
    "colors_numbers": 550,
}


def cap(s):
    return s[:1].upper() + s[1:] if s else s


def load_jsonl(name):
    path = os.path.join(HERE, name)
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


# ---------------------------------------------------------------------------
# Reviews
# ---------------------------------------------------------------------------

DOMAINS = {
    "hotel": {
        "items": ["hotel", "inn", "resort", "guesthouse", "motel", "bed and breakfast", "hostel", "beach hotel"],
        "aspects": ["the room", "the bed", "the staff", "the breakfast", "the location", "the view",
                    "the bathroom", "the pool", "the lobby", "the wifi", "the check-in", "the front desk",
                    "the parking", "the gym", "the shower", "the pillows", "the towels", "the air conditioning",
                    "the balcony", "the room service"],
        "did": ["We stayed at this {item} {when}", "I booked this {item} {when}",
                "My family spent three nights at this {item} {when}", "We checked into this {item} {when}"],
        "experience": "stay",
        "again": ["stay here again", "book this place again", "come back here"],
    },
    "restaurant": {
        "items": ["restaurant", "cafe", "diner", "bistro", "pizza place", "noodle bar", "bakery",
                  "steakhouse", "taco stand", "sushi bar", "tea room", "burger joint"],
        "aspects": ["the food", "the service", "the soup", "the dessert", "the pasta", "the burger",
                    "the coffee", "the waiter", "the menu", "the portions", "the atmosphere", "the music",
                    "the bread", "the prices", "the salad", "the curry", "the fries", "the pizza",
                    "the wine list", "the seating"],
        "did": ["We had dinner at this {item} {when}", "I had lunch at this {item} {when}",
                "We tried this {item} {when}", "A friend took me to this {item} {when}"],
        "experience": "meal",
        "again": ["eat here again", "come back for dinner", "order from them again"],
    },
    "movie": {
        "items": ["film", "movie", "sequel", "comedy", "thriller", "documentary", "drama",
                  "horror film", "animated film", "romantic comedy", "war film", "mini series"],
        "aspects": ["the plot", "the acting", "the ending", "the soundtrack", "the dialogue",
                    "the lead actor", "the villain", "the pacing", "the special effects", "the opening scene",
                    "the script", "the camera work", "the cast", "the humor", "the second half",
                    "the costumes", "the final scene", "the story"],
        "did": ["I watched this {item} {when}", "We saw this {item} at the cinema {when}",
                "I streamed this {item} {when}", "My friends and I watched this {item} {when}"],
        "experience": "film",
        "again": ["watch it again", "sit through it a second time", "recommend it to friends"],
    },
    "book": {
        "items": ["book", "novel", "memoir", "mystery", "cookbook", "biography", "short story collection",
                  "fantasy novel", "history book", "travel guide", "poetry collection", "thriller"],
        "aspects": ["the plot", "the writing", "the characters", "the ending", "the first chapter",
                    "the main character", "the dialogue", "the pacing", "the cover", "the world building",
                    "the last few chapters", "the prose", "the middle section", "the recipes", "the photos",
                    "the research", "the narrator"],
        "did": ["I read this {item} {when}", "I finished this {item} {when}",
                "I borrowed this {item} from the library {when}", "My book club picked this {item} {when}"],
        "experience": "book",
        "again": ["read it again", "pick up the next one", "lend it to a friend"],
    },
    "product": {
        "items": ["blender", "vacuum cleaner", "laptop", "phone", "coffee maker", "toaster", "backpack",
                  "desk chair", "kettle", "camera", "printer", "tent", "frying pan", "lamp", "keyboard",
                  "smart watch", "rice cooker", "hair dryer", "electric toothbrush", "suitcase", "monitor",
                  "mattress", "space heater", "board game"],
        "aspects": ["the battery", "the build quality", "the price", "the design", "the instructions",
                    "the sound", "the handle", "the screen", "the motor", "the cord", "the lid",
                    "the buttons", "the packaging", "the warranty", "the customer service", "the zipper",
                    "the charger", "the setup", "the finish", "the wheels"],
        "did": ["I bought this {item} {when}", "I ordered this {item} online {when}",
                "My partner gave me this {item} {when}", "I replaced my old {item} with this one {when}"],
        "experience": "purchase",
        "again": ["buy it again", "order another one", "recommend it to my friends"],
    },
}

PLURAL_ASPECTS = ["the portions", "the prices", "the special effects", "the characters", "the buttons",
                  "the last few chapters", "the fries", "the pillows", "the towels", "the recipes",
                  "the photos", "the costumes", "the instructions", "the wheels"]

WHEN = ["last week", "over the weekend", "last night", "on a rainy Tuesday", "for my birthday",
        "after a long day at work", "last month", "on our anniversary", "during the holidays",
        "a few days ago", "earlier this year", "on a whim", "on a friend's recommendation",
        "last summer", "this spring", "during a business trip"]

POS_ADJ = ["excellent", "wonderful", "great", "lovely", "fantastic", "delightful", "impressive",
           "superb", "pleasant", "solid", "outstanding", "charming", "brilliant", "memorable",
           "enjoyable", "thoughtful", "polished", "satisfying", "reliable", "terrific"]
NEG_ADJ = ["terrible", "awful", "disappointing", "poor", "mediocre", "frustrating", "underwhelming",
           "forgettable", "sloppy", "weak", "bland", "annoying", "lackluster", "uninspired", "second-rate",
           "overpriced", "confusing", "dull", "careless", "unreliable"]
MIX_ADJ = ["okay", "fine", "decent", "average", "acceptable", "passable", "uneven", "ordinary",
           "reasonable", "adequate"]
INTENS_POS = ["", "", "really ", "very ", "truly ", "surprisingly ", "genuinely ", "quite ", "pretty "]
INTENS_NEG = ["", "", "really ", "very ", "pretty ", "rather ", "honestly ", "quite ", "frankly "]
INTENS_MIX = ["", "", "just ", "mostly ", "fairly ", "more or less "]

POS_CLAUSE = [
    "it was better than I expected", "I enjoyed every minute of it", "I would happily recommend it",
    "everything worked just as promised", "I left in a great mood", "it exceeded my expectations",
    "it was worth every penny", "I was pleasantly surprised", "I have no complaints at all",
    "it turned out to be a real highlight", "I would gladly do it again", "it made my whole week",
    "the quality really shows", "it felt like good value for the money", "I was impressed from the start",
    "it has quickly become a favorite", "I cannot think of anything to improve",
    "the whole experience felt easy and relaxed", "my family loved it too", "it was a joy from beginning to end",
]
NEG_CLAUSE = [
    "it was a complete waste of money", "I was disappointed from the start", "I regret choosing it",
    "nothing went the way it should have", "I would not recommend it to anyone", "it fell apart far too quickly",
    "I felt let down", "it was hard to stay interested", "I asked for a refund", "it never lived up to the hype",
    "the problems kept piling up", "I gave up halfway through", "it was noisy and unpleasant",
    "the whole thing felt rushed and careless", "I will not be going back", "it broke within a week",
    "I expected much more for the price", "it left a bad taste in my mouth", "I was bored most of the time",
    "I could not wait for it to be over",
]
MIX_CLAUSE = [
    "it was fine, though nothing special", "some parts were great and others were dull",
    "I liked it more than I expected, despite a few problems", "it had its moments, but it also had flaws",
    "I am still not sure how I feel about it", "it did the job, but only just",
    "the good parts almost made up for the bad ones", "it was pleasant enough, if a little forgettable",
    "I enjoyed the start, but the rest felt uneven", "it was neither great nor terrible",
    "it works well most of the time, though not always", "I would give it three stars out of five",
    "it was good value, even if it was far from perfect", "I had mixed feelings by the end",
]
POS_PRED = ["turned out to be a pleasant surprise.", "made the whole thing worthwhile.",
            "exceeded my expectations.", "was the best part of the experience.",
            "impressed everyone in our group.", "felt carefully made.", "was a real treat.",
            "worked perfectly from day one.", "stood out in a good way."]
NEG_PRED = ["left a lot to be desired.", "could have been much better.", "did not live up to the hype.",
            "was a real letdown.", "ruined the experience for me.", "felt cheap and rushed.",
            "was the weakest part by far.", "caused problems almost right away.",
            "made me wish I had chosen something else."]
MIX_PRED = ["felt a bit uneven.", "was fine but forgettable.", "had good and bad moments.",
            "was better in some places than others.", "was okay, though nothing special.",
            "did its job, more or less.", "was decent, if a little dull."]
ADJ_PHRASE_POS = ["excellent", "lovely", "better than expected", "a pleasant surprise", "spotless and bright",
                  "clean and comfortable", "genuinely good", "far better than the photos suggested",
                  "great from start to finish", "perfectly fine and then some", "warm and welcoming"]
ADJ_PHRASE_NEG = ["disappointing", "a real letdown", "awful", "cramped and noisy", "worse than I feared",
                  "tired and a bit dirty", "overpriced for what it was", "poor in almost every way",
                  "frustrating from the start", "cheap and flimsy"]
ADJ_PHRASE_MIX = ["just okay", "fine but forgettable", "good, though not perfect", "average at best",
                  "decent enough", "better than some and worse than others", "a little uneven",
                  "okay for the price", "nice in places but dull in others"]
POS_CLOSERS = ["Five stars from me.", "Highly recommended.", "I will be back soon.", "Worth it.",
               "A great choice overall.", "I would give it full marks.", "Can't wait to return."]
NEG_CLOSERS = ["One star.", "Avoid it.", "Not recommended.", "Save your money.", "Never again.",
               "What a disappointment.", "I expected so much better."]
MIX_CLOSERS = ["Three stars.", "It was okay.", "Worth a try, maybe.", "Not bad, not great.",
               "Your mileage may vary.", "Fine for one visit.", "Good in parts."]


EXTREME = ["excellent", "wonderful", "fantastic", "superb", "outstanding", "brilliant", "terrific",
           "terrible", "awful"]


def grade(rng, intens, adjs):
    adj = rng.choice(adjs)
    if adj in EXTREME:
        return adj
    return rng.choice(intens) + adj


def be(aspect, tense="past"):
    plural = aspect in PLURAL_ASPECTS
    if tense == "past":
        return "were" if plural else "was"
    return "are" if plural else "is"


def review_line(rng):
    dname = rng.choice(list(DOMAINS))
    d = DOMAINS[dname]
    item = rng.choice(d["items"])
    a1, a2 = rng.sample(d["aspects"], 2)
    mood = rng.choice(["pos", "pos", "neg", "neg", "mix", "mix", "mix"])
    pos = grade(rng, INTENS_POS, POS_ADJ)
    pos2 = grade(rng, INTENS_POS, POS_ADJ)
    neg = grade(rng, INTENS_NEG, NEG_ADJ)
    neg2 = grade(rng, INTENS_NEG, NEG_ADJ)
    mixa = grade(rng, INTENS_MIX, MIX_ADJ)
    did = rng.choice(d["did"]).format(item=item, when=rng.choice(WHEN))
    again = rng.choice(d["again"])
    exp = d["experience"]
    if mood == "pos":
        temps = [
            f"{cap(a1)} {be(a1)} {pos}, and {a2} {be(a2)} {pos2}.",
            f"{did} and {rng.choice(POS_CLAUSE)}.",
            f"{did}, and {a1} {be(a1)} {pos}.",
            f"Honestly, {a1} {be(a1)} the best part of the whole {exp}.",
            f"{cap(a1)} {be(a1)} {pos}, so I would definitely {again}.",
            f"I was not expecting much, but {a1} {be(a1)} {pos} and {rng.choice(POS_CLAUSE)}.",
            f"This {item} is {pos}. {cap(a1)} {be(a1, 'present')} {rng.choice(POS_ADJ)}.",
            f"{did}. {cap(a1)} {be(a1)} {pos}, and {rng.choice(POS_CLAUSE)}. {rng.choice(POS_CLOSERS)}",
            f"From the moment we arrived, {a1} {be(a1)} {pos}.",
            f"The {item} was {pos}, and I would {again} without a second thought.",
            f"{cap(a1)} {rng.choice(POS_PRED)}",
            f"Everything about this {item} was {pos}, especially {a1}.",
        ]
    elif mood == "neg":
        temps = [
            f"{cap(a1)} {be(a1)} {neg}, and {a2} {be(a2)} not much better.",
            f"{did} and {rng.choice(NEG_CLAUSE)}.",
            f"Sadly, {a1} {be(a1)} {neg}, so I would not {again}.",
            f"{did}, but {a1} {be(a1)} {neg}.",
            f"I wanted to like this {item}, but {a1} {be(a1)} {neg} and {rng.choice(NEG_CLAUSE)}.",
            f"{cap(a1)} {be(a1)} {neg}. {cap(a2)} {be(a2)} {neg2}. {rng.choice(NEG_CLOSERS)}",
            f"This {item} was {neg} from the start.",
            f"{cap(a1)} {rng.choice(NEG_PRED)}",
            f"{did}. {cap(a1)} {be(a1)} {neg}, and {rng.choice(NEG_CLAUSE)}.",
            f"Between {a1} and {a2}, the whole {exp} felt {neg}.",
            f"I would not {again}, because {a1} {be(a1)} {neg}.",
        ]
    else:
        temps = [
            f"{cap(a1)} {be(a1)} {pos}, but {a2} {be(a2)} {neg}.",
            f"{cap(a1)} {be(a1)} {neg}, although {a2} {be(a2)} {pos}.",
            f"Overall the {item} was {mixa}: {a1} {be(a1)} {pos}, while {a2} {be(a2)} {neg}.",
            f"{did}, and {rng.choice(MIX_CLAUSE)}.",
            f"The {exp} was {mixa}. {cap(a1)} {be(a1)} {pos}, but {a2} {rng.choice(NEG_PRED)}",
            f"{cap(a1)} {rng.choice(MIX_PRED)}",
            f"I have mixed feelings about this {item}, since {a1} {be(a1)} {pos} and {a2} {be(a2)} {neg}.",
            f"{did}. {cap(rng.choice(MIX_CLAUSE))}. {rng.choice(MIX_CLOSERS)}",
            f"It was {mixa} overall, and I might {again} some day.",
            f"{cap(a1)} {be(a1)} {pos}, yet {a2} {be(a2)} {neg}, so it evens out.",
            f"Parts of the {exp} were {pos}, but {a2} {be(a2)} {neg}.",
        ]
    return rng.choice(temps)


CLAUSE_ENDERS = ["and", "but", "although", "though", "since", "because", "yet", "so", "while"]
ADJ_ENDERS = ["was", "were", "is", "are", "felt", "seemed"]
SKIP_ENDERS = ["when", "then", "that", "about", "to", "of", "for", "with", "at", "in", "from", "by", "after", "until"]


def continue_prompt(rng, prompt):
    last = prompt.rstrip(",").split()[-1].lower()
    mood = rng.choice(["pos", "neg", "mix"])
    if prompt.endswith(",") or last in CLAUSE_ENDERS:
        pool = {"pos": POS_CLAUSE, "neg": NEG_CLAUSE, "mix": MIX_CLAUSE}[mood]
        return f"{prompt} {rng.choice(pool)}."
    if last in ADJ_ENDERS:
        pool = {"pos": ADJ_PHRASE_POS, "neg": ADJ_PHRASE_NEG, "mix": ADJ_PHRASE_MIX}[mood]
        tail = {"pos": POS_CLAUSE, "neg": NEG_CLAUSE, "mix": MIX_CLAUSE}[mood]
        if rng.random() < 0.5:
            return f"{prompt} {rng.choice(pool)}, and {rng.choice(tail)}."
        return f"{prompt} {rng.choice(pool)}."
    if last == "which":
        pool = {"pos": POS_PRED, "neg": NEG_PRED, "mix": MIX_PRED}[mood]
        return f"{prompt} {rng.choice(pool)}"
    if last in SKIP_ENDERS:
        return None
    pool = {"pos": POS_PRED, "neg": NEG_PRED, "mix": MIX_PRED}[mood]
    return f"{prompt} {rng.choice(pool)}"


# ---------------------------------------------------------------------------
# Everyday concept sentences
# ---------------------------------------------------------------------------

PEOPLE_S = [("the boy", "he"), ("the girl", "she"), ("my sister", "she"), ("my brother", "he"),
            ("our neighbor", "she"), ("the old man", "he"), ("a young woman", "she"), ("the teacher", "she"),
            ("the farmer", "he"), ("the chef", "he"), ("my friend", "she"), ("the child", "she"),
            ("grandma", "she"), ("my dad", "he"), ("my mom", "she"), ("the student", "he"),
            ("a tourist", "she"), ("the coach", "he"), ("my uncle", "he"), ("the nurse", "she"),
            ("my cousin", "he"), ("the baker", "she"), ("a little boy", "he"), ("my aunt", "she"),
            ("the mail carrier", "he"), ("our teacher", "he"), ("the painter", "she")]
PEOPLE_P = ["we", "they", "the kids", "my parents", "the students", "our friends", "the neighbors",
            "my grandparents", "the children", "the twins", "my classmates", "the tourists"]
ANIMALS = [("the dog", "dog"), ("the puppy", "dog"), ("our cat", "cat"), ("the kitten", "cat"),
           ("a black dog", "dog"), ("the old cat", "cat"), ("my dog", "dog")]

# base, third person, past, -ing, objects, places, who ("p" people, "a" animals)
ACTIONS = [
    ("kick", "kicks", "kicked", "kicking", ["the ball", "a stone", "the door shut"], ["in the park", "across the field", "in the yard"], "p"),
    ("throw", "throws", "threw", "throwing", ["the ball", "a frisbee", "a stick", "a snowball"], ["in the park", "across the yard", "on the beach"], "p"),
    ("catch", "catches", "caught", "catching", ["the ball", "a frisbee", "the bus", "a fish"], ["in the park", "by the lake", "on the beach", ""], "p"),
    ("ride", "rides", "rode", "riding", ["a bike", "a horse", "the bus", "a scooter", "the train"], ["to school", "to work", "into town", "every day", ""], "p"),
    ("cook", "cooks", "cooked", "cooking", ["dinner", "breakfast", "a big pot of soup", "rice", "pasta", "eggs"], ["in the kitchen", "at home", "for the family", "on the stove"], "p"),
    ("bake", "bakes", "baked", "baking", ["a cake", "bread", "cookies", "a pie", "muffins"], ["in the kitchen", "for the party", "in the oven", "on Sunday"], "p"),
    ("wash", "washes", "washed", "washing", ["the dishes", "the car", "the windows", "the dog", "the vegetables"], ["after dinner", "on Sunday", "carefully", ""], "p"),
    ("read", "reads", "read", "reading", ["a book", "the newspaper", "a letter", "a story", "the map", "a magazine"], ["in bed", "on the train", "in the library", "on the porch", "at the table"], "p"),
    ("paint", "paints", "painted", "painting", ["the fence", "the kitchen wall", "a picture", "the door", "a bird house"], ["in the garden", "on the weekend", "in the garage", ""], "p"),
    ("plant", "plants", "planted", "planting", ["tomatoes", "flowers", "a tree", "seeds", "carrots"], ["in the garden", "by the fence", "in the backyard", "in a pot"], "p"),
    ("water", "waters", "watered", "watering", ["the plants", "the garden", "the flowers", "the lawn"], ["in the morning", "every evening", "with a hose", ""], "p"),
    ("climb", "climbs", "climbed", "climbing", ["the tree", "the hill", "the stairs", "the mountain", "a ladder"], ["slowly", "with friends", "on Sunday", ""], "p"),
    ("play", "plays", "played", "playing", ["the guitar", "soccer", "a board game", "the piano", "tennis", "cards"], ["after school", "with friends", "on weekends", "in the evening"], "p"),
    ("sing", "sings", "sang", "singing", ["a song", "a lullaby", "in the choir", "along with the radio"], ["in the shower", "at the party", "on the stage", "in the car"], "p"),
    ("walk", "walks", "walked", "walking", ["the dog", "to the store", "along the beach", "home", "to the park"], ["in the evening", "after lunch", "in the rain", ""], "p"),
    ("sweep", "sweeps", "swept", "sweeping", ["the floor", "the porch", "the kitchen", "the sidewalk"], ["with a broom", "before the guests arrive", "every morning", ""], "p"),
    ("fix", "fixes", "fixed", "fixing", ["the bike", "the leaking tap", "the broken chair", "the fence", "the lamp"], ["in the garage", "with a screwdriver", "on Saturday", ""], "p"),
    ("carry", "carries", "carried", "carrying", ["the groceries", "a heavy box", "the baby", "a basket of apples"], ["up the stairs", "to the car", "into the house", "across the street"], "p"),
    ("buy", "buys", "bought", "buying", ["fresh bread", "a new coat", "vegetables", "a ticket", "flowers"], ["at the market", "at the corner shop", "in town", "online"], "p"),
    ("pack", "packs", "packed", "packing", ["a lunch", "a suitcase", "the car", "a picnic basket"], ["for the trip", "the night before", "in a hurry", ""], "p"),
    ("drive", "drives", "drove", "driving", ["the truck", "the car", "the van", "the old tractor"], ["into town", "along the coast", "to the station", "down the quiet road"], "p"),
    ("clean", "cleans", "cleaned", "cleaning", ["the kitchen", "the bathroom", "the windows", "the oven", "the garage"], ["on Saturday", "before the party", "every week", ""], "p"),
    ("fold", "folds", "folded", "folding", ["the laundry", "the towels", "a paper airplane", "the blankets"], ["on the bed", "after dinner", "on the couch", ""], "p"),
    ("pick", "picks", "picked", "picking", ["apples", "strawberries", "flowers", "tomatoes"], ["in the orchard", "in the garden", "at the farm", "by the road"], "p"),
    ("swim", "swims", "swam", "swimming", ["in the lake", "in the pool", "in the sea", "across the river"], ["every summer", "in the morning", "after work", ""], "p"),
    ("fly", "flies", "flew", "flying", ["a kite", "a paper plane", "a toy drone"], ["on the beach", "in the park", "on the hill", ""], "p"),
    ("draw", "draws", "drew", "drawing", ["a picture", "a map", "a cat", "the house", "a flower"], ["with crayons", "in a notebook", "on the sidewalk", ""], "p"),
    ("write", "writes", "wrote", "writing", ["a letter", "a story", "a shopping list", "a poem", "an email"], ["at the desk", "on the train", "before bed", ""], "p"),
    ("build", "builds", "built", "building", ["a sandcastle", "a snowman", "a tree house", "a fire", "a shelf"], ["with friends", "on the weekend", "in one afternoon", ""], "p"),
    ("chop", "chops", "chopped", "chopping", ["onions", "carrots", "garlic", "the vegetables"], ["in the kitchen", "for the soup", "for dinner", ""], "p"),
    ("feed", "feeds", "fed", "feeding", ["the cat", "the ducks", "the chickens", "the fish", "the goats"], ["in the morning", "by the pond", "at the farm", ""], "p"),
    ("visit", "visits", "visited", "visiting", ["grandma", "the museum", "the zoo", "an old friend", "the beach"], ["on Sunday", "in the summer", "last weekend", ""], "p"),
    ("open", "opens", "opened", "opening", ["the window", "the door", "a present", "the umbrella", "the shop"], ["in the morning", "with a smile", "", ""], "p"),
    ("hang", "hangs", "hung", "hanging", ["the laundry", "a picture", "the coat", "a lamp"], ["carefully", "before the guests arrive", "", ""], "p"),
    ("dig", "digs", "dug", "digging", ["a hole", "in the sand", "in the garden", "up the potatoes"], ["with a shovel", "all afternoon", "", ""], "p"),
    ("sell", "sells", "sold", "selling", ["fresh eggs", "old books", "lemonade", "vegetables"], ["at the market", "by the road", "outside the house", ""], "p"),
    ("chase", "chases", "chased", "chasing", ["the ball", "a squirrel", "its tail", "a butterfly", "the cat"], ["in the park", "across the yard", "around the garden", "down the street"], "a"),
    ("fetch", "fetches", "fetched", "fetching", ["the stick", "the ball", "the newspaper", "a frisbee"], ["every morning", "for its owner", "without being asked", ""], "d"),
    ("sleep", "sleeps", "slept", "sleeping", ["on the couch", "in the sun", "by the fire", "on the bed", "under the table"], ["all afternoon", "after lunch", "", ""], "a"),
    ("chew", "chews", "chewed", "chewing", ["a bone", "a shoe", "the rug", "a toy"], ["under the table", "in the yard", "in the corner", ""], "a"),
    ("bark", "barks", "barked", "barking", ["at the mail carrier", "at the neighbors", "at a bird", "at the door"], ["every morning", "all night", "", ""], "d"),
    ("jump", "jumps", "jumped", "jumping", ["over the fence", "onto the sofa", "into the lake", "onto the table"], ["", "without warning", "in one leap", ""], "a"),
]

TIME_PRESENT = ["every morning", "every evening", "on weekends", "after school", "twice a week",
                "in the summer", "before breakfast", "most days", "on Sundays", "in the afternoon"]
TIME_PAST = ["yesterday", "last weekend", "this morning", "last night", "on Saturday",
             "two days ago", "last summer", "after lunch", "earlier today", "on Monday"]
COMPANIONS = ["a friend", "the kids", "her brother", "his dad", "the neighbors", "the whole family",
              "an old friend", "the dog"]
MEALS = ["breakfast", "lunch", "dinner", "school", "work", "the game", "the rain stopped"]


def _act(rng, who):
    if who == "dog":
        pool = [a for a in ACTIONS if a[6] in ("a", "d")]
    elif who == "cat":
        pool = [a for a in ACTIONS if a[6] == "a"]
    else:
        pool = [a for a in ACTIONS if a[6] == who]
    base, third, past, ing, objs, places, _ = rng.choice(pool)
    obj = rng.choice(objs)
    place = rng.choice(places)
    tail = (" " + place) if place else ""
    return base, third, past, ing, obj, tail


def concept_line(rng):
    kind = rng.random()
    if kind < 0.22:
        subj, species = rng.choice(ANIMALS)
        base, third, past, ing, obj, tail = _act(rng, species)
        temps = [
            f"{cap(subj)} {third} {obj}{tail}.",
            f"{cap(subj)} {past} {obj}{tail} {rng.choice(TIME_PAST)}.",
            f"{cap(subj)} likes to {base} {obj}{tail}.",
            f"{cap(subj)} is {ing} {obj}{tail} again.",
            f"{cap(rng.choice(TIME_PAST))}, {subj} {past} {obj}{tail}.",
        ]
        return rng.choice(temps)
    if kind < 0.62:
        subj, pron = rng.choice(PEOPLE_S)
        base, third, past, ing, obj, tail = _act(rng, "p")
        b2, t2, p2, i2, o2, tail2 = _act(rng, "p")
        temps = [
            f"{cap(subj)} {third} {obj}{tail} {rng.choice(TIME_PRESENT)}.",
            f"{cap(subj)} {past} {obj}{tail} {rng.choice(TIME_PAST)}.",
            f"{cap(subj)} likes to {base} {obj}{tail}.",
            f"{cap(subj)} is {ing} {obj}{tail} right now.",
            f"After {rng.choice(MEALS)}, {subj} {past} {obj}{tail}.",
            f"{cap(subj)} wanted to {base} {obj}, but it started to rain.",
            f"{cap(subj)} {past} {obj}{tail}, and then {pron} {p2} {o2}{tail2}.",
            f"On Saturday, {subj} {past} {obj} with {rng.choice(COMPANIONS)}.",
            f"{cap(subj)} asked me to help {base} {obj}{tail}.",
            f"Every week {subj} {third} {obj}{tail}.",
        ]
        return rng.choice(temps)
    subj = rng.choice(PEOPLE_P)
    base, third, past, ing, obj, tail = _act(rng, "p")
    b2, t2, p2, i2, o2, tail2 = _act(rng, "p")
    temps = [
        f"{cap(subj)} {base} {obj}{tail} {rng.choice(TIME_PRESENT)}.",
        f"{cap(subj)} {past} {obj}{tail} {rng.choice(TIME_PAST)}.",
        f"{cap(subj)} are {ing} {obj}{tail}.",
        f"{cap(subj)} love to {base} {obj}{tail}.",
        f"{cap(subj)} {past} {obj}, and later they {p2} {o2}{tail2}.",
        f"When it is sunny, {subj} {base} {obj}{tail}.",
        f"{cap(rng.choice(TIME_PAST))}, {subj} {past} {obj}{tail}.",
    ]
    return rng.choice(temps)


# ---------------------------------------------------------------------------
# Plain statements and paraphrases
# ---------------------------------------------------------------------------

NAMES = [("Anna", "her"), ("Ben", "his"), ("Carlos", "his"), ("Dana", "her"), ("Emma", "her"),
         ("Farid", "his"), ("Grace", "her"), ("Hugo", "his"), ("Ines", "her"), ("Jack", "his"),
         ("Kim", "her"), ("Leo", "his"), ("Maya", "her"), ("Noah", "his"), ("Olivia", "her"),
         ("Priya", "her"), ("Rosa", "her"), ("Sam", "his"), ("Tom", "his"), ("Uma", "her"),
         ("Victor", "his"), ("Wen", "her"), ("Yara", "her"), ("Zoe", "her"), ("Omar", "his"), ("Lena", "her")]
SHOPS = ["bakery", "pharmacy", "library", "post office", "bookshop", "supermarket", "hardware store",
         "flower shop", "cafe", "bank", "museum", "swimming pool"]
HOURS = ["six", "seven", "eight", "nine", "ten", "five thirty", "noon"]
DAYS = ["Mondays", "Fridays", "weekends", "Sundays", "weekdays", "holidays"]
DAY1 = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
THINGS = ["wallet", "umbrella", "phone", "scarf", "notebook", "lunch box", "charger", "water bottle", "jacket"]
PLACES = ["the office", "the gym", "school", "the cafe", "a friend's house", "the library", "the station"]
EVENTS = ["meeting", "party", "dentist appointment", "football practice", "concert", "school trip", "class"]
VEHICLES = ["train", "bus", "ferry", "flight", "tram"]
NUMS = ["five", "ten", "fifteen", "twenty", "thirty", "forty"]
FOODS = ["soup", "tea", "pizza", "coffee", "pie", "porridge"]
GOODS = ["bananas", "eggs", "coffee beans", "fresh flowers", "winter boots", "apples", "bus tickets", "notebooks"]
SUPPLIES = ["milk", "sugar", "bread", "rice", "coffee", "flour", "butter"]
SKILLS = ["play the piano", "swim", "drive", "speak Spanish", "bake bread", "ride a bike", "knit", "paint"]
CHORES = ["water the plants", "lock the back door", "take out the trash", "feed the fish", "turn off the lights"]
RELATIVES = ["mother", "father", "sister", "brother", "grandmother", "uncle", "aunt", "cousin"]
PREFS = [("tea", "coffee"), ("the beach", "the mountains"), ("books", "films"), ("walking", "driving"),
         ("summer", "winter"), ("soup", "salad"), ("cats", "dogs"), ("mornings", "evenings")]
TASKS = ["report", "homework", "painting", "puzzle", "crossword", "laundry", "shopping list"]
PERIODS = ["week", "month", "year"]
CONNECT = ["In other words,", "Put another way,", "That is,", "Said differently,", "To put it simply,"]


def paraphrase_pair(rng):
    (n1, h1), (n2, h2) = rng.sample(NAMES, 2)
    shop = rng.choice(SHOPS)
    hour = rng.choice(HOURS)
    days = rng.choice(DAYS)
    thing = rng.choice(THINGS)
    place = rng.choice(PLACES)
    a, b = rng.choice(PREFS)
    goods = rng.choice(GOODS)
    veh = rng.choice(VEHICLES)
    num = rng.choice(NUMS)
    pairs = [
        (f"The {shop} closes at {hour} on {days}.", f"On {days}, the {shop} shuts at {hour}."),
        (f"{n1} is taller than {n2}.", f"{n2} is shorter than {n1}."),
        (f"{n1} forgot {h1} {thing} at {place}.", f"{n1} left {h1} {thing} behind at {place}."),
        (f"The {rng.choice(EVENTS)} was moved to {rng.choice(DAY1)}.", None),
        (f"{n1} walks to {place} every morning.", f"Every morning, {n1} goes to {place} on foot."),
        (f"The {veh} was {num} minutes late.", f"The {veh} was delayed by {num} minutes."),
        (f"{n1} bought a new {thing} last week.", f"Last week, {n1} got a new {thing}."),
        (f"The {rng.choice(FOODS)} was too hot to drink or eat right away.", None),
        (f"{n1} can't find {h1} {thing} anywhere.", f"{n1}'s {thing} seems to have gone missing."),
        (f"{n1} prefers {a} to {b}.", f"{n1} would rather have {a} than {b}."),
        (f"The {shop} sells {goods}.", f"You can buy {goods} at the {shop}."),
        (f"{n1} is learning to {rng.choice(SKILLS)}.", None),
        (f"{n1} always forgets to {rng.choice(CHORES)}.", None),
        (f"The {veh} was so crowded that {n1} had to stand.", f"There were no free seats on the {veh}, so {n1} stood."),
        (f"{n1} called {h1} {rng.choice(RELATIVES)} after dinner.", None),
        (f"The price of {goods} went up this {rng.choice(PERIODS)}.", None),
        (f"{n1} finished the {rng.choice(TASKS)} before lunch.", None),
        (f"{n1} helped {n2} carry the boxes.", f"{n2} got help from {n1} carrying the boxes."),
        (f"{n1} and {n2} have been friends since childhood.", f"{n1} and {n2} have known each other since they were kids."),
        (f"It takes {num} minutes to walk from {n1}'s house to the {shop}.", f"The {shop} is a {num}-minute walk from {n1}'s house."),
    ]
    s, p = rng.choice(pairs)
    if p is None:
        # derive the paraphrase for the slot-specific sentences
        if " was moved to " in s:
            ev, day = s[4:-1].split(" was moved to ")
            p = f"The {ev} has been rescheduled for {day}."
        elif "too hot to drink or eat" in s:
            food = s.split()[1]
            p = f"The {food} needed to cool down before anyone could have it."
        elif " is learning to " in s:
            skill = s.split(" is learning to ")[1][:-1]
            p = f"{n1} is taking lessons to learn to {skill}."
        elif " always forgets to " in s:
            chore = s.split(" always forgets to ")[1][:-1]
            p = f"{n1} never remembers to {chore}."
        elif " called " in s:
            rel = s.split()[-3]
            p = f"After dinner, {n1} phoned {h1} {rel}."
        elif "The price of " in s:
            per = s.split()[-1][:-1]
            p = f"{cap(goods)} got more expensive this {per}."
        else:
            task = s.split(" finished the ")[1].split(" before")[0]
            p = f"The {task} was done by {n1} before lunch."
    mode = rng.random()
    if mode < 0.3:
        return s
    if mode < 0.55:
        return p
    return f"{s} {rng.choice(CONNECT)} {p[0].lower() + p[1:] if not p.startswith(tuple(n for n, _ in NAMES)) else p}"


# ---------------------------------------------------------------------------
# Q/A lines
# ---------------------------------------------------------------------------

COLOR_THINGS = [("grass", "green"), ("the sky on a clear day", "blue"), ("a ripe banana", "yellow"),
                ("fresh snow", "white"), ("coal", "black"), ("a ripe tomato", "red"), ("a carrot", "orange"),
                ("a plum", "purple"), ("milk chocolate", "brown"), ("a lemon", "yellow"),
                ("a strawberry", "red"), ("a lime", "green"), ("a fire truck", "red"), ("a polar bear", "white"),
                ("a crow", "black"), ("a pumpkin", "orange"), ("the ocean", "blue"), ("a school bus", "yellow"),
                ("an eggplant", "purple"), ("a cloud", "white"), ("a flamingo", "pink"), ("cinnamon", "brown")]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
                "nineteen", "twenty"]
TOOLS = [("hammer", "drive nails into wood"), ("broom", "sweep the floor"), ("ladder", "reach high places"),
         ("whisk", "beat eggs and mix batter"), ("colander", "drain pasta and rinse vegetables"),
         ("screwdriver", "tighten or loosen screws"), ("kettle", "boil water"), ("rake", "gather leaves"),
         ("shovel", "dig holes and move snow"), ("umbrella", "stay dry in the rain"),
         ("thermometer", "measure temperature"), ("stapler", "fasten sheets of paper together"),
         ("watering can", "water plants"), ("cutting board", "chop food safely"),
         ("tape measure", "measure length"), ("sponge", "wash dishes"), ("mop", "clean the floor"),
         ("flashlight", "see in the dark"), ("peeler", "take the skin off fruit and vegetables"),
         ("compass", "find north")]
STORES = [("bread", "a bakery"), ("medicine", "a pharmacy"), ("nails and screws", "a hardware store"),
          ("stamps", "a post office"), ("fresh fish", "a fish market"), ("books", "a bookshop"),
          ("flowers", "a florist"), ("vegetables", "a grocery store or a farmers market"),
          ("paint", "a hardware store"), ("notebooks", "a stationery shop"), ("running shoes", "a sports shop"),
          ("plants", "a garden center")]
ANIMAL_HOMES = [("fish", "in water, such as rivers, lakes, and the sea"), ("bees", "in hives"),
                ("birds", "in nests in trees and bushes"), ("rabbits", "in burrows underground"),
                ("cows", "on farms, where they graze in fields"), ("camels", "in deserts"),
                ("penguins", "mostly in cold places in the Southern Hemisphere"),
                ("frogs", "near ponds, streams, and wet places"), ("squirrels", "in trees, often in parks"),
                ("ducks", "on ponds, lakes, and rivers")]
DISHES = [("eggs", "cheese", "an omelet"), ("pasta", "tomatoes", "a simple tomato pasta"),
          ("rice", "beans", "rice and beans with a little spice"), ("bread", "cheese", "a toasted cheese sandwich"),
          ("potatoes", "onions", "a tray of roasted potatoes and onions"), ("bananas", "oats", "banana oat pancakes"),
          ("apples", "flour", "a small apple crumble"), ("lettuce", "cucumber", "a fresh green salad"),
          ("chicken", "rice", "a chicken and rice bowl"), ("yogurt", "berries", "a yogurt and berry bowl")]
DO_TIPS = [
    ("keep my room tidy", "Put things back right after you use them and spend five minutes tidying each evening."),
    ("wake up on time", "Go to bed at the same time each night and put your alarm across the room."),
    ("save a little money each month", "Move a small amount into savings on payday before you spend anything."),
    ("stay calm in traffic", "Leave a little earlier, play some music you like, and remember that a few minutes rarely matter."),
    ("make a cup of cocoa", "Warm a cup of milk, stir in two spoons of cocoa and a little sugar, and mix well."),
    ("keep my plants healthy", "Give them enough light, water them when the soil feels dry, and check the leaves for pests."),
    ("make toast without burning it", "Use a medium setting and stay nearby so you can pop it up early if it browns quickly."),
    ("remember birthdays", "Add every birthday to your phone calendar with a reminder a few days before."),
    ("learn to cook", "Start with a few simple recipes you enjoy and cook them until you know them well."),
    ("get fit without a gym", "Walk every day and try simple exercises at home like squats, push-ups, and stretches."),
    ("write a good shopping list", "Group items by where they are in the store so you can move through it quickly."),
    ("keep a plant alive in a dark room", "Choose a low-light plant like a snake plant and water it only when the soil is dry."),
    ("make my coffee last longer", "Store the beans in an airtight jar away from light and grind only what you need."),
    ("help a friend who is sad", "Listen without rushing to fix things, and let them know you are there for them."),
    ("keep my shoes clean", "Brush off dirt after each wear and wipe them with a damp cloth once a week."),
]


def qa_line(rng):
    k = rng.randrange(8)
    if k == 0:
        thing, color = rng.choice(COLOR_THINGS)
        return f"Q: What color is {thing}? A: {cap(thing)} is usually {color}."
    if k == 1:
        i = rng.randrange(0, 20)
        return f"Q: What number comes after {NUMBER_WORDS[i]}? A: {cap(NUMBER_WORDS[i + 1])} comes after {NUMBER_WORDS[i]}."
    if k == 2:
        a = rng.randrange(0, 11)
        b = rng.randrange(0, 21 - a)
        return f"Q: What is {NUMBER_WORDS[a]} plus {NUMBER_WORDS[b]}? A: {cap(NUMBER_WORDS[a])} plus {NUMBER_WORDS[b]} is {NUMBER_WORDS[a + b]}."
    if k == 3:
        tool, use = rng.choice(TOOLS)
        art = "an" if tool[0] in "aeiou" else "a"
        return f"Q: What is {art} {tool} used for? A: You use {art} {tool} to {use}."
    if k == 4:
        goods, store = rng.choice(STORES)
        return f"Q: Where can I buy {goods}? A: You can usually buy {goods} at {store}."
    if k == 5:
        animal, home = rng.choice(ANIMAL_HOMES)
        return f"Q: Where do {animal} live? A: {cap(animal)} live {home}."
    if k == 6:
        x, y, dish = rng.choice(DISHES)
        return f"Q: What can I make with {x} and {y}? A: You could make {dish}. It is quick and easy."
    task, tip = rng.choice(DO_TIPS)
    lead = rng.choice(["How do I", "How can I", "What is a good way to"])
    return f"Q: {lead} {task}? A: {tip}"


# ---------------------------------------------------------------------------
# Colors and numbers
# ---------------------------------------------------------------------------

COLORS = ["red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "black", "white", "gray"]
OBJECTS = [("ball", "balls"), ("car", "cars"), ("apple", "apples"), ("cup", "cups"), ("hat", "hats"),
           ("kite", "kites"), ("bike", "bikes"), ("book", "books"), ("shirt", "shirts"), ("flower", "flowers"),
           ("balloon", "balloons"), ("door", "doors"), ("pencil", "pencils"), ("bird", "birds"), ("boat", "boats")]


def color_number_line(rng):
    k = rng.randrange(9)
    if k == 0:
        return " ".join(rng.sample(COLORS, rng.randint(3, 6)))
    if k == 1:
        start = rng.randrange(0, 12)
        return " ".join(NUMBER_WORDS[start:start + rng.randint(3, 8)])
    if k == 2:
        (o, _), c = rng.choice(OBJECTS), rng.choice(COLORS)
        return f"The {o} is {c}."
    if k == 3:
        n = rng.randrange(2, 13)
        c = rng.choice(COLORS)
        _, ps = rng.choice(OBJECTS)
        return f"I see {NUMBER_WORDS[n]} {c} {ps}."
    if k == 4:
        a, b, c = rng.sample(COLORS, 3)
        return f"{cap(a)}, {b}, and {c} are colors."
    if k == 5:
        (o1, p1), (o2, p2) = rng.sample(OBJECTS, 2)
        n1, n2 = rng.randrange(2, 10), rng.randrange(2, 10)
        return f"There are {NUMBER_WORDS[n1]} {p1} and {NUMBER_WORDS[n2]} {p2} on the table."
    if k == 6:
        c1, c2 = rng.sample(COLORS, 2)
        o, _ = rng.choice(OBJECTS)
        return f"She has a {c1} {o}, and he has a {c2} one."
    if k == 7:
        n = rng.randrange(1, 20)
        return f"{cap(NUMBER_WORDS[n])}, {NUMBER_WORDS[n + 1]}, and then comes {NUMBER_WORDS[min(n + 2, 20)]}."
    c = rng.choice(COLORS)
    return f"My favorite color is {c}."


# ---------------------------------------------------------------------------
# Task files (train split only)
# ---------------------------------------------------------------------------

def task_lines(rng):
    lines = []
    sent = [r["prompt"] for r in load_jsonl("sentiment.jsonl") if r.get("split") == "train"]
    for p in sent:
        lines.append(p)
    for r in load_jsonl("keywords.jsonl"):
        if r.get("split") == "train":
            lines.append(r["prompt"])
            lines.append(r["reference"])
            lines.append(f"{r['prompt']} {r['reference']}")
    for r in load_jsonl("similarity.jsonl"):
        if r.get("split") == "train":
            lines.append(r["prompt"])
            lines.append(r["reference"])
            lines.append(r["prompt"][len("Paraphrase: "):])
    for r in load_jsonl("preference_prompts.jsonl"):
        if r.get("split") == "train":
            lines.append(" ".join(r["prompt"].split()))
    seen_q = []
    for r in load_jsonl("preference_pairs.jsonl"):
        if r.get("split") == "train":
            q = " ".join(r["prompt"].split())  # "Q: ... A:" on one line
            lines.append(f"{q} {r['chosen']}")
            if q not in seen_q:
                seen_q.append(q)
    return lines, sent


# ---------------------------------------------------------------------------
# Document split (held-out documents for the reference LM)
# ---------------------------------------------------------------------------

SENTENCE_RULE = (
    "lower-case, collapse whitespace, split after . ! or ? followed by a space, drop a leading 'q:' or 'a:' "
    "speaker tag, keep pieces with a letter or digit"
)


def sentences(text: str) -> list[str]:
    """Normalised sentences of ``text`` (see ``SENTENCE_RULE``): the unit that a train and a held-out line must
    never share."""
    flat = " ".join(text.lower().split())
    out = []
    for piece in re.split(r"(?<=[.!?])\s+", flat):
        piece = re.sub(r"^(q|a):\s*", "", piece).strip()
        if re.search(r"[a-z0-9]", piece):
            out.append(piece)
    return out


def documents(lines: list[str]) -> list[list[int]]:
    """Group line indices into documents: lines that share a sentence (directly or through other lines) are one
    document, so a document split can never put the same sentence on both sides. Documents are ordered by their
    first line; each lists its line indices in order."""
    parent = list(range(len(lines)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, line in enumerate(lines):
        for s in sentences(line):
            if s in first:
                parent[root(i)] = root(first[s])
            else:
                first[s] = i
    groups: dict[int, list[int]] = {}
    for i in range(len(lines)):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def document_split(
    lines: list[str], seed: int = SPLIT_SEED, eval_fraction: float = EVAL_FRACTION
) -> tuple[list[list[int]], list[list[int]]]:
    """Seeded split of ``documents(lines)`` into (train, held-out): the documents are shuffled with ``seed`` and
    drawn into the held-out side until it holds ``eval_fraction`` of the lines. Both sides keep document order."""
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    docs = documents(lines)
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    target = eval_fraction * len(lines)
    held: set[int] = set()
    n_held = 0
    for d in order:
        if n_held >= target:
            break
        held.add(d)
        n_held += len(docs[d])
    train = [g for i, g in enumerate(docs) if i not in held]
    evaluation = [g for i, g in enumerate(docs) if i in held]
    return train, evaluation


def corpus_sha256(lines: list[str]) -> str:
    """sha256 of the corpus lines joined with newlines (what ``corpus_split.json`` was made from)."""
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def split_record(lines: list[str], seed: int = SPLIT_SEED, eval_fraction: float = EVAL_FRACTION) -> dict:
    """The content of ``corpus_split.json``: the rule, the seed, counts and the held-out documents as lists of
    1-based line numbers of ``corpus.txt``."""
    train, evaluation = document_split(lines, seed, eval_fraction)
    return {
        "corpus": "corpus.txt",
        "corpus_sha256": corpus_sha256(lines),
        "unit": "document = lines linked by a shared sentence (connected components)",
        "sentence_rule": SENTENCE_RULE,
        "seed": seed,
        "eval_fraction": eval_fraction,
        "lines": len(lines),
        "documents": len(train) + len(evaluation),
        "train_documents": len(train),
        "train_lines": sum(len(g) for g in train),
        "eval_documents": len(evaluation),
        "eval_lines": sum(len(g) for g in evaluation),
        "eval_line_numbers": [[i + 1 for i in g] for g in evaluation],
    }


def write_split(lines: list[str], path: str = SPLIT_OUT) -> dict:
    """Write ``split_record(lines)`` to ``path`` (one held-out document per line of the JSON list)."""
    record = split_record(lines)
    body = {k: v for k, v in record.items() if k != "eval_line_numbers"}
    text = json.dumps(body, indent=2)[:-2]
    docs = ",\n    ".join(json.dumps(g) for g in record["eval_line_numbers"])
    text += f',\n  "eval_line_numbers": [\n    {docs}\n  ]\n}}\n'
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    return record


def main():
    rng = random.Random(SEED)
    seen = {}
    out = []

    def add(line):
        if line and line not in seen:
            seen[line] = True
            out.append(line)
            return True
        return False

    def fill(n, fn):
        got, tries = 0, 0
        while got < n and tries < n * 50:
            tries += 1
            if add(fn(rng)):
                got += 1

    data_lines, sent_prompts = task_lines(rng)
    for line in data_lines:
        add(line)
    fill(TARGETS["reviews"], review_line)
    if sent_prompts:
        fill(TARGETS["prompt_continuations"], lambda r: continue_prompt(r, r.choice(sent_prompts)))
    fill(TARGETS["concepts"], concept_line)
    fill(TARGETS["paraphrases"], paraphrase_pair)
    fill(TARGETS["qa"], qa_line)
    fill(TARGETS["colors_numbers"], color_number_line)

    rng.shuffle(out)
    with open(OUT, "w", encoding="utf-8", newline="\n") as f:
        for line in out:
            f.write(line.replace("\n", " ") + "\n")
    size = os.path.getsize(OUT)
    print(f"wrote {OUT}: {len(out)} lines, {size} bytes")
    lines = [line.replace("\n", " ").strip() for line in out]
    record = write_split(lines)
    print(
        f"wrote {SPLIT_OUT}: {record['documents']} documents, held out {record['eval_documents']} "
        f"({record['eval_lines']} lines)"
    )


if __name__ == "__main__":
    main()
