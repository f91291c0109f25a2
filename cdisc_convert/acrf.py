"""The annotated CRF (aCRF): the blank CRF drawn from the EDC's CRF design, each field annotated
with the SDTM variable(s) it becomes, the annotation text derived from the mapping specs (never
typed), so the aCRF cannot drift from what the programs do.

CDISC annotation style (the CDISC Metadata Submission Guidelines' aCRF conventions):

- a domain box on each form page, ``AE = Adverse Events``, one colour per domain on the page;
- each field's annotation in its domain's colour: the variable name (``AESTDTC``); for findings
  the result and unit per test (``LBORRES when LBTESTCD = ALT``); a source that records one kind
  of event adds its topic (``DSSTDTC when DSDECOD = INFORMED CONSENT OBTAINED``);
  supplemental qualifiers as ``QNAM in SUPPxx``; a field no variable reads ``[NOT SUBMITTED]``;
- PDF bookmarks by form and by visit; an HTML version with the same annotations.

The PDF is drawn with ReportLab (``invariant=1``: no creation date or random document id, so the
same specs and design give the same bytes). :func:`write_acrf` returns the physical page of every
annotation, which define.xml's CRF origins point to (``def:PDFPageRef``).

Example:
    >>> from cdisc_convert.crf import CrfDesign, CrfForm, CrfItem
    >>> from cdisc_convert.spec import DomainSpec
    >>> design = CrfDesign([CrfForm("AE", "Adverse Events", [CrfItem("AETERM", "Term"), CrfItem("AECOMM", "Note")])], {})
    >>> spec = DomainSpec(domain="AE", sources=[{"form": "AE"}], variables={"AETERM": {"field": "AETERM"}})
    >>> [(f, [a.text for a in notes]) for f, notes in annotate(design, [spec])["AE"].items()]
    [('AETERM', ['AETERM']), ('AECOMM', ['[NOT SUBMITTED]'])]
"""
from __future__ import annotations

import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from .crf import CrfDesign, CrfForm, CrfItem
from .errors import ConversionError
from .spec import DomainSpec, StudyConfig

NOT_SUBMITTED = "[NOT SUBMITTED]"
# Domain colours on a page, in order (CDISC MSG aCRF conventions: blue, yellow, green, then more)
DOMAIN_COLOURS = ["#BFFFFF", "#FFFF96", "#96FF96", "#FFBE9B", "#D2B4FF", "#FFB4DC"]
TOPIC_SUFFIXES = ("DECOD", "TESTCD", "TRT", "TERM")  # a source's fixed topic value narrows its annotations


@dataclass(frozen=True)
class Annotation:
    """One annotation of one CRF field."""

    domain: str  # the dataset the value goes to (SUPPxx for a supplemental qualifier; '' when not submitted)
    text: str  # as printed on the CRF
    variable: str = ""  # the variable (the QNAM for a supplemental qualifier)
    key: str = ""  # the value-level key: the --TESTCD of a findings result
    spec: str = ""  # file:line of the spec rule

    @property
    def parent(self) -> str:
        """The domain whose colour the annotation takes (SUPPAE -> AE)."""
        return self.domain[4:] if self.domain.startswith("SUPP") else self.domain


def _topic_condition(spec: DomainSpec, source) -> str:
    """``DSDECOD = INFORMED CONSENT OBTAINED`` when a source of a several-source domain fixes its
    topic with a hard-coded value (the records of that source are one kind of event)."""
    if len(spec.sources) < 2:
        return ""
    for suffix in TOPIC_SUFFIXES:
        rule = source.variables.get(f"{spec.domain}{suffix}")
        if rule is not None and rule.value is not None:
            return f"{spec.domain}{suffix} = {rule.value}"
    return ""


