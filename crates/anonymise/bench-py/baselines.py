"""Baselines for benches/scrub.rs: Presidio (regex recognisers only) and scrubadub (en_GB) on
the same generated corpus as tutela's scrubber.

    baselines.py CORPUS.jsonl KNOWN_NAMES.txt [--max-bytes N]

CORPUS.jsonl is what the bench writes: one comment a line, {"text": ..., "entities": [[kind,
start, end], ...]} with UTF-8 byte offsets. Only the first --max-bytes of comments are used:
both baselines run at well under 1 MB/s.

Both get the course's known names (full names and each part) as a deny list, like tutela's
scrubber gets them, so names are compared too. Presidio runs on a blank English spaCy pipeline
(no model can be downloaded here), so its NER recogniser finds nothing and is removed.

Prints one "RESULT <name> <MB/s> <bytes>" line per baseline (the bench parses these) and a
precision/recall table per kind.
"""

import argparse
import json
import logging
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

KINDS = ["name", "email", "phone", "postcode", "nino", "nhs_number", "ssn", "card", "iban",
         "url", "ip", "handle"]

PRESIDIO_KINDS = {
    "PERSON": "name",
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "UK_NHS": "nhs_number",
    "UK_NINO": "nino",
    "US_SSN": "ssn",
    "CREDIT_CARD": "card",
    "IBAN_CODE": "iban",
    "URL": "url",
    "IP_ADDRESS": "ip",
}

SCRUBADUB_KINDS = {
    "name": "name",
    "email": "email",
    "phone": "phone",
    "postalcode": "postcode",
    "national_insurance_number": "nino",
    "social_security_number": "ssn",
    "credit_card": "card",
    "url": "url",
    "twitter": "handle",
}


def load(path, max_bytes):
    comments, size = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            c = json.loads(line)
            raw = c["text"].encode("utf-8")
            # byte offsets -> str offsets
            to_char = lambda b: len(raw[:b].decode("utf-8"))
            ents = [(k, to_char(s), to_char(e)) for k, s, e in c["entities"]]
            comments.append((c["text"], ents))
            size += len(raw)
            if size >= max_bytes:
                break
    return comments, size


def name_parts(names):
    parts = set(names)
    for n in names:
        parts.update(p for p in n.split() if len(p) > 2)
    return sorted(parts, key=len, reverse=True)


def presidio(names):
    import spacy
    from presidio_analyzer import AnalyzerEngine, PatternRecognizer, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    # A blank English pipeline saved to disk: the NlpEngine configuration takes a model name
    # or a path, and a path is not downloaded.
    model_dir = tempfile.mkdtemp(prefix="blank-en-")
    spacy.blank("en").to_disk(model_dir)
    engine = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": "en", "model_name": model_dir}],
    }).create_engine()
    registry = RecognizerRegistry()
    registry.load_predefined_recognizers(languages=["en"])
    registry.remove_recognizer("SpacyRecognizer")
    registry.add_recognizer(PatternRecognizer(supported_entity="PERSON", deny_list=names))
    analyzer = AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])
    entities = list(PRESIDIO_KINDS)

    def run(text):
        return [(PRESIDIO_KINDS.get(r.entity_type), r.start, r.end)
                for r in analyzer.analyze(text=text, language="en", entities=entities)]
    return run


def scrubadub_(names):
    import scrubadub
    import scrubadub.detectors

    scrubber = scrubadub.Scrubber(locale="en_GB")
    scrubber.add_detector(scrubadub.detectors.UserSuppliedFilthDetector(
        [{"match": n, "filth_type": "name", "ignore_case": True} for n in names]))

    def run(text):
        hits = []
        for f in scrubber.iter_filth(text):
            # Overlapping filth comes merged: its parts say what it was.
            for part in getattr(f, "filths", None) or [f]:
                hits.append((SCRUBADUB_KINDS.get(part.type), part.beg, part.end))
        return hits
    return run


def evaluate(name, run, comments, size):
    run(comments[0][0])  # warm up (lazy compilation)
    found = []
    start = time.perf_counter()
    for text, _ in comments:
        found.append(run(text))
    elapsed = time.perf_counter() - start
    rate = size / 1e6 / elapsed
    print(f"RESULT {name} {rate:.4f} {size}", flush=True)
    tally = {k: [0, 0, 0, 0] for k in KINDS}  # labels, found, hits, correct
    for (text, ents), hits in zip(comments, found):
        for k, s, e in ents:
            tally[k][0] += 1
            over = [h for h in hits if h[0] == k and h[1] < e and s < h[2]]
            if over and min(h[1] for h in over) <= s and max(h[2] for h in over) >= e:
                tally[k][1] += 1
        for k, s, e in hits:
            if k in tally:
                tally[k][2] += 1
                if any(k == ek and s < ee and es < e for ek, es, ee in ents):
                    tally[k][3] += 1
    print(f"{name}: {size / 1e3:.0f} kB in {elapsed:.2f} s")
    print(f"{'kind':<11} {'labels':>6} {'hits':>6} {'precision':>9} {'recall':>7}")
    for k in KINDS:
        labels, ok, hits, correct = tally[k]
        prec = f"{correct / hits:.4f}" if hits else "-"
        rec = f"{ok / labels:.4f}" if labels else "-"
        print(f"{k:<11} {labels:>6} {hits:>6} {prec:>9} {rec:>7}")
    print(flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus")
    parser.add_argument("known_names")
    parser.add_argument("--max-bytes", type=int, default=100_000)
    parser.add_argument("--only", choices=["presidio", "scrubadub"])
    args = parser.parse_args()
    comments, size = load(args.corpus, args.max_bytes)
    with open(args.known_names, encoding="utf-8") as f:
        names = name_parts([line.strip() for line in f if line.strip()])
    if args.only in (None, "presidio"):
        evaluate("presidio", presidio(names), comments, size)
    if args.only in (None, "scrubadub"):
        evaluate("scrubadub", scrubadub_(names), comments, size)


if __name__ == "__main__":
    main()
