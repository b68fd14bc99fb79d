"""The prototype sentences the valence reader (es4r/modeling/openings.py) compares a turn with:
plain first-person news, several wordings per kind of life event, good and bad.

Written from the kinds of events people tell a listener about (a new job, an exam, a baby, a
death, a diagnosis, a break-up …), not from any test set: the valence set and the fresh
phrasings (assets/valence_set, assets/valence_phrasings.json) were not read while writing
them. A turn is read by the few prototypes nearest to it on each side, so each event needs a
handful of its own wordings; a bank of generic moods ("I have wonderful news.") alone missed
most concrete good news. Everyday turns that are no news either way (`EVERYDAY`) let small
talk read as unsure. Two kinds, "relief" and "a hope that failed" (news told through what did
or did not happen), were added after our own dev sentences (tests/data/valence_dev.json)
showed the gap; a negated prototype can pull the other way ("I don't owe anyone anything
anymore" drew "I owe more than I earn" to good news), so they are few."""

from __future__ import annotations

GOOD_EVENTS: dict[str, tuple[str, ...]] = {
    "a new job": ("I got the job I applied for.", "They offered me the position.", "I was hired yesterday.",
                "I start my new job on Monday.", "After months of searching I finally found work.",
                "The company called back and said yes."),
    "a promotion": ("I got promoted at work.", "My boss gave me a raise.", "They made me team lead.",
                  "I was promoted to manager today.", "My salary is going up next month."),
    "a passed exam": ("I passed my exam.", "I passed my driving test.", "I got top marks on the final.",
             "I finished my degree.", "I graduated last week.", "I got into the university I wanted.",
             "My thesis was accepted."),
    "a baby": ("We are having a baby.", "I'm pregnant.", "Our daughter was born this morning.",
             "My sister just had her baby.", "I'm going to be a dad.", "The ultrasound showed a healthy baby."),
    "an engagement": ("I got engaged last night.", "She said yes when I proposed.", "We are getting married.",
                   "Our wedding was perfect.", "He asked me to marry him."),
    "a recovery": ("The scan came back clear.", "The doctor says I'm cancer free.", "My mother is out of hospital.",
                 "The surgery went well.", "I'm finally healthy again.", "The test results were fine."),
    "a win": ("Our team won the championship.", "I won first prize.", "I won the competition.",
                "I won a little money in the lottery.", "My painting won an award."),
    "a new home": ("We bought our first house.", "We got the keys to our new flat.", "Our offer on the house was accepted.",
             "I finally moved into my own place."),
    "a reunion": ("I saw my brother again after ten years.", "My best friend is coming home.",
                "My whole family got together for the first time in years.", "My son came back from abroad."),
    "an achievement": ("I ran my first marathon.", "My book is going to be published.", "I finished the project on time.",
                    "I learned to swim at last.", "I paid off all my debt.", "My visa was approved."),
    "love": ("I met someone wonderful.", "We're back together.", "My date went really well.",
             "We adopted a puppy.", "Our dog came home safe."),
    "joy": ("I'm so happy right now.", "This is the best day of my life.", "I can't stop smiling.",
                "I'm thrilled about it.", "I have great news to share."),
    # good news told through a worry that is over
    "relief": ("It wasn't cancer after all.", "I don't have to worry anymore.",
               "The lump turned out to be harmless.", "Nobody was hurt in the end."),
}

BAD_EVENTS: dict[str, tuple[str, ...]] = {
    "a death": ("My father passed away.", "My grandmother died last night.", "I lost my best friend in an accident.",
              "We buried my uncle today.", "My mom died after a long illness.", "A friend of mine killed himself."),
    "a pet's death": ("My dog died this morning.", "We had to put our cat down.", "My old horse passed away.",
            "Our puppy was hit by a car."),
    "a diagnosis": ("The doctor said it's cancer.", "I was diagnosed with diabetes.", "The tumour is back.",
                  "My wife has a serious illness.", "The biopsy results were bad.", "My dad had a stroke."),
    "a lost job": ("I lost my job.", "I got fired today.", "The company laid me off.", "They let me go at work.",
                 "My shop had to close.", "I didn't get the promotion."),
    "a failure": ("I failed my exam.", "I failed my driving test again.", "I didn't get into college.",
                "I got a terrible grade.", "I have to repeat the year."),
    "a break-up": ("My girlfriend broke up with me.", "We're getting divorced.", "My husband left me.",
                "I found out he was cheating.", "My engagement is off."),
    "an accident": ("I was in a car accident.", "I broke my leg.", "My son got hurt at school.",
                 "Our house burned down.", "Someone broke into our home.", "My car was stolen."),
    "money trouble": ("I can't pay my rent.", "I'm drowning in debt.", "We're being evicted.", "I lost all my savings.",
              "The bank is taking our house."),
    "loneliness": ("I feel so alone.", "I have no friends here.", "Nobody called me on my birthday.",
                   "I spend every evening by myself.", "Nobody seems to care about me."),
    "a rejection": ("They rejected my application.", "I didn't get the job.", "The publisher turned down my book.",
                  "They said I'm not good enough.", "My visa was refused."),
    "a quarrel": ("My parents are fighting all the time.", "My best friend stopped talking to me.",
                 "My sister and I had a terrible fight.", "My boss yelled at me in front of everyone."),
    "a lost pregnancy": ("We lost the baby.", "I had a miscarriage.", "We can't have children."),
    "distress": ("I'm so sad.", "I'm really scared.", "I can't stop crying.", "Everything is going wrong.",
                 "I'm exhausted and hopeless.", "I have terrible news."),
    # bad news told through what did not happen
    "a hope that failed": ("I didn't pass.", "I won't be graduating this year.", "None of the schools accepted me.",
                  "Nobody wanted to hire me.", "The treatment didn't work.", "He never came home."),
}

# Everyday turns that are no news either way: a turn nearer to these than to either side reads
# as unsure (without them, small talk such as a plan for the weekend read as good news).
EVERYDAY: dict[str, tuple[str, ...]] = {
    "food": ("I had soup for lunch.", "I'm cooking rice tonight.", "We ordered pizza.", "I drank a coffee."),
    "weather": ("It's cloudy today.", "It might snow this weekend.", "It's quite warm outside.",
                "The wind picked up in the evening."),
    "errands": ("I have to go to the post office.", "I bought some bread and eggs.", "I need new shoelaces.",
                "I'm picking up my shirts from the cleaner's."),
    "routine": ("I took the bus to work.", "I woke up at seven.", "I answered emails all morning.",
                "I have a dentist appointment on Tuesday.", "I'm working from home today."),
    "pastimes": ("I watched a film last night.", "I'm knitting a scarf.", "I listened to a podcast.",
                 "I went for a walk in the park.", "I'm learning a few words of Spanish."),
    "home": ("I vacuumed the living room.", "I did the laundry.", "I moved the sofa to the other wall.",
             "The plants need watering."),
    "plans": ("We might visit my aunt next month.", "I'm going shopping on Saturday.",
              "I'll call my cousin tomorrow.", "We're meeting at the café at noon."),
    "chat": ("How are you today?", "What do you think about that?", "Nothing special happened.",
             "I don't know, just a normal day.", "Can I ask you something?"),
}