def annotate(design: CrfDesign, specs: list[DomainSpec]) -> dict[str, dict[str, list[Annotation]]]:
    """Form -> field -> its annotations, in design order; every field gets at least one."""
    fields_of = {f.name: {i.name for i in f.items} for f in design.forms}
    found: dict[tuple[str, str], list[Annotation]] = {}

    def add(form: str, name: str, note: Annotation) -> None:
        if name in fields_of.get(form, ()):
            notes = found.setdefault((form, name), [])
            if note not in notes:
                notes.append(note)

    for spec in specs:
        dom = spec.domain
        for i, source in enumerate(spec.sources):
            topic = _topic_condition(spec, source)
            where = f" when {topic}" if topic else ""
            joined = {f: j.form for j in source.join for f in j.fields}
            rules = {**spec.variables, **source.variables}
            for var, rule in rules.items():
                line = spec.line_of("sources", i, "variables", var) if var in source.variables \
                    else spec.line_of("variables", var)
                narrowed = where if not topic.startswith(f"{var} ") else ""
                for name in sorted(rule.fields()):
                    add(joined.get(name, source.form), name, Annotation(dom, f"{var}{narrowed}", var, "", line))
            if source.not_done_reason is not None:
                for name in sorted(source.not_done_reason.fields()):
                    add(source.form, name, Annotation(dom, f"{dom}REASND{where}", f"{dom}REASND", "",
                                                      spec.line_of("sources", i, "not_done_reason")))
            for k, test in enumerate(source.tests or []):
                cond = f"{dom}TESTCD = {test.testcd}" + (f" and {dom}OBJ = {test.obj}" if test.obj else "")
                line = spec.line_of("sources", i, "tests", k)
                add(source.form, test.result, Annotation(dom, f"{dom}ORRES when {cond}", f"{dom}ORRES", test.testcd, line))
                if test.unit:  # a unit field of the form (a fixed unit is no field: nothing to annotate)
                    add(source.form, test.unit, Annotation(dom, f"{dom}ORRESU when {cond}", f"{dom}ORRESU",
                                                           test.testcd, line))
        for k, supp in enumerate(spec.supp):
            for source in spec.sources:
                joined = {f: j.form for j in source.join for f in j.fields}
                for name in sorted(supp.rule.fields()):
                    add(joined.get(name, source.form), name, Annotation(f"SUPP{dom}", f"{supp.qnam} in SUPP{dom}",
                                                                         supp.qnam, "", spec.line_of("supp", k)))
    return {form.name: {item.name: found.get((form.name, item.name)) or [Annotation("", NOT_SUBMITTED)]
                        for item in form.items} for form in design.forms}


def form_domains(form: CrfForm, notes: dict[str, list[Annotation]], specs: list[DomainSpec]) -> list[str]:
    """The domains a form's annotations name (not SUPP--), those the form is a direct source of first."""
    named = {a.parent for item_notes in notes.values() for a in item_notes if a.domain}
    direct = [s.domain for s in specs if s.domain in named and any(src.form == form.name for src in s.sources)]
    return list(dict.fromkeys([*direct, *sorted(named - set(direct))]))


def visit_forms(raw_forms: dict, study: StudyConfig) -> list[tuple[str, list[str]]]:
    """(visit, forms collected there) from the export: scheduled visits in schedule order, then the
    other folders (unscheduled, logs, end of study) by name."""
    folder_field = study.edc.folder_field
    by_folder: dict[str, set[str]] = {}
    for form, frame in raw_forms.items():
        if folder_field in frame.columns:
            for folder in frame[folder_field].dropna().astype(str).unique():
                if folder:
                    by_folder.setdefault(folder, set()).add(form)
    label = {}
    order = []
    for v in sorted(study.visits, key=lambda v: v.visitnum):
        for folder in [v.folder, *(v.aliases or [])]:
            if folder in by_folder and folder not in label:
                label[folder] = v.visit if folder == v.folder else f"{v.visit} ({folder})"
                order.append(folder)
    order += sorted(f for f in by_folder if f not in label)
    return [(label.get(f, f), sorted(by_folder[f])) for f in order]


def domain_labels(specs: list[DomainSpec]) -> dict[str, str]:
    """Domain -> label (SDTMIG, or the spec's own for a custom domain); SUPPxx too."""
    from .metadata import load_sdtmig

    md = load_sdtmig()
    labels = {}
    for spec in specs:
        try:
            labels[spec.domain] = spec.label or md.domain(spec.domain, spec.class_).label
        except Exception:  # a custom domain without a label
            labels[spec.domain] = spec.label or spec.domain
        labels[f"SUPP{spec.domain}"] = f"Supplemental Qualifiers for {spec.domain}"
    return labels


