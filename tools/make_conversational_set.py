#!/usr/bin/env python3
"""Writes fixtures/eval/conversational: scripted voice-assistant sessions of three users over six
weeks (Feb-Mar 2026, three time zones), and questions each user asks at the end of their
timeline, tagged by group:

- time: the question names a time ("last week", "on Monday", "yesterday") and the same topic
  recurs on other days (a weekly class, runs, the dentist);
- changed: a fact was replaced (`supersedes`) or ran out (`expires_at`); `stale` lists what the
  answer replaced, which must never rank above it;
- misheard: a name as a speech recogniser hears it ("Martha" for "Marta", "Diego" for
  "Tiago"); the memories spell it right.

The sessions were written first, as a person would talk over six weeks; the questions after, as
that person would ask them, with the memory that answers each. Nothing here was tuned to a run.
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

# user -> [(group, question, [answer keys], [stale keys])]
QUESTIONS = {
    "ana": [
        ("time", "What did I tell you about pottery class last week?", ["pottery4"], []),
        ("time", "What did I make at pottery on Monday?", ["pottery5"], []),
        ("time", "What did the dentist do three weeks ago?", ["dent2"], []),
        ("time", "What did the dentist tell me last week?", ["dent3"], []),
        ("time", "What did the dentist say in early February?", ["dent1"], []),
        ("time", "What did I tell you yesterday about Tiago?", ["tiagojob"], []),
        ("time", "What did I say this morning?", ["rexfood", "dent4"], []),
        ("time", "What did the vet say on Friday?", ["vet3", "vet4"], []),
        ("time", "What did we learn at the first pottery class in February?", ["pottery1"], []),
        ("time", "How was Rex doing in mid February?", ["rex0"], []),
        ("changed", "When is Rex's vet appointment?", ["vet2"], ["vet1"]),
        ("changed", "When does Marta arrive?", ["marta2"], ["marta1"]),
        ("changed", "What is the gate code for the office?", ["gate2"], ["gate1"]),
        ("misheard", "When is Diego's birthday?", ["tiagobday"], []),
        ("misheard", "What book did Diego recommend?", ["tiagobook"], []),
        ("misheard", "Where does Martha live?", ["marta0"], []),
        ("misheard", "What's Diego's new job?", ["tiagojob"], []),
    ],
    "ben": [
        ("time", "What did I say about running last week?", ["run7"], []),
        ("time", "What did Joaquim find yesterday?", ["joaquim2"], []),
        ("time", "What did I tell you about the budget on Monday?", ["budget4"], []),
        ("time", "How did my run go two weeks ago?", ["run6"], []),
        ("time", "What did Siobhan do with the budget in February?", ["budget2"], []),
        ("time", "What did I say about the car last week?", ["car2"], []),
        ("time", "What did I buy over the weekend?", ["market"], []),
        ("time", "What did I tell you this morning?", ["niamh3"], []),
        ("changed", "When is Niamh's piano recital?", ["niamh2"], ["niamh1"]),
        ("changed", "What's my wifi password?", ["wifi2"], ["wifi1"]),
        ("misheard", "Did Shivon approve the budget draft?", ["budget3"], []),
        ("misheard", "When is Neve's recital?", ["niamh2"], ["niamh1"]),
        ("misheard", "What is Joakim reviewing?", ["joaquim1"], []),
        ("misheard", "What did Neve's piano teacher say?", ["niamh3"], []),
    ],
    "chloe": [
        ("time", "What did I say about Spanish yesterday?", ["spanish4"], []),
        ("time", "What did I tell you about the heating last week?", ["heat2"], []),
        ("time", "What happened in my Spanish class last Friday?", ["spanish3"], []),
        ("time", "What did I book earlier today?", ["flight"], []),
        ("time", "What did I say about the heating in February?", ["heat1"], []),
        ("time", "What did I tell you about Aoife's wedding this week?", ["aoife2", "flight"], []),
        ("time", "What was I learning in Spanish about a month ago?", ["spanish1", "spanish2"], []),
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
