#!/usr/bin/env python3
"""Writes fixtures/eval/conversational: scripted voice-assistant sessions of three users over six
weeks (Feb-Mar 2026, three time zones), and questions each user asks at the end of their
timeline, tagged by group:

- time: the question names a topic and a time, the topic came up on several days with different
  details (dinner, lunch, the pool, yoga, calls with mum), and only the time says which day is
  meant ("what did I have for dinner yesterday?" with dinner on eight days);
- time_mentioned: the question names a time, but its other words mostly find the memory alone
  (the set's first time questions, kept to show that the window does not hurt there);
- changed: a fact was replaced (`supersedes`) or ran out (`expires_at`); `stale` lists what the
  answer replaced, which must never rank above it;
- misheard: a name as a speech recogniser hears it ("Martha" for "Marta", "Diego" for
  "Tiago"); the memories spell it right, and another person has a memory on the same topic
  (`NAMESAKES`: Marta's birthday beside Tiago's), so only the name tells the answer.

The sessions were written first, as a person would talk over six weeks; the questions after, as
that person would ask them, with the memory that answers each. Nothing here was tuned to a run.
The recurring topics (`RECURRING`) were added for the `time` group: sessions of their own, merged
with the others in time order.
Agent replies are memories too (speaker "agent"): short, on topic, never restating a fact.

    tools/make_conversational_set.py [--out fixtures/eval/conversational]
"""

import argparse
import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

