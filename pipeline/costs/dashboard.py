"""The HTML dashboard: one self-contained page that opens offline (`batchwise report --html`).

The report's figures are embedded as JSON and drawn as inline SVG by a small script in the page:
no CDN, no external file, no network. Every text is set with `textContent`, so no name in the
ledger can inject markup. When the charts are drawn the script sets `data-charts-drawn` on
`<body>` to the number of charts and `data-marks` on each chart to the shapes it drew.
"""

from __future__ import annotations

import html
from pathlib import Path

import orjson

from pipeline.costs.reports import Report
from pipeline.outfile import writing

_SCRIPT = r"""
(function () {
  const data = JSON.parse(document.getElementById('report-data').textContent);
  const NS = 'http://www.w3.org/2000/svg';
  const COLORS = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948',
                  '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];
  const money = (v) => '$' + (Math.abs(v) >= 1 ? v.toFixed(2) : v.toFixed(6));
  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }
  function text(parent, x, y, content, attrs) {
    const t = el('text', Object.assign({x: x, y: y, 'font-size': 11}, attrs || {}), parent);
    t.textContent = content;
    return t;
  }
  function svg(id, width, height) {
    const holder = document.getElementById(id);
    const s = el('svg', {width: width, height: height, viewBox: `0 0 ${width} ${height}`,
                         role: 'img'}, holder);
    return [holder, s];
  }
  function finish(holder, s) {
    const marks = s.querySelectorAll('rect.mark, path.mark, circle.mark').length;
    holder.dataset.marks = String(marks);
    if (!marks) {
      const p = document.createElement('p');
      p.className = 'empty';
      p.textContent = 'no data in this period';
      holder.appendChild(p);
    }
    return 1;
  }

  function stackedDaily() {
    const [holder, s] = svg('chart-daily', 760, 260);
    const days = data.daily;
    const models = [];
    days.forEach(d => Object.keys(d.by_model).forEach(m => {
      if (!models.includes(m)) models.push(m);
    }));
    const max = Math.max(1e-12, ...days.map(d => Number(d.cost_usd)));
    const left = 70, top = 10, w = 760 - left - 150, h = 200;
    const bw = days.length ? w / days.length : w;
    el('line', {x1: left, y1: top + h, x2: left + w, y2: top + h, stroke: '#888'}, s);
    text(s, 4, top + 10, money(max));
    text(s, 4, top + h, '$0');
    days.forEach((d, i) => {
      let y = top + h;
      models.forEach((m, j) => {
        const v = Number(d.by_model[m] || 0);
        if (v <= 0) return;
        const bh = v / max * h;
        y -= bh;
        const r = el('rect', {class: 'mark', x: left + i * bw + 1, y: y, width: Math.max(bw - 2, 1),
                              height: bh, fill: COLORS[j % COLORS.length]}, s);
        el('title', {}, r).textContent = `${d.day} ${m}: ${money(v)}`;
      });
      if (i % Math.ceil(days.length / 12) === 0)
        text(s, left + i * bw, top + h + 14, d.day.slice(5), {'font-size': 9});
    });
    models.forEach((m, j) => {
      el('rect', {x: left + w + 10, y: top + j * 16, width: 10, height: 10,
                  fill: COLORS[j % COLORS.length]}, s);
      text(s, left + w + 24, top + j * 16 + 9, m);
    });
    return finish(holder, s);
  }

  function hbars(id, rows, label, value, format) {
    const height = 24 + rows.length * 22;
    const [holder, s] = svg(id, 760, Math.max(height, 40));
    const max = Math.max(1e-12, ...rows.map(r => Math.abs(value(r))));
    rows.forEach((r, i) => {
      const v = value(r), y = 8 + i * 22;
      text(s, 4, y + 13, label(r).slice(0, 34));
      const bw = Math.abs(v) / max * 340;
      if (v !== 0) {  // a lever that saved nothing gets its label, not a bar
        const bar = el('rect', {class: 'mark', x: 230, y: y, width: Math.max(bw, 1), height: 16,
                                fill: v < 0 ? '#e15759' : COLORS[i % COLORS.length]}, s);
        el('title', {}, bar).textContent = `${label(r)}: ${format(r)}`;
      }
      text(s, 236 + bw, y + 13, format(r));
    });
    return finish(holder, s);
  }

  function cacheRate() {
    const [holder, s] = svg('chart-cache', 760, 200);
    const rate = data.cache_hit_rate;
    const cx = 100, cy = 100, r = 70;
    el('circle', {cx: cx, cy: cy, r: r, fill: 'none', stroke: '#ddd', 'stroke-width': 24}, s);
    if (rate > 0) {
      const a = Math.min(rate, 0.9999) * 2 * Math.PI;
      const x = cx + r * Math.sin(a), y = cy - r * Math.cos(a);
      const large = a > Math.PI ? 1 : 0;
      el('path', {class: 'mark', d: `M ${cx} ${cy - r} A ${r} ${r} 0 ${large} 1 ${x} ${y}`,
                  fill: 'none', stroke: '#59a14f', 'stroke-width': 24}, s);
    } else {
      el('circle', {class: 'mark', cx: cx, cy: cy, r: 2, fill: '#59a14f'}, s);
    }
    text(s, cx - 28, cy + 6, (rate * 100).toFixed(1) + '%', {'font-size': 18});
    const days = data.daily.filter(d => d.cache_hits + d.answered > 0);
    const left = 230, w = 500, h = 150, top = 20;
    el('line', {x1: left, y1: top + h, x2: left + w, y2: top + h, stroke: '#888'}, s);
    text(s, left - 34, top + 8, '100%');
    text(s, left - 20, top + h, '0%');
    if (days.length) {
      const step = days.length > 1 ? w / (days.length - 1) : 0;
      const pts = days.map((d, i) => [
        left + i * step, top + h - d.cache_hits / (d.cache_hits + d.answered) * h]);
      el('path', {class: 'mark', d: 'M ' + pts.map(p => p.join(' ')).join(' L '), fill: 'none',
                  stroke: '#4e79a7', 'stroke-width': 2}, s);
      pts.forEach((p, i) => {
        const c = el('circle', {class: 'mark', cx: p[0], cy: p[1], r: 3, fill: '#4e79a7'}, s);
        el('title', {}, c).textContent = days[i].day;
      });
    }
    return finish(holder, s);
  }

  function anomalies() {
    const holder = document.getElementById('anomalies');
    const list = data.anomalies;
    const [, s] = svg('chart-anomalies', 760, 60 + 0);
    const max = Math.max(1, ...list.map(a => a.z));
    list.slice(0, 40).forEach((a, i) => {
      const x = 20 + i * 18, bh = a.z / max * 40;
      const r = el('rect', {class: 'mark', x: x, y: 50 - bh, width: 12, height: bh,
                            fill: a.level === 'critical' ? '#e15759' : '#f28e2b'}, s);
      el('title', {}, r).textContent = a.message;
    });
    const table = document.createElement('table');
    list.forEach(a => {
      const tr = document.createElement('tr');
      tr.className = a.level;
      for (const v of [a.level, a.granularity, a.period, a.scope + ' ' + (a.name || ''),
                       money(Number(a.cost_usd)), money(Number(a.baseline_usd)),
                       a.z.toFixed(1) + 'σ',
                       a.grew.map(g => `${g.dimension} ${g.name || '(none)'} `
                                  + `+${money(Number(g.delta_usd))}`).join(', ')]) {
        const td = document.createElement('td');
        td.textContent = v;
        tr.appendChild(td);
      }
      table.appendChild(tr);
    });
    holder.appendChild(table);
    const marks = s.querySelectorAll('rect.mark').length;
    document.getElementById('chart-anomalies').dataset.marks = String(marks);
    if (!list.length) {
      const p = document.createElement('p');
      p.className = 'empty';
      p.textContent = 'no anomalies';
      holder.appendChild(p);
    }
    return 1;
  }

  let drawn = 0;
  drawn += stackedDaily();
  drawn += hbars('chart-savings', data.savings, r => r.lever, r => Number(r.saved_usd),
                 r => `${money(Number(r.saved_usd))} (${r.tasks} tasks)`);
  drawn += cacheRate();
  drawn += hbars('chart-users', data.by_user.slice(0, 15), r => r.name, r => Number(r.cost_usd),
                 r => `${money(Number(r.cost_usd))} (${(r.share * 100).toFixed(1)}%)`);
  drawn += anomalies();
  document.body.dataset.chartsDrawn = String(drawn);
})();
"""

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; }
.figure { border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px; min-width: 150px; }
.figure b { display: block; font-size: 18px; }
table { border-collapse: collapse; margin-top: 8px; }
td { border-bottom: 1px solid #eee; padding: 3px 8px; font-size: 12px; }
tr.critical td:first-child { color: #c00; font-weight: bold; }
tr.warning td:first-child { color: #c60; }
.empty { color: #888; }
.simulated { color: #a60; font-weight: bold; }
"""


def _figure(label: str, value: str) -> str:
    return f'<div class="figure">{html.escape(label)}<b>{html.escape(value)}</b></div>'


def render_html(report: Report) -> str:
    """The dashboard page for a report, as one string."""
    data = report.to_dict()
    # JSON inside <script>: "</" and "<!--" must not appear raw, whatever the ledger holds
    blob = orjson.dumps(data).decode().replace("<", "\\u003c")
    period = f"{report.since or 'first record'} to {report.until or 'last record'}"
    margin = report.gross_margin
    figures = [
        _figure("spend", f"${report.cost_usd:.4f}"),
        _figure("saved", f"${report.saved_usd:.4f}"),
        _figure(
            f"alone on {report.baseline_model or 'the models asked for'}",
            f"${report.naive_cost_usd:.4f}",
        ),
        _figure("alone on the same models", f"${report.same_models_cost_usd:.4f}"),
        _figure("calls", f"{report.calls:,}"),
        _figure("tasks", f"{report.tasks:,}"),
        _figure("cache hit rate", f"{report.cache_hit_rate:.1%}"),
        _figure("top 20% of users", f"{report.top20_users_share:.1%} of spend"),
        _figure(
            "unit cost",
            "-" if report.unit_cost_usd is None else f"${report.unit_cost_usd:.6f}/task",
        ),
        _figure(
            "peak hour (UTC)",
            "-" if report.peak_hour_of_day is None else f"{report.peak_hour_of_day:02d}:00",
        ),
    ]
    if margin is not None:
        figures.append(_figure("gross margin", f"{margin:.1%}"))
    simulated = (
        f'<p class="simulated">SIMULATED provider: {report.simulated_calls:,} of '
        f"{report.calls:,} calls; their costs are estimates, not real spend</p>"
        if report.simulated_calls
        else ""
    )
    sections = [
        ("Spend per day by model", "chart-daily"),
        ("Savings by lever", "chart-savings"),
        ("Cache hit rate (overall, and per day)", "chart-cache"),
        ("Top users by spend", "chart-users"),
    ]
    charts = "\n".join(
        f'<h2>{html.escape(title)}</h2><div class="chart" id="{cid}"></div>'
        for title, cid in sections
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'">
<title>batchwise cost report</title>
<style>{_STYLE}</style>
</head>
<body data-charts-drawn="0">
<h1>batchwise cost report <small>{html.escape(period)} (UTC)</small></h1>
{simulated}<div class="figures">{"".join(figures)}</div>
{charts}
<h2>Anomalies</h2><div class="chart" id="chart-anomalies"></div><div id="anomalies"></div>
<script type="application/json" id="report-data">{blob}</script>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def write_html(report: Report, path: Path) -> Path:
    """Write the dashboard to `path` (via a temporary file); returns the path."""
    with writing(path, "w", encoding="utf-8") as fh:
        fh.write(render_html(report))
    return path
