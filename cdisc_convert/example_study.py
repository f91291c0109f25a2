"""Seeded, deterministic generator of the example study's EDC export.

The example study is NCT05948982 (UC-MSC in decompensated hepatitis B cirrhosis); see
``mappings/nct05948982/study.yaml`` for what came from the registry and what is assumed.
The export imitates what sites really send: one CSV per CRF form keyed by site, subject,
folder (visit) and form repeat; dates in the EDC display format (``08 JAN 2024``) with
partial dates (``UN JAN 2024``, ``UN UNK 1961``); lab results as text with ``<``/``>``;
local units that differ by subject; unscheduled visits; an out-of-window visit; a
withdrawal, a death, a liver transplant, a subject who stops after two infusions; missing
and empty pages; screen failures. The same data is written as CDISC ODM 1.3.2 XML.

Example:
    >>> from cdisc_convert.example_study import generate_example_export
    >>> export = generate_example_export(n_subjects=3, seed=1)
    >>> sorted(export.forms)[:3]
    ['AE', 'CIRR', 'CLDQ']
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from ruamel.yaml import YAML

from .crf import DISPLAY_FORMAT, CrfDesign, CrfForm, CrfItem, write_data_dictionary
from .errors import ConversionError

KEY_FIELDS = ["SITEID", "SUBJECT", "FOLDER", "FORMREPEAT"]
MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
STUDY_DIR = Path(__file__).parent / "resources" / "example"  # mappings/nct05948982, shipped in the package

# Lab analytes as the CRF holds them: field -> (units offered by the local lab, typical value
# in the first unit, spread as a fraction, decimals, factor from first to second unit).
LAB_FORMS: dict[str, dict[str, tuple]] = {
    "LBLIV": {
        "ALT": (["U/L"], 48, 0.5, 0, 1), "AST": (["U/L"], 55, 0.5, 0, 1),
        "BILI": (["umol/L", "mg/dL"], 38, 0.5, 1, 1 / 17.1), "GGT": (["U/L"], 60, 0.6, 0, 1),
        "ALP": (["U/L"], 120, 0.4, 0, 1), "ALB": (["g/L", "g/dL"], 31, 0.15, 1, 0.1),
        "CHE": (["U/L"], 3800, 0.3, 0, 1), "INR": (["RATIO"], 1.5, 0.2, 2, 1),
        "CREAT": (["umol/L", "mg/dL"], 80, 0.3, 1, 1 / 88.4), "PT": (["sec"], 16.5, 0.15, 1, 1),
    },
    "LBIMM": {
        "CD3": (["%"], 68, 0.12, 1, 1), "CD4": (["%"], 38, 0.15, 1, 1), "CD8": (["%"], 26, 0.2, 1, 1),
        "TREG": (["%"], 6.5, 0.25, 1, 1), "TH17": (["%"], 1.4, 0.3, 2, 1),
        "IGA": (["g/L"], 3.2, 0.3, 2, 1), "IGG": (["g/L"], 16.5, 0.2, 1, 1),
        "IGM": (["g/L"], 1.3, 0.3, 2, 1), "IGE": (["IU/mL"], 95, 0.6, 0, 1),
    },
    "LBTUM": {
        "AFP": (["ng/mL"], 9, 0.8, 1, 1), "AFPL3": (["%"], 6, 0.5, 1, 1), "CEA": (["ng/mL"], 2.6, 0.5, 1, 1),
        "CA199": (["U/mL"], 22, 0.6, 1, 1), "CA153": (["U/mL"], 12, 0.5, 1, 1),
        "PIVKA": (["mAU/mL"], 30, 0.6, 0, 1),
    },
    "LBHBV": {"HBVDNA": (["IU/mL"], 150, 1.2, 0, 1)},
    "LBCYT": {
        "IL1B": (["pg/mL"], 4.5, 0.6, 2, 1), "IL6": (["pg/mL"], 12, 0.7, 2, 1), "IL8": (["pg/mL"], 25, 0.6, 1, 1),
        "IL10": (["pg/mL"], 6, 0.6, 2, 1), "IL12": (["pg/mL"], 3, 0.6, 2, 1), "IL17": (["pg/mL"], 8, 0.6, 2, 1),
        "TNFA": (["pg/mL"], 14, 0.5, 2, 1), "TGFB": (["ng/mL"], 28, 0.4, 1, 1),
        "IFNG": (["pg/mL"], 9, 0.6, 2, 1), "SDF1": (["pg/mL"], 2100, 0.3, 0, 1),
        "CRP": (["mg/L"], 9, 0.8, 1, 1), "MMP9": (["ng/mL"], 420, 0.4, 0, 1),
    },
    "LBELIG": {"HBA1C": (["%"], 5.8, 0.1, 1, 1), "GLUC": (["mmol/L"], 5.6, 0.15, 1, 1)},
}
ELIG_SEROLOGY = ["HIVAB", "HCVAB", "SYPHAB"]
# Number of response choices of each SF-36 (RAND-36) item: 3 for physical functioning 3-12,
# yes/no for role limitations 13-19, 6 for items 21 and 23-31, 5 for the rest.
SF36_CHOICES = {i: 3 if 3 <= i <= 12 else 2 if 13 <= i <= 19 else 6 if i == 21 or 23 <= i <= 31 else 5
                for i in range(1, 37)}

# What each scheduled folder collects (study README, schedule of assessments).
CYT_ONLY = {"D2", "D3", "D7", "D30", "D31", "D35", "D58", "D59", "D64"}
DOSING = {"D1": 1, "D29": 2, "D57": 3}
QUESTIONNAIRES = ["SF36", "CLDQ", "EQ5D"]
FOLLOW_UP = ["LBLIV", "LBIMM", "LBTUM", "LBHBV", "LBCYT", "ECOG", *QUESTIONNAIRES, "CIRR", "FIBRO"]
FOLDER_FORMS = {
    "SCRN": ["DM", "LBELIG", "LBLIV", "LBIMM", "LBTUM", "LBHBV", "LBCYT", "ECOG", *QUESTIONNAIRES, "CIRR", "FIBRO"],
    "DM1": ["LBLIV", *QUESTIONNAIRES, "CIRR"],
    "D28": ["LBLIV", "LBIMM", "LBHBV", "LBCYT", *QUESTIONNAIRES, "CIRR"],
    "D56": ["LBLIV", "LBIMM", "LBHBV", "LBCYT", *QUESTIONNAIRES, "CIRR"],
    **{f: ["EX", "LBLIV", "LBCYT"] for f in DOSING},
    **{f: ["LBCYT"] for f in CYT_ONLY},
    **{f: FOLLOW_UP for f in ("W12", "W20", "W32", "W56")},
}

AE_TERMS = [
    ("Fever", "Pyrexia"), ("Headache", "Headache"), ("Fatigue", "Fatigue"), ("Rash", "Rash"),
    ("Nausea", "Nausea"), ("Chills after infusion", "Chills"), ("Abdominal distension", "Abdominal distension"),
    ("Pruritus", "Pruritus"), ("Diarrhoea", "Diarrhoea"), ("Ascites worsening", "Ascites"),
]
SEVERITY = {1: "Mild", 2: "Moderate", 3: "Severe", 4: "Severe", 5: "Severe"}
RELATION = ["Not related", "Unlikely related", "Possibly related", "Probably related"]


# The CRF as designed in the EDC: what a site sees on each page (question text, choices, units).
# The export carries it as ODM metadata and as a data dictionary CSV; the aCRF is drawn from it.
ANALYTES = {
    "ALT": "Alanine aminotransferase (ALT)", "AST": "Aspartate aminotransferase (AST)", "BILI": "Total bilirubin",
    "GGT": "Gamma-glutamyl transferase (GGT)", "ALP": "Alkaline phosphatase (ALP)", "ALB": "Albumin",
    "CHE": "Cholinesterase", "INR": "INR", "CREAT": "Creatinine", "PT": "Prothrombin time",
    "CD3": "CD3+ T cells (% of lymphocytes)", "CD4": "CD4+ T cells (% of lymphocytes)",
    "CD8": "CD8+ T cells (% of lymphocytes)", "TREG": "Regulatory T cells (% of CD4+)",
    "TH17": "Th17 cells (% of CD4+)", "IGA": "Immunoglobulin A", "IGG": "Immunoglobulin G", "IGM": "Immunoglobulin M",
    "IGE": "Immunoglobulin E", "AFP": "Alpha-fetoprotein (AFP)", "AFPL3": "AFP-L3 fraction",
    "CEA": "Carcinoembryonic antigen (CEA)", "CA199": "CA 19-9", "CA153": "CA 15-3", "PIVKA": "PIVKA-II",
    "HBVDNA": "HBV DNA", "IL1B": "Interleukin-1 beta", "IL6": "Interleukin-6", "IL8": "Interleukin-8",
    "IL10": "Interleukin-10", "IL12": "Interleukin-12", "IL17": "Interleukin-17", "TNFA": "TNF-alpha",
    "TGFB": "TGF-beta", "IFNG": "Interferon gamma", "SDF1": "SDF-1", "CRP": "C-reactive protein",
    "MMP9": "MMP-9", "HBA1C": "HbA1c", "GLUC": "Fasting glucose",
    "HIVAB": "Anti-HIV-1/2 antibody", "HCVAB": "Anti-HCV antibody", "SYPHAB": "Anti-Treponema pallidum antibody",
}
FORM_TITLES = {
    "AE": "Adverse Events", "CIRR": "Decompensation Events", "CLDQ": "Chronic Liver Disease Questionnaire (CLDQ)",
    "DM": "Demographics and Enrolment", "DS": "End of Study", "DTH": "Death", "ECOG": "ECOG Performance Status",
    "EQ5D": "EQ-5D-5L", "EX": "UC-MSC Infusion", "FIBRO": "Liver Stiffness (FibroScan)", "LBCYT": "Cytokines",
    "LBELIG": "Eligibility Laboratory Tests", "LBHBV": "HBV DNA", "LBIMM": "Immunology",
    "LBLIV": "Liver Function and Coagulation", "LBTUM": "Tumour Markers", "SF36": "SF-36 Health Survey",
    "TX": "Liver Transplantation",
}
CRF_CODELISTS = {
    "NY": ["Yes", "No"], "SEX": ["Male", "Female"], "RACE": ["Asian", "White", "Black or African American", "Other"],
    "ETHNIC": ["Hispanic or Latino", "Not Hispanic or Latino"], "COHORT": ["LOW", "MEDIUM", "HIGH"],
    "AESEV": ["Mild", "Moderate", "Severe"], "TOXGR": ["1", "2", "3", "4", "5"], "AEREL": RELATION,
    "AEACN": ["Dose not changed", "Drug withdrawn", "Drug interrupted", "Not applicable"],
    "AEOUT": ["Recovered/Resolved", "Recovering/Resolving", "Not recovered/Not resolved",
              "Recovered/Resolved with sequelae", "Fatal", "Unknown"],
    "DSSTAT": ["Completed", "Screen failure", "Withdrawal by subject", "Death", "Adverse event", "Other"],
    "SEVERITY": ["None", "Mild", "Moderate", "Severe"], "HEGRADE": ["None", "Grade 1", "Grade 2", "Grade 3", "Grade 4"],
    "SEROLOGY": ["Negative", "Positive", "Indeterminate"], "INFNUM": ["1", "2", "3"], "EXVOL": ["10", "20", "30"],
    "ECOG": [("0", "Fully active"), ("1", "Restricted in strenuous activity"), ("2", "Ambulatory, capable of self-care"),
             ("3", "Limited self-care"), ("4", "Completely disabled"), ("5", "Dead")],
    "EQ5D5L": [("1", "No problems"), ("2", "Slight problems"), ("3", "Moderate problems"), ("4", "Severe problems"),
               ("5", "Unable / extreme problems")],
    "CLDQ7": [str(i) for i in range(1, 8)],
    **{f"SF36R{n}": [str(i) for i in range(1, n + 1)] for n in sorted(set(SF36_CHOICES.values()))},
    **{f"UNIT_{a}": units for spec in LAB_FORMS.values() for a, (units, *_r) in spec.items()},
}


def _crf_items(form: str) -> list[tuple]:
    """(field, question, datatype, length, codelist, unit) of each field of a form, in page order.
    Dates and times are text in the EDC's display format (``08 JAN 2024``, ``09:30``)."""
    if form in LAB_FORMS:
        items = [("LBDAT", "Date of sample collection", "text", 11, None, None, "DD MON YYYY"),
                 ("LBTIM", "Time of sample collection", "text", 5, None, None, "HH:MM")]
        for analyte, (units, *_rest) in LAB_FORMS[form].items():
            items.append((analyte, ANALYTES[analyte], "text", 10, None, None))
            items.append((f"{analyte}_U", f"{ANALYTES[analyte]}: unit", "text", 8, f"UNIT_{analyte}", None))
        if form == "LBELIG":
            items += [(t, ANALYTES[t], "text", 13, "SEROLOGY", None) for t in ELIG_SEROLOGY]
        return items
    if form == "SF36":
        return [("QSDAT", "Date of assessment", "text", 11, None, None, "DD MON YYYY")] + [
            (f"SF36_{i:02d}", f"SF-36 item {i}", "integer", 1, f"SF36R{SF36_CHOICES[i]}", None) for i in range(1, 37)]
    if form == "CLDQ":
        return [("QSDAT", "Date of assessment", "text", 11, None, None, "DD MON YYYY")] + [
            (f"CLDQ{i:02d}", f"CLDQ item {i}", "integer", 1, "CLDQ7", None) for i in range(1, 30)]
    yes_no = lambda name, q: (name, q, "text", 3, "NY", None)  # noqa: E731
    return {
        "DM": [("ICDAT", "Date informed consent signed", "text", 11, None, None, "DD MON YYYY"),
               ("BRTHDAT", "Date of birth", "text", 11, None, None, "DD MON YYYY"), ("SEX", "Sex", "text", 6, "SEX", None),
               ("RACE", "Race", "text", 25, "RACE", None), ("ETHNIC", "Ethnicity", "text", 22, "ETHNIC", None),
               ("WEIGHT", "Body weight", "float", 5, None, "kg"),
               yes_no("ENROLLED", "Was the subject enrolled?"),
               ("COHORT", "Dose cohort assigned", "text", 6, "COHORT", None)],
        "EQ5D": [("QSDAT", "Date of assessment", "text", 11, None, None, "DD MON YYYY")] + [
            (f"EQ5D_{d}", q, "integer", 1, "EQ5D5L", None) for d, q in (
                ("MO", "Mobility"), ("SC", "Self-care"), ("UA", "Usual activities"), ("PD", "Pain / discomfort"),
                ("AD", "Anxiety / depression"))] + [
            ("EQ5D_VAS", "Your health today (visual analogue scale, 0-100)", "integer", 3, None, None)],
        "EX": [("EXSTDAT", "Date of infusion", "text", 11, None, None, "DD MON YYYY"),
               ("EXSTTIM", "Infusion start time", "text", 5, None, None, "HH:MM"),
               ("EXENTIM", "Infusion end time", "text", 5, None, None, "HH:MM"),
               ("INFNUM", "Infusion number", "integer", 1, "INFNUM", None),
               ("EXVOL", "Volume infused", "integer", 2, "EXVOL", "mL")],
        "ECOG": [("ECOGDAT", "Date of assessment", "text", 11, None, None, "DD MON YYYY"),
                 ("ECOG", "ECOG performance status", "integer", 1, "ECOG", None)],
        "CIRR": [("CIRRDAT", "Date of assessment", "text", 11, None, None, "DD MON YYYY"),
                 ("ASCITES", "Ascites", "text", 8, "SEVERITY", None),
                 ("HEGRADE", "Hepatic encephalopathy (West Haven grade)", "text", 7, "HEGRADE", None),
                 yes_no("VARBLEED", "Variceal bleeding since the last visit?"),
                 yes_no("SBP", "Spontaneous bacterial peritonitis since the last visit?"),
                 yes_no("HRS", "Hepatorenal syndrome since the last visit?"),
                 yes_no("HEPFAIL", "Liver failure since the last visit?")],
        "FIBRO": [("FIBRODAT", "Date of FibroScan", "text", 11, None, None, "DD MON YYYY"),
                  ("LSM", "Liver stiffness measurement", "float", 5, None, "kPa"),
                  ("IQRMED", "Interquartile range / median", "integer", 3, None, "%")],
        "AE": [("AETERM", "Adverse event (verbatim term)", "text", 200, None, None),
               ("AESTDAT", "Start date", "text", 11, None, None, "DD MON YYYY"), ("AEENDAT", "End date", "text", 11, None, None, "DD MON YYYY"),
               yes_no("AEONGO", "Ongoing?"), ("AETOXGR", "CTCAE grade", "integer", 1, "TOXGR", None),
               ("AESEV", "Severity", "text", 8, "AESEV", None), yes_no("AESER", "Serious?"),
               yes_no("AESDTH", "Serious: resulted in death?"),
               yes_no("AESHOSP", "Serious: required or prolonged hospitalisation?"),
               yes_no("AESLIFE", "Serious: life-threatening?"),
               yes_no("AESDISAB", "Serious: persistent or significant disability?"),
               yes_no("AESCONG", "Serious: congenital anomaly?"),
               yes_no("AESMIE", "Serious: other medically important event?"),
               ("AEREL", "Relationship to UC-MSC", "text", 16, "AEREL", None),
               ("AEACN", "Action taken with UC-MSC", "text", 16, "AEACN", None),
               ("AEOUT", "Outcome", "text", 32, "AEOUT", None),
               yes_no("AEDLT", "Is this event a dose-limiting toxicity?")],
        "DS": [("DSDAT", "Date of completion or discontinuation", "text", 11, None, None, "DD MON YYYY"),
               ("DSSTAT", "Subject status", "text", 21, "DSSTAT", None),
               ("DSREAS", "Reason, if not completed", "text", 200, None, None)],
        "DTH": [("DTHDAT", "Date of death", "text", 11, None, None, "DD MON YYYY"),
                ("DTHCAUS", "Primary cause of death", "text", 200, None, None)],
        "TX": [("TXDAT", "Date of transplantation", "text", 11, None, None, "DD MON YYYY"),
               ("TXPROC", "Procedure", "text", 200, None, None)],
    }[form]