# user -> (time zone, when the questions are asked (local), sessions)
# session: (local start "YYYY-MM-DD HH:MM", [turn, ...]); turn: (key, speaker, text, extra)
# extra: {"supersedes": [keys], "expires": "YYYY-MM-DD HH:MM" local}
USERS = {
    "ana": ("Europe/Lisbon", "2026-03-12 20:00", [
        ("2026-02-02 09:10", [
            ("marta0", "user", "My sister Marta lives in Porto and is visiting us in March.", {}),
            ("pottery0", "user", "I signed up for a pottery class on Monday evenings.", {}),
            (None, "agent", "A pottery class sounds like a lovely way to start the week.", {}),
        ]),
        ("2026-02-05 19:00", [
            ("dent1", "user", "The dentist said I need a filling in my upper left molar.", {}),
            ("dentappt", "user", "My dentist appointment for the filling is on February 19th at 4 pm.", {}),
            (None, "agent", "I hope the dentist visit goes smoothly.", {}),
        ]),
        ("2026-02-09 20:30", [
            ("pottery1", "user", "First pottery class tonight, we learned to centre clay on the wheel.", {}),
        ]),
        ("2026-02-10 08:30", [
            ("tiagobook", "user", "Tiago recommended a book called The Shadow of the Wind.", {}),
            ("reading", "user", "I'm reading it on the train to work every morning.", {}),
        ]),
        ("2026-02-16 18:45", [
            ("pottery2", "user", "Pottery class today: I made a small blue bowl.", {}),
            ("rex0", "user", "Rex has been limping on his back leg since the weekend.", {}),
            (None, "agent", "Poor Rex, keep an eye on that leg.", {}),
        ]),
        ("2026-02-19 17:30", [
            ("dent2", "user", "The dentist did the filling, it took forty minutes and my jaw is still numb.", {}),
        ]),
        ("2026-02-23 19:00", [
            ("pottery3", "user", "Pottery class: the teacher showed us how to glaze our pieces.", {}),
            ("vet1", "user", "Rex's vet appointment is on Tuesday March 3rd at 10 am.", {}),
        ]),
        ("2026-02-27 21:00", [
            ("marta1", "user", "Marta called, she's arriving on March 14th by train.", {}),
            ("tiagobday", "user", "Tiago's birthday is on April 2nd, he'd love a vinyl record.", {}),
            (None, "agent", "I'll keep the birthday in mind.", {}),
        ]),
        ("2026-03-02 12:15", [
            ("vet2", "user", "The vet moved Rex's appointment to Friday March 6th at 3 pm.", {"supersedes": ["vet1"]}),
            ("pottery4", "user", "Pottery class is cancelled this week because the kiln is broken.", {}),
        ]),
        ("2026-03-04 10:00", [
            ("dent3", "user", "I asked the dentist about whitening, she said to wait six months after the filling.", {}),
            ("gate1", "user", "The gate code for the office this week is 4711.", {"expires": "2026-03-09 00:00"}),
            (None, "agent", "Noted, I'll remember the gate code for you.", {}),
        ]),
        ("2026-03-06 16:30", [
            ("vet3", "user", "At the vet: Rex has a sprained ligament and needs rest for two weeks.", {}),
            ("vet4", "user", "The vet prescribed anti-inflammatory pills for Rex, one a day with food.", {}),
        ]),
        ("2026-03-09 19:30", [
            ("pottery5", "user", "Pottery class: I finished a tall green vase.", {}),
            ("gate2", "user", "The new gate code for the office is 9035.", {"supersedes": ["gate1"]}),
        ]),
        ("2026-03-11 13:00", [
            ("marta2", "user", "Marta changed her plans, she now arrives on March 20th by plane.", {"supersedes": ["marta1"]}),
            ("tiagojob", "user", "I had lunch with Tiago, he got a new job at a design studio.", {}),
            (None, "agent", "Lunch with a friend is always nice.", {}),
        ]),
        ("2026-03-12 08:15", [
            ("rexfood", "user", "I need to buy more food for Rex today.", {}),
            ("dent4", "user", "Remind me to call the dentist to book a cleaning.", {}),
        ]),
    ]),
    "ben": ("America/New_York", "2026-03-11 21:00", [
        ("2026-02-03 08:00", [
            ("budget1", "user", "My manager Siobhan wants the Q1 budget draft by the end of February.", {}),
            ("run1", "user", "I'm training for a half marathon in April.", {}),
            (None, "agent", "Good luck with the training.", {}),
        ]),
        ("2026-02-05 19:00", [
            ("run2", "user", "Ran five miles after work, it felt easy.", {}),
        ]),
        ("2026-02-09 19:30", [
            ("run3", "user", "Ran eight miles today, my knee felt fine.", {}),
            ("niamh1", "user", "My daughter Niamh has a piano recital on March 7th.", {}),
        ]),
        ("2026-02-12 06:45", [
            ("run4", "user", "Early morning run in the snow, only four miles.", {}),
        ]),
        ("2026-02-17 12:00", [
            ("budget2", "user", "Budget meeting with Siobhan: she cut the travel line by twenty percent.", {}),
            ("joaquim1", "user", "Joaquim from finance will review the numbers before we submit.", {}),
            (None, "agent", "Sounds like the budget is coming together.", {}),
        ]),
        ("2026-02-19 18:20", [
            ("run5", "user", "Did interval training on the track, six sets of four hundred metres.", {}),
        ]),
        ("2026-02-24 18:00", [
            ("run6", "user", "Ran ten miles, my left knee started hurting near the end.", {}),
            ("car1", "user", "The car needs new brake pads, the garage quoted 300 dollars.", {}),
        ]),
        ("2026-03-02 07:45", [
            ("budget3", "user", "Siobhan approved the budget draft this morning.", {}),
            ("niamh2", "user", "Niamh's recital moved to March 14th because the hall flooded.", {"supersedes": ["niamh1"]}),
            (None, "agent", "Glad the budget went through.", {}),
        ]),
        ("2026-03-05 20:00", [
            ("run7", "user", "The physio said my knee is a mild strain, no running for a week.", {}),
            ("car2", "user", "The garage fixed the brakes, it ended up costing 280 dollars.", {}),
        ]),
        ("2026-03-07 10:30", [
            ("market", "user", "Went to the farmers market and bought apples and honey.", {}),
            ("wifi1", "user", "My wifi password at home is bluefalcon22.", {}),
        ]),
        ("2026-03-09 09:00", [
            ("budget4", "user", "Siobhan asked me to start on the Q2 budget forecast.", {}),
            ("run8", "user", "Back to running: an easy three miles, the knee held up.", {}),
        ]),
        ("2026-03-10 22:30", [
            ("joaquim2", "user", "Joaquim found an error in the Q2 spreadsheet, the totals were off by a thousand.", {}),
            ("wifi2", "user", "I changed the wifi password to greenotter7.", {"supersedes": ["wifi1"]}),
            (None, "agent", "Good catch on the spreadsheet.", {}),
        ]),
        ("2026-03-11 07:30", [
            ("niamh3", "user", "Had coffee with Niamh's piano teacher, she says Niamh is ready for the recital.", {}),
        ]),
    ]),
    "chloe": ("Europe/Berlin", "2026-03-13 18:00", [
        ("2026-02-05 20:00", [
            ("zofia1", "user", "My colleague Zofia is leading the Lisbon project.", {}),
            ("spanish1", "user", "I'm learning Spanish with an app every evening.", {}),
        ]),
        ("2026-02-12 19:00", [
            ("rent1", "user", "My landlord said the rent goes up to 950 euros from April.", {}),
            ("aoife1", "user", "Aoife invited me to her wedding in Galway in June.", {}),
            (None, "agent", "A wedding in Galway, how exciting.", {}),
        ]),
        ("2026-02-20 21:15", [
            ("spanish2", "user", "Spanish: I finished the first unit, I can order food in a restaurant now.", {}),
            ("heat1", "user", "The heating in the flat broke again.", {}),
        ]),
        ("2026-02-26 18:30", [
            ("rent2", "user", "The landlord corrected it: the rent goes up to 920 euros from April, not 950.", {"supersedes": ["rent1"]}),
            ("zofia2", "user", "Zofia told me the Lisbon project deadline is March 20th.", {}),
        ]),
        ("2026-03-03 08:00", [
            ("heat2", "user", "The plumber fixed the heating this morning, the bill was 140 euros.", {}),
            ("train1", "user", "My train to Munich on Saturday leaves at 7:40 from platform 12.", {"expires": "2026-03-08 00:00"}),
            (None, "agent", "Have a good trip to Munich.", {}),
        ]),
        ("2026-03-06 19:45", [
            ("spanish3", "user", "Spanish: I had my first conversation class with a tutor called Lucía.", {}),
            ("zofia3", "user", "Zofia moved the Lisbon project deadline to March 27th.", {"supersedes": ["zofia2"]}),
        ]),
        ("2026-03-10 12:30", [
            ("aoife2", "user", "Aoife sent the wedding details: June 14th at a castle near Galway.", {}),
            ("heat3", "user", "The heating is making a clicking noise again.", {}),
        ]),
        ("2026-03-12 20:00", [
            ("spanish4", "user", "Spanish class was hard tonight, we did the past tense.", {}),
            ("train2", "user", "My train to Hamburg next Tuesday leaves at 9:15 from platform 7.", {}),
            (None, "agent", "The past tense takes practice, you'll get there.", {}),
        ]),
        ("2026-03-13 09:30", [
            ("flight", "user", "I booked a flight to Dublin for Aoife's wedding.", {}),
            ("zofia4", "user", "Zofia is on holiday until Monday.", {}),
        ]),
    ]),
}

