"""The console's HTML, rendered on the server: every value goes through ``html.escape``.

Pages are whole documents; the parts that update live (the overview, a redrive's progress)
are fragments the page's script fetches again every few seconds (``[data-live]``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from streams.console.state import Overview, WorkerView
from streams.dlq import DeadLetter
from streams.names import Header

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2433;background:#f6f7f9}
header{background:#1d2433;color:#fff;padding:10px 20px;display:flex;gap:24px;align-items:baseline}
header a{color:#cfe0ff;text-decoration:none} header strong{font-size:16px}
main{padding:16px 20px} h2{font-size:15px;margin:22px 0 8px}
table{border-collapse:collapse;background:#fff;margin-bottom:8px} td,th{padding:4px 10px;border:1px solid #dde1e8;
text-align:left;vertical-align:top} th{background:#eef1f5;font-weight:600}
.cards{display:flex;gap:12px;flex-wrap:wrap} .card{background:#fff;border:1px solid #dde1e8;padding:10px 14px;
min-width:150px} .card b{display:block;font-size:20px}
.ok{color:#137333} .bad{color:#b3261e;font-weight:600} .warn{color:#b06000;font-weight:600} .dim{color:#6b7280}
form.filters{display:flex;gap:10px;flex-wrap:wrap;align-items:end;background:#fff;padding:10px;border:1px solid #dde1e8}
form.filters label{display:flex;flex-direction:column;font-size:12px} input,select{font:inherit;padding:3px}
button{font:inherit;padding:5px 12px;cursor:pointer} pre{background:#fff;border:1px solid #dde1e8;padding:10px;
overflow:auto;max-width:1100px} .error{background:#fdecea;border:1px solid #f5c2bd;padding:8px 12px}
.mono{font-family:ui-monospace,monospace;font-size:12px}
"""

JS = """'use strict';
// Every element with data-live is replaced every refresh ms by the fragment its URL serves.
(function () {
  const every = Number(document.body.dataset.refresh || '2000');
  async function refresh(el) {
    try {
      const answer = await fetch(el.dataset.live, {credentials: 'same-origin', cache: 'no-store'});
      if (answer.ok) { el.innerHTML = await answer.text(); el.dataset.updated = String(Date.now()); }
    } catch (e) { /* the next round tries again */ }
  }
  setInterval(function () {
    if (!document.hidden) { document.querySelectorAll('[data-live]').forEach(refresh); }
  }, every);
})();
"""

FILTERS = (("kind", "kind"), ("class", "class"), ("api", "API"), ("status", "status"), ("key", "key"),
           ("since", "since (UTC)"), ("until", "until (UTC)"))


def when(ms: int | float | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(ms: int | float | None) -> str:
    if not ms:
        return "-"
    seconds = max(0.0, time.time() - ms / 1000)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def page(title: str, body: str, *, pipeline: str, refresh: float) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)} - {escape(pipeline)}"
            f"</title><link rel=stylesheet href=/static/console.css></head>"
            f"<body data-refresh={int(refresh * 1000)}><header><strong>streams console</strong>"
            f"<span>{escape(pipeline)}</span><a href=/>Overview</a><a href=/dlq>Dead letters</a></header>"
            f"<main>{body}</main><script src=/static/console.js></script></body></html>")


def _cls(state: str) -> str:
    return {"open": "bad", "half_open": "warn", "closed": "ok", "running": "ok", "gone": "bad",
            "stopped": "dim"}.get(state, "")


