# SPDX-License-Identifier: Apache-2.0
"""A strict parser of the Prometheus text exposition format 0.0.4 that raises on anything a
scraper could misread: the end-to-end tests hold slbd's /metrics to it (standard library only).

Beyond the format itself it enforces the conventions slbd promises: every sample belongs to a
family declared by a TYPE line before it, counters are named *_total, and histograms are
complete and consistent (ascending le, cumulative buckets, +Inf bucket equal to _count)."""

import math
import re

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Go's strconv.ParseFloat (what Prometheus uses) without hex and underscores, which no
# exporter writes and which this parser therefore refuses.
FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
TIMESTAMP = re.compile(r"-?[0-9]+")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
BLANKS = " \t"


class ParseError(ValueError):
    """The text is not valid exposition format; the message names the line and the rule."""

    def __init__(self, lineno, line, why):
        super().__init__(f"line {lineno}: {why}: {line[:200]!r}")
        self.lineno = lineno
        self.why = why


class Sample:
    """One series value: name, labels (dict), value (float), timestamp (int ms or None)."""

    __slots__ = ("name", "labels", "value", "timestamp", "lineno")

    def __init__(self, name, labels, value, timestamp, lineno):
        self.name = name
        self.labels = labels
        self.value = value
        self.timestamp = timestamp
        self.lineno = lineno

    def key(self):
        return series_key(self.name, self.labels)

    def __repr__(self):
        return f"<Sample {self.name}{self.labels} {self.value}>"


class Family:
    """A metric family: its TYPE, its HELP text (None when absent) and its samples in order."""

    def __init__(self, name, type_, lineno):
        self.name = name
        self.type = type_
        self.help = None
        self.lineno = lineno
        self.samples = []

    def sample_names(self):
        if self.type == "histogram":
            return {self.name + s for s in ("_bucket", "_sum", "_count")}
        if self.type == "summary":
            return {self.name, self.name + "_sum", self.name + "_count"}
        return {self.name}


def series_key(name, labels):
    """A hashable identity of a series: the label order does not matter."""
    return (name, tuple(sorted(labels.items())))


def format_key(key):
    name, labels = key
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"


class Exposition:
    """The parsed document: families by name (in order of declaration) and every sample."""

    def __init__(self):
        self.families = {}
        self.samples = []
        self._by_key = {}

    def family(self, name):
        return self.families.get(name)

    def series(self):
        """{series_key: value} of every sample."""
        return {s.key(): s.value for s in self.samples}

    def select(self, name, **labels):
        """Samples of name whose labels include all the given ones."""
        return [s for s in self.samples
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, name, **labels):
        """The value of the one series with exactly these labels; KeyError when absent."""
        k = series_key(name, {k: str(v) for k, v in labels.items()})
        if k not in self._by_key:
            raise KeyError(format_key(k))
        return self._by_key[k].value

    def get(self, name, default=None, **labels):
        try:
            return self.value(name, **labels)
        except KeyError:
            return default


# --------------------------------------------------------------------------------------------
# Lexing helpers
# --------------------------------------------------------------------------------------------


def _unescape(text, allowed, lineno, line, what):
    """Resolve backslash escapes; allowed maps the character after the backslash to what it
    stands for. Any other escape is an error (the format defines no others)."""
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text) or text[i + 1] not in allowed:
                raise ParseError(lineno, line, f"invalid escape in {what}")
            out.append(allowed[text[i + 1]])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _parse_float(tok, lineno, line, what):
    if tok in ("+Inf", "Inf"):
        return math.inf
    if tok == "-Inf":
        return -math.inf
    if tok == "NaN":
        return math.nan
    if not FLOAT.fullmatch(tok):
        raise ParseError(lineno, line, f"{what} {tok!r} is not a number")
    return float(tok)


def _skip_blanks(line, i):
    while i < len(line) and line[i] in BLANKS:
        i += 1
    return i


