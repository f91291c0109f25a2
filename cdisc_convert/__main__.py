"""python3 -m cdisc_convert: the same as the cdisc-convert command."""
from .cli import entry

entry()
