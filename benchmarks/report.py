"""Results of a benchmark run, as a Markdown report and as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.measure import Sample, Summary, summarize
from benchmarks.progress import human_bytes, human_seconds

CASES = ("first", "nochange", "change")


@dataclass
class Results:
    size: str
    config: dict[str, object]
    command: str = ""  # as typed, for the report's header
    date: str = ""
    run_seconds: float = 0.0  # the whole run, generation and comparison included
    machine: dict[str, str] = field(default_factory=dict)
    store: dict[str, object] = field(default_factory=dict)
    # case -> series -> samples. Series: rsync, rsync_delta, dsync, dsync_pipe,
    # bundlesync (a cycle), bundlesync_init/_export/_import/_ack.
    samples: dict[str, dict[str, list[Sample]]] = field(default_factory=dict)
    rounds: list[dict[str, object]] = field(default_factory=list)
    correctness: dict[str, dict[str, object]] = field(default_factory=dict)
    source_changed_by_bundlesync: int | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, case: str, series: str, sample: Sample) -> None:
        self.samples.setdefault(case, {}).setdefault(series, []).append(sample)

    def seconds(self, case: str, series: str) -> Summary | None:
        return summarize([s.seconds for s in self.samples.get(case, {}).get(series, [])])

    def bytes(self, case: str, series: str) -> Summary | None:
        return summarize([float(s.bytes) for s in self.samples.get(case, {}).get(series, [])
                          if s.bytes is not None])

    def peak_rss_kb(self, case: str, series: str) -> int | None:
        samples = self.samples.get(case, {}).get(series, [])
        return max((s.max_rss_kb for s in samples), default=None)

    def last(self, case: str, series: str) -> Sample | None:
        samples = self.samples.get(case, {}).get(series, [])
        return samples[-1] if samples else None

    def as_json(self) -> dict[str, object]:
        def summary(s: Summary | None) -> dict[str, float] | None:
            if s is None:
                return None
            return {"median": s.median, "min": s.low, "max": s.high, "n": s.n}

        medians = {
            case: {series: {"seconds": summary(self.seconds(case, series)),
                            "bytes": summary(self.bytes(case, series)),
                            "peak_rss_kb": self.peak_rss_kb(case, series)}
                   for series in by_series}
            for case, by_series in self.samples.items()
        }
        return {
            "size": self.size,
            "command": self.command,
            "date": self.date,
            "run_seconds": self.run_seconds,
            "config": self.config,
            "machine": self.machine,
            "store": self.store,
            "summary": medians,
            "ratios": self.ratios(),
            "samples": {case: {series: [s.as_dict() for s in samples]
                               for series, samples in by_series.items()}
                        for case, by_series in self.samples.items()},
            "rounds": self.rounds,
            "correctness": self.correctness,
            "source_changed_by_bundlesync": self.source_changed_by_bundlesync,
            "skipped": self.skipped,
            "notes": self.notes,
        }

    def ratios(self) -> dict[str, dict[str, float | None]]:
        """bundlesync / rsync and bundlesync / dsync, on medians (below 1: bundlesync wins)."""
        rows = {
            "first_time": ("first", "bundlesync", "rsync", "dsync", self.seconds),
            "nochange_export_time": ("nochange", "bundlesync_export", "rsync", "dsync",
                                     self.seconds),
            "nochange_cycle_time": ("nochange", "bundlesync", "rsync", "dsync", self.seconds),
            "change_time": ("change", "bundlesync", "rsync", "dsync", self.seconds),
            # Against the modes that would cross a link: rsync --no-W, dsync over a pipe.
            "change_time_vs_wire": ("change", "bundlesync", "rsync_delta", "dsync_pipe",
                                    self.seconds),
            "first_bytes": ("first", "bundlesync", "rsync", "dsync_pipe", self.bytes),
            "nochange_bytes": ("nochange", "bundlesync", "rsync_delta", "dsync_pipe",
                               self.bytes),
            "change_bytes": ("change", "bundlesync", "rsync_delta", "dsync_pipe", self.bytes),
        }
        out: dict[str, dict[str, float | None]] = {}
        for key, (case, ours, rsync, dsync, get) in rows.items():
            out[key] = {"rsync": _ratio(get(case, ours), get(case, rsync)),
                        "dsync": _ratio(get(case, ours), get(case, dsync))}
        return out


def _ratio(a: Summary | None, b: Summary | None) -> float | None:
    if a is None or b is None or b.median == 0:
        return None
    return a.median / b.median


def _fmt_ratio(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0x"
    return f"{value:.2f}x" if value >= 0.01 else f"{value:.4f}x"


def _fmt_time(s: Summary | None) -> str:
    if s is None:
        return "—"
    if s.n == 1:
        return human_seconds(s.median)
    return f"{human_seconds(s.median)} ({human_seconds(s.low)}-{human_seconds(s.high)})"


def _fmt_bytes(s: Summary | None) -> str:
    return "—" if s is None else human_bytes(s.median)


def _fmt_rss(kb: int | None) -> str:
    return "—" if kb is None else f"{kb / 1024:.0f} MiB"


def render_markdown(r: Results) -> str:
    out: list[str] = []
    store = r.store
    cfg = r.config
    out.append(f"### Size `{r.size}`: {store.get('users')} users x {cfg.get('folders')} folders "
               f"x {cfg.get('messages')} messages = {store.get('messages', 0):,} messages, "
               f"{human_bytes(float(store.get('bytes', 0)))}")  # type: ignore[arg-type]
    out.append("")
    out.append(f"Command: `{r.command}`; run {r.date}, for {human_seconds(r.run_seconds)}; "
               f"source revision `{r.machine.get('source revision', 'unknown')}`.")
    out.append("")
    first_runs = cfg.get("first_runs", cfg.get("runs"))
    out.append(f"Runs: {first_runs} for first transfers, {cfg.get('runs')} for 1 % rounds, "
               f"{cfg.get('nochange_runs')} for no-change runs; figures are medians "
               "(min-max in brackets). Ratios are bundlesync ÷ the other tool on medians: "
               "below 1x bundlesync is faster or smaller.")
    out.append("")
    out.append("| machine | |")
    out.append("|---|---|")
    out.extend(f"| {k} | {v} |" for k, v in r.machine.items())
    out.append("")
    out.append(f"Store: {store.get('messages', 0):,} messages in {store.get('folders')} folders, "
               f"{store.get('list_copies', 0):,} of them mailing-list copies shared between "
               f"users, {store.get('large_messages', 0):,} over 100 KB; generated in "
               f"{human_seconds(float(store.get('seconds', 0)))}.")  # type: ignore[arg-type]
    out.append("")

    out.append("#### Time")
    out.append("")
    out.append("| case | rsync -a | doveadm backup | bundlesync | bundlesync ÷ rsync "
               "| bundlesync ÷ dsync |")
    out.append("|---|---|---|---|---|---|")

    def row(label: str, case: str, ours: str, rsync: str | None, dsync: str | None) -> None:
        a = r.seconds(case, ours)
        b = r.seconds(case, rsync) if rsync else None
        c = r.seconds(case, dsync) if dsync else None
        out.append(f"| {label} | {_fmt_time(b)} | {_fmt_time(c)} | {_fmt_time(a)} | "
                   f"{_fmt_ratio(_ratio(a, b))} | {_fmt_ratio(_ratio(a, c))} |")

    row("(a) first full transfer (bundlesync: init + export + import)", "first", "bundlesync",
        "rsync", "dsync")
    out.append(f"| … bundlesync init (store inventory) / export / import | | | "
               f"{_fmt_time(r.seconds('first', 'bundlesync_init'))} / "
               f"{_fmt_time(r.seconds('first', 'bundlesync_export'))} / "
               f"{_fmt_time(r.seconds('first', 'bundlesync_import'))} | | |")
    row("(a) … ack return (bravo export + alpha import)", "first", "bundlesync_ack", None, None)
    row("(a) … dsync through a pipe, as over ssh (1 run)", "first", "-", None, "dsync_pipe")
    row("(b) no change (bundlesync: export only)", "nochange", "bundlesync_export", "rsync",
        "dsync")
    row("(b) no change, bundlesync export + import", "nochange", "bundlesync", "rsync", "dsync")
    row("(b) … rsync in delta mode (`--no-W --fuzzy`)", "nochange", "bundlesync",
        "rsync_delta", None)
    row("(b) … ack return", "nochange", "bundlesync_ack", None, None)
    row("(c) 1 % change (bundlesync: export + import)", "change", "bundlesync", "rsync", "dsync")
    out.append(f"| … bundlesync export / import | | | "
               f"{_fmt_time(r.seconds('change', 'bundlesync_export'))} / "
               f"{_fmt_time(r.seconds('change', 'bundlesync_import'))} | | |")
    row("(c) … rsync in delta mode, dsync through a pipe", "change", "bundlesync",
        "rsync_delta", "dsync_pipe")
    row("(c) … ack return", "change", "bundlesync_ack", None, None)
    out.append("")

    out.append("#### Bytes that would cross the link")
    out.append("")
    out.append("| case | mail in it | rsync | dsync (pipe, both ways) | bundlesync (bundles) "
               "| bundlesync ÷ rsync | bundlesync ÷ dsync |")
    out.append("|---|---|---|---|---|---|---|")
    changed = summarize([float(x["new_bytes"]) for x in r.rounds  # type: ignore[arg-type]
                         if "new_bytes" in x])

    def brow(label: str, case: str, data: str, rsync: str) -> None:
        a, b, c = r.bytes(case, "bundlesync"), r.bytes(case, rsync), r.bytes(case, "dsync_pipe")
        out.append(f"| {label} | {data} | {_fmt_bytes(b)} | {_fmt_bytes(c)} | {_fmt_bytes(a)} | "
                   f"{_fmt_ratio(_ratio(a, b))} | {_fmt_ratio(_ratio(a, c))} |")

    brow("(a) first transfer (rsync: `--stats` of the copy)", "first",
         human_bytes(float(store.get("bytes", 0))), "rsync")  # type: ignore[arg-type]
    brow("(b) no change (rsync: delta mode)", "nochange", "0 B", "rsync_delta")
    brow("(c) 1 % change (rsync: delta mode)", "change",
         "—" if changed is None else human_bytes(changed.median) + " new + moved", "rsync_delta")
    out.append("")

    out.append("#### Peak memory (RSS, largest of the runs)")
    out.append("")
    out.append("| case | rsync -a | doveadm backup (largest per-user process) "
               "| bundlesync export | bundlesync import |")
    out.append("|---|---|---|---|---|")
    for label, case in (("(a) first transfer", "first"), ("(b) no change", "nochange"),
                        ("(c) 1 % change", "change")):
        out.append(f"| {label} | {_fmt_rss(r.peak_rss_kb(case, 'rsync'))} | "
                   f"{_fmt_rss(r.peak_rss_kb(case, 'dsync'))} | "
                   f"{_fmt_rss(r.peak_rss_kb(case, 'bundlesync_export'))} | "
                   f"{_fmt_rss(r.peak_rss_kb(case, 'bundlesync_import'))} |")
    out.append("")

    exp, imp = r.seconds("first", "bundlesync_export"), r.seconds("first", "bundlesync_import")
    if exp and imp:
        nbytes = float(store.get("bytes", 0))  # type: ignore[arg-type]
        msgs = float(store.get("messages", 0))  # type: ignore[arg-type]
        out.append("#### bundlesync throughput (first transfer, store bytes and messages)")
        out.append("")
        out.append("| step | MB/s | messages/s |")
        out.append("|---|---|---|")
        for label, s in (("export", exp), ("import", imp)):
            out.append(f"| {label} | {nbytes / 1e6 / s.median:.1f} | {msgs / s.median:,.0f} |")
        out.append("")

    if r.rounds:
        out.append("#### 1 % rounds")
        out.append("")
        out.append("| round | operations | new + moved mail | folder renamed (messages) | rsync "
                   "| rsync delta | dsync | dsync pipe | bundlesync cycle | bundle |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for i, x in enumerate(r.rounds, 1):
            def t(key: str, x: dict[str, object] = x) -> str:
                v = x.get(key)
                return human_seconds(float(v)) if isinstance(v, (int, float)) else "—"

            def b(key: str, x: dict[str, object] = x) -> str:
                v = x.get(key)
                return human_bytes(float(v)) if isinstance(v, (int, float)) else "—"

            out.append(f"| {i} | {x.get('operations')} | {b('new_bytes')} | "
                       f"{x.get('renamed', '—')} | {t('rsync_s')} | {t('rsync_delta_s')} "
                       f"({b('rsync_delta_bytes')}) | {t('dsync_s')} | {t('dsync_pipe_s')} "
                       f"({b('dsync_pipe_bytes')}) | {t('bundlesync_s')} | "
                       f"{b('bundlesync_bytes')} |")
        out.append("")

    if r.correctness:
        out.append("#### Correctness after the last round")
        out.append("")
        out.append("Each copy against the source, as multisets of (user, folder, SHA-256 of the "
                   "message, flag names).")
        out.append("")
        out.append("| copy | messages | missing | extra |")
        out.append("|---|---|---|---|")
        for tool, c in r.correctness.items():
            out.append(f"| {tool} | {c.get('messages')} | {c.get('missing')} | "
                       f"{c.get('extra')} |")
        if r.source_changed_by_bundlesync is not None:
            out.append(f"| source files renamed/added/removed by bundlesync's ack import "
                       f"| | {r.source_changed_by_bundlesync} | |")
        out.append("")

    if r.skipped or r.notes:
        out.append("#### Notes")
        out.append("")
        out.extend(f"- {tool} skipped: {why}" for tool, why in r.skipped.items())
        out.extend(f"- {note}" for note in r.notes)
        out.append("")
    return "\n".join(out)