def overview(ov: Overview) -> str:
    """The overview's live part: the incident questions first, then the detail."""
    live = ov.live
    paused = bool(ov.paused)
    open_apis = [a for a in ov.apis if a.state == "open"]
    tier_lag = sum(ov.total_lag(t) for t in ov.tiers)
    held = sum(int(h[2]) for w in live for h in w.record.get("retry_held", []))
    parts = [
        "<div class=cards>",
        f"<div class=card id=workers-live data-count={len(live)}>workers live<b>{len(live)}</b>"
        f"{_gone_note(ov.workers)}</div>",
        f"<div class=card id=apis-down data-open={escape(','.join(a.name for a in open_apis))}>APIs down<b "
        f"class={'bad' if open_apis else 'ok'}>{escape(', '.join(a.name for a in open_apis) or 'none')}</b>"
        + "".join(f"open since {escape(when(a.since_ms))}<br>" for a in open_apis) + "</div>",
        f"<div class=card id=consumption data-state={'paused' if paused else 'consuming'}>consumption<b class="
        f"{'bad' if paused else 'ok'}>{'paused' if paused else 'consuming'}</b>"
        f"{len(ov.paused)} partitions paused</div>",
        f"<div class=card id=input-lag data-lag={ov.total_lag(ov.input_topic)}>behind on {escape(ov.input_topic)}"
        f"<b>{ov.total_lag(ov.input_topic):,}</b>records</div>",
        f"<div class=card id=tier-lag data-lag={tier_lag}>in the retry tiers<b>{tier_lag:,}</b>"
        f"records unread; {held:,} held</div>",
        f"<div class=card id=dlq-size data-count={ov.dlq_records}>dead letters<b><a href=/dlq>{ov.dlq_records:,}"
        f"</a></b>in {escape(ov.dlq)}</div>",
        "</div>",
    ]
    for problem in ov.problems:
        parts.append(f"<p class=error>{escape(problem)}</p>")
    parts.append("<h2>APIs</h2><table id=apis><tr><th>API</th><th>circuit</th><th>since</th><th>per worker</th>"
                 "<th>rate limit (per worker: rate/ceiling, waits)</th></tr>")
    for api in ov.apis:
        per_worker = ", ".join(f"{escape(w)}: {escape(s)}" for w, s in sorted(api.by_worker.items()))
        limits = "<br>".join(f"{escape(w)}: {lim.get('rate', 0):g}/{lim.get('ceiling', 0):g} per s, "
                             f"{lim.get('acquired', 0):,.0f} calls waited {lim.get('wait_seconds', 0):.1f} s"
                             for w, lim in sorted(api.limiter.items())) or "-"
        parts.append(f"<tr class=api data-api={escape(api.name)} data-state={escape(api.state)}><td>"
                     f"{escape(api.name)}</td><td class={_cls(api.state)}>{escape(api.state)}</td>"
                     f"<td>{escape(when(api.since_ms))}</td><td class=mono>{per_worker}</td><td class=mono>{limits}"
                     f"</td></tr>")
    if not ov.apis:
        parts.append("<tr><td colspan=5 class=dim>no live worker reports an API</td></tr>")
    parts.append("</table>")
    if ov.paused:
        parts.append("<h2>Paused partitions</h2><table id=paused><tr><th>worker</th><th>partition</th><th>why</th>"
                     "</tr>")
        parts += [f"<tr class=paused><td class=mono>{escape(w)}</td><td>{escape(t)}[{p}]</td><td>{escape(why)}"
                  f"</td></tr>" for w, t, p, why in ov.paused]
        parts.append("</table>")
    parts.append(_workers(ov))
    parts.append(_lag(ov))
    parts.append(f"<p class=dim>updated {escape(when(ov.at_ms))} (read in {ov.took_s * 1000:.0f} ms)</p>")
    return "".join(parts)


def _gone_note(workers: Sequence[WorkerView]) -> str:
    gone = sum(1 for w in workers if w.status == "gone")
    return f"<span class=bad>{gone} gone</span>" if gone else ""