def _parse_labels(line, i, lineno):
    """Parse '{a="x",b="y"}' starting at line[i] == '{'. Returns (labels, index after '}')."""
    labels = {}
    i += 1
    while True:
        i = _skip_blanks(line, i)
        if i < len(line) and line[i] == "}":
            return labels, i + 1
        m = LABEL_NAME.match(line, i)
        if not m:
            raise ParseError(lineno, line, "invalid label name")
        lname = m.group(0)
        if lname.startswith("__"):
            raise ParseError(lineno, line, f"label name {lname!r} is reserved (starts with __)")
        if lname in labels:
            raise ParseError(lineno, line, f"label {lname!r} given twice")
        i = _skip_blanks(line, m.end())
        if i >= len(line) or line[i] != "=":
            raise ParseError(lineno, line, f"'=' expected after label {lname!r}")
        i = _skip_blanks(line, i + 1)
        if i >= len(line) or line[i] != '"':
            raise ParseError(lineno, line, f"'\"' expected to open the value of {lname!r}")
        j = i + 1
        while True:
            if j >= len(line):
                raise ParseError(lineno, line, f"unterminated value of label {lname!r}")
            if line[j] == "\\":
                j += 2
                continue
            if line[j] == '"':
                break
            j += 1
        raw = line[i + 1:j]
        labels[lname] = _unescape(raw, {"\\": "\\", '"': '"', "n": "\n"}, lineno, line,
                                  f"label {lname!r}")
        i = _skip_blanks(line, j + 1)
        if i < len(line) and line[i] == ",":
            i += 1
            continue
        if i < len(line) and line[i] == "}":
            return labels, i + 1
        raise ParseError(lineno, line, "',' or '}' expected after a label value")


# --------------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------------


