"""A synthetic, labelled corpus of chat requests for the task classifier (tests, demo, benchmark).

``edgeproxy tasks corpus -o DIR`` writes ``train.jsonl`` and ``heldout.jsonl``; the same seed
gives the same files, byte for byte (``random.Random`` is stable across Python versions). Each
line is ``{"messages": [...], "task": ..., "template": ...}``.

Four tasks, as a product's AI features produce them (the seeds' Notion examples):

- ``extraction``: fill fields, tag, normalise, convert, answer in JSON or ``key: value`` lines;
- ``qa``: questions about a document (pasted, or "in my workspace"), with citations;
- ``writing``: specs, design docs, announcements, posts, rewrites (long-form output);
- ``chat``: small talk and general questions, often several turns.

It is built to be hard in the ways real traffic is: the same documents (invoices, contracts,
meeting notes, tickets, incident reports, policies) appear under every task, so the document
says nothing about the task and the instruction must; instructions come with and without a
system prompt, before or after the document; questions appear in chat and extraction too.
Every template belongs to one split: ``heldout.jsonl`` holds only templates that
``train.jsonl`` never shows, so its accuracy measures phrasing the model has not seen (on
traffic from a fixed set of product features, which repeats its templates, expect better).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

TASKS = ("extraction", "qa", "writing", "chat")

# -- vocabulary -------------------------------------------------------------------------------

# fmt: off
COMPANIES = [
    "Acme Logistics", "Brightline Health", "Cobalt Robotics", "Dunmore Foods", "Everfield Bank",
    "Fjord Analytics", "Granite Insurance", "Helios Solar", "Ionic Labs", "Juniper Travel",
    "Kestrel Media", "Lumen Retail", "Meridian Legal", "Northwind Traders", "Orchard Schools",
    "Pinnacle Freight", "Quartz Security", "Riverbend Clinics", "Summit Outdoor",
    "Tidewater Energy",
]
PEOPLE = [
    "Maya Chen", "Jonas Weber", "Priya Raman", "Luis Ortega", "Aiko Tanaka", "Samuel Okafor",
    "Elena Petrova", "Noah Fischer", "Fatima Zahra", "Oliver Brooks", "Chloé Martin",
    "Daniel Kim", "Grace Mensah", "Tomás Silva", "Hannah Lee", "Ravi Kapoor", "Sofia Rossi",
    "Ben Carter", "Amara Diallo", "Lena Novak",
]
PRODUCTS = [
    "the mobile app", "the billing service", "the search API", "the onboarding flow",
    "the analytics dashboard", "the calendar integration", "the offline mode",
    "the admin console", "the export tool", "the notification center", "the checkout page",
    "the data warehouse", "the recommendation engine", "the help center",
]
FEATURES = [
    "shared team templates", "usage-based pricing", "single sign-on for small teams",
    "a weekly digest email", "bulk import from spreadsheets", "dark mode",
    "audit logs for admins", "AI meeting summaries", "two-factor recovery codes",
    "a public status page", "granular page permissions", "recurring tasks",
    "an offline-first editor", "multi-currency invoices", "smart reminders",
]
TOPICS = [
    "remote onboarding", "our migration to Postgres", "reducing cloud costs",
    "accessibility in design systems", "incident response", "hiring senior engineers",
    "pricing experiments", "customer interviews", "writing good postmortems",
    "choosing an LLM provider", "quarterly planning", "data retention", "caching strategies",
]
CITIES = [
    "Berlin", "Lisbon", "Austin", "Toronto", "Nairobi", "Osaka", "Lyon", "Denver", "Melbourne",
    "Bogotá", "Warsaw", "Dublin",
]
MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
]
CURRENCIES = [
    "EUR", "USD", "GBP", "CAD", "JPY",
]
SERVICES = [
    "payments-api", "auth-service", "search-indexer", "email-worker", "cdn-edge", "billing-cron",
    "sync-gateway", "ml-scoring",
]
TEAMS = [
    "Platform", "Growth", "Payments", "Design", "Support", "Data", "Security", "Mobile",
]
ROLES = [
    "staff engineer", "product designer", "support lead", "data analyst", "engineering manager",
    "security engineer", "technical writer", "account executive",
]
AUDIENCES = [
    "customers", "the engineering team", "new hires", "investors", "small businesses",
    "our community", "enterprise admins", "the sales team",
]
TONES = [
    "friendly", "formal", "concise", "upbeat", "neutral", "persuasive", "warm",
]
SEVERITIES = [
    "low", "medium", "high", "critical",
]
FILLER = [
    "This document is shared with the whole team for reference.",
    "Please reach out to the owner if anything here looks out of date.",
    "Numbers below are taken from the finance export of last week.",
    "The previous version of this page was archived in the team space.",
    "All times are in UTC unless stated otherwise.",
    "We will review this again at the next planning meeting.",
    "Attachments are linked at the bottom of the page.",
    "Some details were redacted for privacy reasons.",
    "The summary was written by the on-call engineer and reviewed by the team lead.",
    "Feedback from the pilot customers is collected in a separate database.",
    "Related pages: roadmap, pricing notes, and the customer FAQ.",
    "This replaces the draft circulated in the previous sprint.",
]
# fmt: on


@dataclass(frozen=True)
class Doc:
    """A document the templates wrap, with what can be asked or extracted about it."""

    kind: str  # "invoice", "contract", ...
    text: str
    questions: tuple[str, ...]
    fields: tuple[str, ...]


def _pick(rng: random.Random, items: list[str], k: int = 1) -> list[str]:
    return rng.sample(items, k)


def _filler(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.sample(FILLER, rng.randint(low, high)))


def _date(rng: random.Random) -> str:
    return f"{rng.choice(MONTHS)} {rng.randint(1, 28)}, {rng.randint(2022, 2026)}"


def _money(rng: random.Random) -> str:
    return f"{rng.choice(CURRENCIES)} {rng.randint(80, 98000):,}.{rng.randint(0, 99):02d}"


# -- documents (shared by every task: the document never tells the task) ----------------------


def _invoice(rng: random.Random) -> Doc:
    vendor, client = _pick(rng, COMPANIES, 2)
    lines = [
        f"  - {rng.choice(['Consulting', 'License', 'Support plan', 'Hardware', 'Training', 'Hosting'])}"
        f" x{rng.randint(1, 40)}: {_money(rng)}"
        for _ in range(rng.randint(2, 6))
    ]
    text = (
        f"INVOICE {rng.choice(['INV', 'No.', '#'])}{rng.randint(1000, 99999)}\n"
        f"From: {vendor}, {rng.randint(1, 300)} Market Street, {rng.choice(CITIES)}\n"
        f"Bill to: {client}\nIssued: {_date(rng)}\nDue: {_date(rng)}\n"
        "Items:\n" + "\n".join(lines) + f"\nTax: {rng.randint(0, 25)}%\nTotal due: {_money(rng)}\n"
        f"Payment terms: net {rng.choice([15, 30, 45, 60])} days. {_filler(rng, 0, 2)}"
    )
    return Doc(
        "invoice",
        text,
        (
            "what is the total due on this invoice?",
            "when is the payment due?",
            f"how much did {client} pay for hosting?",
            "which company issued the invoice?",
            "what are the payment terms?",
        ),
        ("invoice number", "vendor", "issue date", "due date", "total", "currency", "tax rate"),
    )


def _contract(rng: random.Random) -> Doc:
    a, b = _pick(rng, COMPANIES, 2)
    notice = rng.choice([14, 30, 60, 90])
    text = (
        f'MASTER SERVICES AGREEMENT between {a} ("Provider") and {b} ("Customer"), '
        f"effective {_date(rng)}.\n"
        f"1. Term. This agreement runs for {rng.randint(1, 5)} years and renews automatically "
        f"unless either party gives {notice} days' written notice.\n"
        f"2. Fees. Customer pays {_money(rng)} per {rng.choice(['month', 'quarter', 'year'])}, "
        f"invoiced in advance.\n"
        f"3. Termination. Either party may terminate for material breach not cured within "
        f"{rng.choice([10, 15, 30])} days.\n"
        f"4. Liability. Liability is capped at the fees paid in the "
        f"{rng.choice(['six', 'twelve', 'twenty-four'])} months before the claim.\n"
        f"5. Governing law. The laws of {rng.choice(['Delaware', 'England and Wales', 'Ontario', 'Germany', 'Ireland'])} apply.\n"
        f"{_filler(rng, 0, 2)}"
    )
    return Doc(
        "contract",
        text,
        (
            "what is the notice period for termination?",
            "how long does the agreement run?",
            "which law governs the contract?",
            "is the liability capped, and at what amount?",
            "what happens if the customer does not pay?",
        ),
        (
            "parties",
            "effective date",
            "term",
            "notice period",
            "fees",
            "governing law",
            "liability cap",
        ),
    )


def _meeting(rng: random.Random) -> Doc:
    people = _pick(rng, PEOPLE, rng.randint(3, 6))
    team = rng.choice(TEAMS)
    items = [
        f"- {p} to {rng.choice(['follow up on', 'draft', 'review', 'ship', 'estimate', 'test'])} "
        f"{rng.choice(PRODUCTS + FEATURES)} by {_date(rng)}"
        for p in people[: rng.randint(2, len(people))]
    ]
    text = (
        f"{team} weekly sync, {_date(rng)}\nAttendees: {', '.join(people)}\n"
        f"Discussion: we reviewed {rng.choice(PRODUCTS)} and agreed to "
        f"{rng.choice(['delay the launch by two weeks', 'ship behind a feature flag', 'cut scope', 'add a beta group', 'run a pricing test'])}. "
        f"{rng.choice(people)} raised concerns about {rng.choice(TOPICS)}.\n"
        "Action items:\n" + "\n".join(items) + f"\n{_filler(rng, 0, 2)}"
    )
    return Doc(
        "meeting notes",
        text,
        (
            "who owns the follow-up on the launch?",
            "what did we decide about the launch date?",
            f"what concerns did {people[0]} raise?",
            "which action items are due this month?",
            "who attended the sync?",
        ),
        ("date", "attendees", "decisions", "action items", "owners", "due dates"),
    )


def _ticket(rng: random.Random) -> Doc:
    person = rng.choice(PEOPLE)
    text = (
        f"Ticket #{rng.randint(10000, 99999)} opened by {person} ({rng.choice(COMPANIES)})\n"
        f"Subject: {rng.choice(['Cannot log in', 'Export fails', 'Charged twice', 'Sync is slow', 'Missing data after update', 'Page will not load'])}\n"
        f"Product area: {rng.choice(PRODUCTS)}\n"
        f"Message: Hi, since {_date(rng)} {rng.choice(['every export times out', 'I get an error 500', 'my invoices show the wrong currency', 'the app crashes on start', 'my teammates cannot see shared pages'])}. "
        f"We have {rng.randint(3, 400)} users affected. {rng.choice(['This is blocking our month-end close.', 'Not urgent but annoying.', 'Please fix ASAP, our launch is tomorrow.', 'We tried clearing the cache already.'])}\n"
        f"Plan: {rng.choice(['Business', 'Enterprise', 'Free', 'Team'])}. {_filler(rng, 0, 1)}"
    )
    return Doc(
        "support ticket",
        text,
        (
            "what is the customer's problem?",
            "how many users are affected?",
            "which plan is the customer on?",
            "when did the issue start?",
            "has the customer tried anything already?",
        ),
        ("ticket id", "customer", "company", "category", "urgency", "affected users", "plan"),
    )


def _incident(rng: random.Random) -> Doc:
    service = rng.choice(SERVICES)
    text = (
        f"Incident report: {service} degradation\nDate: {_date(rng)}\n"
        f"Duration: {rng.randint(4, 180)} minutes (detected {rng.randint(1, 30)} minutes after start)\n"
        f"Impact: {rng.randint(1, 60)}% of requests to {service} failed with "
        f"{rng.choice(['502', '503', 'timeouts', '429'])}; {rng.choice(PRODUCTS)} was unavailable for some users.\n"
        f"Root cause: {rng.choice(['an expired TLS certificate', 'a bad config push', 'database connection exhaustion', 'an upstream provider outage', 'a memory leak after the last deploy'])}.\n"
        f"Follow-ups: {rng.choice(PEOPLE)} to add alerting; {rng.choice(PEOPLE)} to write a runbook.\n"
        f"Severity: {rng.choice(SEVERITIES)}. {_filler(rng, 0, 2)}"
    )
    return Doc(
        "incident report",
        text,
        (
            "what was the root cause of the incident?",
            "how long did the outage last?",
            "what share of requests failed?",
            "who is writing the runbook?",
            "how long until the incident was detected?",
        ),
        ("service", "date", "duration", "impact", "root cause", "severity", "follow-ups"),
    )


def _policy(rng: random.Random) -> Doc:
    company = rng.choice(COMPANIES)
    kind = rng.choice(["leave", "expense", "security", "travel"])
    body = {
        "leave": f"Employees get {rng.randint(20, 30)} days of paid vacation and "
        f"{rng.choice([12, 16, 20, 26])} weeks of parental leave. Unused vacation carries over "
        f"up to {rng.randint(3, 10)} days. Sick leave does not require a note for the first "
        f"{rng.randint(2, 5)} days.",
        "expense": f"Meals are reimbursed up to {_money(rng)} per day while travelling. Receipts "
        f"over {rng.randint(20, 100)} must be attached within {rng.randint(7, 60)} days. "
        "Alcohol is not reimbursed.",
        "security": f"Laptops must use full-disk encryption. Passwords rotate every "
        f"{rng.choice([90, 180, 365])} days. Report lost devices to IT within "
        f"{rng.randint(1, 24)} hours. Customer data never leaves approved systems.",
        "travel": f"Book flights at least {rng.randint(7, 21)} days ahead. Economy class for "
        f"flights under {rng.randint(4, 9)} hours. Hotels up to {_money(rng)} a night in "
        f"{rng.choice(CITIES)}.",
    }[kind]
    text = (
        f"{company} employee handbook, {kind} policy (updated {_date(rng)})\n{body}\n"
        f"Questions go to {rng.choice(PEOPLE)} in {rng.choice(TEAMS)}. {_filler(rng, 0, 2)}"
    )
    return Doc(
        f"{kind} policy",
        text,
        (
            "how many weeks of parental leave do we get?",
            "what is the daily meal allowance?",
            "how often do passwords rotate?",
            "when was this policy last updated?",
            "who do I ask about this policy?",
        ),
        ("policy type", "updated", "limits", "deadlines", "contact"),
    )


def _review(rng: random.Random) -> Doc:
    stars = rng.randint(1, 5)
    text = (
        f"Review of {rng.choice(PRODUCTS)} by {rng.choice(PEOPLE)}, {stars}/5 stars\n"
        + rng.choice(
            [
                "Honestly the best update this year, the new layout saves me an hour a week.",
                "It keeps crashing when I upload large files. Support was slow to answer.",
                "Decent, but pricing went up again and the export is still clunky.",
                "Love the integrations, hate the notifications. Mixed feelings overall.",
                "Switched from a competitor last month and the team adopted it in two days.",
            ]
        )
        + f" {_filler(rng, 0, 1)}"
    )
    return Doc(
        "review",
        text,
        (
            "is the reviewer happy with the product?",
            "what does the reviewer complain about?",
            "how many stars did they give?",
        ),
        ("product", "reviewer", "rating", "sentiment", "complaints"),
    )


DOCS: list[Callable[[random.Random], Doc]] = [
    _invoice,
    _contract,
    _meeting,
    _ticket,
    _incident,
    _policy,
    _review,
]


def _doc(rng: random.Random) -> Doc:
    return rng.choice(DOCS)(rng)


def _fields(rng: random.Random, doc: Doc) -> str:
    chosen = rng.sample(doc.fields, rng.randint(2, min(5, len(doc.fields))))
    return ", ".join(chosen)


def _keys(rng: random.Random, doc: Doc) -> str:
    chosen = rng.sample(doc.fields, rng.randint(2, min(5, len(doc.fields))))
    return ", ".join(f.replace(" ", "_") for f in chosen)


# -- templates: one function per phrasing; each returns (system prompt or None, user turns) --

Messages = list[dict[str, str]]
Template = Callable[[random.Random], Messages]


def _msgs(system: str | None, *turns: str) -> Messages:
    out: Messages = [] if system is None else [{"role": "system", "content": system}]
    roles = ("user", "assistant")
    out.extend({"role": roles[i % 2], "content": t} for i, t in enumerate(turns))
    return out


def _ex_json(rng: random.Random) -> Messages:
    d = _doc(rng)
    return _msgs(
        None,
        f"Extract the {_fields(rng, d)} from the {d.kind} below and return them "
        f"as JSON.\n\n{d.text}",
    )


def _ex_fill(rng: random.Random) -> Messages:
    d = _doc(rng)
    return _msgs(
        None,
        f"Fill in these fields: {_fields(rng, d)}. Use null when a field is "
        f"missing.\n---\n{d.text}",
    )


def _ex_system_engine(rng: random.Random) -> Messages:
    d = _doc(rng)
    return _msgs(
        "You are a data extraction engine. Output only valid JSON matching the schema; no prose.",
        f"Schema keys: {_keys(rng, d)}\nInput:\n{d.text}",
    )


def _ex_lines(rng: random.Random) -> Messages:
    d = _doc(rng)
    return _msgs(
        None,
        f"{d.text}\n\nFrom the text above, pull out {_fields(rng, d)}. One line "
        "per field, formatted as key: value.",
    )


def _ex_db_properties(rng: random.Random) -> Messages:
    d = _doc(rng)
    props = rng.sample(["Status", "Owner", "Due date", "Priority", "Tags", "Customer", "Amount"], 4)
    return _msgs(
        "You fill database properties from page content. Reply with the property values only.",
        f"Page content:\n{d.text}\n\nProperties to fill: {', '.join(props)}",
    )


def _ex_tag(rng: random.Random) -> Messages:
    d = _doc(rng)
    return _msgs(
        None,
        f"Tag this {d.kind} with a category, an urgency ({'/'.join(SEVERITIES)}) "
        f"and the team that should own it ({', '.join(rng.sample(TEAMS, 4))}).\n\n{d.text}",
    )


def _ex_table(rng: random.Random) -> Messages:
    rows = "\n".join(
        f"{p} | {rng.choice(ROLES)} | {rng.choice(CITIES)} | {_date(rng)}"
        for p in rng.sample(PEOPLE, rng.randint(3, 7))
    )
    return _msgs(
        None,
        "Convert this table into a JSON array of objects with keys name, role, "
        f"city, start_date:\nname | role | city | start\n{rows}",
    )


def _ex_normalise(rng: random.Random) -> Messages:
    lines = "\n".join(
        f"{rng.randint(1, 900)} {rng.choice(['Main St', 'rue de la Paz', 'Hauptstr.', 'King Street W', 'Av. Liberdade'])}"
        f" {rng.choice(['apt', '#', 'suite', ''])}{rng.randint(1, 40)}, {rng.choice(CITIES)}"
        for _ in range(rng.randint(3, 6))
    )
    return _msgs(
        None,
        "Normalize each address into street, number, unit, city and country "
        f"columns (CSV, header first):\n{lines}",
    )


def _ex_sentiment(rng: random.Random) -> Messages:
    d = _review(rng)
    return _msgs(
        None,
        'Classify the review. Reply exactly as {"sentiment": "positive|neutral|negative", '
        f'"product": "...", "rating": 0}}\n\nReview:\n{d.text}',
    )


def _ex_parse_record(rng: random.Random) -> Messages:
    d = _doc(rng)
    return _msgs(
        "Structured output mode.",
        f"Parse the following {d.kind} into a record with keys {_keys(rng, d)}. Missing values "
        f"are empty strings.\n\n{d.text}",
    )


def _ex_entities(rng: random.Random) -> Messages:
    d = _doc(rng)
    return _msgs(
        None,
        f"List every person, company, date and amount mentioned in this "
        f"{d.kind}, grouped by type, as YAML.\n{d.text}",
    )


def _ex_autofill_short(rng: random.Random) -> Messages:
    task = (
        f"{rng.choice(['Fix', 'Review', 'Ship', 'Write tests for', 'Migrate'])} "
        f"{rng.choice(PRODUCTS)} before {_date(rng)}, assigned to {rng.choice(PEOPLE)}, "
        f"{rng.choice(['blocked by legal', 'high priority', 'nice to have', 'customer escalation'])}"
    )
    return _msgs(
        None, f'Auto-fill status, assignee, due_date and priority for this task card: "{task}"'
    )


def _qa_based_on(rng: random.Random) -> Messages:
    d = _doc(rng)
    return _msgs(None, f"Based on the {d.kind} below, {rng.choice(d.questions)}\n\n{d.text}")


def _qa_context_question(rng: random.Random) -> Messages:
    d = _doc(rng)
    q = rng.choice(d.questions)
    return _msgs(
        "Answer using only the provided context. Cite the line you rely on as [n]. If the "
        "answer is not in the context, say so.",
        f"Context:\n{d.text}\n\nQuestion: {q[0].upper()}{q[1:]}",
    )


def _qa_after(rng: random.Random) -> Messages:
    d = _doc(rng)
    q = rng.choice(d.questions)
    return _msgs(None, f"{d.text}\n\n{q[0].upper()}{q[1:]} Quote the relevant sentence.")


def _qa_workspace(rng: random.Random) -> Messages:
    d = _doc(rng)
    return _msgs(
        "You are a workspace assistant. You answer questions about the user's pages and "
        "databases, with links to the pages you used.",
        f"Search my workspace: {rng.choice(d.questions)} It was in the {d.kind} from "
        f"{rng.choice(MONTHS)}.",
    )


def _qa_check(rng: random.Random) -> Messages:
    d = _doc(rng)
    return _msgs(
        None,
        f"Can you check this {d.kind} and tell me {rng.choice(d.questions)} "
        f'Thanks!\n\n"""\n{d.text}\n"""',
    )


def _qa_compare(rng: random.Random) -> Messages:
    d1, d2 = _doc(rng), _doc(rng)
    return _msgs(
        None,
        f"Here are two documents.\n\nDocument 1 ({d1.kind}):\n{d1.text}\n\n"
        f"Document 2 ({d2.kind}):\n{d2.text}\n\nDo they agree on the dates? Which one "
        "mentions a deadline, and where?",
    )


def _qa_yes_no(rng: random.Random) -> Messages:
    d = _doc(rng)
    return _msgs(
        None,
        f"Does this {d.kind} say anything about {rng.choice(TOPICS)}? Answer yes "
        f"or no, then point to the passage.\n{d.text}",
    )


def _qa_followup(rng: random.Random) -> Messages:
    d = _doc(rng)
    q1, q2 = rng.sample(d.questions, 2)
    return _msgs(
        None,
        f"I pasted the {d.kind} below. {q1}\n\n{d.text}",
        "According to the document, the answer is in the second paragraph.",
        f"And {q2} Please cite it.",
    )


def _qa_where(rng: random.Random) -> Messages:
    d = _doc(rng)
    return _msgs(
        "Answer questions about the attached file. Be exhaustive and precise.",
        f"Where in the attached {d.kind} does it say {rng.choice(d.questions)}\n"
        f"[attachment]\n{d.text}",
    )


def _qa_history(rng: random.Random) -> Messages:
    team = rng.choice(TEAMS)
    return _msgs(
        None,
        f"When did the {team} team last change {rng.choice(FEATURES)}, and who approved it? "
        f"Look through the {rng.choice(['meeting notes', 'decision log', 'project pages', 'changelog'])} "
        f"from {rng.choice(MONTHS)} and {rng.choice(MONTHS)}.",
    )


def _qa_summary_cite(rng: random.Random) -> Messages:
    d = _doc(rng)
    return _msgs(
        None,
        f"What does this {d.kind} say about deadlines and amounts? Answer in two "
        f"sentences with citations.\n\n{d.text}",
    )


def _wr_spec(rng: random.Random) -> Messages:
    return _msgs(
        None,
        f"Draft a product spec for {rng.choice(FEATURES)} in {rng.choice(PRODUCTS)}. "
        "Include goals, non-goals, user stories, success metrics and open questions.",
    )


def _wr_design_doc(rng: random.Random) -> Messages:
    svc = rng.choice(SERVICES)
    return _msgs(
        "You are a senior engineer who writes clear, well-structured design documents.",
        f"Write a design doc for moving {svc} to {rng.choice(['an event-driven architecture', 'a managed queue', 'a multi-region setup', 'a new database'])}: "
        "background, proposal, alternatives considered, rollout plan and risks.",
    )


def _wr_blog(rng: random.Random) -> Messages:
    return _msgs(
        None,
        f"Write a {rng.choice(['1,000-word', 'long', 'short', 'two-part'])} blog "
        f"post about {rng.choice(TOPICS)} for {rng.choice(AUDIENCES)}. "
        f"Keep the tone {rng.choice(TONES)}.",
    )


def _wr_email(rng: random.Random) -> Messages:
    return _msgs(
        None,
        f"Compose an email to {rng.choice(PEOPLE)} announcing that "
        f"{rng.choice(FEATURES)} ships on {_date(rng)}. Make it {rng.choice(TONES)} and "
        "end with a clear call to action.",
    )


def _wr_bullets(rng: random.Random) -> Messages:
    points = "\n".join(f"- {p}" for p in rng.sample(FEATURES + TOPICS, rng.randint(3, 6)))
    kind = rng.choice(["launch announcement", "quarterly update", "internal memo", "newsletter"])
    return _msgs(
        None, f"Turn these notes into a polished {kind} for {rng.choice(AUDIENCES)}:\n{points}"
    )


def _wr_rewrite(rng: random.Random) -> Messages:
    d = _doc(rng)
    para = d.text.split("\n")[-1] or d.text
    return _msgs(
        None,
        f"Rewrite this paragraph to be more {rng.choice(TONES)} and easier to "
        f"read, keeping every fact:\n\n{para}",
    )


def _wr_press(rng: random.Random) -> Messages:
    company = rng.choice(COMPANIES)
    return _msgs(
        "You write press releases in AP style.",
        f"Create a press release: {company} launches {rng.choice(FEATURES)} in "
        f"{rng.choice(CITIES)} on {_date(rng)}. Quote {rng.choice(PEOPLE)}, the CEO.",
    )


def _wr_job(rng: random.Random) -> Messages:
    return _msgs(
        None,
        f"Write a job description for a {rng.choice(ROLES)} on the "
        f"{rng.choice(TEAMS)} team in {rng.choice(CITIES)}: responsibilities, "
        "requirements, nice-to-haves, and what we offer.",
    )


def _wr_whitepaper(rng: random.Random) -> Messages:
    return _msgs(
        "You help product managers and founders write long-form documents.",
        f"Outline a whitepaper on {rng.choice(TOPICS)}, then write the introduction and the "
        "first section in full.",
    )


def _wr_postmortem(rng: random.Random) -> Messages:
    d = _incident(rng)
    return _msgs(
        None,
        f"Using these facts, write the public postmortem we will post on our "
        f"status page, with a timeline and what we are changing:\n{d.text}",
    )


def _wr_story(rng: random.Random) -> Messages:
    return _msgs(
        None,
        f"Write user stories and acceptance criteria for {rng.choice(FEATURES)}, "
        f"from the point of view of {rng.choice(AUDIENCES)}.",
    )


def _wr_speech(rng: random.Random) -> Messages:
    return _msgs(
        None,
        f"Draft a five-minute all-hands talk celebrating the {rng.choice(TEAMS)} "
        f"team's work on {rng.choice(PRODUCTS)} this quarter.",
    )


def _wr_continue(rng: random.Random) -> Messages:
    return _msgs(
        None,
        f"Draft the onboarding guide for new {rng.choice(ROLES)}s.",
        "Here is a first outline: 1. Welcome 2. Tools 3. First week 4. Who to ask.",
        "Good. Now write sections 2 and 3 in full, about 600 words each.",
    )


_GREETINGS = ["hey", "hi there", "good morning", "hello!", "yo", "hiya", "evening"]


def _ch_hello(rng: random.Random) -> Messages:
    return _msgs(
        None,
        f"{rng.choice(_GREETINGS)}, {rng.choice(['how are you?', 'what can you do?', 'got a minute?', 'how is your day going?'])}",
    )


def _ch_joke(rng: random.Random) -> Messages:
    return _msgs(
        None,
        f"tell me a {rng.choice(['short', 'silly', 'nerdy', 'dad'])} joke about "
        f"{rng.choice(['cats', 'databases', 'coffee', 'Mondays', 'meetings', 'the weather'])}",
    )


def _ch_advice(rng: random.Random) -> Messages:
    return _msgs(
        "You are a friendly assistant.",
        f"I'm {rng.choice(['stressed', 'nervous', 'excited', 'tired'])} about "
        f"{rng.choice(['my presentation tomorrow', 'moving to ' + rng.choice(CITIES), 'a job interview', 'running my first 10k'])}. "
        "Any tips?",
    )


def _ch_cook(rng: random.Random) -> Messages:
    items = rng.sample(
        ["eggs", "spinach", "rice", "tofu", "tomatoes", "chickpeas", "pasta", "feta"], 3
    )
    return _msgs(None, f"what should I cook tonight? I have {', '.join(items)}")


def _ch_trivia(rng: random.Random) -> Messages:
    return _msgs(
        None,
        rng.choice(
            [
                "what's the capital of Australia?",
                "how far away is the moon?",
                "why is the sky blue?",
                f"what is the population of {rng.choice(CITIES)}, roughly?",
                "who painted the Mona Lisa?",
                "how do airplanes stay up?",
            ]
        ),
    )


def _ch_thanks(rng: random.Random) -> Messages:
    return _msgs(
        None,
        f"can you recommend a {rng.choice(['book', 'movie', 'podcast', 'board game'])} for the weekend?",
        "Sure! What kind of thing do you usually enjoy?",
        rng.choice(
            [
                "something funny",
                "lol anything really",
                "sci-fi I guess",
                "thanks, that helps!",
                "ok cool",
            ]
        ),
    )


def _ch_smalltalk(rng: random.Random) -> Messages:
    return _msgs(
        None,
        f"it's been raining in {rng.choice(CITIES)} all week",
        "That sounds gloomy. Are you getting out at all?",
        f"{rng.choice(['not really', 'a bit', 'only for coffee'])}, what do you do on rainy days?",
    )


def _ch_name(rng: random.Random) -> Messages:
    return _msgs(
        None,
        f"help me pick a name for my new {rng.choice(['puppy', 'cat', 'plant', 'bike', 'side project'])}, something {rng.choice(['cute', 'funny', 'short', 'classy'])}",
    )


def _ch_opinion(rng: random.Random) -> Messages:
    return _msgs(
        None,
        f"do you think {rng.choice(['pineapple belongs on pizza', 'tabs are better than spaces', 'cats are smarter than dogs', 'remote work is here to stay'])}? be honest",
    )


def _ch_plans(rng: random.Random) -> Messages:
    return _msgs(
        "Keep answers short and casual.",
        f"I have a free afternoon in {rng.choice(CITIES)}, what should I do?",
    )


def _ch_feelings(rng: random.Random) -> Messages:
    return _msgs(
        None,
        f"{rng.choice(['ugh', 'honestly', 'so'])} I just need to vent for a sec, "
        f"{rng.choice(['my code review got 40 comments', 'my flight got cancelled', 'my team lead is on vacation and everything broke'])}",
    )


def _ch_game(rng: random.Random) -> Messages:
    return _msgs(
        None,
        "let's play 20 questions, I'm thinking of an animal",
        "Great! Is it a mammal?",
        rng.choice(["yes", "nope", "kind of?"]),
    )


TEMPLATES: dict[str, list[Template]] = {
    "extraction": [
        _ex_json,
        _ex_fill,
        _ex_system_engine,
        _ex_lines,
        _ex_db_properties,
        _ex_tag,
        _ex_table,
        _ex_normalise,
        _ex_sentiment,
        _ex_parse_record,
        _ex_entities,
        _ex_autofill_short,
    ],
    "qa": [
        _qa_based_on,
        _qa_context_question,
        _qa_after,
        _qa_workspace,
        _qa_check,
        _qa_compare,
        _qa_yes_no,
        _qa_followup,
        _qa_where,
        _qa_history,
        _qa_summary_cite,
    ],
    "writing": [
        _wr_spec,
        _wr_design_doc,
        _wr_blog,
        _wr_email,
        _wr_bullets,
        _wr_rewrite,
        _wr_press,
        _wr_job,
        _wr_whitepaper,
        _wr_postmortem,
        _wr_story,
        _wr_speech,
        _wr_continue,
    ],
    "chat": [
        _ch_hello,
        _ch_joke,
        _ch_advice,
        _ch_cook,
        _ch_trivia,
        _ch_thanks,
        _ch_smalltalk,
        _ch_name,
        _ch_opinion,
        _ch_plans,
        _ch_feelings,
        _ch_game,
    ],
}

HELDOUT_EVERY = 4  # every 4th template of a task (the 4th, the 8th, ...) is held out


def is_heldout(index: int) -> bool:
    return index % HELDOUT_EVERY == HELDOUT_EVERY - 1


def examples(split: str, per_task: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """``per_task`` examples of each task from the ``split``'s templates ("train" or
    "heldout"), tasks interleaved, deterministic given ``seed``."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    rng = random.Random(f"edgeproxy-tasks/{split}/{seed}")
    pools = {
        task: [t for i, t in enumerate(templates) if is_heldout(i) == (split == "heldout")]
        for task, templates in TEMPLATES.items()
    }
    for _ in range(per_task):
        for task in TASKS:
            template = rng.choice(pools[task])
            yield {
                "messages": template(rng),
                "task": task,
                "template": f"{task}/{template.__name__.lstrip('_')}",
            }
