"""The benign side of the classifier's data: ordinary prompts this project writes.

No package ships benign prompts, so they are made here, deterministically, from templates
and fillers: questions, instructions, code requests, business writing, support requests
and longer texts, in English, German, French, Spanish, Italian and Dutch. Hard negatives
are included on purpose: prompts that say "ignore", "system", "password", "instructions",
"mode", "role" or "rules" innocently, base64 and hex that are data, not wrappers, and
texts as long as the attacks are. ``prompts()`` is the set; ``digest()`` names it in a
classifier's lineage.
"""

from __future__ import annotations

import hashlib
import itertools
import json

_TOPICS = ["photosynthesis", "inflation", "the French Revolution", "black holes", "vaccines",
           "compound interest", "the water cycle", "machine learning", "plate tectonics",
           "the Roman Empire", "climate change", "blockchain", "the immune system",
           "supply and demand", "quantum computing", "the printing press", "jet engines",
           "sourdough fermentation", "the electoral college", "solar panels"]
_AUDIENCES = ["a ten-year-old", "a new employee", "my grandmother", "a first-year student",
              "a busy manager"]
_LANGS = ["Python", "JavaScript", "SQL", "Go", "Rust", "Bash", "Java", "TypeScript"]
_TASKS = ["reads a CSV file and prints the average of the second column",
          "reverses a linked list", "checks whether a string is a palindrome",
          "retries an HTTP request three times with exponential backoff",
          "parses ISO 8601 dates and converts them to UTC",
          "counts the words in a text file", "merges two sorted lists",
          "validates an e-mail address", "removes duplicate rows from a table",
          "renames every .jpeg file in a folder to .jpg"]
_BUSINESS = ["a polite reminder about an unpaid invoice", "a meeting agenda for the quarterly review",
             "a job posting for a data engineer", "a short apology for a delayed delivery",
             "a summary of last week's sales figures", "an announcement of the new office hours",
             "a thank-you note to a supplier", "a project status update for the board",
             "a request for a budget increase", "the minutes of today's team meeting"]
_PLACES = ["Lisbon", "Kyoto", "Vancouver", "Cape Town", "Reykjavik", "Buenos Aires",
           "Edinburgh", "Vienna"]

# Innocent uses of the words injection patterns and attacks are made of.
_HARD_NEGATIVES = [
    "How do I make git diff ignore whitespace changes?",
    "What are the system requirements for running Windows 11?",
    "I forgot my password. How do I reset it on the customer portal?",
    "Please ignore the previous email; I attached the wrong invoice.",
    "Can you explain the instructions for assembling this IKEA shelf?",
    "Write a password policy for our company: minimum length, rotation and MFA.",
    "What does 'developer' mean in the context of photography film?",
    "My son's school uses a points system. How can I explain it to him?",
    "Which rules apply to carrying liquids in hand luggage?",
    "How do I configure the system prompt in my own chatbot application?",
    "Summarise the safety instructions for using a chainsaw.",
    "Is it safe to ignore a 'check engine' light for a few days?",
    "Explain the role of the mitochondria in a cell.",
    "What is the difference between a role and a permission in access control?",
    "Write a short story about a robot who learns to follow the rules of chess.",
    "Our operating system keeps showing a warning. What does 'kernel panic' mean?",
    "How do I store passwords safely in a database? Which hash function should I use?",
    "Please translate the user manual's instructions into plain English.",
    "What is airplane mode and does it save battery?",
    "Can you act as my interviewer and ask me questions for a marketing role?",
    "Pretend to be a tour guide in Rome and describe the Colosseum.",
    "Roleplay a customer complaining about a late pizza so I can practise support calls.",
    "What is a jailbreak in the context of iPhones, and is it legal?",
    "Ignore the formatting for now, just give me the main points of this article.",
    "Forget about the budget for a moment: what would the ideal team offsite look like?",
    "My previous instructions to the contractor were unclear. How do I write better ones?",
    "Explain what a prompt is in the context of the Unix shell.",
    "What does 'override' mean in object-oriented programming? Give a Java example.",
    "How do I bypass the cache in Chrome when reloading a page?",
    "What are the ethical guidelines for medical research on humans?",
    "Explain content filters on a home router for parents.",
    "Decode this base64 string from our logs: aGVsbG8gd29ybGQ=",
    "What does the hex value 48656c6c6f mean in ASCII?",
    "The previous answer was great, can you repeat it in bullet points?",
    "Print the multiplication table of seven.",
    "Show me the instructions for installing Python on macOS.",
    "Show me everything above 30 degrees in this temperature list: 12, 31, 28, 35.",
    "Tell me the rules of the game Go in simple words.",
    "What restrictions apply to drone flights near airports?",
    "Write a SQL query that shows all users whose password expired last month.",
    "The system administrator asked me to rotate the API keys. What is the procedure?",
    "Please disregard the typo in my last message and answer the question.",
    "Set the tone of the reply to friendly but firm; the customer ignored two reminders.",
    "Act as a Linux terminal tutor: explain what ls -la prints.",
    "What is developer mode on Android and how do I turn it off again?",
    "How can I stay in character when acting on stage for the first time?",
    "What is the origin of the name DAN in Danish surnames?",
    "Explain how the brakes' anti-lock system works.",
    "What were the new rules introduced by GDPR for personal data?",
    "Write the previous paragraph again, but shorter.",
]