def _workers(ov: Overview) -> str:
    rows = ["<h2>Workers</h2><table id=workers><tr><th>worker</th><th>host</th><th>status</th><th>last seen</th>"
            "<th>partitions</th><th>in flight</th><th>retries held (next due)</th><th>in</th><th>out</th>"
            "<th>retried</th><th>dead-lettered</th><th>version</th></tr>"]
    for w in ov.workers:
        r = w.record
        owned = Counter(t for t, _ in w.partitions)
        mine = sorted(p for t, p in w.partitions if t == ov.input_topic)
        tiers = sum(n for t, n in owned.items() if t != ov.input_topic)
        held = r.get("retry_held", [])
        due = min((int(h[3]) for h in held), default=None)
        events = r.get("events", {})
        rows.append(
            f"<tr class=worker data-worker={escape(w.id)} data-status={w.status} "
            f"data-partitions={escape(','.join(map(str, mine)))}><td class=mono>{escape(w.id)}</td>"
            f"<td>{escape(str(r.get('host', '?')))}</td><td class={_cls(w.status)}>{w.status}</td>"
            f"<td>{w.age_s:.0f} s ago</td><td>{escape(ov.input_topic)}: {escape(', '.join(map(str, mine)) or '-')}"
            f"{f' (+{tiers} tier partitions)' if tiers else ''}</td><td>{int(r.get('in_flight', 0))}</td>"
            f"<td>{sum(int(h[2]) for h in held)}{f' ({escape(when(due))})' if due else ''}</td>"
            + "".join(f"<td>{int(events.get(k, 0)):,}</td>" for k in ("in", "out", "retried", "dead_lettered"))
            + f"<td>{escape(str(r.get('version', '?')))} ({escape(str(r.get('runtime', '?')))})</td></tr>")
    if not ov.workers:
        rows.append("<tr><td colspan=12 class=dim>no worker has announced itself yet</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _lag(ov: Overview) -> str:
    rows = ["<h2>Lag per partition</h2><table id=lag><tr><th>topic</th><th>partition</th><th>committed</th>"
            "<th>end</th><th>lag</th><th>owner</th></tr>"]
    for p in ov.lag:
        rows.append(f"<tr class=lag data-topic={escape(p.topic)} data-partition={p.partition} data-lag={p.lag}>"
                    f"<td>{escape(p.topic)}</td><td>{p.partition}</td>"
                    f"<td>{'-' if p.committed is None else f'{p.committed:,}'}</td><td>{p.end:,}</td>"
                    f"<td class={'warn' if p.lag else ''}>{p.lag:,}</td><td class=mono>{escape(p.owner or '-')}</td>"
                    f"</tr>")
    rows.append("</table>")
    return "".join(rows)


def _hidden(name: str, value: str) -> str:
    return f"<input type=hidden name={escape(name)} value=\"{escape(value)}\">"


def filter_form(criteria: Mapping[str, str]) -> str:
    fields = []
    for name, label in FILTERS:
        value = criteria.get(name, "")
        if name == "kind":
            options = "".join(f"<option{' selected' if value == k else ''} value=\"{k}\">{k or 'any'}</option>"
                              for k in ("", "transient", "permanent", "poison"))
            fields.append(f"<label>{label}<select name=kind id=filter-kind>{options}</select></label>")
        else:
            kind = "datetime-local" if name in ("since", "until") else "text"
            fields.append(f"<label>{label}<input type={kind} step=1 name={name} id=filter-{name} "
                          f"value=\"{escape(value)}\" size=12></label>")
    return (f"<form class=filters method=get action=/dlq>{''.join(fields)}"
            f"<button type=submit id=apply-filters>Filter</button><a href=/dlq>clear</a></form>")


def dlq(criteria: Mapping[str, str], letters: Sequence[DeadLetter], matched: int, present: int,
        replayed: set[str], by_reason: Counter[tuple[str, ...]], csrf: str, rows: int, error: str | None) -> str:
    parts = ["<h2>Dead letters</h2>", filter_form(criteria)]
    if error is not None:
        parts.append(f"<p class=error id=filter-error>{escape(error)}</p>")
        return "".join(parts)
    parts.append(f"<p id=dlq-counts data-matched={matched} data-present={present}><b>{matched:,}</b> of {present:,} "
                 f"dead letters match; {sum(1 for one in letters if one.ref in replayed):,} of those listed were "
                 f"replayed before.</p>")
    parts.append("<h2>By reason</h2><table id=by-reason><tr><th>kind</th><th>class</th><th>API</th><th>status</th>"
                 "<th>letters</th></tr>")
    for (kind, error_class, api, status), count in by_reason.most_common():
        parts.append(f"<tr class=reason><td>{escape(kind)}</td><td>{escape(error_class)}</td><td>{escape(api)}</td>"
                     f"<td>{escape(status)}</td><td>{count:,}</td></tr>")
    parts.append("</table>")
    if matched:
        parts.append("<form method=post action=/dlq/redrive/preview id=redrive-form>" + _hidden("csrf", csrf)
                     + "".join(_hidden(name, criteria.get(name, "")) for name, _ in FILTERS)
                     + f"<button type=submit id=preview-redrive>Redrive these {matched:,}: preview</button></form>")
    parts.append(f"<h2>Letters{f' (first {rows:,})' if matched > rows else ''}</h2><table id=letters><tr><th>ref</th>"
                 "<th>failed at</th><th>event</th><th>key</th><th>kind</th><th>class</th><th>API</th><th>status</th>"
                 "<th>message</th><th>replayed</th></tr>")
    for letter in letters:
        parts.append(_letter_row(letter, letter.ref in replayed))
    parts.append("</table>")
    return "".join(parts)


def _letter_row(letter: DeadLetter, replayed: bool) -> str:
    h = letter.header
    failed = h(Header.FIRST_FAILURE_AT)
    return (f"<tr class=letter data-ref={escape(letter.ref)}><td><a href=/dlq/letter/{escape(letter.ref)}>"
            f"{escape(letter.ref)}</a></td><td>{escape(when(int(failed) if failed and failed.isdigit() else None))}"
            f"</td><td class=mono>{escape(h(Header.EVENT_ID) or '-')}</td><td class=mono>"
            f"{escape((letter.key or b'').decode('utf-8', 'replace'))}</td><td>{escape(h(Header.ERROR_KIND) or '-')}"
            f"</td><td>{escape(h(Header.ERROR_CLASS) or '-')}</td><td>{escape(h(Header.ERROR_CONNECTOR) or '-')}</td>"
            f"<td>{escape(h(Header.ERROR_STATUS) or '-')}</td><td>{escape(h(Header.ERROR_MESSAGE) or '')[:160]}</td>"
            f"<td>{'yes' if replayed else ''}</td></tr>")


def letter(letter: DeadLetter, headers: Mapping[str, str], value: Any, replayed: bool) -> str:
    h = headers.get
    rows = "".join(f"<tr><th class=mono>{escape(k)}</th><td class=mono>{escape(v)}</td></tr>"
                   for k, v in sorted(headers.items()))
    return (f"<h2>Dead letter {escape(letter.ref)}</h2>"
            f"<p class=error id=letter-error><b>{escape(h(Header.ERROR_KIND, '?'))} "
            f"{escape(h(Header.ERROR_CLASS, '?'))}</b>"
            f"{' from ' + escape(h(Header.ERROR_CONNECTOR, '')) if h(Header.ERROR_CONNECTOR) else ''}"
            f"{' status ' + escape(h(Header.ERROR_STATUS, '')) if h(Header.ERROR_STATUS) else ''}: "
            f"{escape(h(Header.ERROR_MESSAGE, ''))}</p>"
            f"<p>key <span class=mono>{escape((letter.key or b'').decode('utf-8', 'replace'))}</span>, written "
            f"{escape(when(letter.timestamp_ms))}{', replayed before' if replayed else ''}</p>"
            f"<h2>Headers</h2><table id=letter-headers>{rows}</table>"
            f"<h2>Value</h2><pre id=letter-value>{escape(json.dumps(value, indent=2, default=str))}</pre>")


def preview(criteria: Mapping[str, str], refs: Sequence[str], matched: int, skipped: int, target: str,
            principal: str, csrf: str) -> str:
    shown = ", ".join(refs[:200]) + (f" and {len(refs) - 200:,} more" if len(refs) > 200 else "")
    selection = describe(criteria)
    if not refs:
        return (f"<h2>Redrive preview</h2><p id=preview-count data-count=0>Nothing to redrive: {matched:,} dead "
                f"letters match ({escape(selection)}), {skipped:,} of them were replayed before.</p>"
                f"<a href=/dlq>back</a>")
    default = principal.removeprefix("basic:") if principal.startswith("basic:") else ""
    return (f"<h2>Redrive preview</h2><p id=preview-count data-count={len(refs)}><b>{len(refs):,}</b> dead letters "
            f"will be replayed to <b>{escape(target)}</b>, once each ({escape(selection)}; {matched:,} match, "
            f"{skipped:,} replayed before are skipped).</p><p class=mono id=preview-refs>{escape(shown)}</p>"
            "<form method=post action=/dlq/redrive id=confirm-form>" + _hidden("csrf", csrf)
            + _hidden("refs", ",".join(refs)) + _hidden("selection", selection)
            + f"<label>your name (recorded in the replay ledger) <input name=operator id=operator required "
              f"value=\"{escape(default)}\"></label> <button type=submit id=confirm-redrive>Confirm: redrive "
              f"{len(refs):,} letters</button> <a href=/dlq>cancel</a></form>")


def describe(criteria: Mapping[str, str]) -> str:
    given = [f"{name}={value}" for name, value in sorted(criteria.items()) if value]
    return " ".join(given) or "every dead letter"


def job(j: Any) -> str:
    """A redrive's live state (``streams.console.app.RedriveJob``)."""
    total = j.progress.total
    done = j.progress.count
    report = j.report
    state = f"<span class={'ok' if j.state == 'done' else 'bad' if j.state == 'failed' else 'warn'}>{j.state}</span>"
    lines = [f"<p id=job-state data-state={j.state} data-replayed={report.replayed if report else done}>"
             f"Redrive {escape(j.id)}: {state}; {done:,} of {total if total is not None else '?'} replayed to "
             f"{escape(j.target)}.</p>",
             f"<p>By {escape(j.by)} ({escape(j.principal)}), started {escape(when(j.started_ms))}; "
             f"selection: {escape(j.selection)}; {len(j.refs):,} letters previewed.</p>"]
    if report is not None:
        lines.append(f"<p id=job-report>selected {report.selected:,}, replayed {report.replayed:,}, skipped "
                     f"{report.skipped:,} (replayed before); recorded in the replay ledger.</p>")
    if j.error:
        lines.append(f"<p class=error>{escape(j.error)}</p>")
    return "".join(lines)


def jobs(items: Iterable[Any]) -> str:
    rows = "".join(f"<tr><td><a href=/dlq/redrive/{escape(j.id)}>{escape(j.id)}</a></td><td>{escape(j.state)}</td>"
                   f"<td>{escape(j.by)}</td><td>{escape(when(j.started_ms))}</td><td>{len(j.refs):,}</td>"
                   f"<td>{escape(j.selection)}</td></tr>" for j in items)
    if not rows:
        return ""
    return ("<h2>Redrives from this console</h2><table id=jobs><tr><th>job</th><th>state</th><th>by</th><th>when</th>"
            f"<th>letters</th><th>selection</th></tr>{rows}</table>")


def login(csrf: str, failed: bool) -> str:
    return ("<h2>Sign in</h2>" + ("<p class=error>wrong token</p>" if failed else "")
            + "<form method=post action=/login>" + _hidden("csrf", csrf)
            + "<label>token <input type=password name=token id=token autocomplete=off></label> "
              "<button type=submit>Sign in</button></form>")
