"""The report page: one self-contained HTML document rendered from a Jinja2 template.

Self-contained means that the page needs nothing but itself to be read, offline or attached to
an e-mail: the CSS is inline, figures are PNG data URIs, and there is no script and no link
to a network resource. Jinja2 autoescapes every value, so suite text, dataset names and table
cells cannot inject markup.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Table:
    """A table ready to print: header, formatted cells, and a CSS class per row (``""`` for none)."""

    columns: list[str]
    rows: list[list[str]]
    row_classes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FigureImage:
    """A figure as the page shows it: its PNG inline, the file it was also saved to, and words for it."""

    png: bytes
    file_name: str
    alt: str
    caption: str

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def table(
    frame: pd.DataFrame,
    formats: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    highlight: Callable[[dict[str, Any]], bool] | None = None,
) -> Table:
    """``frame`` as a :class:`Table`; its index is left out, so put anything to show in a column.

    ``formats`` maps a column to a format spec (``".3f"``); other floats get 4 significant
    digits, missing values print blank. ``labels`` renames columns for the header. Rows for
    which ``highlight({column: value})`` is true get the class ``highlight``.
    """
    formats = formats or {}
    columns = [str(c) for c in frame.columns]
    rows, classes = [], []
    # itertuples keeps each column's type; iterrows would turn the integers of a mixed row into floats.
    for values in frame.itertuples(index=False, name=None):
        pairs = list(zip(columns, values, strict=True))
        rows.append([_cell(value, formats.get(column)) for column, value in pairs])
        classes.append("highlight" if highlight is not None and highlight(dict(pairs)) else "")
    return Table([(labels or {}).get(c, c) for c in columns], rows, classes)


def render_page(**context: Any) -> str:
    """The report page from ``context``; see the template below for the names it reads."""
    return _ENVIRONMENT.from_string(_PAGE).render(**context)


def _cell(value: Any, spec: str | None) -> str:
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return ""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if spec is not None:
        return format(value, spec)
    if isinstance(value, float):
        return format(value, ".4g")
    return str(value)


_ENVIRONMENT = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)

_CSS = """
:root { --ink: #1d232b; --muted: #5b6673; --rule: #d9dee4; --accent: #1f5fa8; --mark: #fff2b3; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 28px 64px; }
header { border-bottom: 3px solid var(--accent); margin-bottom: 8px; }
h1 { font-size: 1.7em; margin: 0.2em 0; }
h2 { font-size: 1.3em; margin: 1.8em 0 0.4em; padding-bottom: 0.2em; border-bottom: 1px solid var(--rule); }
h3 { font-size: 1.1em; margin: 1.4em 0 0.3em; }
p.lead { color: var(--muted); margin: 0.2em 0 0.8em; }
nav ol { columns: 2; margin: 0.4em 0; padding-left: 1.4em; }
a { color: var(--accent); }
figure { margin: 0.6em 0 1em; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 0.9em; margin-top: 0.3em; }
.reading { border-left: 4px solid var(--rule); background: #f6f8fa; padding: 0.4em 0.8em; margin: 0.5em 0; }
.reading.significant { border-left-color: #c0392b; }
.reading.not-significant { border-left-color: #7f8c8d; }
.verdict { font-weight: 600; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.4em 0 0.8em; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 10px; border-bottom: 1px solid var(--rule); text-align: right; white-space: nowrap; }
th { background: #eef1f4; font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
tr.highlight td { background: var(--mark); font-weight: 600; }
.scroll { max-height: 28em; overflow: auto; display: inline-block; max-width: 100%; border: 1px solid var(--rule); }
.scroll table { margin: 0; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0.4em 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.92em; overflow-wrap: anywhere; }
pre { background: #f6f8fa; border: 1px solid var(--rule); padding: 10px 12px; overflow: auto;
      font-size: 0.85em; line-height: 1.4; }
.columns { display: flex; flex-wrap: wrap; gap: 8px 40px; align-items: flex-start; }
.note { color: var(--muted); font-size: 0.9em; }
.warnings { border-left: 4px solid #d4a017; background: #fffbea; padding: 0.3em 0.8em; margin: 0.5em 0; font-size: 0.9em; }
.warnings p, .warnings ul { margin: 0.2em 0; }
"""

_PAGE = (
    """\
{% macro render_table(t, scroll=false) %}
{% if scroll %}<div class="scroll">{% endif %}
<table>
  <thead><tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
  <tbody>
  {% for row in t.rows %}
    {% set row_class = t.row_classes[loop.index0] if t.row_classes else "" %}
    <tr{% if row_class %} class="{{ row_class }}"{% endif %}>{% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>
  {% endfor %}
  </tbody>
</table>
{% if scroll %}</div>{% endif %}
{% endmacro %}
{% macro render_figure(f) %}
<figure>
  <img src="{{ f.data_uri }}" alt="{{ f.alt }}">
  <figcaption>{{ f.caption }} <span class="note">(figures/{{ f.file_name }})</span></figcaption>
</figure>
{% endmacro %}
{% macro render_reading(r, metric) %}
<p class="reading {{ r.verdict_class }}" data-metric="{{ metric }}">{{ r.text }}
{%- if r.verdict %} <span class="verdict">{{ r.verdict }}</span>{% endif %}</p>
{% endmacro %}
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>"""
    + _CSS
    + """</style>
</head>
<body>
<main>
<header>
  <h1>{{ title }}</h1>
  {% if description %}<p class="lead">{{ description }}</p>{% endif %}
  <p class="lead">{{ grid_text }}</p>
</header>
<nav><ol>
  {% for anchor, heading in contents %}<li><a href="#{{ anchor }}">{{ heading }}</a></li>{% endfor %}
</ol></nav>

<section id="summary">
<h2>Summary</h2>
{% for note in outcome_notes %}<p>{{ note }}</p>{% endfor %}
{% if skipped_note %}<p class="note">{{ skipped_note }}</p>{% endif %}
{% if anova_heading %}
{% set question = "Is there a " ~ interaction_labels | join(" or a ") ~ " interaction?" %}
<p>{{ question }} {{ anova_heading }} on the per-cell means (seeds are the replicates).</p>
{% endif %}
{% for metric in metrics %}
  {% if metric.readings %}<div><strong>{{ metric.name }}</strong>{% if metric.name == outcome %} (the outcome){% endif %}
  {%- for reading in metric.readings %}{{ render_reading(reading, metric.name) }}{% endfor %}</div>{% endif %}
{% endfor %}
{% if not anova_given %}<p class="note">No ANOVA table was given to the report.</p>{% endif %}
</section>

<section id="interaction">
<h2>{{ interaction_heading }}</h2>
<p class="note">Each point is the mean over seeds of the per-cell mean (image-scope metrics are averaged over
the evaluation images first); the band is its t-based 95% confidence interval over seeds.
{%- if on_circle %} On the circle,
θ = 360° is θ = 0°.{% endif %}</p>
{% for metric in metrics %}
<h3 id="metric-{{ loop.index }}">{{ metric.name }}{% if metric.name == outcome %} (the outcome){% endif %}</h3>
{% for reading in metric.readings %}{{ render_reading(reading, metric.name) }}{% endfor %}
{% if metric.figure %}
{{ render_figure(metric.figure) }}
{% else %}
<p class="note">No cell has a value of {{ metric.name }}.</p>
{% endif %}
{% if metric.anova %}
<p class="note">{{ anova_heading }} of {{ metric.name }}: {{ metric.design }}; the {{ interaction_labels | join(" and ") }}
{{- " rows are" if interaction_labels | length > 1 else " row is" }} highlighted.</p>
{{ render_table(metric.anova) }}
{% endif %}
{% endfor %}
</section>

{% for analysis in analyses %}
<section id="{{ analysis.anchor }}">
<h2>{{ analysis.heading }}</h2>
{% for note in analysis.notes %}<p class="note">{{ note }}</p>{% endfor %}
{% if analysis.table.rows %}
{{ render_table(analysis.table, scroll=true) }}
{% if analysis.rows_in_all > analysis.table.rows | length %}
<p class="note">The first {{ "{:,}".format(analysis.table.rows | length) }} of {{ "{:,}".format(analysis.rows_in_all) }} rows
{%- if analysis.file_name %}; {{ analysis.file_name }} in the run directory has them all{% endif %}.</p>
{% endif %}
{% endif %}
{% if analysis.warnings %}
<div class="warnings"><p>{{ "The table is empty. " if not analysis.table.rows }}The analysis warned:</p>
<ul>{% for warning in analysis.warnings %}<li>{{ warning }}</li>{% endfor %}</ul></div>
{% elif not analysis.table.rows %}
<p class="note">The table is empty.</p>
{% endif %}
</section>
{% endfor %}

{% for section in figure_sections %}
<section id="{{ section.anchor }}">
<h2>{{ section.heading }}</h2>
{% if section.figure %}{{ render_figure(section.figure) }}{% else %}<p class="note">{{ section.missing }}</p>{% endif %}
</section>
{% endfor %}

<section id="provenance">
<h2>Provenance</h2>
<dl class="facts">
{% for label, value in provenance.facts %}<dt>{{ label }}</dt><dd>{{ value }}</dd>
{% endfor %}
</dl>
<h3>Wall time and memory per cell</h3>
<p>{{ provenance.cost_text }}</p>
{% if provenance.cost %}{{ render_table(provenance.cost) }}{% endif %}
{% if provenance.memory_note %}<p class="note">{{ provenance.memory_note }}</p>{% endif %}
<div class="columns">
  <div><h3>Versions</h3>{{ render_table(provenance.versions) }}</div>
  <div><h3>Plugins</h3>{{ render_table(provenance.plugins) }}</div>
</div>
<h3>Suite</h3>
<pre>{{ provenance.suite_yaml }}</pre>
</section>
</main>
</body>
</html>
"""
)