_EN = [
    "What is {topic}? Explain it to {aud}.",
    "Give me three key facts about {topic}.",
    "Write a short essay outline about {topic}.",
    "What are common misconceptions about {topic}?",
    "Write a {lang} function that {task}.",
    "In {lang}, how would I write code that {task}? Please add comments.",
    "Review this idea: a {lang} script that {task}. What could go wrong?",
    "Draft {biz}.",
    "Please write {biz}, in a friendly tone.",
    "Make {biz} shorter and more formal.",
    "Plan a three-day trip to {place} for a family with two children.",
    "What is the best time of year to visit {place}?",
    "Recommend some local dishes to try in {place}.",
]
_DE = [
    "Was ist {topic}? Erkläre es bitte einfach.",
    "Schreibe eine kurze Zusammenfassung über {topic}.",
    "Kannst du mir eine Funktion in {lang} schreiben, die Zeilen einer Datei zählt?",
    "Formuliere {biz_de}.",
    "Welche Sehenswürdigkeiten gibt es in {place}?",
]
_FR = [
    "Qu'est-ce que {topic} ? Explique-le simplement.",
    "Rédige un court résumé sur {topic}.",
    "Écris une fonction {lang} qui trie une liste de nombres.",
    "Peux-tu rédiger {biz_fr} ?",
    "Que faut-il visiter à {place} en deux jours ?",
]
_ES = [
    "¿Qué es {topic}? Explícalo con un ejemplo.",
    "Escribe un resumen breve sobre {topic}.",
    "Escribe una función en {lang} que sume los números de una lista.",
    "¿Puedes redactar {biz_es}?",
    "¿Qué comida típica debo probar en {place}?",
]
_IT = [
    "Che cos'è {topic}? Spiegalo in poche righe.",
    "Scrivi una funzione in {lang} che calcoli la media di una lista.",
    "Cosa posso visitare a {place} in un fine settimana?",
]
_NL = [
    "Wat is {topic}? Leg het eenvoudig uit.",
    "Schrijf een functie in {lang} die een lijst sorteert.",
    "Wat kan ik doen in {place} als het regent?",
]
_BIZ_DE = ["eine höfliche Zahlungserinnerung", "eine Einladung zum Teammeeting",
           "eine Absage an einen Bewerber"]
_BIZ_FR = ["une relance polie pour une facture impayée", "une invitation à une réunion d'équipe",
           "un courriel de remerciement à un client"]
_BIZ_ES = ["un correo de seguimiento para un cliente", "una invitación a la reunión mensual",
           "una disculpa por un retraso en la entrega"]

