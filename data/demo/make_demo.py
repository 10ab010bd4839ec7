#!/usr/bin/env python3
"""Generate the kasp demo sentiment dataset: train.tsv (2400 rows) and dev.tsv (600).

Short English reviews of films, restaurants, hotels, products and apps, 6-30
words, labelled ``negative`` or ``positive``, balanced by construction, with no
sentence repeated within or across the splits. Written for the kasp project
from the templates and word lists below; no external source is used, so the
data is free to use under the project's licence.

The label is decided by construction: each sentence is built from its label,
composing polarity the way English does. Intensifiers and hedges change
strength, never polarity ("a bit slow", "truly spotless"); negation flips
("not bad", "never disappointing", "hardly worth it") and double negation flips
back ("I can't say the pasta wasn't delicious"); comparisons ("better than I
expected", "less noisy than I feared") and expectations ("I feared it would be
cramped, and it was not") carry their own polarity. In a contrast the clause
after "but"/"yet" decides, while with "although"/"though"/"even though"/"while"
the conceded clause is overruled and the main clause decides, in either order;
the other clause always has the opposite polarity, so counting opinion words
is not enough. Mixed-aspect sentences end in an explicit overall verdict, which
decides.

Label noise: exactly 5% of the rows of EACH split (120 train, 30 dev), chosen
by the same seeded RNG, have their label flipped. No model, the teacher
included, can then reach 100% on dev (the ceiling is about 95%), so accuracy
lost to heavy pruning shows instead of hiding under a saturated score.

Deterministic: one random.Random(seed), so the same seed gives byte-identical
files. Regenerate from the repository root with:

    python data/demo/make_demo.py        (--seed 13, --out-dir this folder)
"""
import argparse
import hashlib
import os
import random

SIZES = (("train", 2400), ("dev", 600))
NOISE = 0.05
NEG, POS = 0, 1
LABELS = ("negative", "positive")

# Opinion words every domain shares; the domain lists add the vocabulary a
# reviewer of that kind of thing actually uses.
MILD = {POS: "decent pleasant solid nice good great enjoyable charming likeable lovely fine".split(),
        NEG: "bad mediocre dull underwhelming disappointing bland tiresome clumsy forgettable uneven "
             "sloppy".split()}
STRONG = {POS: "excellent superb outstanding wonderful fantastic brilliant flawless terrific".split(),
          NEG: "awful terrible dreadful horrible abysmal atrocious unbearable dismal".split()}
INTENSIFIERS = ["really", "very", "truly", "extremely", "genuinely", "seriously"]
STRONG_INTENSIFIERS = ["absolutely", "utterly", "simply", "completely"]
HEDGES = ["fairly", "somewhat", "rather", "pretty", "a bit", "mostly", "kind of", "slightly"]


def domain(things, aspects, pos, neg, contexts, verdicts):
    good, bad = verdicts.split("|")
    return {"things": things.split(","), "aspects": aspects.split(","), "contexts": contexts.split(","),
            "words": {POS: pos.split(","), NEG: neg.split(",")},
            "verdicts": {POS: good.split(","), NEG: bad.split(",")}}