def parse(text, require_type=True, require_total=True):
    """Parse exposition text (str or bytes) or raise ParseError. require_type: every sample
    belongs to a family declared by TYPE before it; require_total: counter families are named
    *_total. Both are slbd's conventions on top of the format and on by default."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ParseError(0, "", f"not UTF-8 ({e})") from e
    if text and not text.endswith("\n"):
        raise ParseError(text.count("\n") + 1, text.rsplit("\n", 1)[-1],
                         "the last line has no trailing newline")
    if "\r" in text:
        raise ParseError(text[:text.index("\r")].count("\n") + 1, "", "carriage return in text")
    p = _Parser(require_type)
    for lineno, line in enumerate(text.split("\n")[:-1] if text else [], 1):
        if line.strip(BLANKS) == "":
            continue  # the format ignores empty lines
        if line.startswith("#"):
            p.comment(line, lineno)
        else:
            p.sample(line, lineno)
    for fam in p.doc.families.values():
        _check_family(fam, require_total)
    return p.doc


class _Parser:
    def __init__(self, require_type):
        self.doc = Exposition()
        self.require_type = require_type
        self.helps = {}  # name -> HELP text, also for names whose TYPE has not come yet
        self.owner = {}  # sample name -> Family
        self.current = None  # family whose group of samples is being read
        self.finished = set()  # families whose group of samples has ended

    def _end_group(self, fam=None):
        if self.current is not None and self.current is not fam:
            self.finished.add(self.current.name)
        self.current = fam

    def comment(self, line, lineno):
        body = line[1:].lstrip(BLANKS)
        words = body.split(None, 1)
        kw = words[0] if words else ""
        if kw not in ("HELP", "TYPE"):
            return  # an ordinary comment
        rest = body[len(kw):]
        if not rest or rest[0] not in BLANKS:
            raise ParseError(lineno, line, f"{kw} without a metric name")
        rest = rest.lstrip(BLANKS)
        m = METRIC_NAME.match(rest)
        if not m:
            raise ParseError(lineno, line, f"invalid metric name after {kw}")
        name = m.group(0)
        tail = rest[m.end():]
        if tail and tail[0] not in BLANKS:
            raise ParseError(lineno, line, f"invalid metric name after {kw}")
        tail = tail[1:]
        fam = self.doc.families.get(name)
        if kw == "HELP":
            if name in self.helps:
                raise ParseError(lineno, line, f"second HELP line for {name}")
            if fam is not None and fam.samples:
                raise ParseError(lineno, line, f"HELP for {name} after its samples")
            self.helps[name] = _unescape(tail, {"\\": "\\", "n": "\n"}, lineno, line,
                                         "HELP text")
            if fam is not None:
                fam.help = self.helps[name]
            return
        type_ = tail.strip(BLANKS)
        if type_ not in TYPES:
            raise ParseError(lineno, line, f"unknown metric type {type_!r}")
        if fam is not None:
            raise ParseError(lineno, line, f"second TYPE line for {name}")
        fam = Family(name, type_, lineno)
        fam.help = self.helps.get(name)
        for sname in fam.sample_names():
            if sname in self.owner:
                raise ParseError(lineno, line, f"family {name} ({type_}) claims sample name "
                                 f"{sname}, already used by family {self.owner[sname].name}")
        for sname in fam.sample_names():
            self.owner[sname] = fam
        self.doc.families[name] = fam
        self._end_group()

    def sample(self, line, lineno):
        m = METRIC_NAME.match(line)
        if not m:
            raise ParseError(lineno, line, "invalid metric name")
        name = m.group(0)
        i = m.end()
        labels = {}
        if i < len(line) and line[i] == "{":
            labels, i = _parse_labels(line, i, lineno)
        if i >= len(line) or line[i] not in BLANKS:
            raise ParseError(lineno, line, "blank expected before the value")
        toks = line[i:].split()
        if not toks or len(toks) > 2:
            raise ParseError(lineno, line, "expected a value and an optional timestamp")
        value = _parse_float(toks[0], lineno, line, "value")
        ts = None
        if len(toks) == 2:
            if not TIMESTAMP.fullmatch(toks[1]):
                raise ParseError(lineno, line, f"timestamp {toks[1]!r} is not an integer")
            ts = int(toks[1])
        fam = self.owner.get(name)
        if fam is None:
            if self.require_type:
                raise ParseError(lineno, line, f"sample {name} belongs to no family declared "
                                 "by a TYPE line before it")
            if name in self.doc.families:
                raise ParseError(lineno, line, f"sample {name} collides with a family name")
            fam = Family(name, "untyped", lineno)
            fam.help = self.helps.get(name)
            self.doc.families[name] = fam
            self.owner[name] = fam
        if fam.name in self.finished:
            raise ParseError(lineno, line, f"samples of family {fam.name} are not in one group")
        self._end_group(fam)
        s = Sample(name, labels, value, ts, lineno)
        k = s.key()
        if k in self.doc._by_key:
            raise ParseError(lineno, line, f"duplicate series {format_key(k)} (first on line "
                             f"{self.doc._by_key[k].lineno})")
        if fam.type == "histogram" and name.endswith("_bucket"):
            if "le" not in labels:
                raise ParseError(lineno, line, "histogram bucket without an le label")
            _parse_float(labels["le"], lineno, line, "le")
        elif "le" in labels and fam.type == "histogram":
            raise ParseError(lineno, line, "le label outside a histogram bucket")
        if fam.type == "summary" and name == fam.name:
            if "quantile" not in labels:
                raise ParseError(lineno, line, "summary sample without a quantile label")
            _parse_float(labels["quantile"], lineno, line, "quantile")
        if fam.type == "counter" and (math.isnan(value) or value < 0):
            raise ParseError(lineno, line, "a counter must be a non-negative number")
        self.doc._by_key[k] = s
        self.doc.samples.append(s)
        fam.samples.append(s)


def _check_family(fam, require_total):
    if fam.type == "counter" and require_total and not fam.name.endswith("_total"):
        raise ParseError(fam.lineno, fam.name, f"counter {fam.name} is not named *_total")
    if fam.type == "histogram":
        _check_histogram(fam)


def _check_histogram(fam):
    groups = {}
    for s in fam.samples:
        base = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        g = groups.setdefault(base, {"buckets": [], "sum": None, "count": None})
        if s.name.endswith("_bucket"):
            g["buckets"].append(s)
        elif s.name.endswith("_sum"):
            g["sum"] = s
        else:
            g["count"] = s
    for base, g in groups.items():
        where = format_key((fam.name, base))
        first = g["buckets"][0] if g["buckets"] else (g["sum"] or g["count"])
        line = f"{where}"
        if not g["buckets"]:
            raise ParseError(first.lineno, line, f"histogram {where} has no buckets")
        if g["sum"] is None or g["count"] is None:
            raise ParseError(first.lineno, line, f"histogram {where} lacks _sum or _count")
        prev_le, prev_v = -math.inf, 0.0
        for b in g["buckets"]:
            le = _parse_float(b.labels["le"], b.lineno, line, "le")
            if math.isnan(le) or le <= prev_le:
                raise ParseError(b.lineno, line, f"histogram {where}: le {b.labels['le']} is "
                                 "not above the previous bucket's")
            if math.isnan(b.value) or b.value < prev_v or b.value < 0:
                raise ParseError(b.lineno, line, f"histogram {where}: bucket le="
                                 f"{b.labels['le']} ({b.value}) is below the previous "
                                 f"bucket ({prev_v}): buckets must be cumulative")
            prev_le, prev_v = le, b.value
        last = g["buckets"][-1]
        if last.labels["le"] not in ("+Inf", "Inf") or prev_le != math.inf:
            raise ParseError(last.lineno, line, f"histogram {where} has no le=\"+Inf\" bucket "
                             "(or it is not the last)")
        if last.value != g["count"].value:
            raise ParseError(g["count"].lineno, line, f"histogram {where}: +Inf bucket "
                             f"{last.value} != _count {g['count'].value}")
        if math.isnan(g["count"].value) or g["count"].value < 0:
            raise ParseError(g["count"].lineno, line, f"histogram {where}: bad _count")