# ---------------------------------------------------------------------------------------------
# Layout: measured once, drawn to PDF; the HTML carries the same page numbers.

PAGE_W, PAGE_H = 612, 792  # US Letter, points
MARGIN = 40
Q_X, Q_W = MARGIN, 200  # question column
IN_X, IN_W = 248, 150  # the field as the site sees it
AN_X, AN_W = 406, 166  # annotations
TOP = PAGE_H - 118  # first row below the form header and domain boxes
BOTTOM = 52
FONT, BOLD = "Helvetica", "Helvetica-Bold"
GREY = "#666666"
TOC_ROWS = int((PAGE_H - 170 - BOTTOM) // 14)  # forms listed per table-of-contents page


@dataclass
class Row:
    item: CrfItem
    notes: list[Annotation]
    question: list[str]
    choices: list[list[str]]  # lines of choice labels
    note_lines: list[list[str]]
    height: float


@dataclass
class Page:
    form: CrfForm
    part: int  # 1 for the form's first page
    rows: list[Row] = field(default_factory=list)


def _split(text: str, font: str, size: float, width: float) -> list[str]:
    from reportlab.lib.utils import simpleSplit

    return simpleSplit(text, font, size, width) or [""]


def _choice_label(code: str, decode: str) -> str:
    return decode if code == decode else f"{code} = {decode}"


def _measure(item: CrfItem, notes: list[Annotation], design: CrfDesign) -> Row:
    from reportlab.pdfbase.pdfmetrics import stringWidth

    question = _split(item.question, FONT, 9, Q_W)
    lines: list[list[str]] = []
    if item.codelist and design.codelists.get(item.codelist):
        line, used = [], 0.0
        for code, decode in design.codelists[item.codelist]:
            label = _choice_label(code, decode)
            w = 12 + stringWidth(label, FONT, 8) + 8
            if line and used + w > IN_W:
                lines.append(line)
                line, used = [], 0.0
            line.append(label)
            used += w
        lines.append(line)
    note_lines = [_split(n.text, BOLD, 8, AN_W - 6) for n in notes]
    heights = [len(question) * 11 + 13, max(1, len(lines)) * 12 + (12 if item.unit and not lines else 0),
               sum(len(n) * 10 + 6 for n in note_lines)]
    return Row(item, notes, question, lines, note_lines, max(heights) + 8)


def layout(design: CrfDesign, notes: dict[str, dict[str, list[Annotation]]]) -> list[Page]:
    """The form pages: each form starts a page; rows that do not fit go to the form's next page."""
    pages: list[Page] = []
    for form in design.forms:
        page = Page(form, 1)
        pages.append(page)
        y = TOP
        for item in form.items:
            row = _measure(item, notes[form.name][item.name], design)
            if page.rows and y - row.height < BOTTOM:
                page = Page(form, page.part + 1)
                pages.append(page)
                y = TOP
            page.rows.append(row)
            y -= row.height
    return pages


@dataclass
class Acrf:
    """What was written and where each annotation landed."""

    pdf: Path
    html: Path
    pages: dict[tuple[str, str, str], list[int]]  # (dataset, variable, value key) -> physical pages
    form_pages: dict[str, int]  # form -> its first physical page


def _colours(form: CrfForm, notes, specs) -> dict[str, str]:
    return {d: DOMAIN_COLOURS[k % len(DOMAIN_COLOURS)] for k, d in enumerate(form_domains(form, notes, specs))}


def _pdf(design, plan: "Plan", specs, labels, visits, title, footer) -> bytes:
    from reportlab.lib.colors import HexColor, black
    from reportlab.pdfgen.canvas import Canvas

    buf = io.BytesIO()
    c = Canvas(buf, pagesize=(PAGE_W, PAGE_H), invariant=1, pageCompression=1)
    c.setTitle(f"Annotated CRF - {title}")
    c.setAuthor("cdisc_convert")
    c.setSubject("Annotated case report form, annotations derived from the SDTM mapping specs")
    c.setCreator(footer)
    grey = HexColor(GREY)
    notes, pages, toc_pages, first = plan.notes, plan.pages, plan.toc_pages, plan.first
    total = toc_pages + len(pages)

    def footer_line(page_no: int) -> None:
        c.setFont(FONT, 7)
        c.setFillColor(grey)
        c.drawString(MARGIN, 28, footer)
        c.drawRightString(PAGE_W - MARGIN, 28, f"Page {page_no} of {total}")
        c.setFillColor(black)

    # table of contents: one line per form, linked to its first page
    # outline entries need destinations of their own (an entry is keyed by its destination)
    visit_keys: dict[str, list[str]] = {}
    for k, (_visit, forms) in enumerate(visits):
        shown = [f for f in forms if f in first]
        for f in shown:
            visit_keys.setdefault(f, []).extend([f"V{k}"] if f == shown[0] else [])
            visit_keys[f].append(f"V{k}.{f}")
    for t in range(toc_pages):
        if t == 0:
            c.bookmarkPage("TOC")
            c.bookmarkPage("TOC.visits")
        c.setFont(BOLD, 16)
        c.drawString(MARGIN, PAGE_H - 60, "Annotated Case Report Form")
        c.setFont(FONT, 10)
        c.drawString(MARGIN, PAGE_H - 78, _split(title, FONT, 10, PAGE_W - 2 * MARGIN)[0])
        c.setFont(FONT, 8)
        c.setFillColor(grey)
        c.drawString(MARGIN, PAGE_H - 94, "Annotations are generated from the SDTM mapping specs; "
                                          "each field shows the variable(s) it becomes.")
        c.setFillColor(black)
        y = PAGE_H - 130
        c.setFont(BOLD, 9)
        for x, head in ((MARGIN, "Form"), (MARGIN + 60, "Title"), (MARGIN + 300, "Domains"), (PAGE_W - MARGIN - 30, "Page")):
            c.drawString(x, y, head)
        y -= 16
        c.setFont(FONT, 9)
        for form in design.forms[t * TOC_ROWS:(t + 1) * TOC_ROWS]:
            c.drawString(MARGIN, y, form.name)
            c.drawString(MARGIN + 60, y, _split(form.title, FONT, 9, 230)[0])
            c.drawString(MARGIN + 300, y, ", ".join(form_domains(form, notes[form.name], specs)) or NOT_SUBMITTED)
            c.drawRightString(PAGE_W - MARGIN, y, str(first[form.name]))
            c.linkRect("", f"F.{form.name}", (MARGIN, y - 3, PAGE_W - MARGIN, y + 10), relative=0, thickness=0)
            y -= 14
        footer_line(t + 1)
        c.showPage()

    page_no = toc_pages
    for p in pages:
        page_no += 1
        form = p.form
        if p.part == 1:
            c.bookmarkPage(f"F.{form.name}")
            for key in visit_keys.get(form.name, []):
                c.bookmarkPage(key)
        colours = _colours(form, notes[form.name], specs)
        c.setFont(BOLD, 13)
        c.drawString(MARGIN, PAGE_H - 50, form.title + (" (continued)" if p.part > 1 else ""))
        c.setFont(FONT, 8)
        c.setFillColor(grey)
        c.drawRightString(PAGE_W - MARGIN, PAGE_H - 50, f"Form {form.name}")
        c.setFillColor(black)
        x, y = MARGIN, PAGE_H - 80
        for dom, colour in colours.items():  # the domain boxes
            text = f"{dom} = {labels.get(dom, dom)}"
            w = c.stringWidth(text, BOLD, 10) + 12
            if x + w > PAGE_W - MARGIN:
                x, y = MARGIN, y - 20
            c.setFillColor(HexColor(colour))
            c.rect(x, y - 4, w, 16, fill=1, stroke=1)
            c.setFillColor(black)
            c.setFont(BOLD, 10)
            c.drawString(x + 6, y + 1, text)
            x += w + 8
        y = TOP
        c.setLineWidth(0.4)
        c.line(MARGIN, y + 4, PAGE_W - MARGIN, y + 4)
        for row in p.rows:
            _draw_row(c, row, y, colours)
            y -= row.height
            c.setStrokeColor(HexColor("#BBBBBB"))
            c.line(MARGIN, y + 4, PAGE_W - MARGIN, y + 4)
            c.setStrokeColor(black)
        footer_line(page_no)
        c.showPage()

    # bookmarks: by form, and by visit (each visit's forms)
    c.addOutlineEntry("Forms", "TOC", 0, closed=False)
    for form in design.forms:
        c.addOutlineEntry(f"{form.title} ({form.name})", f"F.{form.name}", 1)
    c.addOutlineEntry("Visits", "TOC.visits", 0, closed=True)
    for k, (visit, forms) in enumerate(visits):
        shown = [f for f in forms if f in first]
        if not shown:
            continue
        c.addOutlineEntry(visit, f"V{k}", 1, closed=True)  # opens the visit's first form
        for f in shown:
            c.addOutlineEntry(design.form(f).title, f"V{k}.{f}", 2)
    c.showOutline()
    c.save()
    return buf.getvalue()


def _draw_row(c, row: Row, y: float, colours: dict[str, str]) -> None:
    """One field: question and EDC name, the entry as the site sees it, the annotation boxes."""
    from reportlab.lib.colors import HexColor, black, white

    grey = HexColor(GREY)
    top = y - 4
    c.setFont(FONT, 9)
    for k, line in enumerate(row.question):
        c.drawString(Q_X, top - 9 - 11 * k, line)
    c.setFont(FONT, 6.5)
    c.setFillColor(grey)
    c.drawString(Q_X, top - 9 - 11 * len(row.question), row.item.name)
    c.setFillColor(black)
    if row.choices:
        for k, line in enumerate(row.choices):
            x = IN_X
            for label in line:
                c.rect(x, top - 9 - 12 * k, 7, 7, fill=0, stroke=1)
                c.setFont(FONT, 8)
                c.drawString(x + 10, top - 8.5 - 12 * k, label)
                x += 12 + c.stringWidth(label, FONT, 8) + 8
    else:
        width = min(IN_W - 30, max(40, (row.item.length or 10) * 5.5))
        c.rect(IN_X, top - 12, width, 12, fill=0, stroke=1)
        if row.item.display_format:
            c.setFont(FONT, 7)
            c.setFillColor(grey)
            c.drawString(IN_X + 3, top - 9, row.item.display_format)
            c.setFillColor(black)
        if row.item.unit:
            c.setFont(FONT, 8)
            c.drawString(IN_X + width + 4, top - 9, row.item.unit)
    ny = top
    for note, lines in zip(row.notes, row.note_lines):
        h = len(lines) * 10 + 4
        fill = colours.get(note.parent)
        c.setFillColor(HexColor(fill) if fill else white)
        c.rect(AN_X, ny - h, AN_W, h, fill=1, stroke=1)
        c.setFillColor(black if fill else grey)
        c.setFont(BOLD, 8)
        for k, line in enumerate(lines):
            c.drawString(AN_X + 3, ny - 9 - 10 * k, line)
        c.setFillColor(black)
        ny -= h + 2


def _html(design, notes, specs, labels, visits, pages, first, title, footer) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>Annotated CRF - {e(title)}</title>",
           "<style>body{font-family:Helvetica,Arial,sans-serif;margin:0;display:flex}"
           "nav{width:230px;height:100vh;overflow:auto;position:sticky;top:0;background:#f4f4f4;padding:8px;"
           "font-size:12px;box-sizing:border-box}nav h2{font-size:13px;margin:10px 0 4px}nav ul{margin:0;padding-left:14px}"
           "main{flex:1;padding:16px 24px;max-width:900px}section.form{border-top:2px solid #333;margin-bottom:28px}"
           "h1{font-size:20px}h2.form{font-size:16px;margin:8px 0}.pdf{font-size:11px;color:#555;float:right}"
           ".domain{display:inline-block;border:1px solid #000;padding:2px 6px;margin:0 6px 6px 0;font-weight:bold;"
           "font-size:12px}table{border-collapse:collapse;width:100%}td{border-bottom:1px solid #ccc;padding:4px;"
           "vertical-align:top;font-size:12px}td.q{width:38%}td.f{width:28%}.name{color:#666;font-size:10px}"
           ".box{display:inline-block;border:1px solid #000;min-width:40px;height:14px;color:#888;font-size:10px;"
           "padding:0 3px}.choice{margin-right:10px;white-space:nowrap}.choice:before{content:'\\2610 '}"
           ".note{display:block;border:1px solid #000;font-weight:bold;font-size:11px;padding:1px 4px;"
           "margin-bottom:2px}.ns{background:#fff;color:#666}</style></head><body>",
           "<nav><h2>Forms</h2><ul>"]
    out += [f'<li><a href="#F.{e(f.name)}">{e(f.title)}</a></li>' for f in design.forms]
    out.append("</ul><h2>Visits</h2><ul>")
    for visit, forms in visits:
        shown = [f for f in forms if f in first]
        if shown:
            out.append(f"<li>{e(visit)}<ul>" + "".join(f'<li><a href="#F.{e(f)}">{e(design.form(f).title)}</a></li>'
                                                       for f in shown) + "</ul></li>")
    out.append(f"</ul></nav><main><h1>Annotated Case Report Form</h1><p>{e(title)}</p>"
               "<p>Each field shows the SDTM variable(s) it becomes, generated from the mapping specs; "
               '<a href="acrf.pdf">acrf.pdf</a> is the same CRF as a PDF.</p>')
    for form in design.forms:
        colours = _colours(form, notes[form.name], specs)
        out.append(f'<section class="form" id="F.{e(form.name)}"><a class="pdf" href="acrf.pdf#page={first[form.name]}">'
                   f"PDF page {first[form.name]}</a><h2 class=\"form\">{e(form.title)} ({e(form.name)})</h2><div>")
        out += [f'<span class="domain" style="background:{colour}">{e(d)} = {e(labels.get(d, d))}</span>'
                for d, colour in colours.items()]
        out.append("</div><table>")
        for item in form.items:
            if item.codelist and design.codelists.get(item.codelist):
                entry = "".join(f'<span class="choice">{e(_choice_label(c, d))}</span>'
                                for c, d in design.codelists[item.codelist])
            else:
                entry = f'<span class="box">{e(item.display_format or "")}</span>' + (f" {e(item.unit)}" if item.unit else "")
            marks = "".join(
                f'<span class="note" style="background:{colours[n.parent]}" title="{e(n.spec)}">{e(n.text)}</span>'
                if n.parent in colours else f'<span class="note ns">{e(n.text)}</span>'
                for n in notes[form.name][item.name])
            out.append(f'<tr id="F.{e(form.name)}.{e(item.name)}" data-page="{pages[(form.name, item.name)]}">'
                       f'<td class="q">{e(item.question)}<div class="name">{e(item.name)}</div></td>'
                       f'<td class="f">{entry}</td><td>{marks}</td></tr>')
        out.append("</table></section>")
    out.append(f'<p class="name">{e(footer)}</p></main></body></html>')
    return "\n".join(out) + "\n"


