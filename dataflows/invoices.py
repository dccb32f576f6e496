"""Where the recovery snapshots of earlier versions find the classes they pickled (Bytewax pickles a dataflow's
state by module and class name): the state now lives in dataflows/totals.py, the invoice in
shopmesh/runtime/invoices.py. New snapshots name those modules; this one can go once no store names it."""

from dataflows.totals import RunningTotal, WindowSum
from shopmesh.runtime.invoices import Invoice as ParsedInvoice

__all__ = ["ParsedInvoice", "RunningTotal", "WindowSum"]