def crf_design() -> CrfDesign:
    """The example study's CRF design: the same at any study size (it is the EDC's, not the data's)."""
    forms = []
    for name in sorted(FORM_TITLES):
        forms.append(CrfForm(name, FORM_TITLES[name], [CrfItem(*i) for i in _crf_items(name)]))
    codelists = {name: [t if isinstance(t, tuple) else (t, t) for t in terms] for name, terms in CRF_CODELISTS.items()}
    return CrfDesign(forms, codelists, "example")


@dataclass
class ExampleExport:
    """The generated export: ordered field names and rows per form, plus ODM metadata."""

    forms: dict[str, list[str]] = field(default_factory=dict)
    rows: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    # (subject, site, [(folder, [(form, repeat, values)])]) in document order, for ODM.
    subjects: list[tuple[str, str, list[tuple[str, list[tuple[str, int, dict[str, str]]]]]]] = field(
        default_factory=list
    )


def load_visit_schedule(study_yaml: Path = STUDY_DIR / "study.yaml") -> list[dict]:
    """Read the scheduled visits (folder, planned day, window) from the study config."""
    return YAML(typ="safe").load(study_yaml.read_text())["visits"]


def edc_date(day: dt.date, partial: str = "") -> str:
    """Format a date the way the EDC displays it; ``partial`` blanks 'day' or 'day+month'.

    >>> edc_date(dt.date(2024, 1, 8)), edc_date(dt.date(2024, 1, 8), "day")
    ('08 JAN 2024', 'UN JAN 2024')
    """
    dd = "UN" if partial in ("day", "month") else f"{day.day:02d}"
    mon = "UNK" if partial == "month" else MONTHS[day.month - 1]
    return f"{dd} {mon} {day.year}"