@dataclass
class Plan:
    """The aCRF laid out: annotations, pages, and where each annotation and field landed."""

    notes: dict[str, dict[str, list[Annotation]]]
    pages: list[Page]
    toc_pages: int
    where: dict[tuple[str, str, str], list[int]]  # (dataset, variable, value key) -> physical pages
    item_page: dict[tuple[str, str], int]  # (form, field) -> physical page
    first: dict[str, int]  # form -> its first physical page


def plan_acrf(design: CrfDesign, specs: list[DomainSpec]) -> Plan:
    """Annotate and lay out the aCRF without drawing it (define.xml needs only the pages)."""
    notes = annotate(design, specs)
    toc_pages = max(1, -(-len(design.forms) // TOC_ROWS))
    pages = layout(design, notes)
    where: dict[tuple[str, str, str], list[int]] = {}
    item_page: dict[tuple[str, str], int] = {}
    first: dict[str, int] = {}
    for n, page in enumerate(pages, start=toc_pages + 1):
        first.setdefault(page.form.name, n)
        for row in page.rows:
            item_page[(page.form.name, row.item.name)] = n
            for note in row.notes:
                if note.domain:
                    pages_of = where.setdefault((note.domain, note.variable, note.key), [])
                    if n not in pages_of:
                        pages_of.append(n)
    return Plan(notes, pages, toc_pages, {k: sorted(v) for k, v in where.items()}, item_page, first)


def write_acrf(out_dir: Path, design: CrfDesign, specs: list[DomainSpec], study: StudyConfig,
               visits: list[tuple[str, list[str]]], version: str = "", plan: Plan | None = None) -> Acrf:
    """Write ``out_dir/acrf.pdf`` and ``out_dir/acrf.html``; return where each annotation landed.
    ``plan``: the layout :func:`plan_acrf` made already (a run needs its pages before drawing)."""
    plan = plan or plan_acrf(design, specs)
    labels = domain_labels(specs)
    title = f"{study.studyid}: {study.study.get('title', '')}".rstrip(": ")
    footer = f"{study.studyid} annotated CRF, generated by cdisc_convert {version} from the mapping specs".replace("  ", " ")
    pdf = _pdf(design, plan, specs, labels, visits, title, footer)
    text = _html(design, plan.notes, specs, labels, visits, plan.item_page, plan.first, title, footer)
    out_dir = Path(out_dir)
    paths = []
    for name, data in (("acrf.pdf", pdf), ("acrf.html", text.encode("utf-8"))):
        tmp = out_dir / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, out_dir / name)
        paths.append(out_dir / name)
    return Acrf(paths[0], paths[1], plan.where, plan.first)


def pages_of(where: dict[tuple[str, str, str], list[int]] | None, dataset: str, variable: str | None = None,
             key: str | None = None) -> tuple[int, ...] | None:
    """The aCRF pages of a dataset's annotations: of one variable (all its value-level keys), of one
    key, or of the whole dataset (a SUPP--'s QVAL); None when there is no generated aCRF.

    >>> pages_of({("LB", "LBORRES", "ALT"): [18], ("LB", "LBORRES", "AST"): [18, 19]}, "LB", "LBORRES")
    (18, 19)
    """
    if where is None:
        return None
    return tuple(sorted({n for (ds, var, k), pages in where.items() if ds == dataset
                         and (variable is None or var == variable) and (key is None or k == key) for n in pages}))


def planned_pages(study: StudyConfig, study_dir: Path, specs: list[DomainSpec]
                  ) -> dict[tuple[str, str, str], list[int]] | None:
    """Where each annotation of the study's aCRF lands, laid out without drawing (for define.xml and
    the workbook outside a run); None when the export with its CRF design is not beside the specs."""
    try:
        design = load_crf_design(study, Path(study_dir))
    except ConversionError:
        return None
    return plan_acrf(design, specs).where if design is not None else None


def load_crf_design(study: StudyConfig, study_dir: Path, edc: Path | None = None) -> CrfDesign | None:
    """The study's CRF design: the ODM export's metadata (when it has questions), else the data
    dictionary CSV named in study.yaml; None when the export carries no CRF design."""
    from .crf import read_data_dictionary, read_odm_design

    path = Path(edc) if edc else Path(study_dir) / study.edc.path
    if path.is_file() and path.suffix.lower() == ".xml":
        return read_odm_design(path)
    if study.edc.format == "odm" and study.edc.odm_file and (path / study.edc.odm_file).is_file():
        design = read_odm_design(path / study.edc.odm_file)
        if design is not None:
            return design
    if study.edc.data_dictionary:
        dictionary = path / study.edc.data_dictionary
        if not dictionary.is_file():
            raise ConversionError("the data dictionary named in study.yaml (edc.data_dictionary) is not in the EDC "
                                  "folder", source=str(dictionary))
        return read_data_dictionary(dictionary)
    return None