# Topics that recur with different details each day: user -> sessions, as in USERS.
RECURRING = {
    "ana": [
        ("2026-02-03 20:30", [("dinner1", "user", "For dinner I made a mushroom risotto, it came out a bit too salty.", {})]),
        ("2026-02-04 07:30", [("swim1", "user", "Went swimming before work, twenty lengths at the municipal pool.", {})]),
        ("2026-02-11 21:00", [("dinner2", "user", "Dinner tonight was grilled sardines with boiled potatoes.", {})]),
        ("2026-02-13 07:15", [
            ("swim2", "user", "Swimming this morning: I tried butterfly for the first time, it was exhausting.", {}),
            (None, "agent", "Butterfly is a tough stroke, well done for trying.", {}),
        ]),
        ("2026-02-18 20:45", [("dinner3", "user", "I tried a new recipe for dinner: chickpea curry with spinach.", {})]),
        ("2026-02-20 07:20", [("swim3", "user", "No swimming today, the pool was closed for cleaning, so I walked along the river instead.", {})]),
        ("2026-02-25 20:15", [("dinner4", "user", "Dinner was leftover soup, I was too tired to cook.", {})]),
        ("2026-02-27 07:30", [("swim4", "user", "Went swimming, thirty lengths, my best so far.", {})]),
        ("2026-03-03 20:40", [("dinner5", "user", "I cooked bacalhau a Bras for dinner, Rex begged for some the whole time.", {})]),
        ("2026-03-06 07:10", [("swim5", "user", "After swimming I lost my goggles in the changing room.", {})]),
        ("2026-03-08 19:30", [
            ("dinner6", "user", "Dinner at my parents' house: my mother made roast chicken.", {}),
            (None, "agent", "That sounds like a cosy Sunday.", {}),
        ]),
        ("2026-03-09 07:30", [("swim6", "user", "Swimming this morning: a lifeguard gave me tips on breathing on both sides.", {})]),
        ("2026-03-10 20:30", [("dinner7", "user", "For dinner I made pasta with pesto and cherry tomatoes.", {})]),
        ("2026-03-11 21:00", [("dinner8", "user", "Dinner tonight was a takeaway pizza, the kitchen sink is blocked.", {})]),
    ],
    "ben": [
        ("2026-02-04 12:30", [("lunch1", "user", "Lunch was a turkey sandwich at my desk again.", {})]),
        ("2026-02-07 11:00", [("mom1", "user", "My mom called, her hip surgery is scheduled for the end of February.", {})]),
        ("2026-02-10 13:00", [("lunch2", "user", "Had lunch at the new ramen place on Fifth, the broth was excellent.", {})]),
        ("2026-02-15 18:00", [
            ("mom2", "user", "Talked to my mom on the phone, she's nervous about the surgery.", {}),
            (None, "agent", "It's natural to be nervous, I hope it goes well.", {}),
        ]),
        ("2026-02-18 12:45", [("lunch3", "user", "Lunch at the Greek diner, the souvlaki was dry.", {})]),
        ("2026-02-26 12:15", [("lunch4", "user", "Skipped lunch because a meeting ran over.", {})]),
        ("2026-02-27 20:00", [("mom3", "user", "My mom called from the hospital, the surgery went well.", {})]),
        ("2026-03-04 12:30", [("lunch5", "user", "Lunch was tacos from the food truck outside the office.", {})]),
        ("2026-03-06 19:00", [("mom4", "user", "Mom called, she's walking with a cane now.", {})]),
        ("2026-03-08 17:00", [("mom5", "user", "Called my mom, she started physical therapy and complains about the exercises.", {})]),
        ("2026-03-09 12:40", [("lunch6", "user", "Had a salad for lunch, trying to eat lighter before the race.", {})]),
        ("2026-03-10 13:10", [("lunch7", "user", "Lunch was leftover lasagna from the weekend.", {})]),
        ("2026-03-11 12:20", [
            ("lunch8", "user", "For lunch I tried the Vietnamese place, the banh mi was great.", {}),
            (None, "agent", "Good to find a new lunch spot.", {}),
        ]),
    ],
    "chloe": [
        ("2026-02-07 10:00", [("yoga1", "user", "Went to a yoga class at the studio near the canal, lots of stretching.", {})]),
        ("2026-02-09 20:00", [("cook1", "user", "For dinner I made potato soup with sausages.", {})]),
        ("2026-02-14 10:00", [("yoga2", "user", "Yoga was hard today, the teacher had us hold a plank for two minutes.", {})]),
        ("2026-02-17 20:30", [("cook2", "user", "Dinner was a lentil salad with feta, quick and good.", {})]),
        ("2026-02-21 10:30", [("yoga3", "user", "Skipped yoga because of a headache.", {})]),
        ("2026-02-25 20:00", [("cook3", "user", "I made Spaetzle with cheese for dinner, far too heavy.", {})]),
        ("2026-03-02 07:00", [("yoga4", "user", "Tried a morning yoga video at home before work.", {})]),
        ("2026-03-04 20:15", [
            ("cook4", "user", "Cooked a Thai green curry for dinner, too spicy for me.", {}),
            (None, "agent", "Maybe less chili next time.", {}),
        ]),
        ("2026-03-07 10:00", [("yoga5", "user", "At yoga I finally managed a headstand against the wall.", {})]),
        ("2026-03-09 20:00", [("cook5", "user", "Dinner with my flatmate: we made homemade pizza.", {})]),
        ("2026-03-11 19:00", [("yoga6", "user", "Yoga in the evening, a slow class with candles, very relaxing.", {})]),
        ("2026-03-12 21:30", [("cook6", "user", "Late dinner, just bread, cheese and an apple.", {})]),
        ("2026-03-13 07:30", [("yoga7", "user", "Yoga this morning: my lower back felt much better afterwards.", {})]),
    ],
}

