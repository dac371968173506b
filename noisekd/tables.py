"""The table model and its writers: a `Table` of mean ± std cells renders to Markdown, LaTeX (booktabs),
CSV and HTML; `write_table` and `write_figure` write tables and matplotlib figures atomically.

The paper's tables and figures (`noisekd.paper`) and the linear study build on these.
"""

from __future__ import annotations

import csv
import html
import io
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .io import atomic_path, write_bytes_atomic


@dataclass(frozen=True)
class Stat:
    """Mean, sample std (NaN for one value) and number of values, as fractions."""

    mean: float
    std: float
    n: int

    def text(self) -> str:
        if self.n == 0 or not math.isfinite(self.mean):
            return "n/a"
        if self.n < 2 or not math.isfinite(self.std):
            return f"{100 * self.mean:.2f}"
        return f"{100 * self.mean:.2f} ± {100 * self.std:.2f}"


@dataclass
class TableCell:
    stat: Stat | None = None  # None: not applicable, shown as "-"
    bold: bool = False
    label: str | None = None  # a text cell (a verdict, a source) instead of a statistic

    def text(self) -> str:
        if self.label is not None:
            return self.label
        return "-" if self.stat is None else self.stat.text()


@dataclass(frozen=True)
class Column:
    name: str
    group: str = ""  # upper header level ("CIFAR-10"); "" for none


@dataclass
class Row:
    index: tuple[str, ...]  # the row labels, one per Table.index_names
    cells: list[TableCell]
    block: str | None = None  # rows sharing a block are rendered under a block heading


