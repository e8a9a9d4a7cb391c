"""The report's style sheet: inline, scoped under ``.mmr``, no web fonts, phone to wide screen."""

from __future__ import annotations

__all__ = ["CSS"]

CSS = """
.mmr{--ink:#1a202c;--muted:#4a5568;--line:#e2e8f0;--accent:#2b6cb0;--bg:#f7fafc;
--good:#276749;--goodbg:#f0fff4;--warn:#9c4221;--warnbg:#fffaf0;--infobg:#ebf8ff;
font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--ink);line-height:1.55;max-width:1180px;margin:0 auto;padding:1.5rem 1.25rem 3rem;
font-size:15px;background:#fff}
body{margin:0;background:#fff}
.mmr h1{font-size:1.9rem;margin:0 0 .3rem;letter-spacing:-.01em}
.mmr h2{font-size:1.45rem;margin:2.4rem 0 .8rem;padding-bottom:.35rem;
border-bottom:2px solid var(--accent)}
.mmr h3{font-size:1.15rem;margin:1.8rem 0 .6rem;color:var(--accent)}
.mmr h4{font-size:1rem;margin:1.2rem 0 .4rem}
.mmr-header{border-bottom:1px solid var(--line);padding-bottom:1rem}
.mmr-subtitle{color:var(--muted);margin:.2rem 0 1rem}
.mmr-facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:.6rem;
margin:0}
.mmr-facts div{background:var(--bg);border:1px solid var(--line);border-radius:6px;
padding:.45rem .7rem}
.mmr-facts dt{font-size:.75rem;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.mmr-facts dd{margin:0;font-weight:600;overflow-wrap:anywhere}
.mmr-toc{background:var(--bg);border:1px solid var(--line);border-radius:8px;
padding:.8rem 1.2rem;margin:1.4rem 0}
.mmr .mmr-toc h2{font-size:1rem;margin:0 0 .3rem;border:0;padding:0}
.mmr-toc ol{margin:.2rem 0;padding-left:1.2rem}
.mmr-toc>ol{columns:2 260px}
.mmr-toc li{break-inside:avoid}
.mmr-toc>ol{list-style:decimal}.mmr-toc ol ol{list-style:none;padding-left:.6rem}
.mmr a{color:var(--accent);text-decoration:none}
.mmr a:hover{text-decoration:underline}
.mmr-intro{color:var(--muted);font-style:italic}
.mmr-table-wrap{overflow-x:auto;margin:.6rem 0 1.1rem;-webkit-overflow-scrolling:touch}
.mmr table.mm-table{border-collapse:collapse;font-size:.88rem;
font-variant-numeric:tabular-nums;min-width:50%}
.mmr table.mm-table caption{text-align:left;font-weight:600;padding:.2rem 0 .45rem;
color:var(--ink)}
.mmr table.mm-table th,.mmr table.mm-table td{padding:.32rem .7rem;
border-bottom:1px solid var(--line);white-space:nowrap}
.mmr table.mm-table td{text-align:right}
.mmr table.mm-table thead th{background:var(--bg);border-bottom:2px solid #cbd5e0;
text-align:right;font-weight:600}
.mmr table.mm-table thead th:first-child,.mmr table.mm-table tbody th{text-align:left}
.mmr table.mm-table tbody th{font-weight:500}
.mmr table.mm-table .mmr-text{text-align:left}
.mmr table.mm-table tbody tr:hover{background:#f1f5f9}
.mmr p.mm-note{font-size:.82rem;color:var(--muted);margin:.25rem 0}
.mmr-note{border-left:4px solid var(--accent);background:var(--infobg);padding:.55rem .8rem;
border-radius:0 6px 6px 0}
.mmr-note.mmr-warn{border-color:#dd6b20;background:var(--warnbg);color:var(--warn)}
.mmr-note.mmr-good{border-color:#38a169;background:var(--goodbg);color:var(--good)}
.mmr-list{padding-left:0;list-style:none}
.mmr-list li{padding:.45rem .7rem .45rem 2rem;margin:.35rem 0;border-radius:6px;
position:relative;background:var(--bg)}
.mmr-list li::before{position:absolute;left:.7rem;font-weight:700}
.mmr-list li.mmr-good{background:var(--goodbg)}
.mmr-list li.mmr-good::before{content:"\\2713";color:#38a169}
.mmr-list li.mmr-warn{background:var(--warnbg)}
.mmr-list li.mmr-warn::before{content:"!";color:#dd6b20}
.mmr-list li.mmr-info::before{content:"\\2022";color:var(--accent)}
.mmr-figures{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,460px),1fr));
gap:1rem;margin:.8rem 0 1.2rem;align-items:start}
.mmr-figure.mmr-wide{grid-column:1/-1}
.mmr-figure{margin:0;border:1px solid var(--line);border-radius:8px;padding:.6rem;
background:#fff}
.mmr-figure img{display:block;width:auto;height:auto;max-width:100%;margin:0 auto}
.mmr-figure figcaption{font-size:.82rem;color:var(--muted);margin-top:.4rem}
.mmr-footer{margin-top:3rem;border-top:1px solid var(--line);padding-top:.8rem;
color:var(--muted);font-size:.8rem}
@media (max-width:640px){.mmr{padding:1rem .75rem 2rem;font-size:14px}
.mmr h1{font-size:1.5rem}.mmr h2{font-size:1.25rem}.mmr-toc>ol{columns:1}}
@media print{.mmr-toc{display:none}.mmr-figure{break-inside:avoid}}
"""