# The misheard questions' topics told of another person of the user's life, so that the name is
# what decides (without these, "When is Diego's birthday?" finds the only birthday by its other
# words, and the misheard name does not matter).
NAMESAKES = {
    "ana": [
        ("2026-02-14 11:00", [
            ("martabday", "user", "Marta's birthday is on May 9th, she'd like a cookbook.", {}),
            ("martabook", "user", "Marta recommended a novel called The Elegance of the Hedgehog.", {}),
        ]),
        ("2026-03-01 10:30", [
            ("tiagolives", "user", "Tiago lives in Braga now, near his parents.", {}),
            ("martajob", "user", "Marta started a new job as a nurse at the children's hospital.", {}),
            (None, "agent", "Good news for Marta.", {}),
        ]),
    ],
    "ben": [
        ("2026-02-20 16:00", [
            ("joaquimbudget", "user", "Joaquim approved the budget draft for the sales team.", {}),
            ("siobhanreview", "user", "Siobhan is reviewing the hiring plan this week.", {}),
        ]),
    ],
    "chloe": [
        ("2026-02-16 19:30", [
            ("aoifelead", "user", "Aoife is leading the choir at her church now.", {}),
            ("zofiawedding", "user", "Zofia's wedding is in September in Krakow.", {}),
        ]),
        ("2026-03-08 12:00", [
            ("aoifeholiday", "user", "Aoife is on holiday in Spain until the end of the month.", {}),
        ]),
    ],
}