class _SubjectBuilder:
    """Builds one subject's pages in chronological order."""

    def __init__(self, export: ExampleExport, site: str, subject: str):
        self.export, self.site, self.subject = export, site, subject
        self.folders: list[tuple[str, list[tuple[str, int, dict[str, str]]]]] = []

    def page(self, folder: str, form: str, values: dict[str, str], repeat: int = 1) -> None:
        if not self.folders or self.folders[-1][0] != folder:
            self.folders.append((folder, []))
        self.folders[-1][1].append((form, repeat, values))
        fields = self.export.forms.setdefault(form, list(KEY_FIELDS))
        for name in values:
            if name not in fields:
                fields.append(name)
        row = {"SITEID": self.site, "SUBJECT": self.subject, "FOLDER": folder, "FORMREPEAT": str(repeat)}
        self.export.rows.setdefault(form, []).append({**row, **values})

    def close(self) -> None:
        self.export.subjects.append((self.subject, self.site, self.folders))


def _lab_value(rng: random.Random, spec: tuple, unit_index: int, drift: float) -> tuple[str, str]:
    units, centre, spread, decimals, factor = spec
    value = max(centre * drift * (1 + rng.gauss(0, spread)), centre * 0.05)
    if unit_index == 1 and len(units) > 1:
        value, decimals = value * factor, decimals + 1
    return f"{value:.{decimals}f}", units[min(unit_index, len(units) - 1)]