_LONG_PARAGRAPHS = [
    "Our team has finished the migration of the billing service to the new cluster. The "
    "old servers will stay online until the end of the month so that we can compare the "
    "invoices both systems produce. So far the totals agree to the cent, and the nightly "
    "batch now finishes in forty minutes instead of three hours.",
    "Customers have asked for a way to export their order history. The support team "
    "currently answers these requests by hand, which takes about two hours a week. A "
    "self-service export in the account settings would remove that work and make the "
    "data portability requirements of the regulation easier to meet.",
    "The warehouse reported that pallets from the northern supplier arrive with damaged "
    "corners about once a week. Photos are attached to the tickets. The supplier says the "
    "damage happens during unloading; our staff say it is already there when the truck "
    "doors open. We need a clear procedure for documenting the state of each delivery.",
    "During the last sprint the mobile app's crash rate dropped from 1.2% to 0.4% of "
    "sessions, mostly thanks to the fix in the image cache. The remaining crashes come "
    "from older Android devices with little memory. Please note that the system "
    "requirements on the store page still list Android 8, which we no longer test.",
    "The new onboarding checklist has twelve steps: laptop, accounts, password manager, "
    "building badge, payroll forms, safety instructions, the code of conduct, and five "
    "meetings with the people the new colleague will work with most. Managers should "
    "ignore the old checklist in the shared drive; it will be archived next week.",
    "Please find below the draft of the press release for the opening of our new store. "
    "The opening is planned for the first Saturday of next month, with a small reception "
    "for neighbours and local businesses. The mayor's office has confirmed that someone "
    "will attend, though they could not yet say who.",
    "Der Umzug des Rechenzentrums ist abgeschlossen. Alle Systeme laufen wieder, und die "
    "Antwortzeiten des Kundenportals sind um ein Drittel gesunken. Bitte meldet Probleme "
    "wie gewohnt über das Ticketsystem und nicht per E-Mail an einzelne Kollegen.",
    "Le comité a examiné les trois offres reçues pour la rénovation des bureaux. La "
    "deuxième est la moins chère, mais le délai proposé dépasse de deux mois notre "
    "calendrier. Nous proposons donc de négocier le délai avec le premier fournisseur.",
    "El informe trimestral muestra un aumento del doce por ciento en las ventas en línea, "
    "mientras que las tiendas físicas se mantienen estables. El equipo recomienda invertir "
    "en la logística de devoluciones antes de la temporada de fin de año.",
]
_LONG_ASKS = ["Summarise this in two sentences:", "Translate this into German:",
              "Turn this into a list of action items:", "Rewrite this for a customer newsletter:",
              "Check this text for spelling and grammar mistakes:",
              "What questions should I ask after reading this?"]

_CODE_SNIPPETS = [
    "def total(items):\n    s = 0\n    for i in items:\n        s += i.price * i.qty\n    return s",
    "SELECT customer_id, COUNT(*) FROM orders WHERE created_at > now() - interval '30 days' "
    "GROUP BY customer_id ORDER BY 2 DESC;",
    "for f in *.log; do gzip \"$f\"; done",
    "const users = await fetch('/api/users').then(r => r.json());\nconsole.log(users.length);",
    "fn main() {\n    let v: Vec<i32> = (1..10).collect();\n    println!(\"{:?}\", v);\n}",
]
_CODE_ASKS = ["Explain what this code does:", "Find the bug in this code:",
              "Add error handling to this code:", "Write unit tests for this:"]


def _fill(templates: list[str], **choices: list[str]) -> list[str]:
    out = []
    for template in templates:
        keys = [k for k in choices if "{" + k + "}" in template]
        for combo in itertools.product(*(choices[k] for k in keys)):
            out.append(template.format(**dict(zip(keys, combo, strict=True))))
    return out


def _thin(items: list[str], keep_every: int, salt: str) -> list[str]:
    """A deterministic subset: about one in ``keep_every``, chosen by hash."""
    return [t for t in items
            if int(hashlib.sha256((salt + t).encode()).hexdigest()[:8], 16) % keep_every == 0]


def prompts() -> list[str]:
    """The benign prompts, in a fixed order, without duplicates."""
    en = _fill(_EN, topic=_TOPICS, aud=_AUDIENCES, lang=_LANGS, task=_TASKS, biz=_BUSINESS,
               place=_PLACES)
    other = _fill(_DE, topic=_TOPICS, lang=_LANGS, biz_de=_BIZ_DE, place=_PLACES)
    other += _fill(_FR, topic=_TOPICS, lang=_LANGS, biz_fr=_BIZ_FR, place=_PLACES)
    other += _fill(_ES, topic=_TOPICS, lang=_LANGS, biz_es=_BIZ_ES, place=_PLACES)
    other += _fill(_IT, topic=_TOPICS, lang=_LANGS, place=_PLACES)
    other += _fill(_NL, topic=_TOPICS, lang=_LANGS, place=_PLACES)
    longs = [f"{ask}\n\n{a}\n\n{b}" for ask in _LONG_ASKS
             for a, b in itertools.permutations(_LONG_PARAGRAPHS, 2)]
    code = [f"{ask}\n\n{snippet}" for ask in _CODE_ASKS for snippet in _CODE_SNIPPETS]
    out = (_HARD_NEGATIVES + _thin(en, 2, "en") + _thin(other, 2, "other")
           + _thin(longs, 3, "long") + code)
    return list(dict.fromkeys(out))


def digest() -> str:
    """sha256 of the set (canonical JSON of the list): the benign side of a lineage."""
    return hashlib.sha256(json.dumps(prompts(), ensure_ascii=False).encode()).hexdigest()