@dataclass
class Table:
    name: str
    title: str
    caption: str
    index_names: tuple[str, ...]
    columns: list[Column]
    rows: list[Row] = field(default_factory=list)

    # -- helpers --
    def header(self, col: Column) -> str:
        return f"{col.group} / {col.name}" if col.group else col.name

    def cell(self, row_index: Sequence[str] | str, header: str, block: str | None = None) -> TableCell:
        """The cell of the row with these labels (a string matches the last index level) and header."""
        if isinstance(row_index, str):
            match = [r for r in self.rows if r.index[-1] == row_index]
        else:
            match = [r for r in self.rows if r.index == tuple(row_index)]
        if block is not None:
            match = [r for r in match if r.block == block]
        cols = [i for i, c in enumerate(self.columns) if self.header(c) == header]
        if len(match) != 1 or len(cols) != 1:
            raise KeyError(f"{self.name}: {len(match)} rows {row_index!r} and {len(cols)} columns {header!r}")
        return match[0].cells[cols[0]]

    def _blocks(self) -> list[tuple[str | None, list[Row]]]:
        out: list[tuple[str | None, list[Row]]] = []
        for row in self.rows:
            if not out or out[-1][0] != row.block:
                out.append((row.block, []))
            out[-1][1].append(row)
        return out

    def _group_spans(self) -> list[tuple[str, int, int]]:
        """(group, first, last column index) of each run of neighbouring columns sharing a group."""
        spans: list[tuple[str, int, int]] = []
        for i, c in enumerate(self.columns):
            if spans and spans[-1][0] == c.group:
                spans[-1] = (c.group, spans[-1][1], i)
            else:
                spans.append((c.group, i, i))
        return spans

    @staticmethod
    def _shown_index(rows: list[Row]) -> list[list[str]]:
        """Index labels with repeats of the leading levels blanked, as the paper prints them."""
        out, prev = [], None
        for row in rows:
            labels = list(row.index)
            if prev is not None:
                for i in range(len(labels) - 1):
                    if row.index[: i + 1] != prev[: i + 1]:
                        break
                    labels[i] = ""
            prev = row.index
            out.append(labels)
        return out

    # -- renderers --
    def to_markdown(self) -> str:
        heads = list(self.index_names) + [self.header(c) for c in self.columns]
        lines = [f"### {_md(self.title)}", "", "| " + " | ".join(_md(h) for h in heads) + " |",
                 "|" + "|".join([":---"] * len(self.index_names) + ["---:"] * len(self.columns)) + "|"]
        for block, rows in self._blocks():
            if block is not None:
                lines.append("| " + " | ".join([f"**{_md(block)}**"] + [""] * (len(heads) - 1)) + " |")
            for labels, row in zip(self._shown_index(rows), rows):
                cells = [f"**{c.text()}**" if c.bold else c.text() for c in row.cells]
                lines.append("| " + " | ".join([_md(x) for x in labels] + cells) + " |")
        if not self.rows:
            lines.append("| " + " | ".join(["(no rows)"] + [""] * (len(heads) - 1)) + " |")
        lines += ["", _md(self.caption), ""]
        return "\n".join(lines)

    def to_latex(self) -> str:
        ni, nc = len(self.index_names), len(self.columns)
        env = "table*" if ni + nc > 7 else "table"
        out = [f"\\begin{{{env}}}[t]", "\\centering", "\\small",
               f"\\caption{{\\textbf{{{_tex(self.title)}.}} {_tex(self.caption)}}}",
               f"\\label{{tab:{self.name.replace('_', '-')}}}",
               "\\begin{tabular}{" + "l" * ni + "c" * nc + "}", "\\toprule"]
        if any(c.group for c in self.columns):
            top, rules = [""] * ni, []
            for group, a, b in ((g, ni + i + 1, ni + j + 1) for g, i, j in self._group_spans()):
                top.append(f"\\multicolumn{{{b - a + 1}}}{{c}}{{{_tex(group)}}}" if group else "")
                if group:
                    rules.append(f"\\cmidrule(lr){{{a}-{b}}}")
            out.append(" & ".join(top) + " \\\\")
            out.append(" ".join(rules))
        out.append(" & ".join([_tex(x) for x in self.index_names] + [_tex(c.name) for c in self.columns]) + " \\\\")
        out.append("\\midrule")
        width = ni + nc
        for k, (block, rows) in enumerate(self._blocks()):
            if block is not None:
                if k:
                    out.append("\\midrule")
                out.append(f"\\multicolumn{{{width}}}{{l}}{{\\textit{{{_tex(block)}}}}} \\\\")
            for labels, row in zip(self._shown_index(rows), rows):
                cells = []
                for c in row.cells:
                    t = _tex(c.text())
                    cells.append(f"\\textbf{{{t}}}" if c.bold else t)
                out.append(" & ".join([_tex(x) for x in labels] + cells) + " \\\\")
        if not self.rows:
            out.append(f"\\multicolumn{{{width}}}{{l}}{{(no rows)}} \\\\")
        out += ["\\bottomrule", "\\end{tabular}", f"\\end{{{env}}}", ""]
        return "\n".join(out)

    def to_csv(self) -> str:
        """One line per row: block (if any), the index labels, then mean, std (percent) and n per column."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        has_block = any(r.block is not None for r in self.rows)
        head = (["block"] if has_block else []) + list(self.index_names)
        for c in self.columns:
            h = self.header(c)
            head += [f"{h} mean", f"{h} std", f"{h} n"]
        w.writerow(head)
        for row in self.rows:
            line = ([row.block or ""] if has_block else []) + list(row.index)
            for c in row.cells:
                s = c.stat
                if c.label is not None:
                    line += [c.label, "", ""]
                elif s is None:
                    line += ["", "", ""]
                else:
                    line += [_csvnum(s.mean), _csvnum(s.std), s.n]
            w.writerow(line)
        return buf.getvalue()


    def to_html(self) -> str:
        """A <figure> holding the table (group headers spanning their columns, block headings, bold
        best values) and its caption, for the HTML report."""
        ni = len(self.index_names)
        width = ni + len(self.columns)
        out = [f'<figure class="table" id="{html.escape(self.name)}">', f"<h3>{html.escape(self.title)}</h3>",
               "<table>", "<thead>"]
        if any(c.group for c in self.columns):
            top = [f'<th colspan="{ni}"></th>']
            top += [f'<th colspan="{j - i + 1}">{html.escape(g)}</th>' for g, i, j in self._group_spans()]
            out.append("<tr>" + "".join(top) + "</tr>")
        out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in self.index_names)
                   + "".join(f"<th>{html.escape(c.name)}</th>" for c in self.columns) + "</tr>")
        out += ["</thead>", "<tbody>"]
        for block, rows in self._blocks():
            if block is not None:
                out.append(f'<tr class="block"><th colspan="{width}">{html.escape(block)}</th></tr>')
            for labels, row in zip(self._shown_index(rows), rows):
                cells = []
                for c in row.cells:
                    text = f"<strong>{html.escape(c.text())}</strong>" if c.bold else html.escape(c.text())
                    cells.append(f'<td class="text">{text}</td>' if c.label is not None else f"<td>{text}</td>")
                out.append("<tr>" + "".join(f"<th>{html.escape(x)}</th>" for x in labels) + "".join(cells) + "</tr>")
        if not self.rows:
            out.append(f'<tr><td colspan="{width}">(no rows)</td></tr>')
        out += ["</tbody>", "</table>", f"<figcaption>{html.escape(self.caption)}</figcaption>", "</figure>"]
        return "\n".join(out)


_PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;font-size:0.9em;margin:0.5em 0}"
    "th,td{border-bottom:1px solid #ddd;padding:0.25em 0.6em;text-align:right;vertical-align:top}"
    "tbody th{text-align:left;font-weight:normal}thead th{text-align:center;border-bottom:2px solid #888}"
    "td.text{text-align:left}tr.block th{text-align:left;font-style:italic;background:#f4f4f4}"
    "img{max-width:100%}"
    "figcaption{font-size:0.85em;color:#555;max-width:60em}"
)


def html_page(title: str, body: str) -> str:
    """A self-contained HTML page (no external resources) around rendered parts."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{_PAGE_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def _csvnum(x: float) -> str:
    return "" if not math.isfinite(x) else f"{100 * x:.6g}"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_TEX_UNICODE = {"±": r"$\pm$", "σ": r"$\sigma$", "ε": r"$\epsilon$", "–": "--", "—": "---", "≤": r"$\leq$",
                "≥": r"$\geq$", "×": r"$\times$", "Δ": r"$\Delta$"}