def _lab_page(rng: random.Random, form: str, day: dt.date, unit_index: int, drift: float) -> dict[str, str]:
    values = {"LBDAT": edc_date(day), "LBTIM": f"{rng.randint(7, 10):02d}:{rng.choice(['00', '15', '30', '45'])}"}
    for analyte, spec in LAB_FORMS[form].items():
        result, unit = _lab_value(rng, spec, unit_index, drift)
        if analyte == "HBVDNA" and rng.random() < 0.55:
            result = "<20"  # below the lower limit of quantitation
        elif form == "LBCYT" and rng.random() < 0.04:
            result = "<1.0"
        elif analyte == "AFP" and rng.random() < 0.02:
            result = ">1000"
        if form == "LBCYT" and rng.random() < 0.01:
            result, unit = "", ""  # sample not analysed
        values[analyte], values[f"{analyte}_U"] = result, unit
    if form == "LBELIG":
        for test in ELIG_SEROLOGY:
            values[test] = "Negative"
    return values


def _questionnaire_page(rng: random.Random, form: str, day: dt.date, wellbeing: float) -> dict[str, str]:
    values = {"QSDAT": edc_date(day)}
    if form == "SF36":
        for item in range(1, 37):
            top = SF36_CHOICES[item]
            values[f"SF36_{item:02d}"] = str(min(top, max(1, round(top * wellbeing + rng.gauss(0, 0.8)))))
    elif form == "CLDQ":
        for item in range(1, 30):
            values[f"CLDQ{item:02d}"] = str(min(7, max(1, round(7 * wellbeing + rng.gauss(0, 1)))))
    elif form == "EQ5D":
        for dim in ("MO", "SC", "UA", "PD", "AD"):
            values[f"EQ5D_{dim}"] = str(min(5, max(1, round(5 * (1 - wellbeing) + rng.gauss(0.5, 0.8)))))
        values["EQ5D_VAS"] = str(min(100, max(0, round(100 * wellbeing + rng.gauss(0, 8)))))
    return values


