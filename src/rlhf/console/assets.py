"""The console's stylesheet, served from /static/console.css (kept in Python so every
install carries it: no package-data entry needed). No inline styles, no JavaScript."""

CSS = """\
:root { --fg: #0f172a; --muted: #64748b; --line: #e2e8f0; --accent: #2563eb; }
* { box-sizing: border-box; }
body {
  margin: 0;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--fg);
  background: #f8fafc;
}
header {
  display: flex;
  align-items: center;
  gap: 1.5rem;
  padding: .6rem 1.2rem;
  background: #0f172a;
  color: #fff;
}
header a { color: #cbd5e1; text-decoration: none; margin-right: 1rem; }
header a.here, header a:hover { color: #fff; border-bottom: 2px solid var(--accent); }
.brand { font-weight: 600; }
.who { margin-left: auto; display: flex; gap: .5rem; align-items: center; }
.role { font-size: .8rem; padding: .1rem .4rem; border-radius: .3rem; background: #334155; }
main { max-width: 1100px; margin: 0 auto; padding: 1rem 1.2rem 3rem; }
h1 { font-size: 1.4rem; }
h2 { font-size: 1.05rem; margin: .8rem 0 .4rem; }
h3 { font-size: 1rem; margin: 0 0 .4rem; }
pre {
  white-space: pre-wrap;
  word-break: break-word;
  font: inherit;
  background: #fff;
  border: 1px solid var(--line);
  border-radius: .4rem;
  padding: .7rem;
  margin: 0;
  min-height: 3rem;
}
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
.card, .comparison, .model, article.version {
  background: #fff;
  border: 1px solid var(--line);
  border-radius: .5rem;
  padding: 1rem;
  margin: 1rem 0;
}
article.version.promoted { border-color: #16a34a; }
label { display: block; margin: .6rem 0 .2rem; color: var(--muted); font-size: .9rem; }
textarea, input, select {
  font: inherit;
  padding: .4rem;
  border: 1px solid #cbd5e1;
  border-radius: .3rem;
}
textarea { width: 100%; }
.choices { display: flex; gap: .6rem; align-items: center; margin-top: .7rem; flex-wrap: wrap; }
.choices label { display: inline; margin: 0; }
button {
  font: inherit;
  padding: .45rem .9rem;
  border-radius: .35rem;
  border: 1px solid var(--accent);
  background: var(--accent);
  color: #fff;
  cursor: pointer;
}
button:disabled { opacity: .4; cursor: not-allowed; }
button.danger { background: #b91c1c; border-color: #b91c1c; }
header button { background: transparent; border-color: #64748b; padding: .2rem .6rem; }
form.inline { display: inline-flex; gap: .4rem; margin: .3rem 0; }
.message { background: #ecfdf5; border: 1px solid #a7f3d0; padding: .6rem; border-radius: .4rem; }
.error { background: #fef2f2; border: 1px solid #fecaca; padding: .6rem; border-radius: .4rem; }
.banner {
  margin: 0;
  padding: .6rem 1.2rem;
  background: #fef3c7;
  border-bottom: 1px solid #fcd34d;
}
.muted { color: var(--muted); }
.badge {
  font-size: .75rem;
  background: #16a34a;
  color: #fff;
  padding: .1rem .4rem;
  border-radius: .3rem;
}
.tag { font-size: .75rem; color: var(--muted); font-weight: normal; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td {
  text-align: left;
  border-bottom: 1px solid var(--line);
  padding: .3rem .5rem;
  font-size: .9rem;
  vertical-align: top;
}
dl { display: grid; grid-template-columns: 9rem 1fr; gap: .2rem .8rem; margin: .4rem 0; }
dt { color: var(--muted); } dd { margin: 0; } dd ul { margin: 0; padding-left: 1rem; }
.gates li.pass { color: #15803d; } .gates li.fail { color: #b91c1c; }
.charts { display: flex; gap: 1rem; flex-wrap: wrap; }
svg.chart { background: #fff; border: 1px solid var(--line); border-radius: .4rem; }
svg .chart-title { font-size: 12px; font-weight: 600; fill: #0f172a; }
svg .axis, svg .legend { font-size: 10px; fill: #64748b; }
svg.progress { vertical-align: middle; }
"""
