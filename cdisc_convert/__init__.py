"""cdisc_convert: EDC exports to submission-ready CDISC SDTM/ADaM, Define-XML and validation."""
__version__ = "0.1.0"