# user -> [(group, question, [answer keys], [stale keys])]
QUESTIONS = {
    "ana": [
        ("time_mentioned", "What did I tell you about pottery class last week?", ["pottery4"], []),
        ("time_mentioned", "What did I make at pottery on Monday?", ["pottery5"], []),
        ("time_mentioned", "What did the dentist do three weeks ago?", ["dent2"], []),
        ("time_mentioned", "What did the dentist tell me last week?", ["dent3"], []),
        ("time_mentioned", "What did the dentist say in early February?", ["dent1"], []),
        ("time_mentioned", "What did I tell you yesterday about Tiago?", ["tiagojob"], []),
        ("time_mentioned", "What did I say this morning?", ["rexfood", "dent4"], []),
        ("time_mentioned", "What did the vet say on Friday?", ["vet3", "vet4"], []),
        ("time_mentioned", "What did we learn at the first pottery class in February?", ["pottery1"], []),
        ("time_mentioned", "How was Rex doing in mid February?", ["rex0"], []),
        ("time", "What did I have for dinner yesterday?", ["dinner8"], []),
        ("time", "What was dinner two days ago?", ["dinner7"], []),
        ("time", "What did I eat for dinner on Sunday?", ["dinner6"], []),
        ("time", "What did I have for dinner on March 3rd?", ["dinner5"], []),
        ("time", "What did I have for dinner about three weeks ago?", ["dinner3"], []),
        ("time", "How was swimming on Monday?", ["swim6"], []),
        ("time", "What happened when I went swimming last Friday?", ["swim5"], []),
        ("time", "How did swimming go two weeks ago?", ["swim4"], []),
        ("time", "What did I tell you about swimming on February 13th?", ["swim2"], []),
        ("changed", "When is Rex's vet appointment?", ["vet2"], ["vet1"]),
        ("changed", "When does Marta arrive?", ["marta2"], ["marta1"]),
        ("changed", "What is the gate code for the office?", ["gate2"], ["gate1"]),
        ("misheard", "When is Diego's birthday?", ["tiagobday"], []),
        ("misheard", "What book did Diego recommend?", ["tiagobook"], []),
        ("misheard", "Where does Martha live?", ["marta0"], []),
        ("misheard", "What's Diego's new job?", ["tiagojob"], []),
    ],
    "ben": [
        ("time_mentioned", "What did I say about running last week?", ["run7"], []),
        ("time_mentioned", "What did Joaquim find yesterday?", ["joaquim2"], []),
        ("time_mentioned", "What did I tell you about the budget on Monday?", ["budget4"], []),
        ("time_mentioned", "How did my run go two weeks ago?", ["run6"], []),
        ("time_mentioned", "What did Siobhan do with the budget in February?", ["budget2"], []),
        ("time_mentioned", "What did I say about the car last week?", ["car2"], []),
        ("time_mentioned", "What did I buy over the weekend?", ["market"], []),
        ("time_mentioned", "What did I tell you this morning?", ["niamh3"], []),
        ("time", "What did I have for lunch today?", ["lunch8"], []),
        ("time", "What did I eat for lunch yesterday?", ["lunch7"], []),
        ("time", "What was lunch on Monday?", ["lunch6"], []),
        ("time", "What did I have for lunch last week?", ["lunch5"], []),
        ("time", "Where did I go for lunch on February 10th?", ["lunch2"], []),
        ("time", "What did my mom say on Friday?", ["mom4"], []),
        ("time", "What did my mom tell me on Sunday?", ["mom5"], []),
        ("time", "What did my mom tell me two weeks ago?", ["mom3"], []),
        ("changed", "When is Niamh's piano recital?", ["niamh2"], ["niamh1"]),
        ("changed", "What's my wifi password?", ["wifi2"], ["wifi1"]),
        ("misheard", "Did Shivon approve the budget draft?", ["budget3"], []),
        ("misheard", "When is Neve's recital?", ["niamh2"], ["niamh1"]),
        ("misheard", "What is Joakim reviewing?", ["joaquim1"], []),
        ("misheard", "What did Neve's piano teacher say?", ["niamh3"], []),
    ],
    "chloe": [
        ("time_mentioned", "What did I say about Spanish yesterday?", ["spanish4"], []),
        ("time_mentioned", "What did I tell you about the heating last week?", ["heat2"], []),
        ("time_mentioned", "What happened in my Spanish class last Friday?", ["spanish3"], []),
        ("time_mentioned", "What did I book earlier today?", ["flight"], []),
        ("time_mentioned", "What did I say about the heating in February?", ["heat1"], []),
        ("time_mentioned", "What did I tell you about Aoife's wedding this week?", ["aoife2", "flight"], []),
        ("time_mentioned", "What was I learning in Spanish about a month ago?", ["spanish1", "spanish2"], []),
        ("time", "How was yoga this morning?", ["yoga7"], []),
        ("time", "What did I say about yoga on Wednesday?", ["yoga6"], []),
        ("time", "How did yoga go last Saturday?", ["yoga5"], []),
        ("time", "What happened at yoga on February 14th?", ["yoga2"], []),
        ("time", "What did I have for dinner yesterday?", ["cook6"], []),
        ("time", "What was dinner on Monday?", ["cook5"], []),
        ("time", "What did I have for dinner last week?", ["cook4"], []),
        ("time", "What did I eat for dinner three weeks ago?", ["cook2"], []),
        ("time", "What did I have for dinner on February 25th?", ["cook3"], []),
        ("changed", "How much will my rent be from April?", ["rent2"], ["rent1"]),
        ("changed", "When is the Lisbon project deadline?", ["zofia3"], ["zofia2"]),
        ("changed", "Which platform does my train leave from?", ["train2"], ["train1"]),
        ("misheard", "What is Sophia leading?", ["zofia1"], []),
        ("misheard", "When is Eva's wedding?", ["aoife1", "aoife2"], []),
        ("misheard", "When is Sophia back from holiday?", ["zofia4"], []),
    ],
}