def generate_example_export(n_subjects: int = 18, seed: int = 20230717) -> ExampleExport:
    """Generate the example study's EDC export for ``n_subjects`` enrolled subjects.

    Enrolled subjects fill the three dose cohorts in sequence; one screen failure is added
    per nine enrolled subjects. The same ``(n_subjects, seed)`` always gives the same data.
    """
    rng = random.Random(seed)
    schedule = [v for v in load_visit_schedule() if v["folder"] != "SCRN"]
    export = ExampleExport()
    n_fail = max(1, n_subjects // 9)
    total = n_subjects + n_fail
    width = max(3, len(str(total)))
    fail_slots = set(rng.sample(range(1, total), n_fail)) if total > 1 else set()
    enrolled_order = [i for i in range(total) if i not in fail_slots]
    cohort_of = {idx: ["LOW", "MEDIUM", "HIGH"][min(2, k * 3 // n_subjects)] for k, idx in enumerate(enrolled_order)}
    roles = _special_roles(rng, enrolled_order, n_subjects)
    start = dt.date(2024, 1, 8)
    for i in range(total):
        subject = f"01-{i + 1:0{width}d}"
        b = _SubjectBuilder(export, "01", subject)
        screen = start + dt.timedelta(days=7 * i + rng.randint(0, 4))
        if i in fail_slots:
            _screen_failure(rng, b, screen)
        else:
            _enrolled_subject(rng, b, screen, cohort_of[i], roles.get(i, ""), schedule)
        b.close()
    return export


def _special_roles(rng: random.Random, enrolled: list[int], n: int) -> dict[int, str]:
    """Pick who withdraws, dies, gets a transplant, stops after 2 infusions, visits late."""
    per_role = max(1, n // 18)
    picks = rng.sample(enrolled, min(len(enrolled), 5 * per_role))
    names = ["withdraw", "death", "transplant", "two_infusions", "late_visit"]
    return {idx: names[k // per_role] for k, idx in enumerate(picks)}


def _demography(rng: random.Random, screen: dt.date, cohort: str, enrolled: bool) -> dict[str, str]:
    age = rng.randint(28, 72)
    birth = dt.date(screen.year - age, rng.randint(1, 12), rng.randint(1, 28))
    partial = "month" if rng.random() < 0.1 else ("day" if rng.random() < 0.1 else "")
    return {
        "ICDAT": edc_date(screen),
        "BRTHDAT": edc_date(birth, partial),
        "SEX": rng.choice(["Male", "Male", "Male", "Female"]),
        "RACE": "Asian",
        "ETHNIC": "Not Hispanic or Latino",
        "WEIGHT": f"{rng.uniform(48, 88):.1f}",
        "ENROLLED": "Yes" if enrolled else "No",
        "COHORT": cohort if enrolled else "",
    }


def _screen_failure(rng: random.Random, b: _SubjectBuilder, screen: dt.date) -> None:
    b.page("SCRN", "DM", _demography(rng, screen, "", False))
    elig = _lab_page(rng, "LBELIG", screen, 0, 1.0)
    elig["HCVAB"] = "Positive"
    b.page("SCRN", "LBELIG", elig)
    b.page("EOS", "DS", {"DSDAT": edc_date(screen + dt.timedelta(days=3)), "DSSTAT": "Screen failure",
                          "DSREAS": "Positive anti-HCV antibody"})


def _enrolled_subject(rng, b: _SubjectBuilder, screen, cohort, role, schedule) -> None:
    day1 = screen + dt.timedelta(days=rng.randint(7, 13))
    demog = _demography(rng, screen, cohort, True)
    unit_index = 1 if rng.random() < 0.3 else 0  # some local labs report conventional units
    wellbeing = rng.uniform(0.35, 0.65)
    stop_day = {"withdraw": 70, "death": 170, "transplant": 250}.get(role, 10_000)
    _visit_pages(rng, b, "SCRN", screen, demog, unit_index, 1.0, wellbeing, 1)
    unscheduled = rng.random() < 0.35
    for visit in schedule:
        folder, planned = visit["folder"], visit["day"]
        lo, hi = visit["window"]
        if planned > stop_day or (role == "two_infusions" and folder in ("D57", "D58", "D59", "D64")):
            continue
        study_day = planned if lo == hi else rng.randint(lo, hi)
        if role == "late_visit" and folder == "W12":
            study_day = hi + 4  # out of window
        date = day1 + dt.timedelta(days=study_day - 1 if study_day > 0 else study_day)  # no day 0
        drift = 1 - 0.15 * min(1.0, max(0, study_day) / 200)
        _visit_pages(rng, b, folder, date, None, unit_index, drift, min(0.9, wellbeing + study_day / 2000), study_day)
        if unscheduled and folder == "D7":
            uns = date + dt.timedelta(days=rng.randint(4, 10))
            b.page("UNS1", "LBLIV", _lab_page(rng, "LBLIV", uns, unit_index, drift))
    _log_pages(rng, b, day1, role, stop_day)


def _visit_pages(rng, b, folder, date, demog, unit_index, drift, wellbeing, study_day) -> None:
    for form in FOLDER_FORMS[folder]:
        if form == "DM":
            b.page(folder, form, demog)
        elif form in LAB_FORMS:
            b.page(folder, form, _lab_page(rng, form, date, unit_index, drift))
        elif form in QUESTIONNAIRES:
            roll = rng.random()
            if roll < 0.03:
                continue  # missing page: never entered
            page = _questionnaire_page(rng, form, date, wellbeing)
            if roll < 0.05:
                page = {k: "" for k in page}  # empty page: opened in the EDC, nothing entered
            b.page(folder, form, page)
        elif form == "EX":
            _infusion_page(rng, b, folder, date)
        elif form == "ECOG":
            b.page(folder, form, {"ECOGDAT": edc_date(date), "ECOG": str(rng.choice([0, 1, 1, 2]))})
        elif form == "CIRR":
            b.page(folder, form, {
                "CIRRDAT": edc_date(date),
                "ASCITES": rng.choice(["None", "Mild", "Mild", "Moderate", "Severe"]),
                "HEGRADE": rng.choice(["None", "None", "Grade 1", "Grade 2"]),
                "VARBLEED": rng.choice(["No"] * 9 + ["Yes"]),
                "SBP": rng.choice(["No"] * 15 + ["Yes"]),
                "HRS": rng.choice(["No"] * 20 + ["Yes"]),
                "HEPFAIL": "No",
            })
        elif form == "FIBRO":
            b.page(folder, form, {"FIBRODAT": edc_date(date), "LSM": f"{rng.uniform(12, 45):.1f}",
                                  "IQRMED": f"{rng.randint(8, 29)}"})


def _infusion_page(rng, b, folder, date) -> None:
    start_min = rng.randint(9 * 60, 11 * 60)
    length = rng.randint(45, 75)  # registry: not less than 45 minutes
    b.page(folder, "EX", {
        "EXSTDAT": edc_date(date), "EXSTTIM": f"{start_min // 60:02d}:{start_min % 60:02d}",
        "EXENTIM": f"{(start_min + length) // 60:02d}:{(start_min + length) % 60:02d}",
        "INFNUM": str(DOSING[folder]), "EXVOL": str(rng.choice([10, 20, 30])),
    })


def _log_pages(rng, b, day1, role, stop_day) -> None:
    n_ae = rng.randint(0, 4)
    repeat = 0
    for _ in range(n_ae):
        repeat += 1
        verbatim, _pt = rng.choice(AE_TERMS)
        onset = day1 + dt.timedelta(days=rng.randint(0, 120))
        grade = rng.choice([1, 1, 1, 2, 2, 3])
        partial = "day" if rng.random() < 0.1 else ""
        ongoing = rng.random() < 0.15
        b.page("LOG", "AE", _ae_values(rng, verbatim, onset, grade, partial, ongoing, related=rng.choice(RELATION)),
               repeat)
    if role == "two_infusions":
        repeat += 1
        b.page("LOG", "AE", _ae_values(rng, "Infusion related reaction with hypotension", day1 + dt.timedelta(days=29),
                                       3, "", False, related="Probably related", dlt=True, action="Drug withdrawn"),
               repeat)
    end = day1 + dt.timedelta(days=min(stop_day, 393 + rng.randint(-5, 5)) - 1)
    if role == "death":
        repeat += 1
        b.page("LOG", "AE", _ae_values(rng, "Hepatic failure", end - dt.timedelta(days=12), 5, "", False,
                                       related="Not related", fatal_on=end), repeat)
        b.page("EOS", "DTH", {"DTHDAT": edc_date(end), "DTHCAUS": "Hepatic failure"})
    if role == "transplant":
        b.page("EOS", "TX", {"TXDAT": edc_date(end), "TXPROC": "Orthotopic liver transplantation"})
    status = {"withdraw": ("Withdrawal by subject", "Subject moved away"), "death": ("Death", "Hepatic failure"),
              "transplant": ("Other", "Liver transplantation")}.get(role, ("Completed", ""))
    b.page("EOS", "DS", {"DSDAT": edc_date(end), "DSSTAT": status[0], "DSREAS": status[1]})


def _ae_values(rng, verbatim, onset, grade, partial, ongoing, related, dlt=False, action="Dose not changed",
               fatal_on=None) -> dict[str, str]:
    serious = grade >= 3 and rng.random() < 0.5 or fatal_on is not None
    end = fatal_on or onset + dt.timedelta(days=rng.randint(1, 20))
    outcome = "Fatal" if fatal_on else ("Not recovered/Not resolved" if ongoing else "Recovered/Resolved")
    return {
        "AETERM": verbatim,
        "AESTDAT": edc_date(onset, partial),
        "AEENDAT": "" if ongoing else edc_date(end),
        "AEONGO": "Yes" if ongoing else "No",
        "AETOXGR": str(grade),
        "AESEV": SEVERITY[grade],
        "AESER": "Yes" if serious else "No",
        "AESDTH": "Yes" if fatal_on else "No",
        "AESHOSP": "Yes" if serious and not fatal_on else "No",
        "AESLIFE": "Yes" if grade >= 4 else "No",
        "AESDISAB": "No", "AESCONG": "No", "AESMIE": "No",
        "AEREL": related,
        "AEACN": "Not applicable" if fatal_on else action,
        "AEOUT": outcome,
        "AEDLT": "Yes" if dlt else "No",
    }


def write_csv_export(export: ExampleExport, out_dir: Path) -> list[Path]:
    """Write one UTF-8 CSV per form (``dm.csv`` ...) and the CRF design as ``data_dictionary.csv``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for form in sorted(export.forms):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=export.forms[form], restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(export.rows[form])
        path = out_dir / f"{form.lower()}.csv"
        path.write_bytes(buf.getvalue().encode("utf-8"))
        paths.append(path)
    paths.append(write_data_dictionary(crf_design(), out_dir / "data_dictionary.csv"))
    return paths


def write_odm_export(export: ExampleExport, path: Path, study_oid: str = "NCT05948982") -> Path:
    """Write the same export as a CDISC ODM 1.3.2 file with metadata and ClinicalData."""
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" ODMVersion="1.3.2" FileType="Snapshot" '
        'FileOID="ODM.NCT05948982.EXAMPLE" CreationDateTime="2026-01-01T00:00:00">',
        f'<Study OID={quoteattr(study_oid)}><GlobalVariables><StudyName>{study_oid}</StudyName>'
        f'<StudyDescription>Example EDC export</StudyDescription><ProtocolName>{study_oid}</ProtocolName>'
        '</GlobalVariables><MetaDataVersion OID="MDV.1" Name="EDC export">',
    ]
    design = crf_design()
    folder_forms: dict[str, list[str]] = {}  # the forms each folder (study event) collects, as seen
    for _subject, _site, subject_folders in export.subjects:
        for folder, pages in subject_folders:
            seen = folder_forms.setdefault(folder, [])
            seen.extend(form for form, _r, _v in pages if form not in seen)
    units = sorted({i.unit for f in design.forms for i in f.items if i.unit})
    out[-1] = out[-1].replace("<MetaDataVersion", "<BasicDefinitions>" + "".join(
        f'<MeasurementUnit OID="MU.{_oid(u)}" Name={quoteattr(u)}><Symbol>{_text(u)}</Symbol></MeasurementUnit>'
        for u in units) + "</BasicDefinitions><MetaDataVersion")
    # OIDs are unique across the metadata (SE./F./IG./IT. prefixes); Names carry the EDC names
    out.append('<Protocol>' + "".join(f'<StudyEventRef StudyEventOID="SE.{f}" Mandatory="No"/>' for f in folder_forms)
               + '</Protocol>')
    for f, forms in folder_forms.items():
        out.append(f'<StudyEventDef OID="SE.{f}" Name="{f}" Repeating="No" Type="Common">'
                   + "".join(f'<FormRef FormOID="F.{form}" Mandatory="No"/>' for form in sorted(forms))
                   + '</StudyEventDef>')
    for form in design.forms:
        out.append(f'<FormDef OID="F.{form.name}" Name="{form.name}" Repeating="{"Yes" if form.name == "AE" else "No"}">'
                   f'<Description>{_text(form.title)}</Description>'
                   f'<ItemGroupRef ItemGroupOID="IG.{form.name}" Mandatory="Yes"/></FormDef>')
    for form in design.forms:
        out.append(f'<ItemGroupDef OID="IG.{form.name}" Name="{form.name}" Repeating="No">'
                   + "".join(f'<ItemRef ItemOID="IT.{form.name}.{i.name}" Mandatory="No"/>' for i in form.items)
                   + '</ItemGroupDef>')
    numeric = {name for name, terms in design.codelists.items() if all(c.isdigit() for c, _d in terms)}
    for form in design.forms:
        for i in form.items:
            unit = f'<MeasurementUnitRef MeasurementUnitOID="MU.{_oid(i.unit)}"/>' if i.unit else ""
            out.append(f'<ItemDef OID="IT.{form.name}.{i.name}" Name="{i.name}" DataType="{i.datatype}"'
                       + (f' Length="{i.length}"' if i.length else "")
                       + f'><Question>{_text(i.question)}</Question>{unit}'
                       + (f'<CodeListRef CodeListOID="CL.{i.codelist}"/>' if i.codelist else "")
                       + (f'<Alias Context="{DISPLAY_FORMAT}" Name="{i.display_format}"/>' if i.display_format else "")
                       + '</ItemDef>')
    for name, terms in design.codelists.items():
        out.append(f'<CodeList OID="CL.{name}" Name="{name}" DataType="{"integer" if name in numeric else "text"}">'
                   + "".join(f'<CodeListItem CodedValue={quoteattr(c)}><Decode>{_text(d)}</Decode></CodeListItem>'
                             for c, d in terms) + '</CodeList>')
    out.append('</MetaDataVersion></Study>')
    out.append(f'<AdminData><Location OID="01" Name="Shanghai General Hospital" LocationType="Site">'
               f'<MetaDataVersionRef StudyOID="{study_oid}" MetaDataVersionOID="MDV.1" EffectiveDate="2024-01-01"/>'
               '</Location></AdminData>')
    out.append(f'<ClinicalData StudyOID="{study_oid}" MetaDataVersionOID="MDV.1">')
    for subject, site, subject_folders in export.subjects:
        out.append(f'<SubjectData SubjectKey={quoteattr(subject)}><SiteRef LocationOID={quoteattr(site)}/>')
        for folder, pages in subject_folders:
            out.append(f'<StudyEventData StudyEventOID="SE.{folder}">')
            for form, repeat, values in pages:
                out.append(f'<FormData FormOID="F.{form}" FormRepeatKey="{repeat}"><ItemGroupData ItemGroupOID="IG.{form}">')
                out.extend(f'<ItemData ItemOID="IT.{form}.{k}" Value={quoteattr(v)}/>' for k, v in values.items() if v)
                out.append('</ItemGroupData></FormData>')
            out.append('</StudyEventData>')
        out.append('</SubjectData>')
    out.append('</ClinicalData></ODM>')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(out) + "\n").encode("utf-8"))
    return path


def _text(text: str) -> str:
    """An ODM TranslatedText element holding ``text``."""
    return f'<TranslatedText xml:lang="en">{escape(text)}</TranslatedText>'


def _oid(text: str) -> str:
    """An OID-safe form of a unit symbol (``%`` -> ``PCT``)."""
    return re.sub(r"[^A-Za-z0-9]", "_", text.replace("%", "PCT"))


def write_example_study(out_dir: Path, n_subjects: int = 18, seed: int = 20230717, odm: bool = True) -> Path:
    """Write a study folder (config + specs copied from the shipped study) with its EDC export."""
    import shutil

    from .writers import MARKER, check_output_folder

    check_output_folder(out_dir)
    if n_subjects < 1:
        raise ConversionError(f"--subjects must be at least 1 (got {n_subjects})")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("written by cdisc-convert example; a later run may replace this folder\n")
    for spec in sorted([*STUDY_DIR.glob("*.yaml"), *STUDY_DIR.glob("adam/*.yaml")]):
        target = out_dir / spec.relative_to(STUDY_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(spec, target)
    export = generate_example_export(n_subjects, seed)
    write_csv_export(export, out_dir / "edc")
    if odm:
        write_odm_export(export, out_dir / "edc" / "nct05948982_odm.xml")
    return out_dir