# Per domain: things, aspects, positive words, negative words, neutral contexts,
# positive|negative verdicts.
DOMAINS = [
    domain("the film,this movie,the sequel,the documentary,this thriller,the comedy",
           "the plot,the acting,the soundtrack,the pacing,the dialogue,the cinematography,the ending,"
           "the lead performance,the script,the score",
           "gripping,moving,riveting,funny,beautifully shot,tense,heartfelt,clever",
           "predictable,boring,cliched,confusing,slow,wooden,overlong,pretentious",
           "I saw it at a late showing,we watched it on a rainy Sunday,I streamed it last night",
           "I would watch it again,I would gladly see it twice|"
           "I would not sit through it again,I walked out before the end"),
    domain("the restaurant,this bistro,the new diner,this cafe,the pizzeria,the noodle bar",
           "the food,the service,the pasta,the dessert,the staff,the portion size,the wine list,"
           "the atmosphere,the bill,the coffee",
           "delicious,tasty,fresh,friendly,generous,attentive,cozy,flavourful",
           "greasy,cold,rude,stale,overpriced,soggy,slow,cramped",
           "we went for my mother's birthday,I stopped by for lunch,we booked a table for four",
           "we will be back,I would eat there every week|we will not be back,I would rather cook at home"),
    domain("the hotel,this resort,the inn,the hostel,this motel,the guesthouse",
           "the room,the bed,the staff,the breakfast,the location,the pool,the bathroom,the wifi,"
           "the check-in,the view",
           "spotless,comfortable,quiet,spacious,welcoming,convenient,cozy,relaxing",
           "dirty,noisy,cramped,shabby,musty,unhelpful,overpriced,chaotic",
           "we stayed for three nights,I booked it for a work trip,we spent our honeymoon there",
           "I would stay there again,I would not stay anywhere else|"
           "I would never stay there again,we checked out a day early"),
    domain("this blender,the speaker,this vacuum,the laptop,this kettle,the phone case,this camera",
           "the battery life,the build quality,the sound,the design,the price,the screen,the manual,"
           "the customer support,the packaging,the motor",
           "sturdy,reliable,well made,quiet,durable,sleek,powerful,handy",
           "flimsy,cheap,faulty,noisy,fragile,clunky,unreliable,overpriced",
           "I bought it a month ago,I ordered it on sale,it was a gift from my brother",
           "I would buy it again,I have already ordered a second one|I am returning it,I regret buying it"),
    domain("this app,the update,the new version,this game,the website,the tool",
           "the interface,the login,the search,the sync,the layout,the loading time,the menu,"
           "the dark mode,the offline mode,the onboarding",
           "intuitive,fast,smooth,responsive,clean,stable,snappy,polished",
           "buggy,laggy,confusing,slow,cluttered,unstable,glitchy,bloated",
           "I have used it for a few weeks,I installed it after the last update,my team switched to it",
           "it stays on my phone,I use it every day now|I uninstalled it,I went back to the old one"),
]
GENERIC_VERDICTS = {
    POS: ["I would recommend it", "I would not hesitate to recommend it", "it was worth the money",
          "I would not call it a waste of money", "I came away impressed", "it is a keeper"],
    NEG: ["I would not recommend it", "I cannot say I would recommend it", "it was not worth the money",
          "it was a waste of money", "I came away disappointed", "it is hard to recommend"]}
# Each template is written for the label it carries; {t} is the target and
# {P}/{N} a bare positive/negative word, so {N} under POS is a negated or
# compared-away negative.
COMPARISONS = {
    POS: ["{t} was better than I expected", "{t} was better than the last one",
          "{t} was much better than the reviews suggested", "{t} was more {P} than I expected",
          "{t} was less {N} than I feared", "{t} was not as {N} as people say"],
    NEG: ["{t} was worse than the last one", "{t} was worse than I expected",
          "{t} was not as good as I hoped", "{t} was less {P} than I hoped",
          "{t} was even more {N} than the last one", "{t} was not nearly as {P} as the reviews said"]}
STANCES = {
    POS: ["I loved {t}", "I really enjoyed {t}", "I could not fault {t}",
          "I have nothing bad to say about {t}", "nobody could complain about {t}", "I was impressed by {t}"],
    NEG: ["I hated {t}", "I did not enjoy {t}", "I could not stand {t}",
          "I have nothing good to say about {t}", "I was let down by {t}", "nobody could defend {t}"]}
NEGATORS = ["was not", "wasn't", "is not", "isn't", "was never", "was hardly", "was far from",
            "was anything but", "was not at all", "was not particularly", "was not very"]
DOUBLE_NEGATIONS = ["I can't say {t} wasn't {w}", "it is not true that {t} was not {w}",
                    "I would never say {t} was not {w}", "nobody could claim {t} was not {w}"]
WORTH = {POS: ["{t} was well worth it", "{t} was worth every penny", "{t} was not a waste of money"],
         NEG: ["{t} was hardly worth it", "{t} was not worth the money", "{t} was a waste of money"]}


def bare_word(rng, dom, pol):
    # Negations and comparisons read oddly with intensifiers, so they get a bare word.
    return rng.choice(rng.choice([dom["words"][pol], dom["words"][pol], MILD[pol], STRONG[pol]]))


def opinion(rng, dom, pol):
    """An adjective phrase of polarity pol; modifiers vary strength only."""
    if rng.random() < 0.25:
        word = rng.choice(STRONG[pol])
        return f"{rng.choice(STRONG_INTENSIFIERS)} {word}" if rng.random() < 0.3 else word
    word = rng.choice(rng.choice([dom["words"][pol], MILD[pol]]))
    roll = rng.random()
    if roll < 0.3:
        return f"{rng.choice(INTENSIFIERS)} {word}"
    return f"{rng.choice(HEDGES)} {word}" if roll < 0.5 else word


def clause(rng, dom, pol, target):
    """One clause of polarity pol about target, by a randomly chosen construction."""
    kind = rng.choices(["plain", "negated", "double", "compare", "stance", "worth"],
                       weights=[30, 22, 8, 16, 14, 10])[0]
    if kind == "worth" and target in dom["things"]:
        return rng.choice(WORTH[pol]).format(t=target)
    if kind == "negated":
        return f"{target} {rng.choice(NEGATORS)} {bare_word(rng, dom, 1 - pol)}"
    if kind == "double":
        return rng.choice(DOUBLE_NEGATIONS).format(t=target, w=bare_word(rng, dom, pol))
    if kind == "compare":
        return rng.choice(COMPARISONS[pol]).format(
            t=target, P=bare_word(rng, dom, POS), N=bare_word(rng, dom, NEG))
    if kind == "stance":
        return rng.choice(STANCES[pol]).format(t=target)
    return f"{target} {rng.choice(['was', 'is', 'was', 'felt'])} {opinion(rng, dom, pol)}"


