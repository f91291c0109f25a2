"""ADaM datasets as written: the spec's variables in its order, with labels from ADaMIG 1.3
(``cdisc_convert/standards/adamig-1.3.json``; SDTM variables carried over keep their SDTMIG
labels) or the spec, numeric SAS dates with DATE9./DATETIME20. formats.

Example:
    >>> sas_date(pd.Series(pd.to_datetime(["1960-01-01", "2024-01-08", None]))).tolist()
    [0.0, 23383.0, nan]
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ConversionError
from ..metadata import adam_variable, load_sdtmig
from ..text import as_text, is_plain_text, shared_text
from ..writers import Dataset
from .derive import SRC
from .spec import AdamSpec

SAS_EPOCH = pd.Timestamp("1960-01-01")


SDTM_CARRIED = ("DM", "AE", "EX", "DS", "LB", "VS", "QS", "SV", "CM", "MH")


def adam_label_type(name: str) -> tuple[str, str] | None:
    """(label, type) of an ADaM variable: ADaMIG 1.3 (patterns such as TRTxxP filled in), else
    the SDTMIG label of an SDTM variable carried into ADaM (ETHNIC, AEOUT, VISIT ...).

    >>> adam_label_type("TRT01AN"), adam_label_type("AEOUT"), adam_label_type("AEDTC")
    (('Actual Treatment for Period 01 (N)', 'Num'), ('Outcome of Adverse Event', 'Char'), ('Date/Time of Event Collection', 'Char'))
    """
    found = adam_variable(name)
    if found is not None:
        return found.label, found.type
    md = load_sdtmig()
    for domain in SDTM_CARRIED:
        v = md.domain(domain).variable(name)
        if v is not None:
            return v.label, v.type
    for domain in SDTM_CARRIED:  # allowed by the SDTM model for the domain's class (AEDTC, VSSTAT ...)
        v = md.allowed_variable(domain, name)
        if v is not None:
            return v.label, v.type
    return None


def sas_date(values: pd.Series) -> pd.Series:
    """datetime64 -> SAS date (days since 1960-01-01)."""
    return ((pd.to_datetime(values).dt.normalize() - SAS_EPOCH).dt.days).astype(float)


def sas_datetime(values: pd.Series) -> pd.Series:
    """datetime64 -> SAS datetime (seconds since 1960-01-01T00:00:00)."""
    return ((pd.to_datetime(values) - SAS_EPOCH).dt.total_seconds()).astype(float)


def adam_dataset(spec: AdamSpec, frame: pd.DataFrame | list[pd.DataFrame]) -> tuple[Dataset, pd.DataFrame]:
    """The dataset to write, and its lineage (keys + source records).

    ``frame`` handed over as a one-item list (emptied here; the caller keeps no other reference):
    each working column goes as soon as its written column is made, so the two are not both held
    whole (ADQS at 2,000 subjects: the working frame is 290 MB)."""
    if isinstance(frame, list):
        frame = frame.pop()
    labels, formats, kinds = {}, {}, {}
    for i, var in enumerate(spec.variables):
        name = var if isinstance(var, str) else var.name
        known = adam_label_type(name)
        label = (None if isinstance(var, str) else var.label) or (known[0] if known else None)
        if label is None:
            raise ConversionError(f"variable {name} is not an ADaMIG variable this project knows; give it a label "
                                  f"in the spec", dataset=spec.dataset, field=name, spec=spec.line_of("variables", i))
        if name not in frame.columns:
            raise ConversionError(f"variable {name} is listed but no step derives it", dataset=spec.dataset,
                                  field=name, spec=spec.line_of("variables", i))
        labels[name], kinds[name] = label, known[1] if known else None
    keys = [k for k in spec.keys if k in labels]
    # the records' order from the written key values, then each column made once in that order:
    # sorting the whole written frame afterwards held two copies of it (ADLB: +390 MB at 2,000 subjects)
    written_keys = {k: _written(k, frame[k], kinds[k], formats) for k in keys}
    order = (pd.DataFrame(written_keys).reset_index(drop=True).sort_values(keys, kind="stable").index.to_numpy()
             if keys else np.arange(len(frame)))
    source = frame[SRC] if SRC in frame.columns else None
    working = {name: frame[name] for name in labels if name not in written_keys}
    del frame  # the working columns live on only in ``working``, each until its written column is made
    columns = {}
    for name in labels:
        values = written_keys[name] if name in written_keys else _written(name, working.pop(name), kinds[name],
                                                                         formats)
        columns[name] = values.iloc[order].reset_index(drop=True)
        del values
    data = pd.DataFrame(columns, copy=False)
    del columns, written_keys
    formats = {name: formats[name] for name in labels if name in formats}  # in the variables' order
    # the written text columns shared, not copied (copy-on-write): ADQS's keys are 50 MB a copy
    lineage = pd.DataFrame({k: data[k] if is_plain_text(data[k]) else as_text(data[k]) for k in keys}, copy=False)
    if source is not None:
        source = source.iloc[order]
        lineage["source"] = (source if is_plain_text(source) else as_text(source)).to_numpy()
    else:
        lineage["source"] = ""
    return Dataset(spec.dataset, spec.label, data, labels, keys, keys, formats), lineage


def _written(name: str, values: pd.Series, kind: str | None, formats: dict[str, str]) -> pd.Series:
    """A variable's values as written: SAS dates and datetimes (their format noted in ``formats``),
    numbers as float, text as ``str``."""
    if pd.api.types.is_datetime64_any_dtype(values):
        is_dtm = name.endswith("DTM")
        formats[name] = "DATETIME20." if is_dtm else "DATE9."
        return sas_datetime(values) if is_dtm else sas_date(values)
    if values.dtype.kind in "fiub":
        return values.astype(float)
    if kind == "Num":
        return pd.to_numeric(values, errors="coerce").astype(float)
    return shared_text(as_text(values))  # kept to the end of the run: one object per term


def json_value_types(ds: Dataset) -> dict[str, str]:
    """Dataset-JSON dataType of formatted date columns."""
    return {c: ("datetime" if f.startswith("DATETIME") else "date") for c, f in ds.formats.items()}