_TEX_RE = re.compile("|".join(re.escape(k) for k in list(_TEX_SPECIAL) + list(_TEX_UNICODE)))


def _tex(text: str) -> str:
    def sub(m: re.Match) -> str:
        s = m.group(0)
        return _TEX_SPECIAL.get(s) or _TEX_UNICODE[s]

    return _TEX_RE.sub(sub, str(text))


def bold_best(cells: Iterable[TableCell]) -> None:
    """Bold the cells with the highest mean at display precision (ties: all)."""
    cells = [c for c in cells if c.stat is not None and c.stat.n > 0 and math.isfinite(c.stat.mean)]
    if len(cells) < 2:
        return
    best = max(round(100 * c.stat.mean, 2) for c in cells)
    for c in cells:
        c.bold = round(100 * c.stat.mean, 2) == best


# -- output ---------------------------------------------------------------------------------------


def write_table(table: Table, md_path=None, tex_path=None, csv_path=None, html_path=None) -> None:
    """Write the Markdown, LaTeX, CSV and HTML renderings (each path optional), each atomically."""
    for path, render in ((md_path, table.to_markdown), (tex_path, table.to_latex), (csv_path, table.to_csv),
                         (html_path, lambda: html_page(table.title, table.to_html()))):
        if path is not None:
            write_bytes_atomic(path, render().encode("utf-8"))


def write_figure(fig, png_path=None, pdf_path=None, dpi: int = 200) -> None:
    """Save a matplotlib figure as PNG and PDF (each path optional), atomically and reproducibly; always
    closes the figure."""
    try:
        for path, fmt, meta in ((png_path, "png", {"Software": None}),
                                (pdf_path, "pdf", {"CreationDate": None, "Creator": None, "Producer": None})):
            if path is None:
                continue
            with atomic_path(path) as tmp:
                # tight: a legend wider than a one-panel figure must not be cut off
                fig.savefig(tmp, format=fmt, dpi=dpi, metadata=meta, bbox_inches="tight", pad_inches=0.05)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