def target(rng, dom):
    return rng.choice(dom["aspects"] if rng.random() < 0.65 else dom["things"])


def verdict(rng, dom, pol):
    return rng.choice(dom["verdicts"][pol] + GENERIC_VERDICTS[pol])


def simple(rng, dom, pol):
    body = clause(rng, dom, pol, target(rng, dom)) if rng.random() < 0.8 else verdict(rng, dom, pol)
    lead = rng.choice(["", "", "honestly, ", "to be fair, ", "frankly, ", "in my opinion, ",
                       "I have to say ", rng.choice(dom["contexts"]) + ", and "])
    return lead + body


def contrast(rng, dom, pol):
    # After "but"/"yet" the second clause decides; a clause conceded with
    # "although" is overruled by the main clause, whichever comes first.
    main = clause(rng, dom, pol, target(rng, dom))
    other = clause(rng, dom, 1 - pol, target(rng, dom))
    form = rng.randrange(3)
    if form == 0:
        return f"{other}, {rng.choice(['but', 'but', 'yet', 'but in the end', 'but honestly'])} {main}"
    if form == 1:
        return f"{rng.choice(['although', 'though', 'even though', 'while'])} {other}, {main}"
    return f"{main}, {rng.choice(['although', 'though', 'even though'])} {other}"


def expectation(rng, dom, pol):
    t = target(rng, dom)
    form = rng.randrange(3)
    if form == 0:
        return f"I expected {t} to be {bare_word(rng, dom, 1 - pol)}, but it was {opinion(rng, dom, pol)}"
    if form == 1:
        return f"I expected {t} to be {bare_word(rng, dom, pol)}, and it was"
    # "I hoped it would be fresh, and it was not" is negative, and vice versa.
    verb = "hoped" if pol == NEG else "feared"
    return f"I {verb} {t} would be {bare_word(rng, dom, 1 - pol)}, and it was not"


def mixed_verdict(rng, dom, pol):
    # Aspects are mixed (and lean against the label) so only the verdict decides.
    aspects = rng.sample(dom["aspects"], rng.choice([2, 3]))
    pols = [1 - pol, pol, 1 - pol][:len(aspects)]
    rng.shuffle(pols)
    parts = [f"{a} was {opinion(rng, dom, p)}" for a, p in zip(aspects, pols)]
    listed = ", ".join(parts[:-1]) + " and " + parts[-1]
    wrap = rng.choice(["overall", "all in all", "on balance", "in the end", "taken together"])
    return f"{listed}; {wrap}, {verdict(rng, dom, pol)}"


BUILDERS = [simple, contrast, expectation, mixed_verdict]
BUILDER_WEIGHTS = [30, 42, 10, 18]


def sentence(rng, pol):
    """A 6-30 word sentence of label pol, capitalised and full-stopped."""
    while True:
        dom = rng.choice(DOMAINS)
        text = rng.choices(BUILDERS, weights=BUILDER_WEIGHTS)[0](rng, dom, pol)
        if 6 <= len(text.split()) <= 30:
            return text[0].upper() + text[1:] + "."


def make_split(rng, size, seen):
    """Balanced rows, unique against `seen`, then NOISE of the labels flipped."""
    rows = []
    for i in range(size):
        pol, text = i % 2, None
        while text is None or text in seen:
            text = sentence(rng, pol)
        seen.add(text)
        rows.append([text, pol])
    rng.shuffle(rows)
    for i in rng.sample(range(size), round(size * NOISE)):
        rows[i][1] = 1 - rows[i][1]
    return rows


def write_tsv(path, rows):
    assert not any(set('\t"\n\r') & set(text) for text, _ in rows), "csv-unsafe sentence"
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("sentence\tlabel\n")
        f.writelines(f"{text}\t{LABELS[pol]}\n" for text, pol in rows)
    os.replace(tmp, path)
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out-dir", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()
    rng, seen, summary = random.Random(args.seed), set(), []
    for name, size in SIZES:
        rows = make_split(rng, size, seen)
        digest = write_tsv(os.path.join(args.out_dir, f"{name}.tsv"), rows)
        counts = " ".join(f"{lab}={sum(p == i for _, p in rows)}" for i, lab in enumerate(LABELS))
        summary.append(f"{name}: {counts} sha256={digest}")
    print("; ".join(summary))


if __name__ == "__main__":
    main()