def local(zone, text):
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=ZoneInfo(zone))


def build():
    corpus, queries = [], []
    for user, (zone, asked, sessions) in USERS.items():
        ids = {}
        # In time order (the recurring topics' sessions among the others).
        sessions = sorted(
            sessions + RECURRING.get(user, []) + NAMESAKES.get(user, []), key=lambda s: s[0]
        )
        for n, (start, turns) in enumerate(sessions, 1):
            conv = f"{user}-s{n:02d}"
            t0 = local(zone, start)
            for i, (key, speaker, text, extra) in enumerate(turns, 1):
                mid = f"{conv}/{i}"
                if key:
                    assert key not in ids, key
                    ids[key] = mid
                line = {
                    "id": mid,
                    "namespace": user,
                    "conversation": conv,
                    "speaker": speaker,
                    "text": text,
                    # One turn a minute.
                    "ts": datetime.fromtimestamp(t0.timestamp() + 60 * (i - 1), ZoneInfo(zone)).isoformat(),
                }
                if "supersedes" in extra:
                    line["supersedes"] = [ids[k] for k in extra["supersedes"]]
                if "expires" in extra:
                    line["expires_at"] = local(zone, extra["expires"]).isoformat()
                corpus.append(line)
        now = local(zone, asked).isoformat()
        for n, (group, text, answers, stale) in enumerate(QUESTIONS[user], 1):
            queries.append({
                "id": f"{user}-q{n:02d}",
                "group": group,
                "namespace": user,
                "now": now,
                "time_zone": zone,
                "text": text,
                "relevant": [ids[k] for k in answers],
                **({"stale": [ids[k] for k in stale]} if stale else {}),
            })
    return corpus, queries


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="fixtures/eval/conversational")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus, queries = build()
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        with open(out / name, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(corpus)} memories, {len(queries)} queries -> {out}")


if __name__ == "__main__":
    main()
